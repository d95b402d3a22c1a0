"""Where a simulated wearer truly is: plans of straight segments in a site's local frame.

A plan is an endless iterator of :class:`Segment` in time order, each a straight walk
or a stay (start and end equal), with times in seconds after the simulation start.
:class:`Motion` reads a plan forwards and answers "where at time t". Plans are lazy,
so a device that runs for a week holds one segment at a time, not a week of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from devices.simulation.geo import XY
from devices.simulation.site import Track

__all__ = ["Motion", "Segment", "Truth", "curfew_plan", "lap_seconds", "stay_plan", "track_plan"]


@dataclass(frozen=True, slots=True)
class Segment:
    """A straight walk from (x0, y0) at t0 to (x1, y1) at t1, or a stay if they are equal."""

    t0: float
    t1: float
    x0: float
    y0: float
    x1: float
    y1: float

    def at(self, t: float) -> XY:
        """The position at time ``t`` (clamped to the segment)."""
        if self.t1 <= self.t0 or math.isinf(self.t1):
            return self.x0, self.y0
        f = min(1.0, max(0.0, (t - self.t0) / (self.t1 - self.t0)))
        return self.x0 + f * (self.x1 - self.x0), self.y0 + f * (self.y1 - self.y0)

    def cut(self, t: float) -> Segment:
        """The part of this segment before ``t``."""
        x, y = self.at(t)
        return Segment(self.t0, t, self.x0, self.y0, x, y)


@dataclass(frozen=True, slots=True)
class Truth:
    """The true state at one instant: local position, speed (m/s) and course
    (degrees from north; None when standing)."""

    x: float
    y: float
    speed: float
    course: float | None


def _lap(track: Track, mode: str) -> list[tuple[int, float]]:
    """One round of a track as (vertex arrived at, seconds dwelt there)."""
    n = len(track.points)
    dwell = track.dwell
    if mode == "pingpong":
        order = [*range(1, n), *range(n - 2, -1, -1)]
        return [(i, dwell.get(i, 0.0)) for i in order]
    if track.closed:
        stops = [(i, dwell.get(i, 0.0)) for i in range(1, n)]
        last, wait = stops[-1]
        stops[-1] = (last, wait + dwell.get(0, 0.0))
        return stops
    return [*((i, dwell.get(i, 0.0)) for i in range(1, n)), (0, dwell.get(0, 0.0))]


def lap_seconds(track: Track, mode: str, speed: float) -> float:
    """How long one round of ``track`` takes at ``speed`` m/s, dwells included."""
    total = 0.0
    current = 0
    for vertex, wait in _lap(track, mode):
        (ax, ay), (bx, by) = track.points[current], track.points[vertex]
        total += math.hypot(bx - ax, by - ay) / speed + wait
        current = vertex
    return total


def track_plan(track: Track, mode: str, speed: float, t0: float) -> Iterator[Segment]:
    """Walk ``track`` round after round from its first position at ``t0``."""
    lap = _lap(track, mode)
    if lap_seconds(track, mode, speed) <= 0:
        x, y = track.points[0]
        yield Segment(t0, math.inf, x, y, x, y)
        return
    t = t0
    current = 0
    while True:
        for vertex, wait in lap:
            (ax, ay), (bx, by) = track.points[current], track.points[vertex]
            walk = math.hypot(bx - ax, by - ay) / speed
            if walk > 0:
                yield Segment(t, t + walk, ax, ay, bx, by)
                t += walk
            if wait > 0:
                yield Segment(t, t + wait, bx, by, bx, by)
                t += wait
            current = vertex


def stay_plan(x: float, y: float, t0: float) -> Iterator[Segment]:
    """Stand at (x, y) from ``t0`` on."""
    yield Segment(t0, math.inf, x, y, x, y)


def _walk(a: XY, b: XY, t: float, speed: float) -> Segment:
    return Segment(t, t + math.hypot(b[0] - a[0], b[1] - a[1]) / speed, a[0], a[1], b[0], b[1])


def curfew_plan(
    away: Callable[[float, bool], Iterator[Segment]],
    away_start: XY,
    home: XY,
    windows: Iterator[tuple[float, float]],
    late_by_s: float,
    speed: float,
    t0: float,
) -> Iterator[Segment]:
    """Follow ``away`` until ``late_by_s`` after each curfew window starts, walk home,
    stay there until the window ends, walk back to ``away_start`` and start again.

    ``away(t, first)`` makes the away plan from time ``t``; ``first`` is true for the
    first night only (so it may start part-way round). ``windows`` are (start, end)
    in simulation seconds, earliest first, each ending after ``t0``.
    """
    t = t0
    first = True
    for start_s, end_s in windows:
        go_home = max(start_s + late_by_s, t)
        if go_home >= end_s:
            continue
        where: XY = away_start
        for segment in away(t, first):
            if segment.t1 <= go_home:
                yield segment
                continue
            if segment.t0 < go_home:
                yield segment.cut(go_home)
            where = segment.at(go_home)
            break
        first = False
        walk_home = _walk(where, home, go_home, speed)
        yield walk_home
        leave = max(end_s, walk_home.t1)
        yield Segment(walk_home.t1, leave, home[0], home[1], home[0], home[1])
        walk_back = _walk(home, away_start, leave, speed)
        yield walk_back
        t = walk_back.t1


class Motion:
    """Reads a plan forwards: :meth:`at` must be asked at non-decreasing times."""

    __slots__ = ("_plan", "_segment")

    def __init__(self, plan: Iterator[Segment], t0: float = 0.0) -> None:
        self._plan = plan
        self._segment = next(plan)
        self._advance(t0)

    def _advance(self, t: float) -> None:
        while t >= self._segment.t1:
            following = next(self._plan, None)
            if following is None:
                break
            self._segment = following

    def at(self, t: float) -> Truth:
        """The true state at ``t`` seconds."""
        self._advance(t)
        s = self._segment
        x, y = s.at(t)
        dx, dy = s.x1 - s.x0, s.y1 - s.y0
        duration = s.t1 - s.t0
        if duration <= 0 or math.isinf(duration) or (dx == 0 and dy == 0):
            return Truth(x, y, 0.0, None)
        speed = math.hypot(dx, dy) / duration
        course = math.degrees(math.atan2(dx, dy)) % 360.0
        return Truth(x, y, speed, course)
