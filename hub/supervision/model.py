"""The supervision engine's contract: what goes in and what comes out.

In
    :class:`Zone` (GeoJSON geometry in WGS84, RFC 7946), :class:`Rule` (a subject bound
    to zones or to another device, with a kind, parameters and a validity period),
    :class:`Fix` (one position of a subject's device at its capture time) and clock
    ticks (a time).
Out
    :class:`AlertTransition`: an alert of a (subject, rule) is raised, or cleared when
    the condition ends. Transitions carry the evidence (the fixes that decided it) and
    a stable ``key`` so the same violation found twice (a replay, a restart) is one
    alert (idempotency by rule and time window).
State
    :class:`RuleState` per (subject, rule): JSON-serialisable, persisted by the hub
    after every evaluation, so a restart continues where it stopped.

Everything is timezone-aware UTC except curfew schedules, which are wall-clock times in
the rule's IANA time zone.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from devices.timezones import is_time_zone

__all__ = [
    "AlertTransition",
    "CurfewParams",
    "CurfewWindow",
    "Fix",
    "InclusionParams",
    "ExclusionParams",
    "ProximityParams",
    "Rule",
    "RuleKind",
    "RuleParams",
    "RuleState",
    "Severity",
    "SilenceParams",
    "Zone",
    "ZoneKind",
]




class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ZoneKind(StrEnum):
    """What a zone is for; drawn differently on the map."""

    residence = "residence"
    """Where the subject lives (curfews, inclusion)."""
    county = "county"
    """An area the subject must stay in (inclusion)."""
    victim = "victim"
    """A victim's home or workplace (exclusion)."""
    school = "school"
    """A school or other protected place (exclusion)."""
    perimeter = "perimeter"
    """A prison compound or other secure perimeter."""
    other = "other"


class Zone(_Model):
    """A named area. ``geometry`` is a GeoJSON Polygon (holes allowed) or MultiPolygon;
    a circle is ``{"type": "Point", ...}`` with ``radius_m``; a corridor is a
    LineString with ``buffer_m`` (metres either side)."""

    id: str = Field(min_length=1, max_length=64, description="Zone id.")
    name: str = Field(min_length=1, max_length=200, description="Display name.")
    kind: ZoneKind = Field(description="What the zone is for.")
    site_id: str | None = Field(default=None, description="Site the zone belongs to.")
    geometry: dict[str, Any] = Field(description="GeoJSON geometry, WGS84 [lon, lat].")
    radius_m: float | None = Field(default=None, gt=0, le=100_000, description="Circle radius.")
    buffer_m: float | None = Field(
        default=None, gt=0, le=10_000, description="Corridor half-width."
    )


class RuleKind(StrEnum):
    """The five rule kinds."""

    inclusion = "inclusion"
    exclusion = "exclusion"
    curfew = "curfew"
    proximity = "proximity"
    silence = "silence"


class Severity(StrEnum):
    """How urgent an alert is."""

    critical = "critical"
    serious = "serious"
    info = "info"


def _kind_is_required(schema: dict[str, Any]) -> None:
    """JSON schema of a rule's parameters: ``kind`` is required. The Python default
    spares a caller building one kind by hand from repeating it, but a rule's
    ``params`` is a union told apart by ``kind``, which must always be sent."""
    kind = schema.get("properties", {}).get("kind")
    if isinstance(kind, dict):
        kind.pop("default", None)
    required = schema.setdefault("required", [])
    if isinstance(required, list) and "kind" not in required:
        required.insert(0, "kind")


class _Params(_Model):
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_kind_is_required)


class InclusionParams(_Params):
    """Must stay inside any of ``zone_ids``."""

    kind: Literal["inclusion"] = "inclusion"
    zone_ids: list[str] = Field(min_length=1, description="Zones the subject must stay in.")


class ExclusionParams(_Params):
    """Must not enter any of ``zone_ids``."""

    kind: Literal["exclusion"] = "exclusion"
    zone_ids: list[str] = Field(min_length=1, description="Zones the subject must not enter.")


class CurfewWindow(_Model):
    """One weekly window: ``days`` (0 = Monday) from ``start`` to ``end`` wall-clock time
    ("HH:MM"); an ``end`` before ``start`` runs past midnight into the next day."""

    days: list[Annotated[int, Field(ge=0, le=6)]] = Field(
        min_length=1, max_length=7, description="Weekdays the window starts on, 0=Mon."
    )
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="Start, HH:MM.")
    end: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="End, HH:MM.")


class CurfewParams(_Params):
    """Must be inside ``zone_id`` during the schedule, in ``timezone``."""

    kind: Literal["curfew"] = "curfew"
    zone_id: str = Field(description="The zone (usually the residence).")
    timezone: str = Field(description="IANA time zone of the schedule, e.g. Europe/London.")
    windows: list[CurfewWindow] = Field(min_length=1, description="Weekly windows.")
    exceptions: list[tuple[AwareDatetime, AwareDatetime]] = Field(
        default_factory=list, description="Periods the curfew is lifted (from, to)."
    )
    grace_s: int = Field(default=300, ge=0, le=7200, description="Lateness tolerated.")

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        if not is_time_zone(value):
            raise ValueError(f"unknown time zone {value[:80]!r} (an IANA name, e.g. Europe/Paris)")
        return value

    @field_validator("exceptions")
    @classmethod
    def _ordered_exceptions(
        cls, value: list[tuple[datetime, datetime]]
    ) -> list[tuple[datetime, datetime]]:
        for start, end in value:
            if end <= start:
                raise ValueError("an exception must end after it starts")
        return value


class ProximityParams(_Params):
    """Must keep at least ``min_distance_m`` from device ``other_device_id``."""

    kind: Literal["proximity"] = "proximity"
    other_device_id: str = Field(description="The protected person's device.")
    min_distance_m: float = Field(gt=0, le=100_000, description="Least distance allowed.")


class SilenceParams(_Params):
    """Must report a fix at least every ``max_silence_s`` seconds."""

    kind: Literal["silence"] = "silence"
    max_silence_s: int = Field(ge=60, le=7 * 86_400, description="Longest gap allowed.")


RuleParams = InclusionParams | ExclusionParams | CurfewParams | ProximityParams | SilenceParams


class Rule(_Model):
    """A subject bound to a condition for a validity period."""

    id: str = Field(min_length=1, max_length=64, description="Rule id.")
    subject_id: str = Field(description="The supervised person (hub person id as text).")
    device_id: str = Field(description="The subject's device whose fixes are evaluated.")
    params: RuleParams = Field(discriminator="kind", description="Kind and parameters.")
    severity: Severity = Field(default=Severity.serious, description="Severity of its alerts.")
    valid_from: AwareDatetime = Field(description="Evaluation starts (the order's start).")
    valid_until: AwareDatetime | None = Field(
        default=None, description="Evaluation stops (the order's end); None: open-ended."
    )
    # Hysteresis, confirmation and dwell (metres and seconds); the engine's defaults
    # suit GNSS wearables.
    enter_margin_m: float = Field(default=10.0, ge=0, le=1000)
    exit_margin_m: float = Field(default=25.0, ge=0, le=1000)
    confirm_n: int = Field(default=2, ge=1, le=20, description="Confident fixes needed ...")
    confirm_m: int = Field(default=3, ge=1, le=20, description="... out of the last M.")
    dwell_s: int = Field(default=30, ge=0, le=3600, description="Violation must last this long.")

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.valid_until is not None and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        if self.confirm_n > self.confirm_m:
            raise ValueError("confirm_n cannot exceed confirm_m")
        return self

    @property
    def kind(self) -> RuleKind:
        return RuleKind(self.params.kind)


class Fix(_Model):
    """One position of a device, at its capture time."""

    device_id: str
    event_id: str
    captured_at: AwareDatetime
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    acc: float = Field(ge=0, description="Horizontal accuracy radius, metres (1 sigma).")
    replayed: bool = Field(default=False, description="Sent late from the device's outbox.")


class AlertTransition(_Model):
    """An alert raised or cleared by the engine."""

    key: str = Field(description="Stable id: the same violation always gets the same key.")
    action: Literal["raise", "clear"]
    type: str = Field(
        description="e.g. exclusion.entered, inclusion.exited, curfew.absent, "
        "curfew.silent, proximity.breach, silence, fix.implausible"
    )
    severity: Severity
    subject_id: str
    device_id: str
    rule_id: str | None = Field(description="None for engine-level flags (implausible fix).")
    at: datetime = Field(description="Event time the condition began (raise) or ended (clear).")
    retrospective: bool = Field(default=False, description="Found only in late (backfilled) data.")
    evidence: list[Fix] = Field(default_factory=list, description="Fixes that decided it.")
    detail: str = Field(default="", description="Human-readable explanation.")


class RuleState(BaseModel):
    """Per (subject, rule) evaluation state, JSON-serialisable; the engine owns its
    content (``data``), the hub stores and returns it unchanged."""

    model_config = ConfigDict(extra="forbid")

    rule_id: str
    subject_id: str
    data: dict[str, Any] = Field(default_factory=dict)
