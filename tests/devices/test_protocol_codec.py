"""encode/decode details: canonical bytes, clocks, JSON protections, embeddings,
ids, versions and the error type."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from devices.protocol import (
    DEFAULT_EMBEDDING_DIMS,
    EVT_SCHEMA,
    MAX_DEPTH,
    AlarmBody,
    AlarmEvent,
    ConfigBody,
    ConfigMessage,
    EmbeddingDims,
    LocateBody,
    LocateCommand,
    PositionEvent,
    ProtocolError,
    SightingEvent,
    canonical_json,
    config_sha256,
    decode,
    decode_embedding,
    encode,
    encode_embedding,
    format_timestamp,
    loads_object,
    new_boot_id,
    new_event_id,
    parse_timestamp,
    topic_for,
    upgrade_evt_v1,
    uuid7_time,
)
from devices.protocol.ids import UUID7_RE, UUIDv7Generator
from tests.devices.protocol_helpers import NOW, position_event, sighting_event, unit_vector


def _payload(message: PositionEvent, **changes: object) -> bytes:
    data = json.loads(encode(message))
    data.update(changes)
    return json.dumps(data).encode()


# --- encode ----------------------------------------------------------------------


def test_encode_is_canonical_and_leaves_out_nulls() -> None:
    message = position_event(alt=None, batt=50)
    data = encode(message)
    parsed = json.loads(data)
    assert data == json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode()
    assert "alt" not in parsed["body"] and parsed["body"]["batt"] == 50
    assert "sig" not in parsed and parsed["replayed"] is False
    assert parsed["schema"] == EVT_SCHEMA
    assert parsed["captured_at"] == "2025-06-01T11:59:00Z"


def test_encode_of_a_decoded_device_payload_is_stable() -> None:
    message = position_event()
    shuffled = json.dumps(json.loads(encode(message)), indent=3).encode()
    decoded = decode(topic_for(message), shuffled, now=NOW)
    assert encode(decoded.message) == encode(message)


def test_encode_refuses_a_message_over_its_cap() -> None:
    config = {"blob": "x" * 70_000}
    message = ConfigMessage(
        device_id="wb-1",
        sent_at=NOW,
        body=ConfigBody(version=1, sha256=config_sha256(config), config=config),
    )
    with pytest.raises(ProtocolError) as caught:
        encode(message)
    assert caught.value.code == "too_large"


def test_config_nulls_survive_and_the_hash_is_over_canonical_json() -> None:
    config = {"b": None, "a": {"z": 1.0, "y": [1, None]}}
    message = ConfigMessage(
        device_id="wb-1",
        sent_at=NOW,
        body=ConfigBody(version=3, sha256=config_sha256(config), config=config),
    )
    decoded = decode(topic_for(message), encode(message), now=NOW).message
    assert isinstance(decoded, ConfigMessage)
    assert decoded.body.config == config
    assert canonical_json(config) == b'{"a":{"y":[1,null],"z":1.0},"b":null}'


# --- clocks ------------------------------------------------------------------------


def test_timestamps_are_normalised_to_utc() -> None:
    parsed = parse_timestamp("2025-06-01T14:00:00.123456789+02:00")
    assert parsed == datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert format_timestamp(parsed) == "2025-06-01T12:00:00.123456Z"
    assert format_timestamp(datetime(2025, 6, 1, 14, tzinfo=timezone(timedelta(hours=2)))) == (
        "2025-06-01T12:00:00Z"
    )


@pytest.mark.parametrize(
    "text",
    [
        "2025-06-01T12:00:00",
        "2025-06-01 12:00:00Z",
        "2025-06-01t12:00:00z",
        "2025-06-01T12:00:60Z",
        "2025-06-01T12:00:00+24:00",
        "20250601T120000Z",
        "2025-06-01",
    ],
)
def test_bad_timestamps(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_naive_datetimes_are_refused_in_python_too() -> None:
    with pytest.raises(ValueError):
        parse_timestamp(datetime(2025, 1, 1))


def test_future_bound_is_five_minutes() -> None:
    message = position_event()
    topic = topic_for(message)
    ok = format_timestamp(NOW + timedelta(minutes=5))
    decode(topic, _payload(message, captured_at=ok, sent_at=ok), now=NOW)
    late = format_timestamp(NOW + timedelta(minutes=5, seconds=1))
    with pytest.raises(ProtocolError) as caught:
        decode(topic, _payload(message, captured_at=late), now=NOW)
    assert caught.value.code == "bad_clock"
    assert caught.value.field == "captured_at"


def test_bad_clock_wins_over_other_errors() -> None:
    message = position_event()
    payload = _payload(message, seq=-1, captured_at="2019-12-31T23:59:59Z")
    with pytest.raises(ProtocolError) as caught:
        decode(topic_for(message), payload, now=NOW)
    assert caught.value.code == "bad_clock"
    assert "seq" in caught.value.reason


def test_decode_defaults_to_the_current_clock_and_wants_an_aware_now() -> None:
    now = datetime.now(UTC)
    message = position_event().model_copy(update={"captured_at": now, "sent_at": now})
    decoded = decode(topic_for(message), encode(message))
    assert decoded.received_at >= now
    with pytest.raises(ValueError):
        decode(topic_for(message), encode(message), now=datetime(2025, 1, 1))


def test_commands_expire() -> None:
    command = LocateCommand(
        device_id="wb-1",
        cmd_id=new_event_id(),
        sent_at=NOW,
        expires_at=NOW + timedelta(minutes=10),
        body=LocateBody(),
    )
    assert not command.expired(NOW + timedelta(minutes=9))
    assert command.expired(NOW + timedelta(minutes=11))
    assert command.body.timeout_s == 60


# --- JSON protections ---------------------------------------------------------------


def test_nesting_limit_is_exact() -> None:
    inside = "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    assert loads_object(f'{{"a":{inside}}}'.encode())
    deeper = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    with pytest.raises(ProtocolError) as caught:
        loads_object(f'{{"a":{deeper}}}'.encode())
    assert caught.value.code == "bad_json"


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = '{"a":"' + "[{" * 100 + '\\"' + "[" * 50 + '"}'
    assert loads_object(text.encode())["a"].startswith("[{[{")


def test_very_deep_nesting_is_refused_without_recursion() -> None:
    with pytest.raises(ProtocolError) as caught:
        loads_object(b"[" * 200_000 + b"]" * 200_000)
    assert caught.value.code == "bad_json"


def test_surrogate_pairs_are_fine_but_lone_ones_are_not() -> None:
    message = AlarmEvent(
        event_id=new_event_id(),
        device_id="wb-1",
        boot_id=new_boot_id(),
        seq=0,
        captured_at=NOW,
        sent_at=NOW,
        body=AlarmBody(type="fall", state="active", alarm_id="f-1", detail="x"),
    )
    data = encode(message).replace(b'"detail":"x"', b'"detail":"\\ud83d\\ude00 ok"')
    decoded = decode(topic_for(message), data, now=NOW).message
    assert isinstance(decoded, AlarmEvent) and decoded.body.detail == "\U0001f600 ok"
    with pytest.raises(ProtocolError) as caught:
        decode(topic_for(message), data.replace(b"\\ude00", b""), now=NOW)
    assert caught.value.code == "bad_json"


def test_memoryview_and_bytearray_payloads() -> None:
    message = position_event()
    data = encode(message)
    for payload in (bytearray(data), memoryview(data)):
        assert decode(topic_for(message), payload, now=NOW).message == message  # type: ignore[arg-type]


# --- embeddings ---------------------------------------------------------------------


def test_embedding_round_trip_is_exact() -> None:
    vector = unit_vector(512, seed=3)
    text = encode_embedding(vector)
    assert len(text) == 2732
    assert np.array_equal(decode_embedding(text, 512), vector)
    assert decode_embedding(text).dtype == np.float32


@pytest.mark.parametrize(
    "bad", [np.zeros((2, 4), np.float32), np.array([], np.float32), np.array([1.0, np.nan])]
)
def test_encode_embedding_refuses(bad: np.ndarray) -> None:
    with pytest.raises(ValueError):
        encode_embedding(bad)


def test_decode_embedding_refuses_wrong_sizes() -> None:
    text = encode_embedding(unit_vector(128))
    with pytest.raises(ProtocolError):
        decode_embedding(text, 512)
    assert decode_embedding("AAAAAA==").shape == (1,)  # 4 bytes: one float32
    for text in ("AAAA", "AAAAAAA=", "", "AAAAAA"):  # 3, 5, 0 bytes; missing padding
        with pytest.raises(ProtocolError):
            decode_embedding(text)


def test_dims_table_rules() -> None:
    assert DEFAULT_EMBEDDING_DIMS.dim("dlib-resnet-v1") == 128
    assert DEFAULT_EMBEDDING_DIMS.dim("insightface-w600k_r50") == 512
    assert DEFAULT_EMBEDDING_DIMS.dim("facenet") is None
    table = DEFAULT_EMBEDDING_DIMS.with_entries(
        {"insightface-mbf*": 256, "insightface-mbf_small": 64, "insightface-*x": 32}
    )
    assert table.dim("insightface-mbf_large") == 256  # longer pattern wins
    assert table.dim("insightface-mbf_small") == 64  # exact wins
    assert table.dim("insightface-glint360x") == 32
    assert table.dim("insightface-r100") == 512
    parsed = EmbeddingDims.parse("facenet=512, arc*=128")
    assert parsed.dim("facenet") == 512 and parsed.dim("arcface") == 128
    assert parsed.dim("dlib-resnet-v1") == 128
    for spec in ("facenet", "facenet=x", "face net=5"):
        with pytest.raises(ValueError):
            EmbeddingDims.parse(spec)
    with pytest.raises(ValueError):
        EmbeddingDims({"a": 0})


def test_decode_takes_a_configured_dims_table() -> None:
    message = sighting_event(model_id="insightface-mbf", dim=512)
    data = json.loads(encode(message))
    data["body"]["embedding"] = encode_embedding(unit_vector(128))
    payload = json.dumps(data).encode()
    with pytest.raises(ProtocolError) as caught:
        decode(topic_for(message), payload, now=NOW)
    assert caught.value.field == "body.embedding"
    table = EmbeddingDims.parse("insightface-mbf=128")
    decoded = decode(topic_for(message), payload, now=NOW, dims=table)
    assert isinstance(decoded.message, SightingEvent)


def test_embedding_norm_tolerance() -> None:
    message = sighting_event()
    data = json.loads(encode(message))
    for scale, ok in ((1.0009, True), (1.0011, False), (0.9989, False)):
        data["body"]["embedding"] = encode_embedding(unit_vector(128) * scale)
        payload = json.dumps(data).encode()
        if ok:
            decode(topic_for(message), payload, now=NOW)
        else:
            with pytest.raises(ProtocolError):
                decode(topic_for(message), payload, now=NOW)


# --- ids ----------------------------------------------------------------------------


def test_uuid7_format_and_time() -> None:
    before = datetime.now(UTC) - timedelta(milliseconds=1)
    event_id = new_event_id()
    assert UUID7_RE.fullmatch(event_id)
    assert before <= uuid7_time(event_id) <= datetime.now(UTC)


def test_uuid7_ids_sort_in_creation_order() -> None:
    ids = [new_event_id() for _ in range(20_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_uuid7_never_goes_backwards_with_a_bad_clock() -> None:
    ticks = iter([1000, 1000, 999, 500, 1001, 1001] + [2000] * 5000)
    generate = UUIDv7Generator(clock=lambda: next(ticks))
    ids = [generate() for _ in range(5006)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    # 5000 ids in one millisecond overflow the 12-bit counter into the next ms.
    assert uuid7_time(ids[-1]) > uuid7_time(ids[6])


# --- versions -----------------------------------------------------------------------


def test_upgrade_does_not_touch_its_input() -> None:
    v1 = json.loads(encode(sighting_event()))
    del v1["replayed"]
    v1["schema"] = "lantern.evt/1"
    v1["body"]["embedding"] = unit_vector(128).tolist()
    snapshot = json.dumps(v1, sort_keys=True)
    upgraded = upgrade_evt_v1(v1, "sighting")
    assert json.dumps(v1, sort_keys=True) == snapshot
    assert upgraded["schema"] == EVT_SCHEMA and upgraded["replayed"] is False
    assert isinstance(upgraded["body"]["embedding"], str)


def test_previous_version_position_decodes() -> None:
    message = position_event()
    data = json.loads(encode(message))
    data["schema"] = "lantern.evt/1"
    del data["replayed"]
    decoded = decode(topic_for(message), json.dumps(data).encode(), now=NOW)
    assert decoded.upgraded_from == "lantern.evt/1"
    assert decoded.message == message


# --- errors -------------------------------------------------------------------------


def test_protocol_error_pickles_and_truncates() -> None:
    error = ProtocolError("invalid", "x" * 2000, field="body.lat")
    assert isinstance(error, ValueError)
    assert len(error.reason) == 500
    again = pickle.loads(pickle.dumps(error))
    assert (again.code, again.reason, again.field) == ("invalid", error.reason, "body.lat")
    assert str(again) == str(error)
