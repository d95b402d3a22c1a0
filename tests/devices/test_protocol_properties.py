"""Property tests: every valid message survives encode -> decode unchanged, and no
input whatever makes decode raise anything but ProtocolError."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.protocol import (
    ALARM_TYPES,
    COMMAND_NAMES,
    EVENT_TYPES,
    Ack,
    AckBody,
    AlarmBody,
    AlarmEvent,
    CheckinBody,
    CheckinEvent,
    ConfigBody,
    ConfigMessage,
    DeviceState,
    LocateBody,
    LocateCommand,
    Message,
    PositionBody,
    PositionEvent,
    ProtocolError,
    RebootBody,
    RebootCommand,
    Rejection,
    SightingBody,
    SightingEvent,
    SightingQuality,
    StateBody,
    SyncWatchlistBody,
    SyncWatchlistCommand,
    Telemetry,
    TelemetryBody,
    config_sha256,
    decode,
    encode,
    encode_embedding,
    new_event_id,
    topic_for,
)
from devices.protocol.errors import ERROR_CODES

NOW = datetime(2025, 1, 2, tzinfo=UTC)

device_ids = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{1,20}\Z")
uuids = st.uuids().map(str)
event_ids = st.builds(lambda _: new_event_id(), st.integers())
times = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2025, 1, 1), timezones=st.just(UTC)
)
counts = st.integers(0, 2**63 - 1)


def floats(lo: float, hi: float) -> st.SearchStrategy[float]:
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


text = st.text(st.characters(codec="utf-8"), max_size=40)
ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{0,20}\Z")
sha = st.binary(min_size=32, max_size=32).map(bytes.hex)

positions = st.builds(
    PositionBody,
    lat=floats(-90, 90),
    lon=floats(-180, 180),
    acc=floats(0, 100_000),
    src=st.sampled_from(["gnss", "wifi", "cell", "ble_beacon", "uwb"]),
    alt=maybe(floats(-1000, 50_000)),
    vel=maybe(floats(0, 500)),
    cog=maybe(floats(0, 360)),
    sat=maybe(st.integers(0, 255)),
    hdop=maybe(floats(0, 100)),
    batt=maybe(st.integers(0, 100)),
    charging=maybe(st.booleans()),
    strap=maybe(st.sampled_from(["closed", "open"])),
    rssi=maybe(st.integers(-150, 0)),
)
alarms = st.builds(
    AlarmBody,
    type=st.sampled_from(ALARM_TYPES),
    state=st.sampled_from(["active", "cleared"]),
    alarm_id=ids,
    position=maybe(positions),
    related_event_id=maybe(event_ids),
    detail=maybe(text),
)


@st.composite
def sightings(draw: st.DrawFn) -> SightingBody:
    model_id, dim = draw(st.sampled_from([("dlib-resnet-v1", 128), ("insightface-w600k_r50", 512)]))
    vector = np.random.default_rng(draw(st.integers(0, 2**32))).normal(size=dim)
    x0, y0 = draw(floats(-500, 5000)), draw(floats(-500, 5000))
    w, h = draw(floats(1, 2000)), draw(floats(1, 2000))
    return SightingBody(
        model_id=model_id,
        embedding=encode_embedding(vector / np.linalg.norm(vector)),
        quality=SightingQuality(
            det_score=draw(floats(-1000, 1000)),
            face_px=draw(st.integers(1, 100_000)),
            yaw=draw(maybe(floats(-90, 90))),
            sharpness=draw(maybe(floats(0, 1e9))),
        ),
        bbox=(x0, y0, x0 + w, y0 + h),
        frame=draw(maybe(st.tuples(st.integers(1, 100_000), st.integers(1, 100_000)))),
        track_id=draw(counts),
        frames_fused=draw(st.integers(1, 10_000)),
        crop_jpeg=draw(maybe(st.binary(max_size=64).map(_jpeg))),
    )


def _jpeg(data: bytes) -> str:
    return base64.b64encode(b"\xff\xd8\xff" + data).decode("ascii")


checkins = st.builds(
    CheckinBody,
    next_checkin_s=st.integers(10, 7 * 86_400),
    batt=maybe(st.integers(0, 100)),
    uptime_s=maybe(counts),
)
json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | floats(-1e300, 1e300) | text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)
configs = st.dictionaries(text, json_values, max_size=6)


def _event(cls: type[Any], body: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.builds(
        cls,
        event_id=event_ids,
        device_id=device_ids,
        boot_id=uuids,
        seq=counts,
        captured_at=times,
        sent_at=times,
        replayed=st.booleans(),
        body=body,
    )


@st.composite
def config_messages(draw: st.DrawFn) -> ConfigMessage:
    config = draw(configs)
    return ConfigMessage(
        device_id=draw(device_ids),
        sent_at=draw(times),
        body=ConfigBody(
            version=draw(st.integers(1, 2**63 - 1)), sha256=config_sha256(config), config=config
        ),
    )


@st.composite
def acks(draw: st.DrawFn) -> Ack:
    chosen = draw(st.lists(event_ids, min_size=1, max_size=30, unique=True))
    split = draw(st.integers(0, len(chosen)))
    codes = st.sampled_from(ERROR_CODES)
    return Ack(
        device_id=draw(device_ids),
        sent_at=draw(times),
        body=AckBody(
            event_ids=chosen[:split],
            rejected=[Rejection(event_id=e, code=draw(codes)) for e in chosen[split:]],
        ),
    )


def _command(cls: type[Any], body: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.builds(cls, device_id=device_ids, cmd_id=event_ids, sent_at=times, body=body)


messages: st.SearchStrategy[Message] = st.one_of(
    _event(PositionEvent, positions),
    _event(AlarmEvent, alarms),
    _event(SightingEvent, sightings()),
    _event(CheckinEvent, checkins),
    st.builds(
        Telemetry,
        device_id=device_ids,
        boot_id=uuids,
        sent_at=times,
        body=st.builds(TelemetryBody, temp_c=maybe(floats(-60, 150)), outbox_depth=maybe(counts)),
    ),
    st.builds(
        DeviceState,
        device_id=device_ids,
        boot_id=uuids,
        sent_at=times,
        body=st.builds(
            StateBody,
            status=st.sampled_from(["online", "offline"]),
            fw=st.from_regex(r"\A[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\Z"),
            config_error=maybe(st.text(min_size=1, max_size=300)),
        ),
    ),
    acks(),
    config_messages(),
    _command(RebootCommand, st.builds(RebootBody, delay_s=st.integers(0, 3600))),
    _command(LocateCommand, st.builds(LocateBody, timeout_s=st.integers(1, 600))),
    _command(
        SyncWatchlistCommand,
        st.builds(SyncWatchlistBody, version=counts, sha256=maybe(sha)),
    ),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_encode_decode_round_trip(message: Message) -> None:
    data = encode(message)
    decoded = decode(topic_for(message), data, now=NOW)
    assert decoded.message == message
    assert type(decoded.message) is type(message)
    assert encode(decoded.message) == data
    assert decoded.upgraded_from is None


topics = st.one_of(
    st.sampled_from(
        [f"lantern/v1/wb-1/evt/{t}" for t in EVENT_TYPES]
        + [f"lantern/v1/wb-1/cmd/{c}" for c in COMMAND_NAMES]
        + [f"lantern/v1/wb-1/{k}" for k in ("tele", "state", "ack", "config")]
    ),
    st.text(max_size=60),
)


@settings(max_examples=300)
@given(topics, st.binary(max_size=2000))
def test_arbitrary_bytes_raise_only_protocol_errors(topic: str, payload: bytes) -> None:
    try:
        decode(topic, payload, now=NOW)
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES and exc.reason


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(messages, st.data())
def test_mutated_messages_raise_only_protocol_errors(message: Message, data: st.DataObject) -> None:
    document = json.loads(encode(message))
    target = document
    if isinstance(document.get("body"), dict) and data.draw(st.booleans()):
        target = document["body"]
    key = data.draw(st.sampled_from([*target.keys(), "extra"]))
    value = data.draw(json_values)
    if data.draw(st.booleans()):
        target[key] = value
    else:
        target.pop(key, None)
    payload = json.dumps(document).encode()
    try:
        decoded = decode(topic_for(message), payload, now=NOW)
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES and exc.reason
    else:
        # Whatever was accepted re-encodes and decodes to itself.
        again = decode(topic_for(message), encode(decoded.message), now=NOW)
        assert again.message == decoded.message


@settings(max_examples=200)
@given(json_values)
def test_arbitrary_json_raises_only_protocol_errors(value: Any) -> None:
    try:
        decode("lantern/v1/wb-1/evt/position", json.dumps(value).encode(), now=NOW)
    except ProtocolError as exc:
        assert exc.code in ERROR_CODES
