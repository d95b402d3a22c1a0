"""Bytes in, typed messages out (and back): ``encode``, ``decode``, ``signing_bytes``.

``decode`` checks, in this order, and stops at the first failure:

1. the topic (``bad_topic``, ``unknown_type``);
2. the payload size against the cap of its kind, before any parsing (``too_large``);
3. JSON: UTF-8, nesting depth at most :data:`MAX_DEPTH` (checked before parsing, so
   a deep payload cannot exhaust the parser's recursion), no duplicate keys, no
   NaN/Infinity, no number that overflows a double or has more than 19 digits, no
   lone surrogates, a JSON object at the top (``bad_json``);
4. ``schema``: a version of the topic's kind that is accepted (``unknown_schema``,
   ``schema_mismatch``);
5. ``device_id`` equals the topic's device (``device_mismatch``), before the rest so
   a payload claiming another device is reported as such whatever else is wrong;
6. the previous version is upgraded to the current one (see :func:`upgrade_evt_v1`,
   :func:`~devices.protocol.messages.upgrade_state_v1`);
7. the model (``invalid``, or ``bad_clock`` for timestamps).

No other exception leaves ``decode`` for any payload: pydantic's and json's are
turned into :class:`~devices.protocol.errors.ProtocolError`.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from devices.protocol.canonical import canonical_json
from devices.protocol.embedding import DEFAULT_EMBEDDING_DIMS, MAX_EMBEDDING_DIM, EmbeddingDims
from devices.protocol.errors import ProtocolError
from devices.protocol.fields import ValidationContext
from devices.protocol.messages import (
    CURRENT_SCHEMAS,
    EVT_SCHEMA,
    EVT_SCHEMA_V1,
    STATE_SCHEMA_V1,
    Envelope,
    EventEnvelope,
    Message,
    accepted_schemas,
    message_class,
    topic_for,
    upgrade_state_v1,
)
from devices.protocol.topics import TopicInfo, max_payload_bytes, parse_topic

__all__ = [
    "MAX_DEPTH",
    "SIGNATURE_CONTEXT",
    "UNSIGNED_FIELDS",
    "DecodedMessage",
    "decode",
    "encode",
    "loads_object",
    "signing_bytes",
    "upgrade_evt_v1",
]

MAX_DEPTH = 32
"""Deepest nesting of arrays and objects a payload may have."""

_MAX_INT_DIGITS = 19
_SCHEMA_RE = re.compile(r"lantern\.([a-z]+)/(\d{1,6})")
_TOKEN_RE = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')

SIGNATURE_CONTEXT = b"lantern-sig/1\n"
"""Prefix of the signed bytes, so a Lantern device key signs nothing else usefully."""

UNSIGNED_FIELDS = frozenset({"sig", "sent_at", "replayed"})
"""Envelope fields left out of the signed bytes: the signature itself, and the two
transport fields the outbox changes when it resends."""


@dataclass(frozen=True)
class DecodedMessage:
    """A payload that passed every check."""

    topic: TopicInfo
    """Where it came from."""
    message: Message
    """The validated message, in the current schema version."""
    schema: str
    """The schema version as received (the previous one if it was upgraded)."""
    upgraded_from: str | None
    """The older version it was upgraded from, or None."""
    received_at: datetime
    """The receiver's clock when it was decoded (the hub's ``received_at``)."""
    size: int
    """Payload size in bytes."""


class _JsonRefused(Exception):
    """Raised inside the json hooks; turned into ``bad_json``."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _JsonRefused(f"duplicate key {key[:40]!r}")
        result[key] = value
    return result


def _constant(name: str) -> Any:
    raise _JsonRefused(f"{name} is not JSON")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _JsonRefused(f"number {text[:40]} is out of range")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise _JsonRefused(f"integer of {len(text)} digits is too large")
    return int(text)


def _check_depth(text: str) -> None:
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return
    depth = 0
    for match in _TOKEN_RE.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > MAX_DEPTH:
                raise ProtocolError("bad_json", f"nesting deeper than {MAX_DEPTH}")
        elif token in ("]", "}"):
            depth -= 1


def _check_strings(value: Any) -> None:
    """Refuse lone surrogates (``"\\ud800"``), which no UTF-8 text can hold."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise ProtocolError("bad_json", "string holds a lone surrogate") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def loads_object(payload: bytes) -> dict[str, Any]:
    """Parse a payload as a JSON object with the protections listed in the module
    docstring. Every failure is a ``ProtocolError("bad_json")``."""
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError("bad_json", f"not UTF-8 (byte {exc.start})") from None
    _check_depth(text)
    try:
        value = json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_constant=_constant,
            parse_float=_float,
            parse_int=_int,
        )
    except _JsonRefused as exc:
        raise ProtocolError("bad_json", str(exc)) from None
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            "bad_json", f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad_json", f"unreadable JSON ({type(exc).__name__})") from None
    if not isinstance(value, dict):
        raise ProtocolError("bad_json", f"top level is {_json_type(value)}, not an object")
    _check_strings(value)
    return value


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"


def upgrade_evt_v1(data: Mapping[str, Any], event_type: str) -> dict[str, Any]:
    """Turn a ``lantern.evt/1`` event into ``lantern.evt/2``, as the decoder does.

    Version 1 was written by the first firmware, which sent live only and did not
    sign. It differs from version 2 in three ways:

    * no ``replayed`` field: v1 firmware had no outbox, so every v1 event was sent
      live and the upgrade sets ``replayed = false``, which is true of all of them;
    * no ``sig``/``kid``: v1 was never signed (a v1 payload carrying them is refused);
    * a sighting's ``embedding`` was a JSON array of numbers; v2 carries base64 of
      little-endian float32 (a third of the size, and exact). The upgrade packs the
      array as float32; the norm check then applies as to any v2 sighting.

    Everything else is the same. Only shapes the upgrade changes are checked here;
    the v2 model checks the rest. Raises ``ProtocolError("invalid")``.
    """
    for key in ("replayed", "sig", "kid"):
        if key in data:
            raise ProtocolError("invalid", f"{key} is not a field of {EVT_SCHEMA_V1}", field=key)
    upgraded = dict(data)
    upgraded["schema"] = EVT_SCHEMA
    upgraded["replayed"] = False
    body = upgraded.get("body")
    if event_type == "sighting" and isinstance(body, dict) and "embedding" in body:
        values = body["embedding"]
        if (
            not isinstance(values, list)
            or not 1 <= len(values) <= MAX_EMBEDDING_DIM
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        ):
            raise ProtocolError(
                "invalid",
                f"body.embedding of {EVT_SCHEMA_V1} must be an array of 1..{MAX_EMBEDDING_DIM} "
                "numbers",
                field="body.embedding",
            )
        with np.errstate(over="ignore"):
            vector = np.asarray(values, dtype=np.float64).astype("<f4")
        if not np.isfinite(vector).all():
            raise ProtocolError(
                "invalid", "body.embedding has values beyond float32", field="body.embedding"
            )
        upgraded["body"] = {**body, "embedding": base64.b64encode(vector.tobytes()).decode("ascii")}
    return upgraded


_UPGRADES: dict[str, Callable[[Mapping[str, Any], str], dict[str, Any]]] = {
    EVT_SCHEMA_V1: upgrade_evt_v1,
    STATE_SCHEMA_V1: upgrade_state_v1,
}


def _dump(message: Envelope) -> dict[str, Any]:
    return message.model_dump(mode="json", by_alias=True, exclude_none=True)


def encode(message: Message) -> bytes:
    """The canonical bytes of ``message`` (see :mod:`devices.protocol.canonical`),
    ready to publish on :func:`topic_for` ``(message)``.

    Optional fields that are None are left out. Raises ``ProtocolError("too_large")``
    if the result is over its kind's cap, so the sender learns before the hub refuses.
    """
    data = canonical_json(_dump(message))
    limit = max_payload_bytes(message.KIND, message.NAME)
    if len(data) > limit:
        raise ProtocolError(
            "too_large", f"{topic_for(message)} payload of {len(data)} bytes is over {limit}"
        )
    return data


def signing_bytes(envelope: EventEnvelope) -> bytes:
    """The exact bytes an event's Ed25519 signature is over::

        b"lantern-sig/1\\n" + topic + b"\\n" + canonical_json(envelope without
        sig, sent_at, replayed)

    ``topic`` is ``lantern/v1/{device_id}/evt/{type}`` (ASCII). It is included because
    the body's type is given by the topic, not by a field: signing it stops a signed
    body being replayed as another event type. ``kid`` is signed, so a signature
    cannot be relabelled with another key id. ``sent_at`` and ``replayed`` are left
    out so the outbox can resend a signed event without the private key.
    """
    if not isinstance(envelope, EventEnvelope):
        raise TypeError(f"only events are signed, not {type(envelope).__name__}")
    data = _dump(envelope)
    for name in UNSIGNED_FIELDS:
        data.pop(name, None)
    topic = topic_for(envelope).encode("ascii")
    return SIGNATURE_CONTEXT + topic + b"\n" + canonical_json(data)


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(error: ErrorDetails) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    message = error["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        message = "unknown field"
        if loc == "received_at":
            message = "received_at is stamped by the hub; a device must not send it"
    elif kind == "missing":
        message = "required field missing"
    elif kind not in _OWN_MESSAGES and not isinstance(error.get("input"), dict | list):
        message = f"{message} (got {_short(error.get('input'))})"
    return f"{loc}: {message}" if loc else message


_OWN_MESSAGES = frozenset({"bad_clock", "value_error", "timestamp", "pattern"})
_MAX_LISTED = 3


def _from_validation_error(exc: ValidationError) -> ProtocolError:
    """One ProtocolError for a pydantic error: ``bad_clock`` if any error is a clock
    error (listed first), else ``invalid``; up to three errors in the reason."""
    errors = exc.errors(include_url=False)
    if not errors:
        return ProtocolError("invalid", "does not validate")
    clock = [e for e in errors if e["type"] == "bad_clock"]
    ordered = clock + [e for e in errors if e["type"] != "bad_clock"]
    reason = "; ".join(_describe(e) for e in ordered[:_MAX_LISTED])
    if len(ordered) > _MAX_LISTED:
        reason += f" (and {len(ordered) - _MAX_LISTED} more)"
    field = ".".join(str(part) for part in ordered[0]["loc"]) or None
    return ProtocolError("bad_clock" if clock else "invalid", reason, field=field)


def decode(
    topic: str,
    payload: bytes,
    *,
    now: datetime | None = None,
    dims: EmbeddingDims | None = None,
) -> DecodedMessage:
    """Validate a payload received on ``topic`` and return it typed.

    ``now`` is the receiver's clock (default: the current time, UTC; must be
    timezone-aware); device timestamps may be at most five minutes ahead of it.
    ``dims`` is the model_id -> dimension table for sightings (default: the built-in
    :data:`~devices.protocol.embedding.EMBEDDING_DIMS`). Every refusal raises
    :class:`ProtocolError`; see the module docstring for the checks and their order.
    """
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    info = parse_topic(topic)
    cls = message_class(info.kind, info.name)
    size = len(payload)
    limit = max_payload_bytes(info.kind, info.name)
    if size > limit:
        what = info.kind if info.name is None else f"{info.kind}/{info.name}"
        raise ProtocolError("too_large", f"payload of {size} bytes is over {limit} for {what}")
    data = loads_object(payload)

    schema = data.get("schema")
    accepted = accepted_schemas(info.kind)
    if schema not in accepted:
        if not isinstance(schema, str):
            reason = (
                "schema missing" if schema is None else f"schema {_short(schema)} is not a string"
            )
            raise ProtocolError("unknown_schema", f"{reason}; accepted: {', '.join(accepted)}")
        match = _SCHEMA_RE.fullmatch(schema)
        if match is not None and match.group(1) != info.kind and match.group(1) in CURRENT_SCHEMAS:
            raise ProtocolError(
                "schema_mismatch", f"schema {schema!r} on the {info.kind} topic", field="schema"
            )
        raise ProtocolError(
            "unknown_schema",
            f"schema {_short(schema)} not supported; accepted: {', '.join(accepted)}",
            field="schema",
        )

    claimed = data.get("device_id")
    if isinstance(claimed, str) and claimed != info.device_id:
        raise ProtocolError(
            "device_mismatch",
            f"device_id {_short(claimed)} on the topic of {info.device_id!r}",
            field="device_id",
        )

    upgraded_from: str | None = None
    upgrade = _UPGRADES.get(schema) if schema != CURRENT_SCHEMAS[info.kind] else None
    if upgrade is not None:
        data = upgrade(data, info.name or "")
        upgraded_from = schema

    context: ValidationContext = {"now": now, "dims": dims or DEFAULT_EMBEDDING_DIMS}
    try:
        message = cls.model_validate(data, context=dict(context))
    except ValidationError as exc:
        raise _from_validation_error(exc) from None
    return DecodedMessage(
        topic=info,
        message=message,
        schema=schema,
        upgraded_from=upgraded_from,
        received_at=now.astimezone(UTC),
        size=size,
    )
