"""The simulated wearable as a real agent: ``lantern edge wearable``.

A :class:`WearableAgent` walks a GeoJSON track (:func:`load_track`) at walking speed
and reports as an ankle tag or wristband would, through the shared runtime
(:mod:`edge.agent`: outbox, MQTT link, config, presence):

* a ``position`` every ``report_interval_s.normal`` seconds of its profile;
* a ``checkin`` every ``heartbeat_s`` (with the outbox depth);
* ``tele`` (battery, signal, outbox depth) every ``telemetry_interval_s``;
* ``battery.low`` / ``battery.critical`` alarms when the simulated battery, which
  drains with time, crosses the profile's thresholds;
* on ``cmd/locate``, a position at once.

``rate`` speeds the simulation up: every interval is divided by it, and the walk
moves ``rate`` times as fast, so tests get 50 positions a second out of a profile
that reports once a minute. Event timestamps are the real clock; only the walk is
scaled.

The track follower here is deliberately small (a polyline walked back and forth at
constant speed, positions interpolated on a local flat-earth approximation, which is
accurate to well under a metre over a site); the simulators of ``devices.simulation``
may replace it.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devices.catalog import DeviceModel
from devices.firmware import WearableProfile
from devices.protocol import (
    AlarmBody,
    CheckinBody,
    Command,
    LocateCommand,
    PositionBody,
    TelemetryBody,
    new_event_id,
)
from edge.agent import AgentTuning, EdgeAgent, Profile
from edge.comms.mqtt import MqttSettings

__all__ = [
    "Track",
    "TrackError",
    "WearableAgent",
    "load_track",
    "parse_track",
]

logger = logging.getLogger(__name__)

_EARTH_RADIUS_M = 6_371_008.8
_MAX_TRACK_POINTS = 100_000


class TrackError(ValueError):
    """A track file that cannot be walked; the message says why."""


def _point(value: Any, where: str) -> tuple[float, float]:
    if (
        not isinstance(value, list)
        or len(value) < 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value[:2])
    ):
        raise TrackError(f"{where}: a position is [lon, lat], not {str(value)[:40]}")
    lon, lat = float(value[0]), float(value[1])
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        raise TrackError(f"{where}: [{lon}, {lat}] is not a longitude and latitude")
    return lon, lat


def _lines(geometry: Any, where: str) -> list[list[tuple[float, float]]]:
    if not isinstance(geometry, dict):
        raise TrackError(f"{where}: geometry must be an object")
    kind = geometry.get("type")
    coords = geometry.get("coordinates")
    if kind == "LineString":
        if not isinstance(coords, list):
            raise TrackError(f"{where}: LineString coordinates must be a list")
        return [[_point(p, f"{where}[{i}]") for i, p in enumerate(coords)]]
    if kind == "MultiLineString":
        if not isinstance(coords, list):
            raise TrackError(f"{where}: MultiLineString coordinates must be a list")
        return [
            [_point(p, f"{where}[{j}][{i}]") for i, p in enumerate(line)]
            for j, line in enumerate(coords)
            if isinstance(line, list)
        ]
    if kind == "GeometryCollection":
        found: list[list[tuple[float, float]]] = []
        for i, member in enumerate(geometry.get("geometries") or []):
            found.extend(_lines(member, f"{where}.geometries[{i}]"))
        return found
    return []


def parse_track(document: Any) -> Track:
    """A :class:`Track` from a parsed GeoJSON object: a LineString or MultiLineString
    geometry, a Feature of one, or a FeatureCollection whose line features are walked
    one after the other. Other geometries (points, polygons) are ignored."""
    if not isinstance(document, dict):
        raise TrackError("a track is a GeoJSON object")
    kind = document.get("type")
    lines: list[list[tuple[float, float]]] = []
    if kind == "FeatureCollection":
        features = document.get("features")
        if not isinstance(features, list):
            raise TrackError("FeatureCollection without a features list")
        for i, feature in enumerate(features):
            if isinstance(feature, dict) and feature.get("geometry") is not None:
                lines.extend(_lines(feature["geometry"], f"features[{i}].geometry"))
    elif kind == "Feature":
        lines = _lines(document.get("geometry"), "geometry")
    else:
        lines = _lines(document, "geometry")
    points = [p for line in lines for p in line]
    if len(points) < 2:
        raise TrackError("no LineString with at least two positions found")
    if len(points) > _MAX_TRACK_POINTS:
        raise TrackError(f"{len(points)} positions; at most {_MAX_TRACK_POINTS}")
    track = Track(points)
    if track.length_m <= 0:
        raise TrackError("the track has zero length")
    return track


def load_track(path: Path) -> Track:
    """Read a GeoJSON track file (see :func:`parse_track`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TrackError(f"{path}: cannot read: {exc}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TrackError(f"{path}: not JSON: {exc.msg} at line {exc.lineno}") from None
    try:
        return parse_track(document)
    except TrackError as exc:
        raise TrackError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class _Fix:
    lat: float
    lon: float
    cog: float


class Track:
    """A polyline of (lon, lat) walked back and forth at constant speed."""

    def __init__(self, points: list[tuple[float, float]]) -> None:
        self.points = points
        lat0 = math.radians(sum(p[1] for p in points) / len(points))
        self._lat0 = lat0
        self._lon0 = sum(p[0] for p in points) / len(points)
        self._xy = [self._to_xy(lon, lat) for lon, lat in points]
        self._cum = [0.0]
        for (x0, y0), (x1, y1) in zip(self._xy, self._xy[1:], strict=False):
            self._cum.append(self._cum[-1] + math.hypot(x1 - x0, y1 - y0))
        self.length_m = self._cum[-1]

    def _to_xy(self, lon: float, lat: float) -> tuple[float, float]:
        x = math.radians(lon - self._lon0) * _EARTH_RADIUS_M * math.cos(self._lat0)
        y = math.radians(lat) * _EARTH_RADIUS_M
        return x, y

    def _to_lonlat(self, x: float, y: float) -> tuple[float, float]:
        lat = math.degrees(y / _EARTH_RADIUS_M)
        lon = self._lon0 + math.degrees(x / (_EARTH_RADIUS_M * math.cos(self._lat0)))
        return lon, lat

    def at(self, distance_m: float) -> _Fix:
        """Where a walker is after ``distance_m`` metres, going back at each end."""
        period = 2 * self.length_m
        d = distance_m % period
        backwards = d > self.length_m
        if backwards:
            d = period - d
        lo, hi = 0, len(self._cum) - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._cum[mid] <= d:
                lo = mid
            else:
                hi = mid
        seg = self._cum[hi] - self._cum[lo]
        t = 0.0 if seg <= 0 else (d - self._cum[lo]) / seg
        (x0, y0), (x1, y1) = self._xy[lo], self._xy[hi]
        x, y = x0 + (x1 - x0) * t, y0 + (y1 - y0) * t
        dx, dy = (x0 - x1, y0 - y1) if backwards else (x1 - x0, y1 - y0)
        cog = math.degrees(math.atan2(dx, dy)) % 360.0
        lon, lat = self._to_lonlat(x, y)
        return _Fix(lat=lat, lon=lon, cog=cog)


class WearableAgent(EdgeAgent):
    """A simulated ankle tag or wristband walking ``track`` (see the module docstring).

    ``max_events`` stops producing after that many events of this run (the agent
    keeps running and delivering until stopped); ``seed`` makes the simulated noise
    repeatable.
    """

    profile_type = WearableProfile

    def __init__(
        self,
        *,
        device_id: str,
        model: DeviceModel,
        profile: WearableProfile,
        mqtt: MqttSettings,
        outbox_path: Path,
        track: Track,
        rate: float = 1.0,
        speed_mps: float = 1.4,
        max_events: int | None = None,
        seed: int | None = None,
        tuning: AgentTuning | None = None,
        event_log: Path | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        super().__init__(
            device_id=device_id,
            model=model,
            profile=profile,
            mqtt=mqtt,
            outbox_path=outbox_path,
            tuning=tuning,
            event_log=event_log,
        )
        self.track = track
        self.rate = rate
        self.speed_mps = speed_mps
        self.max_events = max_events
        self._rng = random.Random(seed)
        self._t0 = time.monotonic()
        self._next: dict[str, float] = {
            "position": self._t0,
            "checkin": self._t0,
            "telemetry": self._t0,
        }
        self._battery = 100.0
        self._battery_alarms: dict[str, str] = {}
        self._made = 0

    @property
    def wearable_profile(self) -> WearableProfile:
        """The profile in force."""
        assert isinstance(self.profile, WearableProfile)
        return self.profile

    def _interval(self, seconds: float) -> float:
        return seconds / self.rate

    def _budget_left(self) -> bool:
        return self.max_events is None or self._made < self.max_events

    def tick(self, now: float) -> float:
        """Make the positions, check-ins, telemetry and alarms that are due."""
        profile = self.wearable_profile
        self._drain_battery(now)
        if now >= self._next["position"]:
            self._next["position"] = max(
                self._next["position"] + self._interval(profile.report_interval_s.normal),
                now - 1.0,
            )
            if self._budget_left():
                self._position(now)
        if now >= self._next["checkin"]:
            self._next["checkin"] = now + self._interval(profile.heartbeat_s)
            if self._budget_left():
                self._made += 1
                self.emit_event(
                    "checkin",
                    CheckinBody(
                        next_checkin_s=max(10, round(self._interval(profile.heartbeat_s))),
                        batt=int(self._battery),
                        charging=False,
                        strap="closed",
                        rssi=self._rssi(),
                        uptime_s=int(now - self._t0),
                        outbox_depth=self.outbox.events,
                    ),
                )
        if now >= self._next["telemetry"]:
            self._next["telemetry"] = now + self._interval(profile.telemetry_interval_s)
            self.emit_telemetry(
                TelemetryBody(
                    batt=int(self._battery),
                    charging=False,
                    rssi=self._rssi(),
                    temp_c=round(31.0 + self._rng.uniform(-1.5, 1.5), 1),
                    outbox_depth=self.outbox.events,
                    uptime_s=int(now - self._t0),
                )
            )
        return max(0.0, min(self._next.values()) - time.monotonic())

    def profile_changed(self, profile: Profile) -> None:
        """A new report interval applies from the next position on."""
        assert isinstance(profile, WearableProfile)
        now = time.monotonic()
        self._next["position"] = min(
            self._next["position"], now + self._interval(profile.report_interval_s.normal)
        )
        logger.info(
            "%s: reporting every %d s (x%g)",
            self.device_id,
            profile.report_interval_s.normal,
            self.rate,
        )

    def handle_command(self, command: Command) -> None:
        """``locate``: a position now. Others are logged."""
        if isinstance(command, LocateCommand):
            self._position(time.monotonic())
        else:
            logger.info(
                "%s: command %s not supported by the simulator", self.device_id, command.NAME
            )

    def _rssi(self) -> int:
        return int(self._rng.gauss(-85, 6)) if self._rng.random() < 0.99 else -120

    def _position(self, now: float) -> None:
        self._made += 1
        walked = (now - self._t0) * self.rate * self.speed_mps
        fix = self.track.at(walked)
        acc = round(abs(self._rng.gauss(6.0, 2.0)) + 2.0, 1)
        self.emit_event(
            "position",
            PositionBody(
                lat=round(fix.lat, 7),
                lon=round(fix.lon, 7),
                acc=acc,
                src="gnss",
                vel=self.speed_mps,
                cog=round(fix.cog, 1),
                sat=self._rng.randint(6, 14),
                hdop=round(self._rng.uniform(0.7, 2.0), 1),
                batt=int(self._battery),
                charging=False,
                strap="closed",
                rssi=self._rssi(),
            ),
        )

    def _drain_battery(self, now: float) -> None:
        """Lose 2% an hour of simulated time; raise the battery alarms on the way down."""
        hours = (now - self._t0) * self.rate / 3600.0
        self._battery = max(0.0, 100.0 - 2.0 * hours)
        thresholds = self.wearable_profile.battery
        for kind, level in (
            ("battery.low", thresholds.low_pct),
            ("battery.critical", thresholds.critical_pct),
        ):
            if self._battery <= level and kind not in self._battery_alarms:
                alarm_id = new_event_id()
                self._battery_alarms[kind] = alarm_id
                if self._budget_left():
                    self._made += 1
                    fix = self.track.at((now - self._t0) * self.rate * self.speed_mps)
                    self.emit_event(
                        "alarm",
                        AlarmBody(
                            type="battery.low" if kind == "battery.low" else "battery.critical",
                            state="active",
                            alarm_id=alarm_id,
                            position=PositionBody(
                                lat=round(fix.lat, 7), lon=round(fix.lon, 7), acc=10.0, src="gnss"
                            ),
                            detail=f"battery at {int(self._battery)}%",
                        ),
                        captured_at=datetime.now(UTC),
                    )
