"""The simulated wearable as a real agent: ``lantern edge wearable``.

A :class:`WearableAgent` is one :class:`devices.simulation.WearableSimulator` behind
the shared agent runtime (:mod:`edge.agent`: outbox, MQTT link, config, presence).
The simulator decides what the device reports, as it does for the fleets of
``lantern devices simulate``; the agent commits each emission to the outbox
(``position``, ``alarm`` and ``checkin`` events, ``tele``), with the real outbox depth
in check-ins and telemetry. With the walk scenario (:func:`walk_scenario`) that is:

* a ``position`` every ``report_interval_s.normal`` seconds of the profile in force
  (a new profile from the hub applies from the last position on), its source and
  accuracy as the profile's positioning says;
* ``tele`` every ``telemetry_interval_s``, and a ``checkin`` after ``heartbeat_s``
  without an event;
* ``battery.low`` / ``battery.critical`` alarms as the battery (100%, 2% an hour)
  crosses the profile's thresholds;
* on start and on ``cmd/locate``, a position at once (the true position with the
  error of a good GNSS fix), as a device reports where it is when it boots.

The track (:func:`load_track`) is a GeoJSON line walked back and forth from its first
position at ``speed_mps``, or a Lantern site map (``devices/simulation/sites``), whose
``walk`` track is walked among its buildings.

``rate`` speeds the simulation up: the simulator runs on a clock ``rate`` times faster
than the wall clock, so every interval is divided by it and the walk moves ``rate``
times as fast; tests get 50 positions a second out of a profile that reports once a
minute. Event timestamps are mapped back onto the wall clock, so the hub never sees a
time ahead of its own.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from devices.catalog import DeviceModel
from devices.firmware import WearableProfile
from devices.protocol import (
    CheckinBody,
    Command,
    LocateCommand,
    PositionBody,
    ProtocolError,
    TelemetryBody,
    loads_object,
)
from devices.simulation import (
    ACC_SIGMA_RATIO,
    BatterySpec,
    Emission,
    RouteSpec,
    ScenarioSpec,
    SiteError,
    SiteMap,
    WearableSimulator,
    parse_site_map,
)
from devices.simulation import Track as SiteTrack
from edge.agent import AgentTuning, EdgeAgent, Profile
from edge.comms.mqtt import MqttSettings

__all__ = [
    "TRACK_NAME",
    "Track",
    "TrackError",
    "WearableAgent",
    "load_track",
    "make_simulator",
    "parse_track",
    "walk_scenario",
]

logger = logging.getLogger(__name__)

TRACK_NAME = "walk"
"""The name of the track walked: the one made from a plain GeoJSON line, and the one
looked for first in a site map."""

_MAX_TRACK_POINTS = 100_000
_EventKind = Literal["position", "alarm", "checkin"]
_EVENT_KINDS: dict[str, _EventKind] = {
    "position": "position",
    "alarm": "alarm",
    "checkin": "checkin",
}


class TrackError(ValueError):
    """A track file that cannot be walked; the message says why."""


class Track:
    """A path for the simulated wearable: a track of a
    :class:`~devices.simulation.SiteMap` (a site made around a plain GeoJSON line,
    or a real site map)."""

    def __init__(self, site: SiteMap, name: str = TRACK_NAME) -> None:
        self.site = site
        self.name = name
        self.path: SiteTrack = site.track(name)
        """The track in the site's local metric frame."""

    @property
    def points(self) -> list[tuple[float, float]]:
        """The positions as (longitude, latitude)."""
        return [(lon, lat) for lat, lon in (self.site.latlon(x, y) for x, y in self.path.points)]

    @property
    def length_m(self) -> float:
        """Length from the first position to the last, metres."""
        pts = self.path.points
        return sum(math.dist(a, b) for a, b in zip(pts, pts[1:], strict=False))

    def __repr__(self) -> str:
        return f"Track({self.site.id!r}, {self.name!r}, {self.length_m:.0f} m)"


def _point(value: Any, where: str) -> list[float]:
    if (
        not isinstance(value, list)
        or len(value) < 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value[:2])
    ):
        raise TrackError(f"{where}: a position is [lon, lat], not {str(value)[:40]}")
    try:
        lon, lat = float(value[0]), float(value[1])
    except OverflowError:  # an integer beyond a double, e.g. of 400 digits
        raise TrackError(f"{where}: a position is two finite numbers in range") from None
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        raise TrackError(f"{where}: [{lon}, {lat}] is not a longitude and latitude")
    return [lon, lat]


def _lines(geometry: Any, where: str) -> list[list[list[float]]]:
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
        found: list[list[list[float]]] = []
        for i, member in enumerate(geometry.get("geometries") or []):
            found.extend(_lines(member, f"{where}.geometries[{i}]"))
        return found
    return []


def _site_track(document: dict[str, Any], source: str | None) -> Track:
    """The track of a Lantern site map: ``walk``, else the first track in the file."""
    try:
        site = parse_site_map(document, source=source)
    except SiteError as exc:
        raise TrackError(str(exc)) from None
    if not site.tracks:
        raise TrackError(f"site {site.id!r} has no track to walk")
    name = TRACK_NAME if TRACK_NAME in site.tracks else next(iter(site.tracks))
    return Track(site, name)


def parse_track(document: Any, *, source: str | None = None) -> Track:
    """A :class:`Track` from a parsed GeoJSON object.

    A Lantern site map (a FeatureCollection with a ``lantern`` member) gives its
    ``walk`` track (else its first). Anything else is read as a line: a LineString or
    MultiLineString geometry, a Feature of one, or a FeatureCollection whose line
    features are walked one after the other; other geometries are ignored. The line
    becomes the only feature of a site made around it.
    """
    if not isinstance(document, dict):
        raise TrackError("a track is a GeoJSON object")
    kind = document.get("type")
    if kind == "FeatureCollection" and "lantern" in document:
        return _site_track(document, source)
    lines: list[list[list[float]]] = []
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
    site_document = {
        "type": "FeatureCollection",
        "lantern": {
            "id": "track",
            "name": "A walk from a track file",
            "kind": "community",
            "timezone": "UTC",
            "wearable_model": "lantern-ankle-a1",
            "wearable_profile": "ankle_tag",
        },
        "features": [
            {
                "type": "Feature",
                "properties": {"role": "track", "name": TRACK_NAME},
                "geometry": {"type": "LineString", "coordinates": points},
            }
        ],
    }
    try:
        track = Track(parse_site_map(site_document, source=source))
    except SiteError as exc:
        raise TrackError(str(exc)) from None
    if track.length_m <= 0:
        raise TrackError("the track has zero length")
    return track


def load_track(path: Path) -> Track:
    """Read a GeoJSON track or site map file (see :func:`parse_track`): a UTF-8 JSON
    object, read with the guards of :func:`devices.protocol.loads_object` (bounded
    nesting and numbers, no duplicate keys, no NaN)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TrackError(f"{path}: cannot read: {exc}") from None
    try:
        document = loads_object(raw)
    except ProtocolError as exc:
        raise TrackError(f"{path}: not JSON, or not a usable JSON object: {exc.reason}") from None
    try:
        return parse_track(document, source=str(path))
    except TrackError as exc:
        raise TrackError(f"{path}: {exc}") from None


def walk_scenario(track: Track, speed_mps: float = 1.4) -> ScenarioSpec:
    """Walk ``track`` back and forth from its first position at ``speed_mps``, the
    battery at 100% and losing 2% an hour; no timed events."""
    return ScenarioSpec(
        name="walk",
        description=f"Walks track {track.name!r} back and forth at {speed_mps:g} m/s.",
        route=RouteSpec(
            track=track.name, mode="pingpong", start="beginning", speed_mps=(speed_mps, speed_mps)
        ),
        battery=BatterySpec(start_pct=(100.0, 100.0), drain_pct_per_h=(2.0, 2.0)),
    )


def make_simulator(
    device_id: str,
    track: Track,
    profile: WearableProfile,
    *,
    start: datetime,
    seed: int | str = 0,
    speed_mps: float = 1.4,
) -> WearableSimulator:
    """The simulator a :class:`WearableAgent` runs: :func:`walk_scenario` on the
    track's site."""
    return WearableSimulator(
        device_id,
        track.site,
        walk_scenario(track, speed_mps),
        profile=profile,
        start=start,
        seed=seed,
    )


class WearableAgent(EdgeAgent):
    """A simulated ankle tag or wristband walking ``track`` (see the module docstring).

    ``max_events`` stops producing events after that many of this run (telemetry goes
    on, and the agent keeps delivering until stopped); ``seed`` makes the simulated
    noise repeatable.
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
        walk_scenario(track, speed_mps)  # refuse a bad speed before opening anything
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
        self._start = datetime.now(UTC)
        try:
            self.simulator = make_simulator(
                device_id,
                track,
                self.wearable_profile,
                start=self._start,
                seed=seed if seed is not None else secrets.randbits(64),
                speed_mps=speed_mps,
            )
        except BaseException:
            self.shutdown()
            raise
        self._made = 0
        self._located_at_start = False

    @property
    def wearable_profile(self) -> WearableProfile:
        """The profile in force."""
        assert isinstance(self.profile, WearableProfile)
        return self.profile

    # -- simulated time: `rate` times the wall clock, from the agent's start

    def _sim_time(self, now: float) -> datetime:
        return self._start + timedelta(seconds=(now - self._t0) * self.rate)

    def _wall_time(self, sim_time: datetime) -> datetime:
        return self._start + (sim_time - self._start) / self.rate

    def _budget_left(self) -> bool:
        return self.max_events is None or self._made < self.max_events

    def tick(self, now: float) -> float:
        """Commit what the simulator emitted up to ``now``; the seconds until it is
        next due."""
        if not self._located_at_start:
            self._located_at_start = True
            self._locate(now)
        sim_now = self._sim_time(now)
        for emission in self.simulator.step(sim_now):
            self._commit(emission)
        due = self.simulator.next_due()
        if due is None:
            return 1.0
        return max(0.0, (due - sim_now).total_seconds() / self.rate)

    def _commit(self, emission: Emission) -> None:
        body = emission.body
        if isinstance(body, TelemetryBody):
            self.emit_telemetry(body.model_copy(update={"outbox_depth": self.outbox.events}))
            return
        if not self._budget_left():
            return
        self._made += 1
        if isinstance(body, CheckinBody):
            body = body.model_copy(update={"outbox_depth": self.outbox.events})
        self.emit_event(
            _EVENT_KINDS[emission.kind], body, captured_at=self._wall_time(emission.captured_at)
        )

    def profile_changed(self, profile: Profile) -> None:
        """The simulator follows the new profile; a new report interval counts from
        the last position."""
        assert isinstance(profile, WearableProfile)
        simulator = self.simulator
        simulator.profile = profile
        if not simulator.violation:
            # set_violation recomputes the next position from the profile in force (one
            # interval after the last position, or at once); on and off again applies
            # the new normal interval now rather than after the next position.
            simulator.set_violation(True)
            simulator.set_violation(False)
        logger.info(
            "%s: reporting every %d s (x%g)",
            self.device_id,
            profile.report_interval_s.normal,
            self.rate,
        )

    def handle_command(self, command: Command) -> None:
        """``locate``: a position now. Others are logged."""
        if isinstance(command, LocateCommand):
            self._locate(time.monotonic())
        else:
            logger.info(
                "%s: command %s not supported by the simulator", self.device_id, command.NAME
            )

    def _locate(self, now: float) -> None:
        """A position at once: where the wearer truly is, with an error of a good GNSS
        fix (``acc`` 3-8 m, 68% of fixes within it)."""
        if not self._budget_left():
            return
        sim_now = self._sim_time(now)
        truth = self.simulator.truth_at(sim_now)
        acc = round(self._rng.uniform(3.0, 8.0), 1)
        sigma = acc / ACC_SIGMA_RATIO
        site = self.track.site
        lat, lon = site.latlon(
            truth.x + self._rng.gauss(0.0, sigma), truth.y + self._rng.gauss(0.0, sigma)
        )
        sources = self.wearable_profile.positioning.sources
        self._made += 1
        self.emit_event(
            "position",
            PositionBody(
                lat=round(lat, 7),
                lon=round(lon, 7),
                acc=acc,
                src="gnss" if "gnss" in sources else sources[0],
                batt=self.simulator.battery_at(sim_now),
                charging=False,
            ),
            captured_at=self._wall_time(sim_now),
        )
