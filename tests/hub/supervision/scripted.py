"""Run a scripted scenario (devices.simulation.tracks) through the engine."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from devices.simulation.tracks import SupervisionScenario, TrackPoint
from hub.supervision.engine import SupervisionEngine
from hub.supervision.model import AlertTransition, Fix, Rule, RuleState, Zone


def to_fix(p: TrackPoint) -> Fix:
    return Fix(
        device_id=p.device_id,
        event_id=p.event_id,
        captured_at=p.t,
        lat=p.lat,
        lon=p.lon,
        acc=p.acc,
        replayed=p.replayed,
    )


def build(sc: SupervisionScenario, states: Iterable[RuleState] = ()) -> SupervisionEngine:
    zones = {z["id"]: Zone.model_validate(z) for z in sc.zones}
    rules = [Rule.model_validate(r) for r in sc.rules]
    return SupervisionEngine(zones, rules, states)


def events(sc: SupervisionScenario) -> list[tuple[datetime, int, TrackPoint | None]]:
    """Fixes in arrival order interleaved with clock ticks; a replayed fix arrives
    right after the live fix that precedes it in arrival order."""
    out: list[tuple[datetime, int, TrackPoint | None]] = []
    arrival = sc.start
    for i, p in enumerate(sc.points):
        arrival = max(arrival, p.t)
        out.append((arrival, i, p))
    t = sc.start
    while t <= sc.end:
        out.append((t, -1, None))
        t += timedelta(seconds=sc.tick_s)
    out.sort(key=lambda e: (e[0], e[1] < 0, e[1]))
    return out


def run(
    engine: SupervisionEngine, items: list[tuple[datetime, int, TrackPoint | None]]
) -> list[AlertTransition]:
    out: list[AlertTransition] = []
    for when, _, point in items:
        out.extend(engine.tick(when) if point is None else engine.on_fix(to_fix(point)))
    return out


def brief(transitions: list[AlertTransition]) -> list[tuple[str, str, str, bool]]:
    """(action, type, at HH:MM:SS, retrospective) per transition."""
    return [(t.action, t.type, t.at.strftime("%H:%M:%S"), t.retrospective) for t in transitions]
