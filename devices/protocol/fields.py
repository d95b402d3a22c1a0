"""Field types shared by the message models: ids, timestamps, hashes.

Each type validates on its own and says what it expects in its error message, so a
quarantined payload's reason reads ``captured_at: timestamp needs a timezone``
rather than a regular expression.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, TypedDict

from pydantic import AfterValidator, BeforeValidator, PlainSerializer, WithJsonSchema
from pydantic_core import PydanticCustomError

from devices.protocol.embedding import MODEL_ID_RE, EmbeddingDims
from devices.protocol.ids import UUID7_RE, UUID_RE
from devices.protocol.topics import DEVICE_ID_RE

__all__ = [
    "EARLIEST_TIMESTAMP",
    "MAX_CLOCK_SKEW",
    "AlarmId",
    "BootId",
    "DeviceIdStr",
    "EventId",
    "FirmwareVersion",
    "KeyId",
    "ModelId",
    "Sha256Hex",
    "SignatureB64",
    "Timestamp",
    "ValidationContext",
    "format_timestamp",
    "parse_timestamp",
]

EARLIEST_TIMESTAMP = datetime(2020, 1, 1, tzinfo=UTC)
"""Timestamps before this are a clock that was never set (a device booting at 1970
or at its firmware's build date), refused as ``bad_clock``."""

MAX_CLOCK_SKEW = timedelta(minutes=5)
"""How far ahead of the receiver's clock a device's timestamp may be."""


class ValidationContext(TypedDict, total=False):
    """What :func:`devices.protocol.decode` passes to validation as pydantic context."""

    now: datetime
    """The receiver's clock, for the future bound of device timestamps."""
    dims: EmbeddingDims
    """The model_id -> dimension table for sighting embeddings."""


def _matches(regex: re.Pattern[str], what: str, example: str) -> AfterValidator:
    """A validator that the whole string matches ``regex``, saying ``what`` it wants."""

    def check(value: str) -> str:
        if not regex.fullmatch(value):
            shown = value if len(value) <= 40 else value[:37] + "..."
            raise PydanticCustomError(
                "pattern",
                "'{shown}' is not {what} (e.g. {example})",
                {"shown": shown, "what": what, "example": example},
            )
        return value

    return AfterValidator(check)


def _pattern_schema(regex: re.Pattern[str]) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "pattern": f"^{regex.pattern}$"})


_KEY_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_ALARM_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_SIGNATURE_RE = re.compile(r"[A-Za-z0-9+/]{85}[AQgw]==")
_FIRMWARE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")

DeviceIdStr = Annotated[
    str, _matches(DEVICE_ID_RE, "a device id", "cam-gate-02"), _pattern_schema(DEVICE_ID_RE)
]
EventId = Annotated[
    str,
    _matches(UUID7_RE, "a lowercase UUIDv7", "0190a6f2-8c4e-7b1a-9c3d-2e4f6a8b0c1d"),
    _pattern_schema(UUID7_RE),
]
BootId = Annotated[
    str,
    _matches(UUID_RE, "a lowercase UUID", "6f1c2d3e-4a5b-4c6d-8e7f-901a2b3c4d5e"),
    _pattern_schema(UUID_RE),
]
ModelId = Annotated[
    str, _matches(MODEL_ID_RE, "a model id", "dlib-resnet-v1"), _pattern_schema(MODEL_ID_RE)
]
KeyId = Annotated[str, _matches(_KEY_ID_RE, "a key id", "wb-0042-k1"), _pattern_schema(_KEY_ID_RE)]
AlarmId = Annotated[
    str, _matches(_ALARM_ID_RE, "an alarm id", "sos-17"), _pattern_schema(_ALARM_ID_RE)
]
Sha256Hex = Annotated[
    str,
    _matches(_SHA256_RE, "a lowercase hex SHA-256", "64 hex digits"),
    _pattern_schema(_SHA256_RE),
]
SignatureB64 = Annotated[
    str,
    _matches(_SIGNATURE_RE, "a base64 Ed25519 signature", "88 characters ending in =="),
    _pattern_schema(_SIGNATURE_RE),
]
FirmwareVersion = Annotated[
    str, _matches(_FIRMWARE_RE, "a firmware version", "1.4.2"), _pattern_schema(_FIRMWARE_RE)
]

_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})"
)


def parse_timestamp(value: object) -> datetime:
    """An RFC 3339 timestamp with a timezone (or an aware datetime), as UTC.

    Accepts ``2024-05-01T12:00:00Z``, ``2024-05-01T14:00:00.250+02:00``; fractions
    beyond microseconds are cut. Refuses naive times, numbers (Unix seconds are
    ambiguous: s or ms?), a lowercase ``t``/``z`` or a space separator, leap seconds.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise PydanticCustomError("timestamp", "timestamp needs a timezone")
        return value.astimezone(UTC)
    if not isinstance(value, str):
        raise PydanticCustomError(
            "timestamp",
            "timestamp must be an RFC 3339 string such as 2024-05-01T12:00:00Z, not {kind}",
            {"kind": type(value).__name__},
        )
    match = _RFC3339_RE.fullmatch(value)
    if match is None:
        shown = value if len(value) <= 40 else value[:37] + "..."
        if re.fullmatch(r"[\d\-]+T[\d:.]+", value):
            raise PydanticCustomError(
                "timestamp", "timestamp needs a timezone: '{shown}'", {"shown": shown}
            )
        raise PydanticCustomError(
            "timestamp",
            "'{shown}' is not an RFC 3339 timestamp such as 2024-05-01T12:00:00Z",
            {"shown": shown},
        )
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    tz = UTC
    if offset != "Z":
        sign = -1 if offset[0] == "-" else 1
        off_h, off_m = int(offset[1:3]), int(offset[4:6])
        if off_h > 23 or off_m > 59:
            raise PydanticCustomError(
                "timestamp", "bad timezone offset {offset}", {"offset": offset}
            )
        tz = timezone(sign * timedelta(hours=off_h, minutes=off_m))
    micro = int((fraction or "").ljust(6, "0")[:6])
    try:
        parsed = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=tz
        )
    except ValueError as exc:
        raise PydanticCustomError(
            "timestamp",
            "'{value}' is not a real date and time ({error})",
            {"value": value, "error": str(exc)},
        ) from None
    return parsed.astimezone(UTC)


def format_timestamp(value: datetime) -> str:
    """RFC 3339 in UTC with ``Z``: seconds, plus six fraction digits when not whole."""
    utc = value.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}"
    return text + "Z"


def _not_before_2020(value: datetime) -> datetime:
    if value < EARLIEST_TIMESTAMP:
        raise PydanticCustomError(
            "bad_clock",
            "{value} is before 2020: the clock was not set",
            {"value": format_timestamp(value)},
        )
    return value


Timestamp = Annotated[
    datetime,
    BeforeValidator(parse_timestamp),
    AfterValidator(_not_before_2020),
    PlainSerializer(format_timestamp, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""A timezone-aware instant, held in UTC, written as RFC 3339 with ``Z``."""
