"""Engine unit behaviour: confirmation, dwell on the clock, silence, curfew schedules,
proximity staleness, state contents."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from devices.simulation.geo import LocalFrame
from hub.supervision.engine import SupervisionEngine
from hub.supervision.model import CurfewParams, Fix, Rule, Zone
from hub.supervision.schedule import CurfewSchedule

FRAME = LocalFrame(52.0, 5.0)
T0 = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)


def _fix(i: int, east: float, north: float = 0.0, acc: float = 5.0, device: str = "d1") -> Fix:
    lat, lon = FRAME.to_latlon(east, north)
    return Fix(
        device_id=device,
        event_id=f"{device}-{i}",
        captured_at=T0 + timedelta(seconds=10 * i),
        lat=lat,
        lon=lon,
        acc=acc,
    )


def _rule(params: dict[str, Any], **extra: Any) -> Rule:
    return Rule.model_validate(
        {
            "id": "r1",
            "subject_id": "s1",
            "device_id": "d1",
            "params": params,
            "valid_from": (T0 - timedelta(days=1)).isoformat(),
            **extra,
        }
    )


def _circle(radius: float = 100.0) -> Zone:
    lat, lon = FRAME.to_latlon(0, 0)
    return Zone(
        id="z",
        name="Z",
        kind="victim",
        geometry={"type": "Point", "coordinates": [lon, lat]},
        radius_m=radius,
    )


def test_one_confident_fix_is_not_enough_and_dwell_completes_on_the_clock() -> None:
    rule = _rule({"kind": "exclusion", "zone_ids": ["z"]}, confirm_n=2, confirm_m=3, dwell_s=60)
    engine = SupervisionEngine({"z": _circle()}, [rule])
    assert engine.on_fix(_fix(0, 300)) == []
    assert engine.on_fix(_fix(1, 0)) == []  # one inside: not confirmed
    assert engine.on_fix(_fix(2, 95, acc=30)) == []  # uncertain
    assert engine.on_fix(_fix(3, 0)) == []  # 2 of the last 3, but dwell not reached
    assert engine.tick(T0 + timedelta(seconds=60)) == []
    out = engine.tick(T0 + timedelta(seconds=80))
    assert [(t.action, t.at) for t in out] == [("raise", T0 + timedelta(seconds=10))]
    assert engine.tick(T0 + timedelta(seconds=90)) == []


def test_uncertain_fixes_change_nothing() -> None:
    rule = _rule({"kind": "exclusion", "zone_ids": ["z"]}, dwell_s=0)
    engine = SupervisionEngine({"z": _circle()}, [rule])
    # Centre 95 m away with 30 m accuracy: the disc straddles the edge.
    assert [tr for i in range(30) for tr in engine.on_fix(_fix(i, 95, acc=30))] == []


def test_hysteresis_uses_the_exit_margin_once_inside() -> None:
    rule = _rule(
        {"kind": "inclusion", "zone_ids": ["z"]},
        confirm_n=1,
        confirm_m=1,
        dwell_s=0,
        enter_margin_m=5,
        exit_margin_m=40,
    )
    engine = SupervisionEngine({"z": _circle()}, [rule])
    assert engine.on_fix(_fix(0, 0)) == []
    # 20 m outside with 5 m accuracy: outside by the enter margin, not by the exit one.
    assert engine.on_fix(_fix(1, 120)) == []
    out = engine.on_fix(_fix(2, 150))
    assert [t.action for t in out] == ["raise"]


def test_silence_raises_on_the_clock_and_clears_on_a_fix() -> None:
    engine = SupervisionEngine({}, [_rule({"kind": "silence", "max_silence_s": 600})])
    engine.on_fix(_fix(0, 0))
    assert engine.tick(T0 + timedelta(seconds=600)) == []
    out = engine.tick(T0 + timedelta(seconds=660))
    assert [(t.action, t.type, t.at) for t in out] == [
        ("raise", "silence", T0 + timedelta(seconds=600))
    ]
    assert engine.tick(T0 + timedelta(seconds=900)) == []
    out = engine.on_fix(_fix(100, 0))
    assert [(t.action, t.key) for t in out] == [
        ("clear", "r1:silence:" + (T0 + timedelta(seconds=600)).isoformat())
    ]


def test_curfew_schedule_local_time_exceptions_and_dst() -> None:
    params = CurfewParams(
        zone_id="z",
        timezone="Europe/London",
        windows=[{"days": [5], "start": "22:00", "end": "06:00"}],
        exceptions=[
            (datetime(2025, 3, 29, 23, 0, tzinfo=UTC), datetime(2025, 3, 30, 1, 30, tzinfo=UTC))
        ],
    )
    sched = CurfewSchedule(params)
    # Saturday 29 March 2025; clocks go forward at 01:00 UTC on the 30th.
    assert sched.period_at(datetime(2025, 3, 29, 21, 59, tzinfo=UTC).timestamp()) is None
    start, end = sched.period_at(datetime(2025, 3, 29, 22, 30, tzinfo=UTC).timestamp()) or (0, 0)
    assert start == datetime(2025, 3, 29, 22, 0, tzinfo=UTC).timestamp()
    assert end == datetime(2025, 3, 29, 23, 0, tzinfo=UTC).timestamp()  # cut by the exception
    assert sched.period_at(datetime(2025, 3, 30, 0, 0, tzinfo=UTC).timestamp()) is None
    start, end = sched.period_at(datetime(2025, 3, 30, 2, 0, tzinfo=UTC).timestamp()) or (0, 0)
    assert start == datetime(2025, 3, 30, 1, 30, tzinfo=UTC).timestamp()
    assert end == datetime(2025, 3, 30, 5, 0, tzinfo=UTC).timestamp()  # 06:00 BST
    assert sched.period_at(datetime(2025, 3, 31, 22, 30, tzinfo=UTC).timestamp()) is None  # Monday


def test_proximity_ignores_a_stale_other_fix() -> None:
    rule = _rule({"kind": "proximity", "other_device_id": "d2", "min_distance_m": 200}, dwell_s=0)
    engine = SupervisionEngine({}, [rule])
    engine.on_fix(_fix(0, 0, device="d2"))
    # 13+ minutes later the victim's old position says nothing.
    assert [engine.on_fix(_fix(80 + i, 50)) for i in range(3)] == [[], [], []]
    out = engine.on_fix(_fix(84, 0, device="d2")) + engine.on_fix(_fix(85, 50))
    assert [t.type for t in out] == ["proximity.breach"]


def test_state_is_plain_json_and_only_dirty_rules_are_returned() -> None:
    rules = [
        _rule({"kind": "exclusion", "zone_ids": ["z"]}),
        _rule({"kind": "silence", "max_silence_s": 600}, id="r2", device_id="d9"),
    ]
    engine = SupervisionEngine({"z": _circle()}, rules)
    engine.dirty_states()
    for i in range(5):
        engine.on_fix(_fix(i, 0))
    states = engine.dirty_states()
    assert [s.rule_id for s in states] == ["r1"]
    assert json.loads(json.dumps(states[0].data)) == states[0].data
    assert engine.dirty_states() == []


def test_implausible_fixes_do_not_lock_the_device_out() -> None:
    engine = SupervisionEngine({}, [_rule({"kind": "silence", "max_silence_s": 600})])
    engine.on_fix(_fix(0, 0))
    flagged = [engine.on_fix(_fix(1 + i, 50_000)) for i in range(4)]
    assert [len(f) for f in flagged] == [1, 1, 1, 0]  # the fourth is accepted: it moved


def test_rules_reach_their_zones_and_the_index_covers_all() -> None:
    engine = SupervisionEngine({}, [_rule({"kind": "exclusion", "zone_ids": ["z"]}, dwell_s=0)])
    assert [engine.on_fix(_fix(i, 0)) for i in range(3)] == [[], [], []]  # zone unknown
    engine.upsert_zone(_circle())
    assert [t.action for i in range(3, 6) for t in engine.on_fix(_fix(i, 0))] == ["raise"]
    assert engine.zones_at(*FRAME.to_latlon(10, 0)) == ["z"]
    engine.remove_rule("r1")
    assert engine.on_fix(_fix(7, 0)) == []
