"""A simulated wearable (wristband or ankle tag): a deterministic state machine.

:class:`WearableSimulator` follows a :class:`~devices.simulation.scenarios.ScenarioSpec`
on a :class:`~devices.simulation.site.SiteMap` with the settings of a
:class:`~devices.firmware.WearableProfile`. It has no clock and no I/O: the caller
asks :meth:`~WearableSimulator.next_due` when it next has something to do and calls
:meth:`~WearableSimulator.step` with the current time; ``step`` returns every
:class:`~devices.simulation.emission.Emission` due up to then, each stamped with the
time it was due, not the time ``step`` ran. So a replay with the same seed gives the
same emissions whether the clock is virtual or real, fast or late.

What it models, from the profile:

* positions every ``report_interval_s.normal`` seconds, or ``in_violation`` after
  :meth:`~WearableSimulator.set_violation` (the hub's command; the device itself
  knows nothing of zones), starting at a random phase so a fleet does not report in
  step;
* the position source: indoors in a building with beacons and with
  ``indoor_beacons.enabled``, ``ble_beacon``; otherwise ``positioning.sources`` in
  order, a GNSS fix worse than ``gnss_accuracy_gate_m`` falling through to the next
  source (indoors GNSS is usually that bad); with no usable source, no position;
* telemetry every ``telemetry_interval_s`` and a check-in when no event has been
  published for ``heartbeat_s`` (with the shipped profiles, only while positions
  stop for want of a fix);
* the battery, falling linearly, with ``battery.low`` and ``battery.critical`` at the
  profile's thresholds and silence at 0%;
* the strap (``strap`` in positions and check-ins when strap sensing is enabled).

Fix errors are drawn so that about 68% of fixes lie within their stated ``acc`` of
the true position: a circular Gaussian with per-axis sigma ``acc / 1.5096``
(``1.5096 = sqrt(-2 ln 0.32)``).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from devices.firmware import WearableProfile
from devices.protocol import (
    AlarmBody,
    AlarmType,
    CheckinBody,
    PositionBody,
    TelemetryBody,
    validate_device_id,
)
from devices.simulation.emission import Body, Emission, EmissionKind
from devices.simulation.geo import destination
from devices.simulation.motion import (
    Motion,
    Segment,
    curfew_plan,
    lap_seconds,
    stay_plan,
    track_plan,
)
from devices.simulation.scenarios import (
    AlarmStep,
    ScenarioSpec,
    SilenceStep,
    Span,
    SpoofStep,
    preset,
)
from devices.simulation.site import Building, SiteError, SiteMap

__all__ = [
    "ACC_SIGMA_RATIO",
    "PlannedEvent",
    "ScenarioError",
    "TruthFix",
    "WearableSimulator",
    "scenario_problems",
]

logger = logging.getLogger(__name__)

ACC_SIGMA_RATIO = math.sqrt(-2 * math.log(1 - 0.68))
"""``acc`` divided by the per-axis sigma of the fix error: with it, 68% of a circular
Gaussian's draws fall within ``acc``."""

PositionSource = Literal["gnss", "wifi", "cell", "ble_beacon", "uwb"]
SilenceMode = Literal["off", "offline", "no_fix"]

_EPSILON_S = 1e-6
_SILENCE_MODES: dict[str, SilenceMode] = {"off": "off", "offline": "offline", "no_fix": "no_fix"}
_PRIORITY_EVENT, _PRIORITY_POSITION, _PRIORITY_CHECKIN, _PRIORITY_TELEMETRY = 0, 1, 2, 3


class ScenarioError(ValueError):
    """A scenario this site or profile cannot play (a missing track, a disabled alarm)."""


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    """Something the scenario will do, at a known time: the ground truth of alarms,
    silences, spoofs and battery thresholds."""

    at: datetime
    what: str
    """``alarm.active``, ``alarm.cleared``, ``silence.start``, ``silence.end``,
    ``spoof``, ``battery.low``, ``battery.critical`` or ``battery.dead``."""
    detail: str = ""
    """The alarm type, silence mode, spoof distance ..."""


@dataclass(frozen=True, slots=True)
class TruthFix:
    """Where the wearer truly was."""

    lat: float
    lon: float
    x: float
    y: float
    speed: float
    building: str | None


@dataclass(frozen=True, slots=True)
class _Event:
    t: float
    what: str
    detail: str
    index: int
    """The step it came from (-1 for battery events)."""


def scenario_problems(spec: ScenarioSpec, site: SiteMap, profile: WearableProfile) -> list[str]:
    """Why ``spec`` cannot run on ``site`` with ``profile`` (empty when it can): site
    features it needs that are missing, alarms it raises that the profile disables."""
    problems: list[str] = []
    for role, name in spec.site_needs():
        try:
            if role == "track":
                site.track(name)
            elif role == "spot":
                site.spot(name)
            elif site.home is None:
                problems.append(f"site {site.id!r} has no home for the curfew")
        except SiteError as exc:
            problems.append(str(exc))
    enabled = {"strap.tamper": profile.alarms.strap_tamper, "sos": profile.alarms.sos}
    for alarm in sorted(spec.alarms()):
        if not enabled.get(alarm, False):
            problems.append(f"the profile does not raise {alarm}")
    return problems


def _draw(rng: random.Random, span: Span) -> float:
    low, high = span
    return low if low == high else rng.uniform(low, high)


def _draw_log(rng: random.Random, span: Span) -> float:
    low, high = span
    return low if low == high else math.exp(rng.uniform(math.log(low), math.log(high)))


class WearableSimulator:
    """One simulated wristband or ankle tag.

    ``scenario`` is a :class:`ScenarioSpec` or a preset name; ``seed`` and the device
    id seed its random generator together, so two devices with one seed differ and
    one device with one seed replays exactly. Raises :class:`ScenarioError` when the
    site lacks a feature the scenario walks or the profile disables an alarm it
    raises.
    """

    def __init__(
        self,
        device_id: str,
        site: SiteMap,
        scenario: ScenarioSpec | str,
        *,
        profile: WearableProfile,
        start: datetime,
        seed: int | str = 0,
    ) -> None:
        self.device_id = validate_device_id(device_id)
        self.site = site
        self.scenario = preset(scenario) if isinstance(scenario, str) else scenario
        self.profile = profile
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValueError("start must be timezone-aware")
        self.start = start.astimezone(UTC)
        self._check_feasible()
        spec = self.scenario
        rng = random.Random(f"lantern-sim:{seed}:{device_id}")
        self._rng = rng

        # Per-device draws, always in this order so a seed means the same device.
        self._speed = _draw(rng, spec.route.speed_mps)
        self._batt0 = _draw(rng, spec.battery.start_pct)
        self._drain_per_s = _draw(rng, spec.battery.drain_pct_per_h) / 3600.0
        self._uptime0 = rng.uniform(600.0, 3 * 86_400.0)
        self._rssi0 = rng.uniform(-105.0, -65.0)
        self._temp0 = rng.uniform(29.0, 34.0)
        self._next_pos = rng.uniform(0.0, float(profile.report_interval_s.normal))
        self._next_tele = rng.uniform(0.0, float(profile.telemetry_interval_s))
        self._route_offset = 0.0
        if spec.route.track is not None and spec.route.start == "random":
            lap = lap_seconds(site.track(spec.route.track), spec.route.mode, self._speed)
            self._route_offset = rng.uniform(0.0, lap)
        self._late_by = _draw(rng, spec.curfew.late_by_s) if spec.curfew is not None else 0.0

        self._events: list[_Event] = []
        self._spoofs: dict[int, tuple[float, float, int]] = {}
        for index, step in enumerate(spec.steps):
            self._plan_step(index, step, rng)
        self._plan_battery()
        self._events.sort(key=lambda e: (e.t, e.index))
        self._event_i = 0

        self._motion = Motion(self._plan(), 0.0)
        self._truth_motion: Motion | None = None
        self._truth_t = math.inf

        self._now = 0.0
        self._violation = False
        self._last_pos_t: float | None = None
        self._last_event_t = 0.0
        self._checkin_floor = 0.0
        self._dead = False
        self._strap: Literal["closed", "open"] = "closed"
        self._silence: SilenceMode | None = None
        self._silence_index = -1
        self._outbox: list[Emission] = []
        self._spoof_left = 0
        self._spoof_xy: tuple[float, float] | None = None
        self._alarm_ids: dict[int, str] = {}
        self._alarm_count = 0
        self._stats: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"WearableSimulator({self.device_id!r}, {self.scenario.name!r})"

    # -- set-up

    def _check_feasible(self) -> None:
        problems = scenario_problems(self.scenario, self.site, self.profile)
        if problems:
            raise ScenarioError(
                f"scenario {self.scenario.name!r} cannot run on {self.device_id}: "
                + "; ".join(problems)
            )

    def _plan_step(
        self, index: int, step: AlarmStep | SilenceStep | SpoofStep, rng: random.Random
    ) -> None:
        at = _draw(rng, step.at_s)
        if isinstance(step, AlarmStep):
            self._events.append(_Event(at, "alarm.active", step.alarm, index))
            if step.clear_after_s is not None:
                clear = at + _draw(rng, step.clear_after_s)
                self._events.append(_Event(clear, "alarm.cleared", step.alarm, index))
        elif isinstance(step, SilenceStep):
            end = at + _draw(rng, step.duration_s)
            self._events.append(_Event(at, "silence.start", step.mode, index))
            self._events.append(_Event(end, "silence.end", step.mode, index))
        else:
            distance = _draw(rng, step.distance_m)
            bearing = rng.uniform(0.0, 360.0)
            self._spoofs[index] = (distance, bearing, step.fixes)
            self._events.append(_Event(at, "spoof", f"{distance:.0f} m", index))

    def _plan_battery(self) -> None:
        thresholds = self.profile.battery
        for what, level in (
            ("battery.low", float(thresholds.low_pct)),
            ("battery.critical", float(thresholds.critical_pct)),
            ("battery.dead", 0.0),
        ):
            if self._batt0 <= level:
                t = 0.0
            elif self._drain_per_s > 0:
                t = (self._batt0 - level) / self._drain_per_s
            else:
                continue
            self._events.append(_Event(t, what, f"{level:g}%", -1))

    def _plan(self) -> Iterator[Segment]:
        spec, site = self.scenario, self.site
        route = spec.route
        if route.spot is not None:
            x, y = site.spot(route.spot)
            return stay_plan(x, y, 0.0)
        track = site.track(route.track or "")
        if spec.curfew is None or site.home is None:
            return track_plan(track, route.mode, self._speed, -self._route_offset)

        def away(t: float, first: bool) -> Iterator[Segment]:
            offset = self._route_offset if first else 0.0
            return track_plan(track, route.mode, self._speed, t - offset)

        home = site.home
        windows = (
            ((s - self.start).total_seconds(), (e - self.start).total_seconds())
            for s, e in home.curfew_windows(self.start, site.timezone)
        )
        return curfew_plan(away, track.points[0], home.xy, windows, self._late_by, self._speed, 0.0)

    # -- the state machine

    @property
    def finished(self) -> bool:
        """True once the device has died (flat battery): it will emit nothing more."""
        return self._dead

    @property
    def violation(self) -> bool:
        """Whether positions come at the in-violation interval."""
        return self._violation

    @property
    def stats(self) -> dict[str, int]:
        """Emissions so far by kind (replayed ones counted when released)."""
        return dict(self._stats)

    def _interval(self) -> float:
        intervals = self.profile.report_interval_s
        return float(intervals.in_violation if self._violation else intervals.normal)

    def _next_checkin(self) -> float:
        return max(self._last_event_t, self._checkin_floor) + self.profile.heartbeat_s

    def _earliest(self) -> tuple[float, int] | None:
        if self._dead:
            return None
        best = (self._next_pos, _PRIORITY_POSITION)
        if self._event_i < len(self._events):
            event_t = self._events[self._event_i].t
            if event_t <= best[0]:
                best = (event_t, _PRIORITY_EVENT)
        checkin = self._next_checkin()
        if checkin < best[0]:
            best = (checkin, _PRIORITY_CHECKIN)
        if self._next_tele < best[0]:
            best = (self._next_tele, _PRIORITY_TELEMETRY)
        return best

    def _at(self, t: float) -> datetime:
        return self.start + timedelta(seconds=t)

    def next_due(self) -> datetime | None:
        """When the device next has something to do; None once it has died."""
        earliest = self._earliest()
        return None if earliest is None else self._at(earliest[0])

    def step(self, now: datetime) -> list[Emission]:
        """Do everything due at or before ``now``; the emissions, oldest first."""
        # Due times are floats; `now` is a datetime rounded to the microsecond.
        t_now = (now - self.start).total_seconds() + _EPSILON_S
        out: list[Emission] = []
        while True:
            earliest = self._earliest()
            if earliest is None or earliest[0] > t_now:
                break
            t, kind = earliest
            if kind == _PRIORITY_EVENT:
                event = self._events[self._event_i]
                self._event_i += 1
                self._fire_event(event, out)
            elif kind == _PRIORITY_POSITION:
                self._next_pos = t + self._interval()
                self._last_pos_t = t
                self._fire_position(t, out)
            elif kind == _PRIORITY_CHECKIN:
                self._fire_checkin(t, out)
            else:
                self._next_tele = t + self.profile.telemetry_interval_s
                self._fire_telemetry(t, out)
        self._now = max(self._now, t_now)
        return out

    def set_violation(self, active: bool) -> None:
        """Report at the in-violation interval (``True``) or the normal one, as the hub
        commands. The next position comes one new interval after the last one, or at
        once if that time has passed; a scheduler must be told (``refresh``)."""
        if active == self._violation:
            return
        self._violation = active
        if self._last_pos_t is not None:
            self._next_pos = max(self._now, self._last_pos_t + self._interval())
        logger.debug("%s: in-violation reporting %s", self.device_id, "on" if active else "off")

    # -- firing

    def _emit(self, out: list[Emission], kind: EmissionKind, body: Body, t: float) -> None:
        if self._silence == "off":
            return
        if self._silence == "offline":
            if kind != "telemetry":
                self._outbox.append(Emission(kind, body, self._at(t)))
                self._last_event_t = t
            return
        out.append(Emission(kind, body, self._at(t)))
        self._stats[kind] = self._stats.get(kind, 0) + 1
        if kind != "telemetry":
            self._last_event_t = t

    def _fire_position(self, t: float, out: list[Emission]) -> None:
        if self._silence in ("off", "no_fix"):
            return
        body = self._position(t, consume=True)
        if body is not None:
            self._emit(out, "position", body, t)

    def _fire_checkin(self, t: float, out: list[Emission]) -> None:
        self._checkin_floor = t
        if self._silence == "off":
            return
        body = CheckinBody(
            next_checkin_s=self.profile.heartbeat_s,
            batt=self._battery(t),
            charging=False,
            strap=self._strap_state(),
            rssi=self._rssi(),
            uptime_s=int(self._uptime0 + t),
            outbox_depth=len(self._outbox),
        )
        self._emit(out, "checkin", body, t)

    def _fire_telemetry(self, t: float, out: list[Emission]) -> None:
        body = TelemetryBody(
            batt=self._battery(t),
            charging=False,
            rssi=self._rssi(),
            temp_c=round(self._temp0 + self._rng.gauss(0.0, 0.3), 1),
            outbox_depth=len(self._outbox),
            uptime_s=int(self._uptime0 + t),
        )
        self._emit(out, "telemetry", body, t)

    def _fire_event(self, event: _Event, out: list[Emission]) -> None:
        t, what = event.t, event.what
        if what == "alarm.active":
            if event.detail == "strap.tamper":
                self._strap = "open"
            self._alarm_count += 1
            alarm_id = f"{event.detail}-{self._alarm_count}"
            self._alarm_ids[event.index] = alarm_id
            self._alarm(out, t, event.detail, "active", alarm_id)
        elif what == "alarm.cleared":
            if event.detail == "strap.tamper":
                self._strap = "closed"
            raised = self._alarm_ids.get(event.index)
            if raised is not None:
                self._alarm(out, t, event.detail, "cleared", raised)
        elif what == "silence.start":
            self._silence = _SILENCE_MODES[event.detail]
            self._silence_index = event.index
            logger.debug("%s: silent (%s) from %ss", self.device_id, event.detail, round(t))
        elif what == "silence.end":
            if event.index == self._silence_index:
                self._silence = None
                self._release_outbox(t, out)
        elif what == "spoof":
            distance, bearing, fixes = self._spoofs[event.index]
            truth = self._motion.at(t)
            lat, lon = self.site.latlon(truth.x, truth.y)
            self._spoof_xy = self.site.xy(*destination(lat, lon, bearing, distance))
            self._spoof_left = fixes
        elif what in ("battery.low", "battery.critical"):
            self._alarm_count += 1
            alarm_type: AlarmType = "battery.low" if what == "battery.low" else "battery.critical"
            self._alarm(out, t, alarm_type, "active", f"{what}-{self._alarm_count}")
        elif what == "battery.dead":
            self._dead = True
            logger.debug("%s: battery flat at %ss, silent from now", self.device_id, round(t))

    def _release_outbox(self, t: float, out: list[Emission]) -> None:
        sent = self._at(t)
        for emission in self._outbox:
            out.append(replace(emission, sent_at=sent, replayed=True))
            self._stats[emission.kind] = self._stats.get(emission.kind, 0) + 1
        self._outbox.clear()

    def _alarm(
        self,
        out: list[Emission],
        t: float,
        alarm_type: str,
        state: Literal["active", "cleared"],
        alarm_id: str,
    ) -> None:
        snapshot = None if self._silence == "no_fix" else self._position(t, consume=False)
        body = AlarmBody.model_validate(
            {"type": alarm_type, "state": state, "alarm_id": alarm_id, "position": snapshot}
        )
        self._emit(out, "alarm", body, t)

    # -- readings

    def _battery(self, t: float) -> int:
        # Rounded up: the reading reaches a threshold exactly when the charge does, so
        # the alarm and the first reading at the threshold coincide.
        level = self._batt0 - self._drain_per_s * t
        return max(0, min(100, math.ceil(level - 1e-9)))

    def _rssi(self) -> int:
        return max(-150, min(0, round(self._rssi0 + self._rng.gauss(0.0, 3.0))))

    def _strap_state(self) -> Literal["closed", "open"] | None:
        return self._strap if self.profile.alarms.strap_tamper else None

    def _source(self, building: Building | None) -> tuple[PositionSource, float] | None:
        fix, rng, profile = self.scenario.fix, self._rng, self.profile
        if building is not None and building.beacons and profile.indoor_beacons.enabled:
            return "ble_beacon", _draw_log(rng, fix.beacon_acc_m)
        for source in profile.positioning.sources:
            if source == "gnss":
                span = fix.gnss_indoor_acc_m if building is not None else fix.gnss_acc_m
                acc = _draw_log(rng, span)
                if acc <= profile.positioning.gnss_accuracy_gate_m:
                    return "gnss", acc
            elif source == "wifi":
                return "wifi", _draw_log(rng, fix.wifi_acc_m)
            else:
                return "cell", _draw_log(rng, fix.cell_acc_m)
        return None

    def _position(self, t: float, *, consume: bool) -> PositionBody | None:
        rng, site = self._rng, self.site
        truth = self._motion.at(t)
        building = site.building_at(truth.x, truth.y)
        chosen = self._source(building)
        if chosen is None:
            self._count("no_fix")
            return None
        src, acc = chosen
        if consume and self._spoof_left > 0 and self._spoof_xy is not None:
            self._spoof_left -= 1
            acc = rng.uniform(3.0, 5.0)
            if "gnss" in self.profile.positioning.sources:
                src = "gnss"
            sigma = acc / ACC_SIGMA_RATIO
            x = self._spoof_xy[0] + rng.gauss(0.0, sigma)
            y = self._spoof_xy[1] + rng.gauss(0.0, sigma)
        else:
            sigma = acc / ACC_SIGMA_RATIO
            fix = self.scenario.fix
            if fix.outlier_rate > 0 and rng.random() < fix.outlier_rate:
                sigma *= _draw(rng, fix.outlier_factor)
            x = truth.x + rng.gauss(0.0, sigma)
            y = truth.y + rng.gauss(0.0, sigma)
        lat, lon = site.latlon(x, y)
        data: dict[str, object] = {
            "lat": round(lat, 7),
            "lon": round(lon, 7),
            "acc": round(acc, 1),
            "src": src,
            "batt": self._battery(t),
            "charging": False,
            "strap": self._strap_state(),
            "rssi": self._rssi(),
        }
        if src == "gnss":
            data["vel"] = round(max(0.0, truth.speed + rng.gauss(0.0, 0.15)), 2)
            if truth.course is not None and truth.speed > 0.5:
                data["cog"] = round(truth.course, 1)
            data["sat"] = max(4, min(24, round(17 - 2.2 * math.log(acc) + rng.gauss(0.0, 1.0))))
            data["hdop"] = round(max(0.5, min(20.0, acc / 5 + rng.gauss(0.0, 0.1))), 1)
        return PositionBody.model_validate(data)

    def _count(self, what: str) -> None:
        self._stats[what] = self._stats.get(what, 0) + 1

    # -- ground truth, for tests and the demo

    def timeline(self) -> list[PlannedEvent]:
        """The planned events with their times (alarms, silences, spoofs, battery)."""
        return [PlannedEvent(self._at(e.t), e.what, e.detail) for e in self._events]

    def battery_at(self, when: datetime) -> int:
        """The charge, percent, at ``when``."""
        return self._battery((when - self.start).total_seconds())

    def truth_at(self, when: datetime) -> TruthFix:
        """Where the wearer truly was at ``when`` (fastest when asked in time order)."""
        t = (when - self.start).total_seconds()
        if self._truth_motion is None or t < self._truth_t:
            self._truth_motion = Motion(self._plan(), t)
        self._truth_t = t
        truth = self._truth_motion.at(t)
        lat, lon = self.site.latlon(truth.x, truth.y)
        building = self.site.building_at(truth.x, truth.y)
        inside = building.name if building else None
        return TruthFix(lat, lon, truth.x, truth.y, truth.speed, inside)
