"""Simulated devices for tests, load runs and the demo.

Wearables follow GeoJSON tracks on a site map and report as the protocol says:
positions with honest ``acc``, alarms, check-ins, telemetry. Cameras replay a folder
of images or a video. One asyncio task drives a thousand of them.

Pieces
    :class:`SiteMap` (:func:`load_site_map`, :func:`demo_site`): zones, buildings, the
    curfew home, tracks and spots from a GeoJSON FeatureCollection, projected into a
    local metric frame (:class:`LocalFrame`, ECEF-based, correct anywhere).

    :class:`ScenarioSpec` and :data:`PRESETS`: what a wearable does (``walk``,
    ``exclusion_breach``, ``leave_inclusion``, ``curfew_violation``, ``gnss_jitter``,
    ``indoor_outdoor``, ``strap_tamper``, ``sos``, ``battery_drain``, ``silent``,
    ``spoof_jump``), as pydantic data with per-device ranges.

    :class:`WearableSimulator`: a pure state machine, ``next_due()`` and
    ``step(now) -> list[Emission]``, seeded per device; no clock, no I/O, so a replay
    with the same seed is exact. :meth:`~WearableSimulator.set_violation` switches to
    the in-violation reporting interval, as a hub command would.

    :class:`Emission` (type, validated body, capture time) and
    :class:`EnvelopeFactory` (boot id, ``seq``, UUIDv7 event ids at capture time),
    which wraps emissions into :class:`~devices.protocol.PositionEvent` and the rest.
    :class:`EnvelopingSink` does that per device inside a scheduler sink.

    :class:`Scheduler` with :class:`VirtualClock` (fast-forward) or :class:`RealClock`
    (optionally sped up): a heap of next-due times on one asyncio loop; the sink is
    any callable, plain or async.

    :func:`build_fleet`: N wearables with a scenario mix and protocol device ids.

    :class:`CameraReplay`: RGB frames from images or a video at a frame rate.

Decisions, and why
    *Simulators emit bodies, not envelopes.* On a device the outbox assigns
    ``boot_id``, ``seq`` and ``sent_at`` when it stores and sends an event; a runner
    built on the edge outbox should do the same with simulated events. Runners
    without an outbox (tests, a quick load run) wrap with :class:`EnvelopeFactory`.

    *Emissions carry the time they were due*, not the time the step ran, so the
    content of a run does not depend on how late the event loop was. Event ids are
    UUIDv7 of the capture time, also in virtual time.

    *The device does not know zones.* Reporting faster in violation is the hub's
    command (:meth:`WearableSimulator.set_violation`); the simulator never decides it.

    *Accuracy means 68%.* Fix errors are circular Gaussians scaled so about 68% fall
    within ``acc``, matching the protocol's definition; outliers keep a confident
    ``acc`` and are several times further off, as multipath and spoofing are.

    *Ground truth is exposed* (:meth:`WearableSimulator.truth_at`,
    :meth:`WearableSimulator.timeline`) so tests and benchmarks compare the hub's
    verdicts with what really happened.

    *Pure Python geometry.* A few polygons per site and point-in-polygon by ray
    casting need no shapely; the local frame goes through ECEF, so it is right at any
    latitude and across the antimeridian.
"""

from __future__ import annotations

from devices.simulation.camera import IMAGE_SUFFIXES, CameraReplay, Frame
from devices.simulation.emission import (
    Emission,
    EmissionKind,
    EnvelopeFactory,
    EnvelopingSink,
    SimMessage,
)
from devices.simulation.fleet import DEFAULT_MIX, FleetSpec, allocate, build_fleet, site_profile
from devices.simulation.geo import (
    LocalFrame,
    Polygon,
    destination,
    haversine_m,
    initial_bearing,
    point_in_ring,
)
from devices.simulation.scenarios import (
    PRESETS,
    SCENARIO_NAMES,
    AlarmStep,
    BatterySpec,
    CurfewSpec,
    FixSpec,
    RouteSpec,
    ScenarioName,
    ScenarioSpec,
    SilenceStep,
    SpoofStep,
    preset,
)
from devices.simulation.scheduler import (
    Clock,
    RealClock,
    RunStats,
    Scheduler,
    SimulatedDevice,
    Sink,
    VirtualClock,
)
from devices.simulation.site import (
    DEMO_SITES,
    Building,
    Home,
    SiteDocument,
    SiteError,
    SiteMap,
    Track,
    Zone,
    demo_site,
    demo_site_path,
    load_site_map,
    parse_site_map,
)
from devices.simulation.wearable import (
    ACC_SIGMA_RATIO,
    PlannedEvent,
    ScenarioError,
    TruthFix,
    WearableSimulator,
    scenario_problems,
)

__all__ = [
    "ACC_SIGMA_RATIO",
    "DEFAULT_MIX",
    "DEMO_SITES",
    "IMAGE_SUFFIXES",
    "PRESETS",
    "SCENARIO_NAMES",
    "AlarmStep",
    "BatterySpec",
    "Building",
    "CameraReplay",
    "Clock",
    "CurfewSpec",
    "Emission",
    "EmissionKind",
    "EnvelopeFactory",
    "EnvelopingSink",
    "FixSpec",
    "FleetSpec",
    "Frame",
    "Home",
    "LocalFrame",
    "PlannedEvent",
    "Polygon",
    "RealClock",
    "RouteSpec",
    "RunStats",
    "ScenarioError",
    "ScenarioName",
    "ScenarioSpec",
    "Scheduler",
    "SilenceStep",
    "SimMessage",
    "SimulatedDevice",
    "Sink",
    "SiteDocument",
    "SiteError",
    "SiteMap",
    "SpoofStep",
    "Track",
    "TruthFix",
    "VirtualClock",
    "WearableSimulator",
    "Zone",
    "allocate",
    "build_fleet",
    "demo_site",
    "demo_site_path",
    "destination",
    "haversine_m",
    "initial_bearing",
    "load_site_map",
    "parse_site_map",
    "point_in_ring",
    "preset",
    "scenario_problems",
    "site_profile",
]
