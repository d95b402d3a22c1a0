"""Simulated wearables: protocol validity, determinism and each scenario's ground truth
(devices/simulation/wearable.py, scenarios.py, emission.py)."""

from __future__ import annotations

import json
import random
import statistics
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pytest
from pydantic import ValidationError

from devices.firmware import WearableProfile, load_profile, packaged_config_dir
from devices.protocol import (
    AlarmBody,
    CheckinBody,
    EventEnvelope,
    PositionBody,
    Telemetry,
    TelemetryBody,
    decode,
    encode,
    topic_for,
    uuid7_time,
)
from devices.protocol.ids import UUID7_RE
from devices.simulation import (
    ACC_SIGMA_RATIO,
    PRESETS,
    SCENARIO_NAMES,
    AlarmStep,
    Emission,
    EnvelopeFactory,
    RouteSpec,
    ScenarioError,
    ScenarioSpec,
    SilenceStep,
    SiteMap,
    WearableSimulator,
    demo_site,
    demo_site_path,
    haversine_m,
    preset,
    scenario_problems,
)

START = datetime(2025, 3, 14, 7, 30, tzinfo=UTC)
"""20:30 in Totara Downs (NZDT, +13:00), half an hour before its curfew."""
CURFEW_START = datetime(2025, 3, 14, 8, 0, tzinfo=UTC)


@cache
def profile(name: str) -> WearableProfile:
    loaded = load_profile(packaged_config_dir() / "profiles" / f"{name}.yaml")
    assert isinstance(loaded, WearableProfile)
    return loaded


@cache
def site(site_id: str) -> SiteMap:
    return demo_site(site_id)


def town() -> SiteMap:
    return site("totara-downs")


def prison() -> SiteMap:
    return site("kereru-flats")


def sim_for(
    site_map: SiteMap, scenario: ScenarioSpec | str, *, seed: int | str = 1, device: str = ""
) -> WearableSimulator:
    spec = preset(scenario) if isinstance(scenario, str) else scenario
    name = profile(site_map.wearable_profile)
    return WearableSimulator(
        device or f"sim-{spec.name.replace('_', '-')}",
        site_map,
        spec,
        profile=name,
        start=START,
        seed=seed,
    )


def run(sim: WearableSimulator, hours: float) -> list[Emission]:
    end = START + timedelta(hours=hours)
    out: list[Emission] = []
    while (due := sim.next_due()) is not None and due <= end:
        out.extend(sim.step(due))
    return out


def positions(emissions: list[Emission]) -> list[tuple[Emission, PositionBody]]:
    return [(e, e.body) for e in emissions if isinstance(e.body, PositionBody)]


def alarms(emissions: list[Emission]) -> list[tuple[Emission, AlarmBody]]:
    return [(e, e.body) for e in emissions if isinstance(e.body, AlarmBody)]


def from_start(spec: ScenarioSpec) -> ScenarioSpec:
    """The scenario with its route starting at the track's first position."""
    return spec.model_copy(update={"route": spec.route.model_copy(update={"start": "beginning"})})


def raw_zone(site_id: str, name: str) -> list[list[list[float]]]:
    """A zone's rings as the file gives them: [lon, lat] positions."""
    data = json.loads(demo_site_path(site_id).read_text(encoding="utf-8"))
    for feature in data["features"]:
        props = feature["properties"]
        if props["role"] == "zone" and props["name"] == name:
            rings: list[list[list[float]]] = feature["geometry"]["coordinates"]
            return rings
    raise AssertionError(f"no zone {name}")


def in_rings(lat: float, lon: float, rings: list[list[list[float]]]) -> bool:
    """Point in polygon on raw longitude/latitude (fine for a site a few km across):
    independent of the simulator's own geometry."""

    def in_ring(ring: list[list[float]]) -> bool:
        inside = False
        for (x1, y1), (x2, y2) in zip(ring, ring[1:], strict=False):
            if (y1 > lat) != (y2 > lat) and lon < x1 + (lat - y1) * (x2 - x1) / (y2 - y1):
                inside = not inside
        return inside

    return in_ring(rings[0]) and not any(in_ring(hole) for hole in rings[1:])


def truth_latlon(sim: WearableSimulator, when: datetime) -> tuple[float, float]:
    truth = sim.truth_at(when)
    return truth.lat, truth.lon


def longest_run(flags: list[bool]) -> int:
    best = current = 0
    for flag in flags:
        current = current + 1 if flag else 0
        best = max(best, current)
    return best


def speeds(fixes: list[tuple[Emission, PositionBody]]) -> list[tuple[datetime, float]]:
    result = []
    for (e1, p1), (e2, p2) in zip(fixes, fixes[1:], strict=False):
        seconds = (e2.captured_at - e1.captured_at).total_seconds()
        result.append((e2.captured_at, haversine_m(p1.lat, p1.lon, p2.lat, p2.lon) / seconds))
    return result


FEASIBLE = [
    (site_id, name)
    for site_id in ("totara-downs", "kereru-flats")
    for name in SCENARIO_NAMES
    if not scenario_problems(PRESETS[name], site(site_id), profile(site(site_id).wearable_profile))
]


def test_feasible_scenarios_per_site() -> None:
    by_site = {s: {n for t, n in FEASIBLE if t == s} for s in ("totara-downs", "kereru-flats")}
    assert by_site["totara-downs"] == set(SCENARIO_NAMES) - {"sos"}
    assert by_site["kereru-flats"] == set(SCENARIO_NAMES) - {"curfew_violation"}


# -- every emission is a valid protocol message ------------------------------------------


@pytest.mark.parametrize(("site_id", "name"), FEASIBLE)
def test_every_emission_round_trips_through_the_protocol(site_id: str, name: str) -> None:
    sim = sim_for(site(site_id), name)
    emissions = run(sim, 1.5)
    assert positions(emissions)
    factory = EnvelopeFactory(sim.device_id, rng=random.Random(5))
    previous: EventEnvelope | None = None
    for emission in emissions:
        message = factory.wrap(emission)
        payload = encode(message)
        decoded = decode(topic_for(message), payload, now=emission.send_time).message
        assert decoded == message
        if isinstance(message, Telemetry):
            assert message.sent_at == emission.captured_at
            continue
        assert isinstance(message, EventEnvelope)
        assert UUID7_RE.fullmatch(message.event_id)
        assert uuid7_time(message.event_id) == emission.captured_at.replace(
            microsecond=emission.captured_at.microsecond // 1000 * 1000
        )
        if previous is not None:
            assert message.seq == previous.seq + 1
            assert message.event_id > previous.event_id
            assert message.captured_at >= previous.captured_at
        previous = message
    assert factory.seq == sum(1 for e in emissions if e.kind != "telemetry")


def test_the_same_seed_replays_exactly_and_another_does_not() -> None:
    spec = PRESETS["spoof_jump"]
    first = run(sim_for(town(), spec, seed=7), 2)
    again = run(sim_for(town(), spec, seed=7), 2)
    other = run(sim_for(town(), spec, seed=8), 2)
    assert first == again
    assert first != other

    def wire(emissions: list[Emission]) -> list[bytes]:
        factory = EnvelopeFactory("sim-spoof-jump", rng=random.Random("envelopes"))
        return [encode(factory.wrap(e)) for e in emissions]

    assert wire(first) == wire(again)


def test_devices_sharing_a_seed_differ() -> None:
    a = run(sim_for(town(), "walk", seed=3, device="sim-a-01"), 0.5)
    b = run(sim_for(town(), "walk", seed=3, device="sim-b-01"), 0.5)
    assert [e.body for e in a] != [e.body for e in b]


def test_reporting_intervals_follow_the_profile() -> None:
    for site_map in (town(), prison()):
        sim = sim_for(site_map, "walk")
        fixes = positions(run(sim, 1))
        gaps = {
            round((b.captured_at - a.captured_at).total_seconds(), 3)
            for (a, _), (b, _) in zip(fixes, fixes[1:], strict=False)
        }
        assert gaps == {float(sim.profile.report_interval_s.normal)}
        tele = [e for e in run(sim_for(site_map, "walk"), 3) if e.kind == "telemetry"]
        assert len(tele) == pytest.approx(3 * 3600 / sim.profile.telemetry_interval_s, abs=1)


# -- scenario ground truth ---------------------------------------------------------------


@pytest.mark.parametrize("site_id", ["totara-downs", "kereru-flats"])
def test_exclusion_breach_enters_the_zone_for_a_while_and_leaves(site_id: str) -> None:
    site_map = site(site_id)
    sim = sim_for(site_map, from_start(PRESETS["exclusion_breach"]))
    fixes = positions(run(sim, 1))
    zones = [z.name for z in site_map.zones.values() if z.kind == "exclusion"]
    breached = {
        name: [in_rings(p.lat, p.lon, raw_zone(site_id, name)) for _, p in fixes] for name in zones
    }
    target = max(breached, key=lambda name: sum(breached[name]))
    inside = breached[target]
    interval = sim.profile.report_interval_s.normal
    # Five minutes in the zone: most fixes of the dwell say so, several in a row (Wi-Fi
    # fixes of up to 40 m in the prison may stray out now and then).
    assert sum(inside) >= 0.7 * 300 / interval
    assert longest_run(inside) >= 3
    first_in = inside.index(True)
    assert not any(inside[:first_in]) and first_in > 0
    assert False in inside[first_in:]  # and leaves again
    # The truth agrees: the wearer was inside for at least the dwell.
    truth_inside = [site_map.contains(target, *truth_latlon(sim, e.captured_at)) for e, _ in fixes]
    assert sum(truth_inside) * interval >= 300


@pytest.mark.parametrize("site_id", ["totara-downs", "kereru-flats"])
def test_leave_inclusion_goes_outside(site_id: str) -> None:
    site_map = site(site_id)
    sim = sim_for(site_map, from_start(PRESETS["leave_inclusion"]))
    fixes = positions(run(sim, 1))
    (fence,) = [z.name for z in site_map.zones.values() if z.kind == "inclusion"]
    inside = [in_rings(p.lat, p.lon, raw_zone(site_id, fence)) for _, p in fixes]
    interval = sim.profile.report_interval_s.normal
    assert inside[0]  # starts inside
    outside = [not flag for flag in inside]
    assert sum(outside) * interval >= 0.8 * 600 and longest_run(outside) >= 5
    assert True in inside[outside.index(True) :]  # and comes back


def test_curfew_violation_gets_home_late_and_stays() -> None:
    site_map = town()
    home = site_map.home
    assert home is not None
    sim = sim_for(site_map, "curfew_violation")
    fixes = positions(run(sim, 4))
    arrival = next(
        e.captured_at
        for e, _ in fixes
        if haversine_m(*truth_latlon(sim, e.captured_at), home.lat, home.lon) < 1
    )
    late = (arrival - CURFEW_START).total_seconds()
    # 30-60 minutes late, plus the walk home (under 10 minutes from the town centre).
    assert 1800 <= late <= 3600 + 600
    away = [
        p
        for e, p in fixes
        if CURFEW_START <= e.captured_at <= CURFEW_START + timedelta(seconds=1800)
    ]
    assert away and all(
        haversine_m(p.lat, p.lon, home.lat, home.lon) > home.radius_m + 3 * p.acc for p in away
    )
    at_home = [p for e, p in fixes if e.captured_at >= arrival + timedelta(minutes=1)]
    assert len(at_home) > 60
    assert {p.src for p in at_home} == {"ble_beacon"}
    near = [haversine_m(p.lat, p.lon, home.lat, home.lon) <= home.radius_m for p in at_home]
    assert sum(near) / len(near) > 0.9


@pytest.mark.parametrize(
    ("site_id", "source"), [("totara-downs", "gnss"), ("kereru-flats", "wifi")]
)
def test_gnss_jitter_is_consistent_with_acc(site_id: str, source: str) -> None:
    sim = sim_for(site(site_id), "gnss_jitter", seed=11)
    fixes = positions(run(sim, 24))
    assert len(fixes) >= 1000
    truth = sim.truth_at(START)
    assert {p.src for _, p in fixes} == {source}
    accs = [p.acc for _, p in fixes]
    assert min(accs) >= 5 and max(accs) <= 50
    assert statistics.median(accs) < 25 and max(accs) > 40
    errors = [haversine_m(p.lat, p.lon, truth.lat, truth.lon) for _, p in fixes]
    within = sum(err <= p.acc for err, (_, p) in zip(errors, fixes, strict=True)) / len(fixes)
    # acc is a 68% radius; 3% outliers pull it down a little.
    assert 0.60 <= within <= 0.74
    outliers = sum(err > 3 * p.acc for err, (_, p) in zip(errors, fixes, strict=True))
    assert 0.005 * len(fixes) <= outliers <= 0.06 * len(fixes)
    # Unbiased: the mean fix is close to the truth.
    mean_lat = statistics.fmean(p.lat for _, p in fixes)
    mean_lon = statistics.fmean(p.lon for _, p in fixes)
    assert haversine_m(mean_lat, mean_lon, truth.lat, truth.lon) < 3
    assert ACC_SIGMA_RATIO == pytest.approx(1.5096, abs=1e-4)


def test_indoor_outdoor_switches_sources_and_widens_acc() -> None:
    sim = sim_for(town(), from_start(PRESETS["indoor_outdoor"]))
    fixes = positions(run(sim, 2))
    by_place: dict[str | None, list[PositionBody]] = {}
    for e, p in fixes:
        by_place.setdefault(sim.truth_at(e.captured_at).building, []).append(p)
    assert {p.src for p in by_place["home"]} == {"ble_beacon"}  # the home beacon
    library = by_place["library"]
    assert {p.src for p in library} <= {"wifi", "gnss"} and "wifi" in {p.src for p in library}
    assert all(p.acc >= 40 for p in library if p.src == "gnss")  # indoor GNSS, just gated
    outdoors = by_place[None]
    assert {p.src for p in outdoors} == {"gnss"}
    assert statistics.median(p.acc for p in library) > statistics.median(p.acc for p in outdoors)
    assert statistics.median(p.acc for p in by_place["home"]) > statistics.median(
        p.acc for p in outdoors
    )
    # In the prison: Wi-Fi in the yard, the wings' beacons indoors.
    sim = sim_for(prison(), from_start(PRESETS["indoor_outdoor"]))
    sources = {(sim.truth_at(e.captured_at).building, p.src) for e, p in positions(run(sim, 1))}
    assert sources == {(None, "wifi"), ("a-wing", "ble_beacon"), ("b-wing", "ble_beacon")}


def test_walking_speed_is_human() -> None:
    sim = sim_for(town(), "walk")
    for e, p in positions(run(sim, 1)):
        truth = sim.truth_at(e.captured_at)
        assert 1.0 <= truth.speed <= 1.5
        assert p.vel is not None and abs(p.vel - truth.speed) < 0.8
        assert p.cog is not None


def test_strap_tamper_opens_then_clears() -> None:
    emissions = run(sim_for(town(), "strap_tamper"), 1)
    (raised, active), (cleared_at, cleared) = alarms(emissions)
    assert (active.type, active.state, cleared.type, cleared.state) == (
        "strap.tamper",
        "active",
        "strap.tamper",
        "cleared",
    )
    assert active.alarm_id == cleared.alarm_id
    assert active.position is not None and active.position.strap == "open"
    assert cleared.position is not None and cleared.position.strap == "closed"
    for e, p in positions(emissions):
        expected = (
            "open" if raised.captured_at <= e.captured_at < cleared_at.captured_at else "closed"
        )
        assert p.strap == expected
    assert 300 <= (raised.captured_at - START).total_seconds() <= 1200


def test_sos_on_a_wristband_and_refused_on_an_ankle_tag() -> None:
    emissions = run(sim_for(prison(), "sos"), 1)
    states = [(a.type, a.state) for _, a in alarms(emissions)]
    assert states == [("sos", "active"), ("sos", "cleared")]
    with pytest.raises(ScenarioError, match="does not raise sos"):
        sim_for(town(), "sos")


def test_battery_drain_low_then_critical_then_silent() -> None:
    sim = sim_for(town(), "battery_drain")
    emissions = run(sim, 1.5)
    readings: list[int] = []
    for e in emissions:
        body = e.body
        if isinstance(body, AlarmBody):
            assert body.position is not None and body.position.batt is not None
            readings.append(body.position.batt)
        elif isinstance(body, PositionBody | CheckinBody | TelemetryBody) and body.batt is not None:
            readings.append(body.batt)
    assert readings == sorted(readings, reverse=True)
    found = [(a.type, a.position.batt if a.position else None) for _, a in alarms(emissions)]
    assert [t for t, _ in found] == ["battery.low", "battery.critical"]
    low, critical = sim.profile.battery.low_pct, sim.profile.battery.critical_pct
    assert found[0][1] == low and found[1][1] == critical
    before_low = [
        p.batt
        for e, p in positions(emissions)
        if e.captured_at < alarms(emissions)[0][0].captured_at
    ]
    assert before_low and all(b is not None and b > low for b in before_low)
    dead = next(p.at for p in sim.timeline() if p.what == "battery.dead")
    assert all(e.captured_at <= dead for e in emissions)
    assert sim.finished and sim.next_due() is None
    assert (dead - START) < timedelta(hours=1)


def test_silent_leaves_a_gap() -> None:
    sim = sim_for(town(), "silent")
    emissions = run(sim, 1.5)
    timeline = {p.what: p.at for p in sim.timeline()}
    quiet_from, quiet_to = timeline["silence.start"], timeline["silence.end"]
    assert timedelta(minutes=20) <= quiet_to - quiet_from <= timedelta(minutes=30)
    assert not [e for e in emissions if quiet_from <= e.captured_at < quiet_to]
    fixes = positions(emissions)
    gap = max(
        (b.captured_at - a.captured_at) for (a, _), (b, _) in zip(fixes, fixes[1:], strict=False)
    )
    assert gap >= quiet_to - quiet_from
    assert fixes[-1][0].captured_at > quiet_to


def test_offline_silence_replays_from_the_outbox() -> None:
    spec = PRESETS["walk"].model_copy(
        update={
            "name": "offline",
            "steps": [SilenceStep(at_s=(600, 600), duration_s=(900, 900), mode="offline")],
        }
    )
    sim = sim_for(town(), spec)
    emissions = run(sim, 1)
    back = START + timedelta(seconds=1500)
    replayed = [e for e in emissions if e.replayed]
    assert len(replayed) == 15
    assert all(e.sent_at == back and e.kind == "position" for e in replayed)
    assert all(START + timedelta(seconds=600) <= e.captured_at < back for e in replayed)
    assert not [
        e
        for e in emissions
        if e.kind == "telemetry" and START + timedelta(seconds=600) <= e.captured_at < back
    ]
    factory = EnvelopeFactory(sim.device_id)
    messages = [factory.wrap(e) for e in emissions if e.kind != "telemetry"]
    replayed_msgs = [m for m in messages if isinstance(m, EventEnvelope) and m.replayed]
    assert len(replayed_msgs) == 15 and all(m.sent_at == back for m in replayed_msgs)
    assert [m.seq for m in messages if isinstance(m, EventEnvelope)] == list(range(len(messages)))


def test_no_fix_silence_sends_check_ins() -> None:
    spec = PRESETS["walk"].model_copy(
        update={
            "name": "no-fix",
            "steps": [SilenceStep(at_s=(600, 600), duration_s=(1200, 1200), mode="no_fix")],
        }
    )
    emissions = run(sim_for(town(), spec), 1)
    window = (START + timedelta(seconds=600), START + timedelta(seconds=1800))
    during = [e for e in emissions if window[0] <= e.captured_at < window[1]]
    assert not [e for e in during if e.kind == "position"]
    checkins = [e for e in during if isinstance(e.body, CheckinBody)]
    assert len(checkins) == 4  # every heartbeat_s (300 s) after the last position
    assert all(isinstance(e.body, CheckinBody) and e.body.next_checkin_s == 300 for e in checkins)
    gaps = {
        (b.captured_at - a.captured_at).total_seconds()
        for a, b in zip(checkins, checkins[1:], strict=False)
    }
    assert gaps == {300.0}
    assert not [
        e
        for e in emissions
        if e.kind == "checkin"
        and not window[0] <= e.captured_at < window[1] + timedelta(seconds=300)
    ]


def test_spoof_jump_implies_an_impossible_speed() -> None:
    sim = sim_for(town(), "spoof_jump")
    fixes = positions(run(sim, 1))
    spoof_at = next(p.at for p in sim.timeline() if p.what == "spoof")
    fast = [(t, v) for t, v in speeds(fixes) if v > 100]
    assert len(fast) == 2  # out to the false fix and back
    assert spoof_at <= fast[0][0] <= spoof_at + timedelta(seconds=60)
    assert fast[1][0] - fast[0][0] == timedelta(seconds=60)
    assert all(v < 10 for t, v in speeds(fixes) if (t, v) not in fast)
    (false_fix,) = [p for e, p in fixes if e.captured_at == fast[0][0]]
    truth = sim.truth_at(fast[0][0])
    assert 20_000 <= haversine_m(false_fix.lat, false_fix.lon, truth.lat, truth.lon) <= 60_100
    assert false_fix.acc <= 5 and false_fix.src == "gnss"


def test_violation_mode_switches_the_interval() -> None:
    sim = sim_for(town(), "walk")
    first = run(sim, 0.25)
    last_fix = positions(first)[-1][0].captured_at
    sim.set_violation(True)
    assert sim.violation
    due = sim.next_due()
    assert due is not None and due <= last_fix + timedelta(seconds=15)
    middle = []
    end = START + timedelta(minutes=30)
    while (due := sim.next_due()) is not None and due <= end:
        middle.extend(sim.step(due))
    gaps = {
        (b.captured_at - a.captured_at).total_seconds()
        for (a, _), (b, _) in zip(positions(middle), positions(middle)[1:], strict=False)
    }
    assert gaps == {15.0}
    sim.set_violation(False)
    later = []
    while (due := sim.next_due()) is not None and due <= end + timedelta(minutes=30):
        later.extend(sim.step(due))
    gaps = {
        (b.captured_at - a.captured_at).total_seconds()
        for (a, _), (b, _) in zip(positions(later), positions(later)[1:], strict=False)
    }
    assert gaps == {60.0}


def test_step_is_idempotent_in_time_and_emissions_carry_their_due_time() -> None:
    sim = sim_for(town(), "walk")
    due = sim.next_due()
    assert due is not None
    assert sim.step(due - timedelta(seconds=1)) == []
    late = due + timedelta(minutes=5)
    emitted = sim.step(late)
    assert len(positions(emitted)) >= 5
    assert emitted[0].captured_at == due
    assert all(e.captured_at <= late for e in emitted)
    assert sim.step(late) == []


# -- specs and errors --------------------------------------------------------------------


def test_scenarios_the_site_cannot_play_are_refused() -> None:
    with pytest.raises(ScenarioError, match="no home|no track 'curfew_away'"):
        sim_for(prison(), "curfew_violation")
    spec = ScenarioSpec(name="lost", route=RouteSpec(track="nowhere"))
    with pytest.raises(ScenarioError, match="no track 'nowhere'"):
        sim_for(town(), spec)
    with pytest.raises(ValueError, match="no scenario preset 'dance'"):
        preset("dance")
    with pytest.raises(ValueError, match="timezone-aware"):
        WearableSimulator(
            "sim-x-01", town(), "walk", profile=profile("ankle_tag"), start=datetime(2025, 1, 1)
        )


@pytest.mark.parametrize(
    "data",
    [
        {"name": "x", "route": {"track": "walk", "spot": "jitter"}},
        {"name": "x", "route": {}},
        {"name": "x", "route": {"track": "walk", "speed_mps": [2, 1]}},
        {"name": "x", "route": {"track": "walk", "speed_mps": [0, 1]}},
        {"name": "x", "route": {"track": "walk"}, "steps": [{"kind": "dance", "at_s": [1, 2]}]},
        {"name": "x", "route": {"track": "walk"}, "fix": {"outlier_rate": 0.9}},
        {"name": "x", "route": {"track": "walk"}, "battery": {"start_pct": [50, 120]}},
        {"name": "X!", "route": {"track": "walk"}},
        {"name": "x", "route": {"track": "walk"}, "colour": "red"},
    ],
)
def test_bad_scenario_specs_are_refused(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ScenarioSpec.model_validate(data)


def test_a_custom_scenario_from_json() -> None:
    spec = ScenarioSpec.model_validate_json(
        json.dumps(
            {
                "name": "double-sos",
                "route": {"track": "walk", "mode": "loop", "start": "beginning"},
                "steps": [
                    {"kind": "alarm", "alarm": "sos", "at_s": [60, 60]},
                    {
                        "kind": "alarm",
                        "alarm": "sos",
                        "at_s": [120, 120],
                        "clear_after_s": [60, 60],
                    },
                ],
            }
        )
    )
    assert spec.alarms() == {"sos"}
    found = [(a.alarm_id, a.state) for _, a in alarms(run(sim_for(prison(), spec), 0.2))]
    assert found == [("sos-1", "active"), ("sos-2", "active"), ("sos-2", "cleared")]
    assert isinstance(spec.steps[0], AlarmStep)


# -- envelopes ---------------------------------------------------------------------------


def test_envelopes_in_virtual_time_may_be_in_the_future() -> None:
    later = datetime(2031, 1, 1, 12, 0, tzinfo=UTC)
    sim = WearableSimulator(
        "sim-future-01", town(), "walk", profile=profile("ankle_tag"), start=later, seed=1
    )
    due = sim.next_due()
    assert due is not None
    factory = EnvelopeFactory(sim.device_id)
    for emission in sim.step(due + timedelta(minutes=20)):
        message = factory.wrap(emission)
        assert decode(topic_for(message), encode(message), now=emission.send_time).message == (
            message
        )


def test_envelope_factory_ids_and_sequence() -> None:
    when = datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
    factory = EnvelopeFactory("sim-env-01", rng=random.Random(1))
    ids = [factory.event_id(when) for _ in range(5000)]  # more than 4096 in one millisecond
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(UUID7_RE.fullmatch(i) for i in ids)
    assert uuid7_time(ids[0]) == when.replace(microsecond=123000)
    assert uuid7_time(ids[-1]) > uuid7_time(ids[0])
    again = EnvelopeFactory("sim-env-01", rng=random.Random(1))
    assert again.boot_id == factory.boot_id
    assert EnvelopeFactory("sim-env-01").boot_id != EnvelopeFactory("sim-env-01").boot_id
    body = PositionBody(lat=-43.6, lon=172.1, acc=5.0, src="gnss")
    tele = Emission("telemetry", TelemetryBody(batt=50), when)
    message = factory.wrap(tele)
    assert isinstance(message, Telemetry) and message.boot_id == factory.boot_id
    start_seq = factory.seq
    event = factory.wrap(Emission("position", body, when), sent_at=when - timedelta(seconds=5))
    assert isinstance(event, EventEnvelope)
    assert event.seq == start_seq and factory.seq == start_seq + 1
    assert event.sent_at == when  # never before capture
    with pytest.raises(TypeError):
        Emission("alarm", body, when)
    with pytest.raises(ValueError):
        Emission("position", body, datetime(2025, 1, 1))
    with pytest.raises(ValueError):
        EnvelopeFactory("Not A Device")
