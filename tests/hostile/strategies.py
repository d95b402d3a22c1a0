"""Hypothesis strategies of hostile wire payloads, each with the refusal it must get.

A :class:`Hostile` is a topic, the bytes published on it, what was done to them
(``kind``) and the error codes :func:`devices.protocol.decode` may answer with. Every
payload starts as a valid message (the generators of
``tests/devices/test_protocol_properties.py``) and is then broken in one way that is
certain to be refused, so a payload that decodes is a failure, not a shrug.

The same strategies feed the decoder properties (``test_decoders.py``) and the corpus
published through the real ingest (``test_ingest_corpus.py``).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from hypothesis import strategies as st

from devices.protocol import (
    DELIVERY,
    EVENT_TYPES,
    EVT_SCHEMA_V1,
    AlarmEvent,
    CheckinEvent,
    DeviceState,
    Message,
    PositionEvent,
    SightingEvent,
    encode,
    max_payload_bytes,
    parse_topic,
    topic_for,
)
from tests.devices.test_protocol_properties import (
    alarms,
    checkins,
    device_ids,
    event_ids,
    messages,
    positions,
    sightings,
    times,
    uuids,
)

__all__ = [
    "HOSTILE_KINDS",
    "NOW",
    "Hostile",
    "bad_topics",
    "hostile_payloads",
    "hub_bound_messages",
    "json_documents",
]

NOW = datetime(2025, 1, 2, tzinfo=UTC)
"""The receiver's clock for the decoder properties (the base messages are captured
between 2020 and 2025-01-01, so they are valid at this time and at any later one)."""

_LITERAL = "__hostile_literal__"
"""Placeholder for a raw JSON token that ``json.dumps`` cannot write (NaN, 1e999 ...)."""


@dataclass(frozen=True)
class Hostile:
    """A payload on a topic that must be refused with one of ``codes``."""

    kind: str
    topic: str
    payload: bytes
    codes: frozenset[str]


_ID_START = "abcdefghijklmnopqrstuvwxyz0123456789"
fast_device_ids = st.builds(
    str.__add__, st.sampled_from(_ID_START), st.text(_ID_START + "_-", min_size=1, max_size=20)
)
"""Valid device ids, drawn without the (slow) regex strategy."""


def _event(cls: type[Any], body: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.builds(
        cls,
        event_id=event_ids,
        device_id=fast_device_ids,
        boot_id=uuids,
        seq=st.integers(0, 2**40),
        captured_at=times,
        sent_at=times,
        replayed=st.booleans(),
        body=body,
    )


hub_bound_messages: st.SearchStrategy[Message] = st.one_of(
    _event(PositionEvent, positions),
    _event(AlarmEvent, alarms),
    _event(SightingEvent, sightings()),
    _event(CheckinEvent, checkins),
    st.builds(
        DeviceState,
        device_id=fast_device_ids,
        boot_id=uuids,
        sent_at=times,
        body=st.fixed_dictionaries(
            {"status": st.sampled_from(["online", "offline"]), "fw": st.just("1.2.3")}
        ),
    ),
)
"""Valid messages of the kinds a hub subscribes to (events and retained states)."""


def _dump(document: Any, literal: str | None = None) -> bytes:
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    if literal is not None:
        text = text.replace(f'"{_LITERAL}"', literal, 1)
    return text.encode("utf-8")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


_WRONG_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "boolean": st.booleans(),
    "number": st.integers(-(2**31), 2**31) | st.floats(-1e6, 1e6, allow_nan=False),
    "string": st.text(max_size=12),
    "array": st.lists(st.integers(0, 9), max_size=3),
    "object": st.dictionaries(st.text(max_size=4), st.integers(0, 9), max_size=2),
}

_TIMESTAMP_FIELDS = frozenset({"captured_at", "sent_at", "expires_at"})


def _target(draw: st.DrawFn, document: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    """A (container, key, dotted path) of a top-level or body field to break."""
    body = document.get("body")
    if isinstance(body, dict) and body and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(body)))
        return body, key, f"body.{key}"
    key = draw(st.sampled_from(sorted(document)))
    return document, key, key


def _codes_for_envelope_field(path: str, default: str = "invalid") -> frozenset[str]:
    if path == "schema":
        return frozenset({"unknown_schema"})
    if path == "device_id":
        return frozenset({"device_mismatch", "invalid"})
    if path in _TIMESTAMP_FIELDS:
        return frozenset({"invalid", "bad_clock"})
    return frozenset({default})


def _sized(topic: str, payload: bytes, codes: frozenset[str]) -> frozenset[str]:
    """``too_large`` replaces the expected codes when the payload is over its cap."""
    info = parse_topic(topic)
    if len(payload) > max_payload_bytes(info.kind, info.name):
        return frozenset({"too_large"})
    return codes


Mutation = Callable[[st.DrawFn, dict[str, Any], str, bytes], tuple[bytes, frozenset[str], str]]


def _wrong_type(
    draw: st.DrawFn, doc: dict[str, Any], topic: str, raw: bytes
) -> tuple[bytes, frozenset[str], str]:
    container, key, path = _target(draw, doc)
    present = _json_type(container[key])
    wrong = draw(st.sampled_from(sorted(t for t in _WRONG_VALUES if t != present)))
    container[key] = draw(_WRONG_VALUES[wrong])
    return _dump(doc), _codes_for_envelope_field(path), topic


def _huge_number(
    draw: st.DrawFn, doc: dict[str, Any], topic: str, raw: bytes
) -> tuple[bytes, frozenset[str], str]:
    container, key, _ = _target(draw, doc)
    digits = draw(st.integers(20, 400))
    literal = draw(
        st.sampled_from(
            [
                "9" * digits,
                "-" + "1" * digits,
                f"1e{digits + 300}",
                f"-2.5E+{digits + 300}",
            ]
        )
    )
    container[key] = _LITERAL
    return _dump(doc, literal), frozenset({"bad_json"}), topic


def _out_of_range_number(
    draw: st.DrawFn, doc: dict[str, Any], topic: str, raw: bytes
) -> tuple[bytes, frozenset[str], str]:
    """Numbers JSON can carry but no field allows: a seq past 2**63 - 1, a latitude of
    1e300, a negative accuracy."""
    body = doc.get("body")
    if "seq" in doc and (not isinstance(body, dict) or "lat" not in body or draw(st.booleans())):
        doc["seq"] = draw(st.integers(2**63, 10**19 - 1) | st.integers(-(2**63), -1))
    elif isinstance(body, dict) and "lat" in body:
        field = draw(st.sampled_from(["lat", "lon", "acc"]))
        body[field] = draw(
            st.sampled_from([1e300, -1e300, 1.7976931348623157e308])
            | (st.floats(-1e9, -0.001) if field == "acc" else st.floats(181, 1e12))
        )
    else:
        doc["sent_at"] = draw(st.integers(10**18, 10**19 - 1))
    return _dump(doc), frozenset({"invalid"}), topic


def _nan_infinity(
    draw: st.DrawFn, doc: dict[str, Any], topic: str, raw: bytes
) -> tuple[bytes, frozenset[str], str]:
    container, key, _ = _target(draw, doc)
    container[key] = _LITERAL
    literal = draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "[NaN]", '{"x":Infinity}']))
    return _dump(doc, literal), frozenset({"bad_json"}), topic


def _deep_nesting(
    draw: st.DrawFn, doc: dict[str, Any], topic: str, raw: bytes
) -> tuple[bytes, frozenset[str], str]:
    container, key, _ = _target(draw, doc)
    depth = draw(st.integers(33, 5000))
    if draw(st.booleans()):
        literal = "[" * depth + "]" * depth
    else:
        literal = '{"a":' * depth + "0" + "}" * depth
    container[key] = _LITERAL
    payload = _dump(doc, literal)
    return payload, _sized(topic, payload, frozenset({"bad_json"})), topic


def _oversized_string(
    draw: st.DrawFn, doc: dict[str, Any], topic: str, raw: bytes
) -> tuple[bytes, frozenset[str], str]:
    info = parse_topic(topic)
    cap = max_payload_bytes(info.kind, info.name)
    length = draw(st.integers(100, 2 * cap))
    filler = draw(st.sampled_from(["a", "é", "\u4e2d", "\U0001f600", "\\"]))
    where = draw(st.sampled_from(["unknown", "event_id", "boot_id", "device_id"]))
    if where not in doc:
        where = "unknown"
    if where == "unknown":
        doc[draw(st.sampled_from(["padding", "x", "note"]))] = filler * length
        codes = frozenset({"invalid"})
    else:
        doc[where] = filler * length
        codes = _codes_for_envelope_field(where)
    payload = _dump(doc)
    return payload, _sized(topic, payload, codes), topic


def _bad_embedding(
    draw: st.DrawFn, doc: dict[str, Any], topic: str, raw: bytes
) -> tuple[bytes, frozenset[str], str]:
    body = doc.get("body")
    if not isinstance(body, dict) or "embedding" not in body:
        return _wrong_type(draw, doc, topic, raw)
    dim = 128 if body.get("model_id") == "dlib-resnet-v1" else 512
    how = draw(st.sampled_from(["length", "nan", "norm", "base64", "huge"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32)))
    if how == "length":
        size = draw(st.integers(1, 2 * dim).filter(lambda n: n != dim))
        vector = rng.normal(size=size)
        values = (vector / np.linalg.norm(vector)).astype("<f4")
    elif how == "huge":
        size = draw(st.integers(4096, 80_000))
        values = np.full(size, 1.0 / np.sqrt(size), dtype="<f4")
    elif how == "nan":
        values = np.full(dim, 1.0 / np.sqrt(dim), dtype="<f4")
        values[draw(st.integers(0, dim - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    elif how == "norm":
        values = (rng.normal(size=dim) * draw(st.sampled_from([0.0, 0.5, 3.0, 1e30]))).astype("<f4")
        if not np.isfinite(values).all():
            values = np.zeros(dim, dtype="<f4")
    else:
        body["embedding"] = draw(st.sampled_from(["not base64!", "AAAA=", "QUJD", "€€€€", ""]))
        payload = _dump(doc)
        return payload, _sized(topic, payload, frozenset({"invalid"})), topic
    body["embedding"] = base64.b64encode(values.tobytes()).decode("ascii")
    payload = _dump(doc)
    return payload, _sized(topic, payload, frozenset({"invalid"})), topic


def _device_mismatch(
    draw: st.DrawFn, doc: dict[str, Any], topic: str, raw: bytes
) -> tuple[bytes, frozenset[str], str]:
    own = parse_topic(topic).device_id
    doc["device_id"] = draw(
        device_ids.filter(lambda d: d != own)
        | st.just(own.upper())
        | st.just(own + " ")
        | st.just("\u0430" + own[1:])  # Cyrillic a: a look-alike id
    )
    if doc["device_id"] == own:
        doc["device_id"] = own + "-x"
    return _dump(doc), frozenset({"device_mismatch"}), topic


def _wrong_schema(
    draw: st.DrawFn, doc: dict[str, Any], topic: str, raw: bytes
) -> tuple[bytes, frozenset[str], str]:
    kind = parse_topic(topic).kind
    others = [f"lantern.{k}/1" for k in ("tele", "ack", "config", "cmd") if k != kind]
    choice = draw(
        st.sampled_from(others).map(lambda s: (s, "schema_mismatch"))
        | st.sampled_from(
            [f"lantern.{kind}/0", f"lantern.{kind}/3", f"lantern.{kind}/999999", "lantern.evt/"]
        ).map(lambda s: (s, "unknown_schema"))
        | st.text(max_size=20)
        .filter(lambda s: re.fullmatch(r"lantern\.[a-z]+/\d+", s) is None)
        .map(lambda s: (s, "unknown_schema"))
        | st.just((None, "unknown_schema"))
    )
    schema, code = choice
    if schema is None:
        doc.pop("schema", None)
    else:
        doc["schema"] = schema
    return _dump(doc), frozenset({code}), topic


def _bad_clock(
    draw: st.DrawFn, doc: dict[str, Any], topic: str, raw: bytes
) -> tuple[bytes, frozenset[str], str]:
    field = "captured_at" if "captured_at" in doc else "sent_at"
    past = ["1970-01-01T00:00:00Z", "2019-12-31T23:59:59Z", "0001-01-01T00:00:00+00:00"]
    future = ["2100-01-01T00:00:00Z", "9999-12-31T23:59:59+14:00"]
    # Hub-to-device messages have no future bound (a device's clock may not be set).
    towards_hub = DELIVERY[parse_topic(topic).kind].direction == "device_to_hub"
    doc[field] = draw(st.sampled_from(past + future if towards_hub else past))
    return _dump(doc), frozenset({"bad_clock"}), topic


_BAD_UTF8 = [b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80"]


def _invalid_utf8(
    draw: st.DrawFn, doc: dict[str, Any], topic: str, raw: bytes
) -> tuple[bytes, frozenset[str], str]:
    bad = draw(st.sampled_from(_BAD_UTF8))
    quotes = [m.start() for m in re.finditer(rb'"', raw)]
    at = draw(st.sampled_from(quotes)) + 1 if quotes else 0
    return raw[:at] + bad + raw[at:], frozenset({"bad_json"}), topic


def _truncated(
    draw: st.DrawFn, doc: dict[str, Any], topic: str, raw: bytes
) -> tuple[bytes, frozenset[str], str]:
    cut = draw(st.integers(0, len(raw) - 1))
    return raw[:cut], frozenset({"bad_json"}), topic


def _lone_surrogate(
    draw: st.DrawFn, doc: dict[str, Any], topic: str, raw: bytes
) -> tuple[bytes, frozenset[str], str]:
    container, key, _ = _target(draw, doc)
    container[key] = _LITERAL
    literal = draw(st.sampled_from(['"\\ud800"', '"a\\udfff"', '["\\udbff"]']))
    return _dump(doc, literal), frozenset({"bad_json"}), topic


def _duplicate_key(
    draw: st.DrawFn, doc: dict[str, Any], topic: str, raw: bytes
) -> tuple[bytes, frozenset[str], str]:
    key = draw(st.sampled_from(sorted(doc)))
    text = raw.decode("utf-8")
    extra = json.dumps(key) + ":" + json.dumps(doc[key], ensure_ascii=False) + ","
    return ("{" + extra + text[1:]).encode("utf-8"), frozenset({"bad_json"}), topic


def _not_an_object(
    draw: st.DrawFn, doc: dict[str, Any], topic: str, raw: bytes
) -> tuple[bytes, frozenset[str], str]:
    payload = draw(
        st.sampled_from([b"[]", b"null", b"true", b"42", b'"x"', b"", b" ", b"\xef\xbb\xbf{}"])
        | st.just(b"[" + raw + b"]")
        | st.just(raw + b"x")
        | st.just(b"\xef\xbb\xbf" + raw)
    )
    return payload, frozenset({"bad_json"}), topic


def _v1_with_v2_fields(
    draw: st.DrawFn, doc: dict[str, Any], topic: str, raw: bytes
) -> tuple[bytes, frozenset[str], str]:
    if parse_topic(topic).kind != "evt":
        return _wrong_schema(draw, doc, topic, raw)
    doc["schema"] = EVT_SCHEMA_V1
    doc["replayed"] = draw(st.booleans())
    return _dump(doc), frozenset({"invalid"}), topic


def _malformed_signature(
    draw: st.DrawFn, doc: dict[str, Any], topic: str, raw: bytes
) -> tuple[bytes, frozenset[str], str]:
    if parse_topic(topic).kind != "evt":
        return _wrong_type(draw, doc, topic, raw)
    how = draw(st.sampled_from(["sig_only", "kid_only", "bad_kid", "bad_sig"]))
    sig = base64.b64encode(draw(st.binary(min_size=64, max_size=64))).decode("ascii")
    if how == "sig_only":
        doc["sig"] = sig
    elif how == "kid_only":
        doc["kid"] = "k1"
    elif how == "bad_kid":
        doc["kid"], doc["sig"] = draw(st.sampled_from(["", " k", "k/1", "é", "k" * 65])), sig
    else:
        doc["kid"] = "k1"
        doc["sig"] = draw(st.sampled_from(["", "!!", "AAAA", sig[:-4], sig + "AAAA", sig + "\n"]))
    return _dump(doc), frozenset({"invalid"}), topic


_MUTATIONS: dict[str, Mutation] = {
    "wrong_type": _wrong_type,
    "huge_number": _huge_number,
    "out_of_range": _out_of_range_number,
    "nan_infinity": _nan_infinity,
    "deep_nesting": _deep_nesting,
    "oversized_string": _oversized_string,
    "bad_embedding": _bad_embedding,
    "device_mismatch": _device_mismatch,
    "wrong_schema": _wrong_schema,
    "bad_clock": _bad_clock,
    "invalid_utf8": _invalid_utf8,
    "truncated": _truncated,
    "lone_surrogate": _lone_surrogate,
    "duplicate_key": _duplicate_key,
    "not_an_object": _not_an_object,
    "v1_with_v2_fields": _v1_with_v2_fields,
    "malformed_signature": _malformed_signature,
}

HOSTILE_KINDS: tuple[str, ...] = (*_MUTATIONS, "bad_topic")


_BAD_DEVICE_LEVELS = st.sampled_from(
    ["A", "UPPER-case", "x", "-lead", "_lead", "has space", "dot.ted", "a" * 65, "é-dev", "wb~1"]
)


def bad_topics(device: st.SearchStrategy[str] = device_ids) -> st.SearchStrategy[Hostile]:
    """Topics under ``lantern/v1/+/evt/#`` (so a hub receives them) that are not
    Lantern topics, or name an event type that does not exist."""

    @st.composite
    def build(draw: st.DrawFn) -> Hostile:
        good = draw(device)
        kind = draw(st.sampled_from(["bad_device", "unknown_type", "too_deep", "empty_type"]))
        if kind == "bad_device":
            topic = (
                f"lantern/v1/{draw(_BAD_DEVICE_LEVELS)}/evt/{draw(st.sampled_from(EVENT_TYPES))}"
            )
            codes = frozenset({"bad_topic"})
        elif kind == "unknown_type":
            name = draw(
                st.from_regex(r"\A[a-z][a-z0-9_]{0,11}\Z").filter(lambda n: n not in EVENT_TYPES)
            )
            topic, codes = f"lantern/v1/{good}/evt/{name}", frozenset({"unknown_type"})
        elif kind == "too_deep":
            topic, codes = f"lantern/v1/{good}/evt/position/x", frozenset({"bad_topic"})
        else:
            topic, codes = f"lantern/v1/{good}/evt/", frozenset({"bad_topic", "unknown_type"})
        payload = draw(st.sampled_from([b"{}", b'{"schema":"lantern.evt/2"}', b"\xff"]))
        return Hostile("bad_topic", topic, payload, codes)

    return build()


@st.composite
def _mutated(draw: st.DrawFn, base: st.SearchStrategy[Message], kinds: tuple[str, ...]) -> Hostile:
    message = draw(base)
    topic = topic_for(message)
    raw = encode(message)
    kind = draw(st.sampled_from(kinds))
    payload, codes, topic = _MUTATIONS[kind](draw, json.loads(raw), topic, raw)
    return Hostile(kind, topic, payload, codes)


def hostile_payloads(
    base: st.SearchStrategy[Message] = messages, *, topics: bool = True
) -> st.SearchStrategy[Hostile]:
    """Hostile payloads of every kind, from valid messages of ``base``."""
    mutated = _mutated(base, tuple(_MUTATIONS))
    if not topics:
        return mutated
    return st.one_of(mutated, mutated, mutated, mutated, bad_topics())


json_documents = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=12,
)
"""Arbitrary JSON-like values (with NaN, infinities and integers beyond 64 bits)."""
