"""Curfew schedules: weekly wall-clock windows in an IANA time zone, with exceptions.

Times are handled as POSIX seconds (UTC) so the engine never compares naive and aware
datetimes; windows are laid on the calendar in the rule's time zone, so a 21:00-07:00
curfew stays at 21:00 local time across daylight-saving changes.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hub.supervision.model import CurfewParams

__all__ = ["CurfewSchedule"]

Period = tuple[float, float]


class CurfewSchedule:
    """When a curfew applies. :meth:`period_at` gives the obligation period containing
    a time (window minus exceptions), or None."""

    def __init__(self, params: CurfewParams) -> None:
        self.tz = ZoneInfo(params.timezone)
        self.grace_s = params.grace_s
        self._windows = [
            (frozenset(w.days), time.fromisoformat(w.start), time.fromisoformat(w.end))
            for w in params.windows
        ]
        self._exceptions = sorted((a.timestamp(), b.timestamp()) for a, b in params.exceptions)
        # Memo of the last answer: valid for t in [lo, hi).
        self._memo: tuple[float, float, Period | None] = (0.0, -1.0, None)

    def _local(self, day: date, at: time) -> float:
        return datetime.combine(day, at, tzinfo=self.tz).timestamp()

    def _windows_near(self, t: float) -> list[Period]:
        """Raw windows (no exceptions) starting from the day before ``t`` to a week on."""
        today = datetime.fromtimestamp(t, self.tz).date()
        out = []
        for offset in range(-1, 8):
            day = today + timedelta(days=offset)
            for days, start, end in self._windows:
                if day.weekday() not in days:
                    continue
                s = self._local(day, start)
                e = self._local(day if end > start else day + timedelta(days=1), end)
                out.append((s, e))
        out.sort()
        return out

    def _compute(self, t: float) -> tuple[Period | None, float]:
        windows = self._windows_near(t)
        for s, e in windows:
            if not s <= t < e:
                continue
            for a, b in self._exceptions:
                if b <= s or a >= e:
                    continue
                if a <= t < b:
                    return None, b
                if b <= t:
                    s = max(s, b)
                elif a > t:
                    e = min(e, a)
            return (s, e), e
        later = [s for s, _ in windows if s > t]
        return None, (min(later) if later else t + 86_400.0)

    def period_at(self, t: float) -> Period | None:
        """The curfew period (start, end) in force at ``t`` (POSIX seconds), or None."""
        lo, hi, period = self._memo
        if lo <= t < hi:
            return period
        period, hi = self._compute(t)
        self._memo = (t, hi, period)
        return period

    def deadline(self, period: Period) -> float:
        """When a subject not yet home is late: the period start plus the grace."""
        return period[0] + self.grace_s
