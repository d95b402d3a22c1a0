"""Scenarios: what a simulated wearable does, as validated data.

A :class:`ScenarioSpec` names a route on the site (a track to walk or a spot to stand
at), how fixes are drawn (accuracy per source, outliers), the battery, and timed
steps: alarms raised and cleared, silences, a spoofed jump. Numbers that vary between
devices are :data:`Span` pairs ``(low, high)``, drawn uniformly per device from its
own seeded random generator, so a fleet is varied and a replay is exact. Times of
steps are seconds after the simulation starts.

:data:`PRESETS` holds the scenarios the tests, the load run and the demo use; each
needs the site features listed in its route (the shipped sites have them all, the
curfew only in the community site). Load a custom scenario from JSON or YAML with
``ScenarioSpec.model_validate(data)``.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "PRESETS",
    "SCENARIO_NAMES",
    "AlarmStep",
    "BatterySpec",
    "CurfewSpec",
    "FixSpec",
    "RouteSpec",
    "ScenarioName",
    "ScenarioSpec",
    "SilenceStep",
    "Span",
    "SpoofStep",
    "Step",
    "preset",
]


def _ordered(value: tuple[float, float]) -> tuple[float, float]:
    if value[0] > value[1]:
        raise ValueError(f"low {value[0]} is above high {value[1]}")
    return value


Span = Annotated[tuple[float, float], AfterValidator(_ordered)]
"""A (low, high) range a per-device value is drawn from uniformly; equal ends fix it."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RouteSpec(_Spec):
    """Where the wearer goes: a site track to walk or a site spot to stand at."""

    track: str | None = Field(None, description="Name of a site track (LineString) to walk")
    spot: str | None = Field(None, description="Name of a site spot (Point) to stand at")
    mode: Literal["loop", "pingpong"] = Field(
        "loop",
        description="loop: after the last position go on from the first (straight back to "
        "it when the track is open); pingpong: walk the track backwards, and so on",
    )
    start: Literal["beginning", "random"] = Field(
        "random",
        description="beginning: at the first position when the simulation starts; random: "
        "anywhere along one round, so a fleet does not move in step",
    )
    speed_mps: Span = Field((1.0, 1.5), description="Walking speed, m/s")

    @model_validator(mode="after")
    def _one_place(self) -> Self:
        if (self.track is None) == (self.spot is None):
            raise ValueError("a route has either a track or a spot")
        low, high = self.speed_mps
        if low <= 0 or high > 15:
            raise ValueError(f"speed_mps {self.speed_mps} is not within (0, 15] m/s")
        return self


class FixSpec(_Spec):
    """How a fix's stated accuracy (``acc``) and its true error are drawn.

    ``acc`` is drawn per fix, log-uniformly within the span of the source used. The
    error is a circular Gaussian scaled so that about 68% of fixes fall within
    ``acc`` of the true position, as the protocol defines ``acc``. An outlier
    (multipath, a bad cell) keeps its small ``acc`` but is ``outlier_factor`` times
    further off.
    """

    gnss_acc_m: Span = Field((3.0, 15.0), description="GNSS outdoors, m")
    gnss_indoor_acc_m: Span = Field(
        (40.0, 150.0), description="GNSS indoors, m (usually beyond the accuracy gate)"
    )
    wifi_acc_m: Span = Field((10.0, 40.0), description="Wi-Fi positioning, m")
    beacon_acc_m: Span = Field((6.0, 20.0), description="Fixed BLE beacons, m")
    cell_acc_m: Span = Field((300.0, 1500.0), description="Cell positioning, m")
    outlier_rate: float = Field(0.0, ge=0, le=0.5, description="Share of fixes that are outliers")
    outlier_factor: Span = Field((3.0, 8.0), description="Outlier error as a multiple of normal")

    @model_validator(mode="after")
    def _positive(self) -> Self:
        for name in ("gnss_acc_m", "gnss_indoor_acc_m", "wifi_acc_m", "beacon_acc_m", "cell_acc_m"):
            low, high = getattr(self, name)
            if low <= 0 or high > 100_000:
                raise ValueError(f"{name} must be within (0, 100000] m")
        if self.outlier_factor[0] < 1:
            raise ValueError("outlier_factor must be at least 1")
        return self


class BatterySpec(_Spec):
    """Charge at the start and how fast it falls (linearly; nobody charges the device).

    The device raises ``battery.low`` and ``battery.critical`` when the charge reaches
    its profile's thresholds, and falls silent at 0%.
    """

    start_pct: Span = Field((55.0, 100.0), description="Charge at the start, percent")
    drain_pct_per_h: Span = Field((1.5, 4.0), description="Percent lost per hour")

    @model_validator(mode="after")
    def _ranges(self) -> Self:
        if self.start_pct[0] < 0 or self.start_pct[1] > 100:
            raise ValueError("start_pct must be within 0..100")
        if self.drain_pct_per_h[0] < 0 or self.drain_pct_per_h[1] > 1_000:
            raise ValueError("drain_pct_per_h must be within 0..1000")
        return self


class AlarmStep(_Spec):
    """Raise an alarm, and clear it later if ``clear_after_s`` is given."""

    kind: Literal["alarm"] = "alarm"
    alarm: Literal["strap.tamper", "sos"] = Field(
        description="strap.tamper also opens the strap (positions say strap: open) until "
        "cleared; the profile must enable the alarm"
    )
    at_s: Span = Field(description="Seconds after the start")
    clear_after_s: Span | None = Field(None, description="Seconds until cleared; never if unset")


class SilenceStep(_Spec):
    """A period in which the device does not report normally.

    ``off``: nothing at all (switched off, shielded, destroyed). ``offline``: no
    connection; events are still captured and arrive together at the end, flagged
    ``replayed`` (telemetry is dropped, it would have expired). ``no_fix``: alive and
    connected but unable to locate itself, so positions stop and check-ins (every
    ``heartbeat_s``) tell the hub it is still there.
    """

    kind: Literal["silence"] = "silence"
    at_s: Span = Field(description="Seconds after the start")
    duration_s: Span = Field(description="How long")
    mode: Literal["off", "offline", "no_fix"] = "off"


class SpoofStep(_Spec):
    """Report a position far from the truth with a confident accuracy (a spoofed or
    replayed GNSS signal), so the jump implies an impossible speed."""

    kind: Literal["spoof"] = "spoof"
    at_s: Span = Field(description="Seconds after the start")
    distance_m: Span = Field((20_000.0, 60_000.0), description="How far away the false fix is")
    fixes: int = Field(1, ge=1, le=100, description="How many positions in a row are false")


Step = Annotated[AlarmStep | SilenceStep | SpoofStep, Field(discriminator="kind")]


class CurfewSpec(_Spec):
    """Go home for the site home's curfew, ``late_by_s`` after it starts (negative: that
    much before), stay until it ends, then take up the route again. Needs a site with
    a home."""

    late_by_s: Span = Field(
        (1800.0, 3600.0), description="Seconds after the curfew start the wearer gets home"
    )


ScenarioName = Literal[
    "walk",
    "exclusion_breach",
    "leave_inclusion",
    "curfew_violation",
    "gnss_jitter",
    "indoor_outdoor",
    "strap_tamper",
    "sos",
    "battery_drain",
    "silent",
    "spoof_jump",
]
SCENARIO_NAMES: tuple[ScenarioName, ...] = (
    "walk",
    "exclusion_breach",
    "leave_inclusion",
    "curfew_violation",
    "gnss_jitter",
    "indoor_outdoor",
    "strap_tamper",
    "sos",
    "battery_drain",
    "silent",
    "spoof_jump",
)
"""The preset scenarios, in a fixed order."""


class ScenarioSpec(_Spec):
    """One wearable's behaviour."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$", description="Scenario name")
    description: str = Field("", description="What happens, for people")
    route: RouteSpec
    fix: FixSpec = Field(default_factory=FixSpec)
    battery: BatterySpec = Field(default_factory=BatterySpec)
    steps: list[Step] = Field(default_factory=list, description="Timed events")
    curfew: CurfewSpec | None = Field(None, description="Keep (or break) the home's curfew")

    def alarms(self) -> set[str]:
        """The alarm types the steps raise (the profile must enable each)."""
        return {s.alarm for s in self.steps if isinstance(s, AlarmStep)}

    def site_needs(self) -> list[tuple[str, str]]:
        """The site features this scenario uses, as (role, name) pairs."""
        needs: list[tuple[str, str]] = []
        if self.route.track is not None:
            needs.append(("track", self.route.track))
        if self.route.spot is not None:
            needs.append(("spot", self.route.spot))
        if self.curfew is not None:
            needs.append(("home", "*"))
        return needs


_WALK = RouteSpec(track="walk", mode="pingpong")

PRESETS: dict[str, ScenarioSpec] = {
    spec.name: spec
    for spec in (
        ScenarioSpec(
            name="walk",
            description="Walks the site's 'walk' track back and forth, inside every "
            "inclusion zone and outside every exclusion zone.",
            route=_WALK,
        ),
        ScenarioSpec(
            name="exclusion_breach",
            description="Walks into an exclusion zone, stays about five minutes, walks out, "
            "waits, and does it again.",
            route=RouteSpec(track="exclusion_breach", mode="loop"),
        ),
        ScenarioSpec(
            name="leave_inclusion",
            description="Walks out of the inclusion zone, stays outside about ten minutes, "
            "comes back, waits, and does it again.",
            route=RouteSpec(track="leave_inclusion", mode="loop"),
        ),
        ScenarioSpec(
            name="curfew_violation",
            description="Walks in town and gets home 30-60 minutes after the curfew starts; "
            "stays home until it ends.",
            route=RouteSpec(track="curfew_away", mode="loop"),
            curfew=CurfewSpec(),
        ),
        ScenarioSpec(
            name="gnss_jitter",
            description="Stands still outdoors; accuracy varies between 5 and 50 m with "
            "errors to match, and about 3% of fixes are outliers. The source is the "
            "profile's first outdoor one (GNSS on an ankle tag, Wi-Fi on a wristband).",
            route=RouteSpec(spot="jitter"),
            fix=FixSpec(
                gnss_acc_m=(5.0, 50.0),
                wifi_acc_m=(5.0, 50.0),
                outlier_rate=0.03,
                outlier_factor=(4.0, 10.0),
            ),
        ),
        ScenarioSpec(
            name="indoor_outdoor",
            description="Goes in and out of buildings: beacons indoors where installed "
            "(src ble_beacon), Wi-Fi indoors elsewhere, larger accuracy indoors.",
            route=RouteSpec(track="indoor_outdoor", mode="loop"),
        ),
        ScenarioSpec(
            name="strap_tamper",
            description="Walks; the strap is opened 5-20 minutes in (strap.tamper active, "
            "positions say strap: open) and refitted 10-20 minutes later (cleared).",
            route=_WALK,
            steps=[AlarmStep(alarm="strap.tamper", at_s=(300, 1200), clear_after_s=(600, 1200))],
        ),
        ScenarioSpec(
            name="sos",
            description="Walks; presses the help button 5-20 minutes in; cleared 2-10 "
            "minutes later.",
            route=_WALK,
            steps=[AlarmStep(alarm="sos", at_s=(300, 1200), clear_after_s=(120, 600))],
        ),
        ScenarioSpec(
            name="battery_drain",
            description="Walks with a failing battery: starts at 25-30% and loses 35-45% an "
            "hour, so battery.low, then battery.critical, then silence within the hour.",
            route=_WALK,
            battery=BatterySpec(start_pct=(25.0, 30.0), drain_pct_per_h=(35.0, 45.0)),
        ),
        ScenarioSpec(
            name="silent",
            description="Walks; goes completely silent 5-15 minutes in for 20-30 minutes, "
            "then reports again.",
            route=_WALK,
            steps=[SilenceStep(at_s=(300, 900), duration_s=(1200, 1800), mode="off")],
        ),
        ScenarioSpec(
            name="spoof_jump",
            description="Walks; 5-15 minutes in, one position is 20-60 km away with a "
            "confident accuracy: an impossible speed either side of it.",
            route=_WALK,
            steps=[SpoofStep(at_s=(300, 900))],
        ),
    )
}
"""The preset scenarios by name (see :data:`SCENARIO_NAMES`)."""


def preset(name: str) -> ScenarioSpec:
    """The preset scenario called ``name``; ``ValueError`` lists the names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"no scenario preset {name!r}; presets: {', '.join(PRESETS)}") from None
