"""The hub's tables, as SQLAlchemy 2 declarative models.

Conventions
    * Every timestamp is timezone-aware UTC in Python (:class:`UtcDateTime`): stored
      as ``timestamptz`` on PostgreSQL and as UTC text on SQLite, refused if naive.
    * Integer keys are ``BIGINT`` on PostgreSQL and ``INTEGER`` on SQLite (the only
      type SQLite auto-increments).
    * Constraint and index names follow :data:`NAMING_CONVENTION`, so migrations can
      name what they alter and both backends agree.
    * Stored events (positions, alarms, sightings, check-ins) share
      :class:`EventColumns`; each table is unique on ``(device_id, event_id)`` so
      ingest can insert-or-ignore redelivered events. ``device_boots`` keeps per
      ``(device_id, boot_id)`` the sequence range and count seen, from which gaps
      are computed.
    * ``positions``, ``sightings``, ``alarms``, ``checkins`` and ``audit`` are
      append-only by contract; ``audit`` also by trigger (see the migration).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "CASE_STATUSES",
    "EVENT_MODELS",
    "MATCH_PURPOSES",
    "NAMING_CONVENTION",
    "PERSON_CATEGORIES",
    "QUARANTINE_MAX_BYTES",
    "INCIDENT_STATUSES",
    "RULE_KINDS",
    "SEVERITIES",
    "ZONE_KINDS",
    "Alarm",
    "Alert",
    "AuditEntry",
    "Base",
    "BigId",
    "Checkin",
    "Credential",
    "Device",
    "DeviceBoot",
    "EventColumns",
    "FaceTemplate",
    "Incident",
    "IncidentEvent",
    "MatchRequest",
    "MatchRequestRegion",
    "Person",
    "Position",
    "Quarantine",
    "ReunionCase",
    "ReviewCandidate",
    "ReviewDecision",
    "Sighting",
    "SightingCandidate",
    "Site",
    "SiteGallery",
    "SupervisionRule",
    "SupervisionRuleState",
    "SupervisionZone",
    "UtcDateTime",
    "utcnow",
]

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

QUARANTINE_MAX_BYTES = 256 * 1024
"""Largest payload kept in quarantine (the largest accepted payload, a sighting with a
crop); longer payloads are cut and flagged ``truncated``."""

PERSON_CATEGORIES = ("supervised", "watchlist", "missing", "found")
"""What a person record is: a subject under supervision, a watchlist entry, a missing
person or a found person."""

BigId = BigInteger().with_variant(Integer(), "sqlite")
"""Surrogate key type: BIGINT, but INTEGER on SQLite so it auto-increments."""


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always aware UTC in Python, whatever the backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r} refused: timestamps must be aware")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base: shared metadata with the naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSON()}


class Site(Base):
    """A prison, probation office or other place devices belong to."""

    __tablename__ = "sites"

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    map: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    """The site's outline and buildings as a GeoJSON FeatureCollection (the command map
    draws it under the zones); None until an admin puts one."""


class Device(Base):
    """A registered device and its last known state.

    ``status``/``last_seen_at``/``boot_id``/``fw`` come from the device (its retained
    state and its events); ``applied_config_*`` is what the device says it runs and
    ``desired_config_*`` what the hub wants it to run; they differ while a push is
    pending or was refused (``config_error``).
    """

    __tablename__ = "devices"
    __table_args__ = (CheckConstraint("status IN ('unknown', 'online', 'offline')", name="status"),)

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.site_id"), index=True)
    model: Mapped[str] = mapped_column(String(64))
    profile: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="unknown")
    status_changed_at: Mapped[datetime | None]
    last_seen_at: Mapped[datetime | None]
    boot_id: Mapped[str | None] = mapped_column(String(36))
    fw: Mapped[str | None] = mapped_column(String(64))
    applied_config_version: Mapped[int | None] = mapped_column(BigInteger)
    applied_config_sha256: Mapped[str | None] = mapped_column(String(64))
    desired_config_version: Mapped[int | None] = mapped_column(BigInteger)
    desired_config_sha256: Mapped[str | None] = mapped_column(String(64))
    config_error: Mapped[str | None] = mapped_column(String(300))
    desired_config: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """The rendered configuration body last published (``version``, ``sha256``,
    ``config``), kept so versions only grow and a restart can publish it again."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Credential(Base):
    """A device credential: the broker password hash or a signing public key.

    Secrets are never stored in clear: ``secret_hash`` holds a password hash and
    ``public_key`` an Ed25519 public key (base64) named by ``kid``.
    """

    __tablename__ = "credentials"
    __table_args__ = (
        UniqueConstraint("device_id", "kind", "kid"),
        CheckConstraint("kind IN ('mqtt_password', 'ed25519')", name="kind"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.device_id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    kid: Mapped[str] = mapped_column(String(64), default="")
    secret_hash: Mapped[str | None] = mapped_column(String(255))
    public_key: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class Person(Base):
    """A person the hub knows of: see :data:`PERSON_CATEGORIES`."""

    __tablename__ = "persons"
    __table_args__ = (
        CheckConstraint(
            "category IN ('supervised', 'watchlist', 'missing', 'found')", name="category"
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    category: Mapped[str] = mapped_column(String(16), index=True)
    display_name: Mapped[str] = mapped_column(String(200))
    external_ref: Mapped[str | None] = mapped_column(String(100))
    site_id: Mapped[str | None] = mapped_column(ForeignKey("sites.site_id"))
    case_id: Mapped[str | None] = mapped_column(String(100))
    expires_at: Mapped[datetime | None]
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class FaceTemplate(Base):
    """One face embedding of a person; the matching galleries are rebuilt from these.

    ``embedding`` is little-endian float32, L2-normalised, of ``dim`` values, and is
    only ever compared with templates of the same ``model_id``.
    """

    __tablename__ = "face_templates"
    __table_args__ = (Index(None, "model_id", "person_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    person_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("persons.id", ondelete="CASCADE"), index=True
    )
    model_id: Mapped[str] = mapped_column(String(64))
    dim: Mapped[int] = mapped_column(Integer)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    quality: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str | None] = mapped_column(String(200))
    crop_jpeg: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The aligned face the template was made from (JPEG), for human review; shown
    only through audited routes."""
    photo_taken_at: Mapped[datetime | None]
    """When the photo was taken, if known (age-gap flags on reunion candidates)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SiteGallery(Base):
    """A gallery (a person category) that sightings of a site are matched against:
    the site's watchlists."""

    __tablename__ = "site_galleries"
    __table_args__ = (
        CheckConstraint(
            "gallery IN ('supervised', 'watchlist', 'missing', 'found')", name="gallery"
        ),
    )

    site_id: Mapped[str] = mapped_column(
        ForeignKey("sites.site_id", ondelete="CASCADE"), primary_key=True
    )
    gallery: Mapped[str] = mapped_column(String(16), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EventColumns:
    """Columns every stored device event has, and its deduplication key."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.device_id"))
    event_id: Mapped[str] = mapped_column(String(36))
    boot_id: Mapped[str] = mapped_column(String(36))
    seq: Mapped[int] = mapped_column(BigInteger)
    captured_at: Mapped[datetime]
    received_at: Mapped[datetime]
    replayed: Mapped[bool] = mapped_column(Boolean, default=False)
    kid: Mapped[str | None] = mapped_column(String(64))
    sig: Mapped[str | None] = mapped_column(String(128))

    @declared_attr.directive
    @classmethod
    def __table_args__(cls) -> tuple[Any, ...]:
        return (
            UniqueConstraint("device_id", "event_id"),
            Index(None, "device_id", "captured_at"),
        )


class Position(EventColumns, Base):
    """A location fix. The ``(device_id, captured_at)`` index serves both "last N
    fixes of a device" (a backward index scan) and "a device's track between t1 and
    t2" (a range scan)."""

    __tablename__ = "positions"

    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    acc: Mapped[float] = mapped_column(Float)
    src: Mapped[str] = mapped_column(String(16))
    alt: Mapped[float | None] = mapped_column(Float)
    vel: Mapped[float | None] = mapped_column(Float)
    cog: Mapped[float | None] = mapped_column(Float)
    sat: Mapped[int | None] = mapped_column(Integer)
    hdop: Mapped[float | None] = mapped_column(Float)
    batt: Mapped[float | None] = mapped_column(Float)
    charging: Mapped[bool | None] = mapped_column(Boolean)
    strap: Mapped[str | None] = mapped_column(String(16))
    rssi: Mapped[int | None] = mapped_column(Integer)


class Alarm(EventColumns, Base):
    """An alarm raised or cleared on a device."""

    __tablename__ = "alarms"

    type: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(16))
    alarm_id: Mapped[str] = mapped_column(String(64))
    position: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    related_event_id: Mapped[str | None] = mapped_column(String(36))
    detail: Mapped[str | None] = mapped_column(Text)


class Sighting(EventColumns, Base):
    """A face seen by a camera: its embedding, quality and optional crop."""

    __tablename__ = "sightings"

    model_id: Mapped[str] = mapped_column(String(64))
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    quality: Mapped[dict[str, Any]] = mapped_column(JSON)
    bbox: Mapped[list[float]] = mapped_column(JSON)
    frame: Mapped[list[int] | None] = mapped_column(JSON)
    track_id: Mapped[int] = mapped_column(BigInteger)
    frames_fused: Mapped[int] = mapped_column(Integer)
    crop_jpeg: Mapped[bytes | None] = mapped_column(LargeBinary)


class SightingCandidate(Base):
    """A person a sighting was matched to: a candidate for a person to confirm,
    never an identification. One row per (sighting, person), ranked by score."""

    __tablename__ = "sighting_candidates"
    __table_args__ = (UniqueConstraint("sighting_id", "person_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sighting_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("sightings.id", ondelete="CASCADE"), index=True
    )
    person_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("persons.id", ondelete="CASCADE"), index=True
    )
    template_id: Mapped[int | None] = mapped_column(BigInteger)
    gallery: Mapped[str] = mapped_column(String(16))
    model_id: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    rank: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Checkin(EventColumns, Base):
    """A periodic heartbeat; the body is kept as JSON."""

    __tablename__ = "checkins"

    next_checkin_s: Mapped[int] = mapped_column(Integer)
    body: Mapped[dict[str, Any]] = mapped_column(JSON)


EVENT_MODELS: dict[str, type[EventColumns]] = {
    "position": Position,
    "alarm": Alarm,
    "sighting": Sighting,
    "checkin": Checkin,
}
"""Stored event model per event type (the topic's ``evt/{type}``)."""


class DeviceBoot(Base):
    """What was received of one boot of a device: the sequence range and count.

    ``max_seq - min_seq + 1 - events`` is how many events of the range are missing
    (lost, or still in the device's outbox).
    """

    __tablename__ = "device_boots"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.device_id", ondelete="CASCADE"), primary_key=True
    )
    boot_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    min_seq: Mapped[int] = mapped_column(BigInteger)
    max_seq: Mapped[int] = mapped_column(BigInteger)
    events: Mapped[int] = mapped_column(BigInteger)
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]


class Quarantine(Base):
    """A payload that failed validation, kept with the reason it was refused."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(index=True)
    topic: Mapped[str] = mapped_column(String(300))
    device_id: Mapped[str | None] = mapped_column(String(64), index=True)
    error_code: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(Text)
    field: Mapped[str | None] = mapped_column(String(200))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    payload_size: Mapped[int] = mapped_column(Integer)
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)


class AuditEntry(Base):
    """One row of the hash-chained audit log (see :mod:`hub.audit`)."""

    __tablename__ = "audit"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(100))
    purpose: Mapped[str | None] = mapped_column(String(200))
    case_id: Mapped[str | None] = mapped_column(String(100))
    target: Mapped[str | None] = mapped_column(String(300))
    result: Mapped[str | None] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64), unique=True)


# -- supervision: zones, rules, their evaluation state, alerts and incidents ---------------

ZONE_KINDS = ("residence", "county", "victim", "school", "perimeter", "other")
"""What a zone is for (:class:`hub.supervision.model.ZoneKind`)."""

RULE_KINDS = ("inclusion", "exclusion", "curfew", "proximity", "silence")
"""The rule kinds (:class:`hub.supervision.model.RuleKind`)."""

SEVERITIES = ("critical", "serious", "info")
"""Alert and incident severities, most urgent first."""

INCIDENT_STATUSES = ("open", "acknowledged", "escalated", "suspended", "cleared")
"""Where an incident is in its lifecycle (see :mod:`hub.alerts`)."""


class SupervisionZone(Base):
    """A zone of the supervision engine: a GeoJSON geometry (WGS84), a circle (a Point
    with ``radius_m``) or a corridor (a LineString with ``buffer_m``)."""

    __tablename__ = "zones"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('residence', 'county', 'victim', 'school', 'perimeter', 'other')",
            name="kind",
        ),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site_id: Mapped[str | None] = mapped_column(ForeignKey("sites.site_id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    geometry: Mapped[dict[str, Any]] = mapped_column(JSON)
    radius_m: Mapped[float | None] = mapped_column(Float)
    buffer_m: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SupervisionRule(Base):
    """A supervised person bound, through their device, to a condition (``params``, the
    kind's parameters as JSON) for a validity period."""

    __tablename__ = "rules"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('inclusion', 'exclusion', 'curfew', 'proximity', 'silence')", name="kind"
        ),
        CheckConstraint("severity IN ('critical', 'serious', 'info')", name="severity"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    person_id: Mapped[int] = mapped_column(BigId, ForeignKey("persons.id"), index=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.device_id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    severity: Mapped[str] = mapped_column(String(16))
    valid_from: Mapped[datetime]
    valid_until: Mapped[datetime | None]
    enter_margin_m: Mapped[float] = mapped_column(Float)
    exit_margin_m: Mapped[float] = mapped_column(Float)
    confirm_n: Mapped[int] = mapped_column(Integer)
    confirm_m: Mapped[int] = mapped_column(Integer)
    dwell_s: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SupervisionRuleState(Base):
    """The engine's evaluation state of one rule (opaque JSON), saved after each
    evaluation that changed it, so a restart continues where it stopped."""

    __tablename__ = "rule_states"

    rule_id: Mapped[str] = mapped_column(
        ForeignKey("rules.id", ondelete="CASCADE"), primary_key=True
    )
    subject_id: Mapped[str] = mapped_column(String(64))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Incident(Base):
    """Related alerts of one subject (a person, or a device bound to nobody), worked
    as one case: acknowledged, assigned, noted, escalated, suspended and cleared."""

    __tablename__ = "incidents"
    __table_args__ = (
        CheckConstraint(
            "status IN ('open', 'acknowledged', 'escalated', 'suspended', 'cleared')",
            name="status",
        ),
        CheckConstraint("severity IN ('critical', 'serious', 'info')", name="severity"),
        Index(None, "status", "sla_due_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    person_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("persons.id", ondelete="SET NULL"), index=True
    )
    device_id: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), default="open")
    severity: Mapped[str] = mapped_column(String(16))
    opened_at: Mapped[datetime]
    last_alert_at: Mapped[datetime]
    sla_due_at: Mapped[datetime]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    assigned_to: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("users.id", ondelete="SET NULL")
    )
    suspended_until: Mapped[datetime | None]
    suspend_reason: Mapped[str | None] = mapped_column(Text)
    escalated_at: Mapped[datetime | None]
    cleared_at: Mapped[datetime | None]
    cleared_by: Mapped[str | None] = mapped_column(String(200))
    clear_note: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Alert(Base):
    """An alert raised by the supervision engine or mapped from a device alarm;
    ``key`` makes recording it idempotent, ``cleared_at`` is set when it ends."""

    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint("severity IN ('critical', 'serious', 'info')", name="severity"),
        Index(None, "person_id", "raised_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    type: Mapped[str] = mapped_column(String(40), index=True)
    severity: Mapped[str] = mapped_column(String(16))
    person_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("persons.id", ondelete="SET NULL")
    )
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    rule_id: Mapped[str | None] = mapped_column(String(64))
    raised_at: Mapped[datetime]
    cleared_at: Mapped[datetime | None]
    retrospective: Mapped[bool] = mapped_column(Boolean, default=False)
    evidence: Mapped[list[Any]] = mapped_column(JSON)
    detail: Mapped[str] = mapped_column(Text, default="")
    incident_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("incidents.id", ondelete="SET NULL"), index=True
    )
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)


class IncidentEvent(Base):
    """One step of an incident's timeline: opened, an alert joined, acknowledged, ..."""

    __tablename__ = "incident_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("incidents.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(40))
    note: Mapped[str | None] = mapped_column(Text)


# -- federation and reunion ------------------------------------------------------------------

MATCH_PURPOSES = ("missing_person", "found_person", "criminal_investigation", "watchlist")
"""Why a match request is made; each hub's policy says which purposes may search which
of its galleries, from which peers."""

CASE_STATUSES = ("open", "reunited", "withdrawn", "deceased")
"""A missing or found person's case; closing it (any status but open) starts the
retention clock."""


class MatchRequest(Base):
    """A case-bound face match request, as sent (``outgoing``) or received
    (``incoming``); the same ``id`` on both hubs."""

    __tablename__ = "match_requests"
    __table_args__ = (
        CheckConstraint("direction IN ('outgoing', 'incoming')", name="direction"),
        CheckConstraint(
            "purpose IN ('missing_person', 'found_person', 'criminal_investigation', "
            "'watchlist')",
            name="purpose",
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    direction: Mapped[str] = mapped_column(String(8))
    origin_hub: Mapped[str] = mapped_column(String(64))
    requester: Mapped[str] = mapped_column(String(200))
    case_id: Mapped[str] = mapped_column(String(100), index=True)
    legal_basis: Mapped[str] = mapped_column(String(300))
    purpose: Mapped[str] = mapped_column(String(32))
    galleries: Mapped[list[str]] = mapped_column(JSON)
    k: Mapped[int] = mapped_column(Integer)
    model_id: Mapped[str] = mapped_column(String(64))
    probe: Mapped[bytes] = mapped_column(LargeBinary)
    """The probe template(s): little-endian float32 rows of the model's dimension."""
    probe_person_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("persons.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class MatchRequestRegion(Base):
    """One target hub of an outgoing request (or this hub's own answer to an incoming
    one): whether it answered, refused (with the reason) or timed out."""

    __tablename__ = "match_request_regions"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'answered', 'refused', 'timed_out', 'error')", name="status"
        ),
    )

    request_id: Mapped[str] = mapped_column(
        ForeignKey("match_requests.id", ondelete="CASCADE"), primary_key=True
    )
    hub_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    candidates: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ReviewCandidate(Base):
    """A candidate for a person to review: a probe (a local person, or an incoming or
    outgoing request) against a person held here or at a peer hub. Never an identity:
    it becomes a confirmed match only through :class:`ReviewDecision` rows. A rejected
    pair stays, so the same pair is not proposed again."""

    __tablename__ = "review_candidates"
    __table_args__ = (
        UniqueConstraint("probe_ref", "hub_id", "candidate_ref"),
        CheckConstraint("status IN ('pending', 'confirmed', 'rejected')", name="status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    probe_ref: Mapped[str] = mapped_column(String(120), index=True)
    """What was searched: ``person:<id>`` (a local record) or ``request:<uuid>``."""
    request_id: Mapped[str | None] = mapped_column(
        ForeignKey("match_requests.id", ondelete="SET NULL"), index=True
    )
    probe_person_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("persons.id", ondelete="CASCADE"), index=True
    )
    hub_id: Mapped[str] = mapped_column(String(64))
    """Where the candidate is held (this hub's own id for a local one)."""
    candidate_ref: Mapped[str] = mapped_column(String(120))
    """The holding hub's reference of the candidate person (``person:<id>`` there)."""
    local_person_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("persons.id", ondelete="CASCADE"), index=True
    )
    gallery: Mapped[str] = mapped_column(String(16))
    model_id: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    rank: Mapped[int] = mapped_column(Integer)
    crop_jpeg: Mapped[bytes | None] = mapped_column(LargeBinary)
    flags: Mapped[list[str]] = mapped_column(JSON, default=list)
    """Reasons to be careful: ``child``, ``age_gap``."""
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_at: Mapped[datetime | None]


class ReviewDecision(Base):
    """One reviewer's decision on a candidate; two confirmations by different users
    make a confirmed match, one rejection (with its reason) rejects it."""

    __tablename__ = "review_decisions"
    __table_args__ = (
        UniqueConstraint("candidate_id", "user_id"),
        CheckConstraint("decision IN ('confirm', 'reject')", name="decision"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    candidate_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("review_candidates.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[int] = mapped_column(BigId, ForeignKey("users.id"))
    decision: Mapped[str] = mapped_column(String(8))
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class ReunionCase(Base):
    """The reunion side of a missing or found person: consent, status, retention."""

    __tablename__ = "reunion_cases"
    __table_args__ = (
        CheckConstraint(
            "status IN ('open', 'reunited', 'withdrawn', 'deceased')", name="status"
        ),
    )

    person_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("persons.id", ondelete="CASCADE"), primary_key=True
    )
    status: Mapped[str] = mapped_column(String(16), default="open")
    consent_by: Mapped[str | None] = mapped_column(String(200))
    """Who gave consent (the family member, for a missing-person report)."""
    consent_at: Mapped[datetime | None]
    reported_by: Mapped[str | None] = mapped_column(String(200))
    """The shelter, hospital or police unit (found persons) or the caseworker."""
    birth_year: Mapped[int | None] = mapped_column(Integer)
    last_seen_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    close_reason: Mapped[str | None] = mapped_column(Text)
    retention_until: Mapped[datetime | None] = mapped_column(index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
