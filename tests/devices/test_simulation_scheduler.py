"""The scheduler and fleets: a thousand simulated devices on one asyncio loop, in
virtual and real time (devices/simulation/scheduler.py, fleet.py)."""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devices.firmware import WearableProfile, deep_merge, load_profile, packaged_config_dir
from devices.protocol import (
    AlarmEvent,
    EventEnvelope,
    PositionEvent,
    Telemetry,
    decode,
    encode,
    topic_for,
)
from devices.simulation import (
    DEFAULT_MIX,
    PRESETS,
    Emission,
    EnvelopingSink,
    FleetSpec,
    RealClock,
    ScenarioError,
    Scheduler,
    SimMessage,
    VirtualClock,
    WearableSimulator,
    allocate,
    build_fleet,
    demo_site,
    scenario_problems,
    site_profile,
)

START = datetime(2025, 3, 14, 7, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)
DEVICE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{1,63}$")


def ankle_profile(**overrides: Any) -> WearableProfile:
    base = load_profile(packaged_config_dir() / "profiles" / "ankle_tag.yaml")
    assert isinstance(base, WearableProfile)
    return WearableProfile.model_validate(deep_merge(base.model_dump(), overrides))


class Collector:
    """A sink that keeps what it is given, per device."""

    def __init__(self) -> None:
        self.by_device: dict[str, list[Emission]] = {}

    def __call__(self, device_id: str, emission: Emission) -> None:
        self.by_device.setdefault(device_id, []).append(emission)

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.by_device.values())


class Clockwork:
    """A minimal simulated device: emits its own name every ``every`` seconds."""

    def __init__(self, device_id: str, start: datetime, every: float, fail_at: int = -1) -> None:
        self.device_id = device_id
        self._next = start
        self._every = timedelta(seconds=every)
        self._count = 0
        self._fail_at = fail_at

    def next_due(self) -> datetime | None:
        return self._next

    def step(self, now: datetime) -> list[str]:
        out = []
        while self._next <= now:
            if self._count == self._fail_at:
                raise RuntimeError("broken device")
            out.append(f"{self.device_id}@{self._count}")
            self._count += 1
            self._next += self._every
        return out


# -- virtual time --------------------------------------------------------------------------


def test_a_virtual_hour_of_1000_walkers_matches_the_intervals() -> None:
    site = demo_site("totara-downs")
    fleet = build_fleet(site, 1000, start=START, mix={"walk": 1}, seed=3)
    scheduler: Scheduler[Emission] = Scheduler(fleet, clock=VirtualClock(START))
    sink = Collector()
    stats = asyncio.run(scheduler.run(HOUR, sink))
    # 60 s between positions from a random phase in the first minute: 60 in an hour;
    # telemetry every 900 s from a random phase: 4. No alarms at these battery levels.
    assert stats.emissions == sink.total == 1000 * (60 + 4)
    assert stats.ended_at == START + HOUR
    assert stats.max_lag_s == 0
    assert stats.wall_s < 30
    for device_id, emissions in sink.by_device.items():
        kinds = Counter(e.kind for e in emissions)
        assert kinds == {"position": 60, "telemetry": 4}, device_id
        times = [e.captured_at for e in emissions if e.kind == "position"]
        assert {b - a for a, b in zip(times, times[1:], strict=False)} == {timedelta(seconds=60)}
        assert all(START <= t <= START + HOUR for t in times)
    # The run goes on where it stopped: ten more positions each in ten minutes.
    more = Collector()
    asyncio.run(scheduler.run(timedelta(minutes=10), more))
    assert all(
        sum(e.kind == "position" for e in emissions) == 10 for emissions in more.by_device.values()
    )
    assert len(more.by_device) == 1000


@pytest.mark.parametrize(("site_id", "count"), [("totara-downs", 1000), ("kereru-flats", 400)])
def test_a_mixed_fleet_for_an_hour_emits_valid_messages(site_id: str, count: int) -> None:
    site = demo_site(site_id)
    fleet = build_fleet(site, count, start=START, seed=9)
    profile = site_profile(site)
    scenario_of = {sim.device_id: sim.scenario.name for sim in fleet}
    weights = {
        name: w
        for name, w in DEFAULT_MIX.items()
        if not scenario_problems(PRESETS[name], site, profile)
    }
    assert Counter(scenario_of.values()) == {k: v for k, v in allocate(count, weights).items() if v}
    assert all(DEVICE_ID.fullmatch(d) for d in scenario_of)
    assert len(scenario_of) == count
    assert sorted(scenario_of) == [sim.device_id for sim in fleet]

    messages: dict[str, list[SimMessage]] = {}

    def keep(message: SimMessage) -> None:
        messages.setdefault(message.device_id, []).append(message)

    scheduler: Scheduler[Emission] = Scheduler(fleet, clock=VirtualClock(START))
    stats = asyncio.run(scheduler.run(HOUR, EnvelopingSink(keep, seed=9)))
    assert stats.emissions == sum(len(v) for v in messages.values())
    # Devices with a flat battery finish within the hour; nobody else does.
    drained = sum(1 for name in scenario_of.values() if name == "battery_drain")
    assert stats.finished_devices == drained > 0
    # Every event of every 20th device decodes as sent; sequences have no gaps.
    for device_id in sorted(messages)[::20]:
        events = [m for m in messages[device_id] if isinstance(m, EventEnvelope)]
        assert [m.seq for m in events] == list(range(len(events)))
        for message in messages[device_id]:
            assert decode(topic_for(message), encode(message), now=message.sent_at).message == (
                message
            )
    # Scenario ground truth, fleet-wide: alarms come from the scenarios that raise them.
    alarm_types: dict[str, set[str]] = {}
    for device_id, sent in messages.items():
        for message in sent:
            if isinstance(message, AlarmEvent):
                alarm_types.setdefault(scenario_of[device_id], set()).add(message.body.type)
    assert alarm_types.pop("battery_drain") == {"battery.low", "battery.critical"}
    assert alarm_types.pop("strap_tamper") == {"strap.tamper"}
    if site.kind == "prison":
        assert alarm_types.pop("sos") == {"sos"}
    assert alarm_types == {}
    # Silent devices have a gap of 20+ minutes between positions.
    for device_id, name in scenario_of.items():
        if name == "silent":
            times = [m.captured_at for m in messages[device_id] if isinstance(m, PositionEvent)]
            assert max(b - a for a, b in zip(times, times[1:], strict=False)) >= timedelta(
                minutes=20
            )


def test_violation_mode_mid_run_needs_a_refresh() -> None:
    site = demo_site("totara-downs")
    fleet = build_fleet(site, 5, start=START, mix={"walk": 1}, seed=1)
    scheduler: Scheduler[Emission] = Scheduler(fleet, clock=VirtualClock(START))
    asyncio.run(scheduler.run(timedelta(minutes=10), Collector()))
    target = fleet[0]
    target.set_violation(True)
    scheduler.refresh(target.device_id)
    sink = Collector()
    asyncio.run(scheduler.run(timedelta(minutes=10), sink))
    fast = [e.captured_at for e in sink.by_device[target.device_id] if e.kind == "position"]
    assert len(fast) >= 39
    assert {b - a for a, b in zip(fast, fast[1:], strict=False)} == {timedelta(seconds=15)}
    slow = [e for e in sink.by_device[fleet[1].device_id] if e.kind == "position"]
    assert len(slow) == 10


def test_async_sinks_stop_and_added_devices() -> None:
    async def scenario() -> tuple[int, int, list[str]]:
        clock = VirtualClock(START)
        scheduler: Scheduler[str] = Scheduler(
            [Clockwork(f"dev-{i:02d}", START, 10.0) for i in range(3)], clock=clock
        )
        seen: list[str] = []

        async def sink(device_id: str, item: str) -> None:
            await asyncio.sleep(0)
            seen.append(item)
            if len(seen) == 30:
                scheduler.stop()

        stats = await scheduler.run(HOUR, sink)
        stopped_at = stats.emissions
        scheduler.add(Clockwork("dev-late", clock.now(), 5.0))
        with pytest.raises(ValueError, match="already scheduled"):
            scheduler.add(Clockwork("dev-late", clock.now(), 5.0))
        more = await scheduler.run(timedelta(seconds=20), sink)
        return stopped_at, more.emissions, seen

    stopped_at, more, seen = asyncio.run(scenario())
    assert stopped_at == 30
    assert seen[:6] == ["dev-00@0", "dev-01@0", "dev-02@0", "dev-00@1", "dev-01@1", "dev-02@1"]
    # 20 s more: two devices' worth of ticks each 10 s, and the newcomer's every 5 s.
    assert more == 3 * 2 + 5
    assert "dev-late@0" in seen


def test_failures_propagate_or_are_contained() -> None:
    def fleet() -> list[Clockwork]:
        return [Clockwork("dev-ok", START, 1.0), Clockwork("dev-bad", START, 1.0, fail_at=3)]

    with pytest.raises(RuntimeError, match="broken device"):
        asyncio.run(
            Scheduler(fleet(), clock=VirtualClock(START)).run(
                timedelta(seconds=10), lambda d, i: None
            )
        )

    sink = Collector()
    scheduler: Scheduler[Any] = Scheduler(fleet(), clock=VirtualClock(START))
    stats = asyncio.run(scheduler.run(timedelta(seconds=10), sink, contain_errors=True))
    assert stats.errors == 1 and "dev-bad" not in scheduler and len(scheduler) == 1
    assert len(sink.by_device["dev-ok"]) == 11

    def picky(device_id: str, item: str) -> None:
        if item.endswith("@2"):
            raise OSError("broker gone")

    stats = asyncio.run(
        Scheduler([Clockwork("dev-x", START, 1.0)], clock=VirtualClock(START)).run(
            timedelta(seconds=4), picky, contain_errors=True
        )
    )
    assert (stats.emissions, stats.errors) == (4, 1)


def test_fleet_options_and_refusals() -> None:
    site = demo_site("totara-downs")
    fleet = build_fleet(site, 12, start=START, mix={"walk": 1, "sos": 0}, id_prefix="load")
    assert [s.device_id for s in fleet][:2] == ["load-0001", "load-0002"]
    with pytest.raises(ScenarioError, match="does not raise sos"):
        build_fleet(site, 10, start=START, mix={"sos": 1})
    with pytest.raises(ValueError, match="unknown scenarios"):
        build_fleet(site, 10, start=START, mix={"moonwalk": 1})
    with pytest.raises(ValueError, match="positive weight"):
        build_fleet(site, 10, start=START, mix={"walk": 0})
    with pytest.raises(ValueError, match="count"):
        build_fleet(site, 0, start=START)
    assert allocate(10, {"a": 1, "b": 1, "c": 1}) == {"a": 4, "b": 3, "c": 3}
    assert sum(allocate(1000, DEFAULT_MIX).values()) == 1000
    spec = FleetSpec.model_validate({"count": 30, "mix": {"walk": 2, "silent": 1}, "seed": 4})
    assert spec.mix == {"walk": 2.0, "silent": 1.0}
    built = spec.build(site, start=START)
    assert Counter(s.scenario.name for s in built) == {"walk": 20, "silent": 10}
    with pytest.raises(ValueError):
        FleetSpec.model_validate({"mix": {"walk": -1}})
    # Same seed, same fleet.
    again = build_fleet(site, 12, start=START, mix={"walk": 1, "sos": 0}, id_prefix="load")
    assert [s.timeline() for s in again] == [s.timeline() for s in fleet]


# -- real time -----------------------------------------------------------------------------


def test_1000_devices_in_real_time_on_one_thread() -> None:
    site = demo_site("totara-downs")
    profile = ankle_profile(
        report_interval_s={"normal": 1, "in_violation": 1},
        positioning={"gnss_fix_timeout_s": 1},
    )
    start = datetime.now(UTC)
    fleet = build_fleet(site, 1000, start=start, mix={"walk": 1}, profile=profile, seed=5)
    # Exactly what is due within the two seconds, computed from a virtual replay.
    replay = build_fleet(site, 1000, start=start, mix={"walk": 1}, profile=profile, seed=5)
    expected = Collector()
    end = start + timedelta(seconds=2)
    asyncio.run(Scheduler(replay, clock=VirtualClock(start)).run(end, expected))
    threads_before = threading.active_count()
    peak = [threads_before]

    def sink(device_id: str, emission: Emission) -> None:
        peak[0] = max(peak[0], threading.active_count())
        received.append(emission)

    received: list[Emission] = []
    clock = RealClock(start)
    stats = asyncio.run(Scheduler(fleet, clock=clock).run(end, sink))
    assert stats.emissions == len(received) == expected.total
    assert 1900 <= expected.total <= 2100
    assert 1.9 <= stats.wall_s < 5
    assert stats.max_lag_s < 1.0
    assert peak[0] <= threads_before + 1  # no thread per device
    by_device = Counter(e.kind for e in received)
    assert by_device["position"] >= 1900


def test_real_clock_speed_and_validation() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    clock = RealClock(start, speed=600)
    devices = [Clockwork(f"dev-{i}", start, 60.0) for i in range(10)]
    sink = Collector()
    stats = asyncio.run(Scheduler(devices, clock=clock).run(timedelta(minutes=5), sink))
    # Five simulated minutes at 600x take half a second; a tick a minute from 0 to 5.
    assert stats.emissions == 10 * 6
    assert 0.4 <= stats.wall_s < 3
    with pytest.raises(ValueError):
        RealClock(speed=0)
    with pytest.raises(ValueError):
        RealClock(datetime(2025, 1, 1))
    with pytest.raises(ValueError):
        VirtualClock(datetime(2025, 1, 1))


def test_a_sleeping_real_time_run_wakes_for_a_new_device() -> None:
    async def scenario() -> list[str]:
        start = datetime.now(UTC)
        clock = RealClock(start)
        scheduler: Scheduler[str] = Scheduler(
            [Clockwork("dev-slow", start + HOUR, 1.0)], clock=clock
        )
        seen: list[str] = []
        task = asyncio.create_task(scheduler.run(timedelta(seconds=1), lambda d, i: seen.append(i)))
        await asyncio.sleep(0.2)
        scheduler.add(Clockwork("dev-new", clock.now(), 0.25))
        await task
        return seen

    seen = asyncio.run(scenario())
    assert 3 <= len(seen) <= 5 and all(s.startswith("dev-new") for s in seen)


def test_wearables_are_simulated_devices() -> None:
    site = demo_site("kereru-flats")
    sim = WearableSimulator(
        "wrist-0001", site, "walk", profile=site_profile(site), start=START, seed=0
    )
    scheduler: Scheduler[Emission] = Scheduler([sim], clock=VirtualClock(START))
    assert scheduler.device("wrist-0001") is sim and "wrist-0001" in scheduler
    stats = asyncio.run(scheduler.run(START + timedelta(minutes=5), Collector()))
    assert stats.emissions == 10  # every 30 s for a wristband
    assert isinstance(
        EnvelopingSink(lambda m: None)
        .factory("wrist-0001")
        .wrap(sim.step(START + timedelta(minutes=6))[0]),
        PositionEvent | Telemetry,
    )
