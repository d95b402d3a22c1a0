"""Scripted supervision tracks: deterministic walks with seeded GNSS jitter, and the
zones and rules each scenario is judged against.

A track is a plain sequence of :class:`TrackPoint` (device, event id, capture time,
lat, lon, accuracy, replayed) in the order the hub receives them: points buffered
during an outage arrive after the first live point that follows it, flagged
``replayed``. Zones and rules are plain dictionaries in the hub's supervision contract
(GeoJSON geometries, rule parameters, ISO 8601 times), so this module needs nothing
from the hub.

Movement is planned in metres east/north of an origin (:class:`LocalFrame`), so the
same script works anywhere on Earth.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from devices.simulation.geo import LocalFrame

__all__ = [
    "SCENARIOS",
    "SupervisionScenario",
    "TrackBuilder",
    "TrackPoint",
    "boundary_jitter",
    "circle_zone",
    "clean_walk",
    "curfew_silent",
    "exclusion_entry",
    "expired_order",
    "impossible_jump",
    "inclusion_exit_and_return",
    "late_backfill",
    "order_ends_mid_violation",
    "proximity_breach",
    "square_zone",
]

ORIGIN = (52.3702, 4.8952)
"""Where the scenarios happen (any point works)."""
T0 = datetime(2025, 3, 3, 18, 0, tzinfo=UTC)
"""Scenario start: a Monday evening."""


@dataclass(frozen=True)
class TrackPoint:
    """One fix as a device reports it."""

    device_id: str
    event_id: str
    t: datetime
    lat: float
    lon: float
    acc: float
    replayed: bool = False


@dataclass
class TrackBuilder:
    """Scripts one device: walk, stay, go silent, lose the uplink, jump."""

    frame: LocalFrame
    device_id: str
    t: datetime = T0
    seed: int = 1
    acc_m: float = 8.0
    jitter_m: float = 3.0
    interval_s: float = 30.0
    east: float = 0.0
    north: float = 0.0
    points: list[TrackPoint] = field(default_factory=list)
    _held: list[TrackPoint] = field(default_factory=list)
    _offline: bool = False
    _n: int = 0
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(f"{self.device_id}:{self.seed}")

    def _emit(self, east: float | None = None, north: float | None = None) -> None:
        e = self.east if east is None else east
        n = self.north if north is None else north
        e += self._rng.gauss(0.0, self.jitter_m)
        n += self._rng.gauss(0.0, self.jitter_m)
        lat, lon = self.frame.to_latlon(e, n)
        self._n += 1
        point = TrackPoint(
            device_id=self.device_id,
            event_id=f"{self.device_id}-{self._n:05d}",
            t=self.t,
            lat=lat,
            lon=lon,
            acc=self.acc_m,
            replayed=self._offline,
        )
        (self._held if self._offline else self.points).append(point)

    def at(self, east: float, north: float) -> TrackBuilder:
        """Place the device (no fix)."""
        self.east, self.north = east, north
        return self

    def stay(self, duration_s: float) -> TrackBuilder:
        """Report from where the device is, every interval, for ``duration_s``."""
        end = self.t + timedelta(seconds=duration_s)
        while self.t < end:
            self._emit()
            self.t += timedelta(seconds=self.interval_s)
        return self

    def walk_to(self, east: float, north: float, speed_mps: float = 1.4) -> TrackBuilder:
        """Walk in a straight line, reporting every interval."""
        dist = math.hypot(east - self.east, north - self.north)
        steps = max(1, math.ceil(dist / (speed_mps * self.interval_s)))
        e0, n0 = self.east, self.north
        for i in range(1, steps + 1):
            self._emit()
            self.t += timedelta(seconds=self.interval_s)
            self.east = e0 + (east - e0) * i / steps
            self.north = n0 + (north - n0) * i / steps
        return self

    def silent(self, duration_s: float) -> TrackBuilder:
        """Say nothing for ``duration_s`` (device off, strap cut, no signal)."""
        self.t += timedelta(seconds=duration_s)
        return self

    def offline(self) -> TrackBuilder:
        """Lose the uplink: fixes are kept in the outbox."""
        self._offline = True
        return self

    def online(self) -> TrackBuilder:
        """Uplink back: one live fix, then the outbox, replayed."""
        self._offline = False
        self._emit()
        self.t += timedelta(seconds=self.interval_s)
        self.points.extend(self._held)
        self._held.clear()
        return self

    def jump(self, east: float, north: float) -> TrackBuilder:
        """One fix far away (a spoofed or broken fix), the device itself stays put."""
        self._emit(east, north)
        self.t += timedelta(seconds=self.interval_s)
        return self


@dataclass(frozen=True)
class SupervisionScenario:
    """Zones, rules, the fixes in arrival order, and the clock to run them with."""

    name: str
    zones: list[dict[str, Any]]
    rules: list[dict[str, Any]]
    points: list[TrackPoint]
    start: datetime
    end: datetime
    tick_s: float = 60.0


def _frame() -> LocalFrame:
    return LocalFrame(*ORIGIN)


def circle_zone(
    frame: LocalFrame, zone_id: str, kind: str, east: float, north: float, radius_m: float
) -> dict[str, Any]:
    lat, lon = frame.to_latlon(east, north)
    return {
        "id": zone_id,
        "name": zone_id.replace("-", " ").title(),
        "kind": kind,
        "geometry": {"type": "Point", "coordinates": [lon, lat]},
        "radius_m": radius_m,
    }


def square_zone(
    frame: LocalFrame, zone_id: str, kind: str, east: float, north: float, half_m: float
) -> dict[str, Any]:
    corners = [(-1, -1), (1, -1), (1, 1), (-1, 1), (-1, -1)]
    ring = []
    for de, dn in corners:
        lat, lon = frame.to_latlon(east + de * half_m, north + dn * half_m)
        ring.append([lon, lat])
    return {
        "id": zone_id,
        "name": zone_id.replace("-", " ").title(),
        "kind": kind,
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


def _rule(rule_id: str, params: dict[str, Any], **extra: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "id": rule_id,
        "subject_id": "subject-1",
        "device_id": "wearable-1",
        "params": params,
        "valid_from": (T0 - timedelta(days=30)).isoformat(),
    }
    rule.update(extra)
    return rule


def _end(points: list[TrackPoint], extra_s: float = 60.0) -> datetime:
    return max(p.t for p in points) + timedelta(seconds=extra_s)


def clean_walk() -> SupervisionScenario:
    """A walk well inside the county, far from the school, reporting regularly."""
    f = _frame()
    b = TrackBuilder(f, "wearable-1", seed=11)
    b.stay(300).walk_to(800, 0).walk_to(800, 800).walk_to(-600, 400).walk_to(0, 0).stay(300)
    zones = [
        square_zone(f, "county", "county", 0, 0, 3000),
        circle_zone(f, "school", "school", 2000, -1500, 150),
    ]
    rules = [
        _rule("stay-in-county", {"kind": "inclusion", "zone_ids": ["county"]}),
        _rule("keep-off-school", {"kind": "exclusion", "zone_ids": ["school"]}),
        _rule("report", {"kind": "silence", "max_silence_s": 600}),
    ]
    return SupervisionScenario("clean_walk", zones, rules, b.points, T0, _end(b.points))


def exclusion_entry() -> SupervisionScenario:
    """Walks into a victim's home zone and stays there."""
    f = _frame()
    b = TrackBuilder(f, "wearable-1", seed=12)
    b.stay(120).walk_to(600, 0).stay(300)
    zones = [circle_zone(f, "victim-home", "victim", 600, 0, 100)]
    rules = [_rule("keep-off-victim", {"kind": "exclusion", "zone_ids": ["victim-home"]})]
    return SupervisionScenario("exclusion_entry", zones, rules, b.points, T0, _end(b.points))


def inclusion_exit_and_return() -> SupervisionScenario:
    """Leaves the county for five minutes and comes back."""
    f = _frame()
    b = TrackBuilder(f, "wearable-1", seed=13)
    b.at(700, 0).stay(120).walk_to(1400, 0).stay(300).walk_to(700, 0).stay(120)
    zones = [square_zone(f, "county", "county", 0, 0, 1000)]
    rules = [_rule("stay-in-county", {"kind": "inclusion", "zone_ids": ["county"]})]
    return SupervisionScenario(
        "inclusion_exit_and_return", zones, rules, b.points, T0, _end(b.points)
    )


def curfew_silent() -> SupervisionScenario:
    """Curfew 21:00-06:00 Amsterdam time (20:00 UTC in March). The subject walks away
    at 18:45 UTC, the device goes silent at about 19:30 and is heard again, at home,
    at 21:00 UTC."""
    f = _frame()
    b = TrackBuilder(f, "wearable-1", seed=14, interval_s=60.0)
    b.stay(45 * 60).walk_to(2500, 0, speed_mps=1.0)
    b.silent((T0 + timedelta(hours=3) - b.t).total_seconds()).at(0, 0).stay(600)
    zones = [circle_zone(f, "home", "residence", 0, 0, 60)]
    params = {
        "kind": "curfew",
        "zone_id": "home",
        "timezone": "Europe/Amsterdam",
        "windows": [{"days": [0, 1, 2, 3, 4, 5, 6], "start": "21:00", "end": "06:00"}],
        "grace_s": 300,
    }
    rules = [_rule("curfew", params)]
    return SupervisionScenario("curfew_silent", zones, rules, b.points, T0, _end(b.points))


def proximity_breach() -> SupervisionScenario:
    """The subject walks up to the protected person (standing still) and away again."""
    f = _frame()
    victim = TrackBuilder(f, "victim-1", seed=15, interval_s=60.0, acc_m=10.0)
    victim.stay(45 * 60)
    subject = TrackBuilder(f, "wearable-1", seed=16, acc_m=10.0)
    subject.at(1500, 0).stay(60).walk_to(150, 0).stay(300).walk_to(1500, 0).stay(60)
    points = sorted(victim.points + subject.points, key=lambda p: (p.t, p.device_id))
    rules = [
        _rule(
            "keep-away",
            {"kind": "proximity", "other_device_id": "victim-1", "min_distance_m": 300},
        )
    ]
    return SupervisionScenario("proximity_breach", [], rules, points, T0, _end(points))


def boundary_jitter() -> SupervisionScenario:
    """A device at rest five metres outside an exclusion zone for an hour, fixes every
    15 s jittering by several metres across the edge."""
    f = _frame()
    b = TrackBuilder(f, "wearable-1", seed=17, interval_s=15.0, acc_m=8.0, jitter_m=6.0)
    b.at(105, 0).stay(3600)
    zones = [circle_zone(f, "school", "school", 0, 0, 100)]
    rules = [_rule("keep-off-school", {"kind": "exclusion", "zone_ids": ["school"]})]
    return SupervisionScenario("boundary_jitter", zones, rules, b.points, T0, _end(b.points))


def late_backfill() -> SupervisionScenario:
    """The uplink drops; meanwhile the subject visits the victim's home for five
    minutes and returns. The outbox arrives after the first live fix."""
    f = _frame()
    b = TrackBuilder(f, "wearable-1", seed=18)
    b.stay(300).offline().walk_to(500, 0).stay(300).walk_to(0, 0).stay(60).online().stay(120)
    zones = [circle_zone(f, "victim-home", "victim", 500, 0, 100)]
    rules = [_rule("keep-off-victim", {"kind": "exclusion", "zone_ids": ["victim-home"]})]
    return SupervisionScenario("late_backfill", zones, rules, b.points, T0, _end(b.points))


def impossible_jump() -> SupervisionScenario:
    """One fix 30 km away, inside an exclusion zone there, between ordinary fixes."""
    f = _frame()
    b = TrackBuilder(f, "wearable-1", seed=19)
    b.stay(150).jump(30_000, 0).stay(150)
    zones = [circle_zone(f, "far-school", "school", 30_000, 0, 500)]
    rules = [
        _rule(
            "keep-off-far-school",
            {"kind": "exclusion", "zone_ids": ["far-school"]},
            confirm_n=1,
            confirm_m=1,
            dwell_s=0,
        )
    ]
    return SupervisionScenario("impossible_jump", zones, rules, b.points, T0, _end(b.points))


def expired_order() -> SupervisionScenario:
    """The order ended yesterday; the (former) subject walks into the zone."""
    f = _frame()
    b = TrackBuilder(f, "wearable-1", seed=20)
    b.stay(60).walk_to(600, 0).stay(300)
    zones = [circle_zone(f, "victim-home", "victim", 600, 0, 100)]
    rules = [
        _rule(
            "keep-off-victim",
            {"kind": "exclusion", "zone_ids": ["victim-home"]},
            valid_until=(T0 - timedelta(days=1)).isoformat(),
        ),
        _rule(
            "report",
            {"kind": "silence", "max_silence_s": 60},
            valid_until=(T0 - timedelta(days=1)).isoformat(),
        ),
    ]
    return SupervisionScenario("expired_order", zones, rules, b.points, T0, _end(b.points))


def order_ends_mid_violation() -> SupervisionScenario:
    """The subject is inside the exclusion zone when the order ends at 18:20 UTC."""
    f = _frame()
    b = TrackBuilder(f, "wearable-1", seed=21)
    b.at(600, 0).stay(40 * 60)
    zones = [circle_zone(f, "victim-home", "victim", 600, 0, 100)]
    rules = [
        _rule(
            "keep-off-victim",
            {"kind": "exclusion", "zone_ids": ["victim-home"]},
            valid_until=(T0 + timedelta(minutes=20)).isoformat(),
        )
    ]
    return SupervisionScenario(
        "order_ends_mid_violation", zones, rules, b.points, T0, _end(b.points)
    )


SCENARIOS: dict[str, Callable[[], SupervisionScenario]] = {
    s.__name__: s
    for s in (
        clean_walk,
        exclusion_entry,
        inclusion_exit_and_return,
        curfew_silent,
        proximity_breach,
        boundary_jitter,
        late_backfill,
        impossible_jump,
        expired_order,
        order_ends_mid_violation,
    )
}
"""Every scripted scenario by name."""
