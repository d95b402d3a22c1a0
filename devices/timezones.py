"""Time zone names: one check for every loader and model that takes an IANA name."""

from __future__ import annotations

import functools
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

__all__ = ["is_time_zone"]


@functools.cache
def _time_zone_names() -> frozenset[str]:
    """The IANA names this machine's time zone database knows (read once: a scan of
    the database takes tens of milliseconds)."""
    return frozenset(available_timezones())


def is_time_zone(name: str) -> bool:
    """Whether ``name`` is a time zone ZoneInfo can load. Checked against the known
    names first: ZoneInfo takes the name as a file path, so an odd one can raise
    OSError (a name longer than the file system allows) rather than its own error."""
    if name != "UTC" and name not in _time_zone_names():
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True
