"""Identifiers: time-ordered event ids (UUIDv7, RFC 9562) and boot ids.

An event id is made on the device when the event is captured and is the hub's
deduplication key together with the device id. UUIDv7 puts the Unix time in
milliseconds in the top 48 bits, so ids sort by creation time as strings and as
bytes, and database indexes on them stay append-mostly.

Within one millisecond, ids from one generator stay ordered through a 12-bit counter
in ``rand_a`` (RFC 9562 section 6.2, method 1), started at a random value below 2048
each new millisecond. If the counter runs out, or the clock steps backwards, the
generator keeps using its last millisecond plus one as needed, so ids from one
generator never go backwards. The low 62 bits are random from :mod:`secrets`.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

__all__ = [
    "UUID7_RE",
    "UUID_RE",
    "UUIDv7Generator",
    "new_boot_id",
    "new_event_id",
    "uuid7_time",
]

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""A UUID in its canonical form: lowercase, hyphenated (RFC 9562 section 4)."""

UUID7_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
"""A canonical UUID of version 7 with the RFC 9562 variant."""

_MS_MASK = (1 << 48) - 1
_COUNTER_MAX = 0xFFF
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class UUIDv7Generator:
    """Makes UUIDv7 strings that never go backwards, from a millisecond clock.

    Thread-safe. ``clock`` returns Unix time in milliseconds (injectable for tests).
    """

    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        self._clock = clock or (lambda: time.time_ns() // 1_000_000)
        self._lock = threading.Lock()
        self._last_ms = -1
        self._counter = 0

    def __call__(self) -> str:
        with self._lock:
            ms = self._clock()
            if ms > self._last_ms:
                self._last_ms = ms
                self._counter = secrets.randbits(11)
            else:
                self._counter += 1
                if self._counter > _COUNTER_MAX:
                    self._last_ms += 1
                    self._counter = secrets.randbits(11)
            ms, counter = self._last_ms, self._counter
        value = (
            (ms & _MS_MASK) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | secrets.randbits(62)
        )
        return str(uuid.UUID(int=value))


_default = UUIDv7Generator()


def new_event_id() -> str:
    """A new UUIDv7 string (lowercase, hyphenated), later than any made before by this
    process."""
    return _default()


def new_boot_id() -> str:
    """A new random boot id (UUIDv4), made once each time a device starts."""
    return str(uuid.uuid4())


def uuid7_time(value: str) -> datetime:
    """The creation time a UUIDv7 string carries (millisecond precision, UTC).

    Raises ``ValueError`` if ``value`` is not a canonical UUIDv7.
    """
    if not UUID7_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a canonical UUIDv7")
    ms = uuid.UUID(value).int >> 80
    return _EPOCH + timedelta(milliseconds=ms)
