"""Alerts and incidents: recording what the supervision engine and the devices raise,
grouping it into incidents, and the incident lifecycle.

Alerts
    :func:`record_transitions` stores the engine's :class:`AlertTransition` objects: a
    ``raise`` inserts an alert unless one with the same ``key`` exists (so a replay or
    a restart records a violation once), a ``clear`` sets ``cleared_at``. Device
    alarms become transitions through :func:`alert_from_device_alarm` (severity from
    :data:`ALARM_SEVERITY`; the raise and the clear of one occurrence share a key).
Incidents
    A new alert joins its subject's incident that is not cleared and whose last alert
    came within :data:`GROUPING_WINDOW` (tamper, then silence, then an exclusion
    entry: one story); otherwise it opens a new incident. An incident's severity is
    the highest of its alerts, and it must be acknowledged by ``sla_due_at``:
    ``opened_at`` plus :data:`SLA_BUDGET` of its severity (4 minutes for critical
    alerts, after the NIJ-1004 expectation for active monitoring). The subject is the
    supervised person, or the device when no person is bound to it.
Lifecycle
    open -> acknowledged -> (escalated | suspended) -> cleared, with notes and
    assignment on the way; see :data:`TRANSITIONS`. :func:`escalate_overdue` (run by
    the supervision clock) escalates unacknowledged incidents past their SLA and
    resumes suspended ones whose suspension expired. Every action is audited with
    :func:`hub.audit.append` in the caller's transaction and written to the
    incident's timeline (``incident_events``). A refused transition raises
    :class:`IncidentConflict` (the API answers 409).

Times: ``raised_at``/``cleared_at`` of an alert are event times (when the condition
began or ended on the device); an incident's times are hub wall-clock times, since
an officer's SLA runs from when the hub knew.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from devices.protocol import AlarmEvent
from hub import audit
from hub.db.models import Alert, Incident, IncidentEvent, Person, utcnow
from hub.db.users import User
from hub.supervision.model import AlertTransition, Fix, Severity

__all__ = [
    "ALARM_SEVERITY",
    "GROUPING_WINDOW",
    "SEVERITY_RANK",
    "SLA_BUDGET",
    "Status",
    "SYSTEM_ACTOR",
    "TRANSITIONS",
    "Actor",
    "AlertPublic",
    "IncidentConflict",
    "IncidentError",
    "IncidentInvalid",
    "IncidentNotFound",
    "acknowledge",
    "alert_from_device_alarm",
    "alert_public",
    "assign",
    "clear",
    "escalate",
    "escalate_overdue",
    "note",
    "record_transitions",
    "suspend",
]

logger = logging.getLogger(__name__)

SYSTEM_ACTOR = "system"
"""Actor (and role) of what the hub does by itself: opening incidents, escalations."""

GROUPING_WINDOW = timedelta(minutes=30)
"""An alert joins its subject's live incident if that incident's last alert is this recent."""

SLA_BUDGET: dict[Severity, timedelta] = {
    Severity.critical: timedelta(minutes=4),
    Severity.serious: timedelta(minutes=15),
    Severity.info: timedelta(hours=24),
}
"""Time from opening (or from a rise in severity) to acknowledgement, per severity."""

SEVERITY_RANK: dict[str, int] = {"info": 0, "serious": 1, "critical": 2}
"""Higher is more urgent."""

ALARM_SEVERITY: dict[str, Severity] = {
    "sos": Severity.critical,
    "strap.tamper": Severity.critical,
    "case.tamper": Severity.critical,
    "fall": Severity.critical,
    "power.cut": Severity.serious,
    "battery.critical": Severity.serious,
    "gnss.jamming": Severity.serious,
    "battery.low": Severity.info,
    "outbox.full": Severity.info,
}
"""Device alarm type -> alert severity. Alarm types not listed (``watchlist.hit``,
which belongs to face matching) raise no supervision alert."""

Status = Literal["open", "acknowledged", "escalated", "suspended", "cleared"]

TRANSITIONS: dict[str, frozenset[str]] = {
    "acknowledge": frozenset({"open", "escalated"}),
    "escalate": frozenset({"open", "acknowledged", "suspended"}),
    "suspend": frozenset({"open", "acknowledged", "escalated"}),
    "clear": frozenset({"open", "acknowledged", "escalated", "suspended"}),
    "assign": frozenset({"open", "acknowledged", "escalated", "suspended"}),
    "note": frozenset({"open", "acknowledged", "escalated", "suspended", "cleared"}),
}
"""Lifecycle action -> the statuses it may be taken from."""


# -- errors --------------------------------------------------------------------------------


class IncidentError(Exception):
    """An incident action refused; ``status_code`` is the HTTP answer."""

    status_code = 400


class IncidentNotFound(IncidentError):
    """No such incident."""

    status_code = 404


class IncidentConflict(IncidentError):
    """The action is not allowed in the incident's current status."""

    status_code = 409


class IncidentInvalid(IncidentError):
    """The action's input is wrong (an unknown assignee, a past expiry)."""

    status_code = 422

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


# -- alerts --------------------------------------------------------------------------------


class AlertPublic(BaseModel):
    """One alert, as the API and the live feed show it."""

    model_config = ConfigDict(extra="forbid")

    id: int = Field(description="Alert id.")
    key: str = Field(description="Stable key: the same violation always has the same key.")
    type: str = Field(description="e.g. exclusion.entered, curfew.absent, strap.tamper, sos.")
    severity: Severity = Field(description="critical, serious or info.")
    person_id: int | None = Field(description="The supervised person, if one is bound.")
    device_id: str = Field(description="The device whose fixes or alarm raised it.")
    rule_id: str | None = Field(description="The rule broken; None for device alarms.")
    raised_at: datetime = Field(description="When the condition began (event time, UTC).")
    cleared_at: datetime | None = Field(description="When it ended; None while open.")
    retrospective: bool = Field(description="Found only in late (backfilled) data.")
    evidence: list[dict[str, Any]] = Field(description="The fixes that decided it.")
    detail: str = Field(description="Human-readable explanation.")
    incident_id: int | None = Field(description="The incident it belongs to.")
    recorded_at: datetime = Field(description="When the hub stored it (UTC).")


def alert_public(alert: Alert) -> AlertPublic:
    """The public form of an alert row."""
    return AlertPublic(
        id=alert.id,
        key=alert.key,
        type=alert.type,
        severity=Severity(alert.severity),
        person_id=alert.person_id,
        device_id=alert.device_id,
        rule_id=alert.rule_id,
        raised_at=alert.raised_at,
        cleared_at=alert.cleared_at,
        retrospective=alert.retrospective,
        evidence=list(alert.evidence or []),
        detail=alert.detail,
        incident_id=alert.incident_id,
        recorded_at=alert.recorded_at,
    )


def alert_from_device_alarm(event: AlarmEvent, subject_id: str | None) -> AlertTransition | None:
    """The alert transition of a device alarm event, None for alarm types that are not
    supervision alerts. ``subject_id`` is the person bound to the device (text id),
    None when nobody is."""
    body = event.body
    severity = ALARM_SEVERITY.get(body.type)
    if severity is None:
        return None
    evidence: list[Fix] = []
    if body.position is not None:
        evidence.append(
            Fix(
                device_id=event.device_id,
                event_id=event.event_id,
                captured_at=event.captured_at,
                lat=body.position.lat,
                lon=body.position.lon,
                acc=body.position.acc,
                replayed=event.replayed,
            )
        )
    return AlertTransition(
        key=f"alarm:{event.device_id}:{body.alarm_id}",
        action="raise" if body.state == "active" else "clear",
        type=body.type,
        severity=severity,
        subject_id=subject_id or "",
        device_id=event.device_id,
        rule_id=None,
        at=event.captured_at,
        retrospective=event.replayed,
        evidence=evidence,
        detail=body.detail or "",
    )


def _person_id(session: Session, subject_id: str) -> int | None:
    if not subject_id.isdigit():
        return None
    person_id = int(subject_id)
    return person_id if session.get(Person, person_id) is not None else None


def record_transitions(
    session: Session, transitions: Iterable[AlertTransition], *, now: datetime | None = None
) -> list[int]:
    """Store the transitions in the caller's transaction; the ids of the alerts that
    were inserted or cleared by them (a repeated raise or clear changes nothing and
    is not listed). New alerts are grouped into incidents."""
    when = now or utcnow()
    changed: list[int] = []
    for transition in transitions:
        existing = session.scalar(select(Alert).where(Alert.key == transition.key))
        if transition.action == "clear":
            if existing is None:
                logger.info("clear of unknown alert %s ignored", transition.key)
            elif existing.cleared_at is None:
                existing.cleared_at = transition.at
                changed.append(existing.id)
            continue
        if existing is not None:
            logger.debug("alert %s recorded before; ignored", transition.key)
            continue
        alert = Alert(
            key=transition.key,
            type=transition.type,
            severity=transition.severity.value,
            person_id=_person_id(session, transition.subject_id),
            device_id=transition.device_id,
            rule_id=transition.rule_id,
            raised_at=transition.at,
            cleared_at=None,
            retrospective=transition.retrospective,
            evidence=[fix.model_dump(mode="json") for fix in transition.evidence],
            detail=transition.detail,
            recorded_at=when,
        )
        session.add(alert)
        session.flush()
        alert.incident_id = _group(session, alert, when).id
        changed.append(alert.id)
    session.flush()
    return changed


def _event(
    session: Session,
    incident: Incident,
    at: datetime,
    actor: str,
    action: str,
    note: str | None = None,
) -> None:
    session.add(
        IncidentEvent(incident_id=incident.id, at=at, actor=actor, action=action, note=note)
    )


def _group(session: Session, alert: Alert, now: datetime) -> Incident:
    """The incident the new alert joins (opened if needed)."""
    stmt = select(Incident).where(
        Incident.status != "cleared", Incident.last_alert_at >= now - GROUPING_WINDOW
    )
    if alert.person_id is not None:
        stmt = stmt.where(Incident.person_id == alert.person_id)
    else:
        stmt = stmt.where(Incident.person_id.is_(None), Incident.device_id == alert.device_id)
    incident = session.scalar(stmt.order_by(Incident.last_alert_at.desc()).limit(1))
    severity = Severity(alert.severity)
    if incident is None:
        incident = Incident(
            person_id=alert.person_id,
            device_id=alert.device_id,
            status="open",
            severity=severity.value,
            opened_at=now,
            last_alert_at=now,
            sla_due_at=now + SLA_BUDGET[severity],
        )
        session.add(incident)
        session.flush()
        _event(session, incident, now, SYSTEM_ACTOR, "open", f"{alert.type} ({severity.value})")
        audit.append(
            session,
            actor=SYSTEM_ACTOR,
            role=SYSTEM_ACTOR,
            action="incident.open",
            target=f"incident:{incident.id}",
            result=f"alert {alert.id} {alert.type} {severity.value}",
        )
    else:
        incident.last_alert_at = max(incident.last_alert_at, now)
        if SEVERITY_RANK[severity.value] > SEVERITY_RANK[incident.severity]:
            incident.severity = severity.value
            if incident.acknowledged_at is None:
                incident.sla_due_at = min(incident.sla_due_at, now + SLA_BUDGET[severity])
    _event(
        session,
        incident,
        now,
        SYSTEM_ACTOR,
        "alert",
        f"alert {alert.id}: {alert.type} ({severity.value})",
    )
    return incident


# -- the lifecycle -------------------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    """Who acts on an incident."""

    name: str
    role: str


def _load(session: Session, incident_id: int, action: str) -> Incident:
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise IncidentNotFound(f"no incident {incident_id}")
    if incident.status not in TRANSITIONS[action]:
        raise IncidentConflict(f"cannot {action} an incident that is {incident.status}")
    return incident


def _case_id(session: Session, incident: Incident) -> str | None:
    if incident.person_id is None:
        return None
    person = session.get(Person, incident.person_id)
    return person.case_id if person is not None else None


def _done(
    session: Session,
    incident: Incident,
    actor: Actor,
    action: str,
    at: datetime,
    note: str | None,
    result: str | None = None,
) -> Incident:
    _event(session, incident, at, actor.name, action, note)
    audit.append(
        session,
        actor=actor.name,
        role=actor.role,
        action=f"incident.{action}",
        purpose="incident management",
        case_id=_case_id(session, incident),
        target=f"incident:{incident.id}",
        result=result or f"status {incident.status}",
    )
    session.flush()
    return incident


def acknowledge(
    session: Session,
    incident_id: int,
    actor: Actor,
    *,
    note: str | None = None,
    now: datetime | None = None,
) -> Incident:
    """Take the incident on: the SLA is met from here on."""
    at = now or utcnow()
    incident = _load(session, incident_id, "acknowledge")
    incident.status = "acknowledged"
    incident.acknowledged_at = at
    incident.acknowledged_by = actor.name
    return _done(session, incident, actor, "acknowledge", at, note)


def assign(
    session: Session, incident_id: int, actor: Actor, user_id: int, *, now: datetime | None = None
) -> Incident:
    """Give the incident to an enabled officer or admin (``user_id``)."""
    at = now or utcnow()
    incident = _load(session, incident_id, "assign")
    user = session.get(User, user_id)
    if user is None or user.disabled:
        raise IncidentInvalid("user_id", f"no enabled user {user_id}")
    if user.role not in ("officer", "admin"):
        raise IncidentInvalid("user_id", f"user {user.username} is {user.role}, not an officer")
    incident.assigned_to = user.id
    return _done(
        session,
        incident,
        actor,
        "assign",
        at,
        f"assigned to {user.username}",
        result=f"assigned_to {user.id}",
    )


def note(
    session: Session, incident_id: int, actor: Actor, text: str, *, now: datetime | None = None
) -> Incident:
    """Add a note to the incident's timeline (also after it is cleared)."""
    if not text.strip():
        raise IncidentInvalid("text", "a note needs text")
    at = now or utcnow()
    incident = _load(session, incident_id, "note")
    return _done(session, incident, actor, "note", at, text, result="note added")


def escalate(
    session: Session, incident_id: int, actor: Actor, reason: str, *, now: datetime | None = None
) -> Incident:
    """Hand the incident up (a supervisor, the police); ``reason`` says why."""
    if not reason.strip():
        raise IncidentInvalid("reason", "an escalation needs a reason")
    at = now or utcnow()
    incident = _load(session, incident_id, "escalate")
    incident.status = "escalated"
    incident.escalated_at = at
    incident.suspended_until = None
    return _done(session, incident, actor, "escalate", at, reason)


def suspend(
    session: Session,
    incident_id: int,
    actor: Actor,
    reason: str,
    until: datetime,
    *,
    now: datetime | None = None,
) -> Incident:
    """Set the incident aside until ``until`` (e.g. a known hospital stay); it resumes
    by itself then (see :func:`escalate_overdue`)."""
    at = now or utcnow()
    if not reason.strip():
        raise IncidentInvalid("reason", "a suspension needs a reason")
    if until <= at:
        raise IncidentInvalid("until", "a suspension must end in the future")
    incident = _load(session, incident_id, "suspend")
    incident.status = "suspended"
    incident.suspended_until = until
    incident.suspend_reason = reason
    return _done(
        session,
        incident,
        actor,
        "suspend",
        at,
        reason,
        result=f"suspended until {until.isoformat()}",
    )


def clear(
    session: Session, incident_id: int, actor: Actor, note_text: str, *, now: datetime | None = None
) -> Incident:
    """Close the incident; a note saying what happened is required."""
    if not note_text.strip():
        raise IncidentInvalid("note", "clearing an incident needs a note")
    at = now or utcnow()
    incident = _load(session, incident_id, "clear")
    incident.status = "cleared"
    incident.cleared_at = at
    incident.cleared_by = actor.name
    incident.clear_note = note_text
    incident.suspended_until = None
    return _done(session, incident, actor, "clear", at, note_text)


def escalate_overdue(session: Session, now: datetime | None = None) -> list[int]:
    """Escalate open incidents past their SLA and resume suspended incidents whose
    suspension expired (audited as the system); the ids of the incidents changed."""
    at = now or utcnow()
    system = Actor(SYSTEM_ACTOR, SYSTEM_ACTOR)
    changed: list[int] = []
    due: Sequence[Incident] = session.scalars(
        select(Incident)
        .where(
            or_(
                (Incident.status == "open") & (Incident.sla_due_at <= at),
                (Incident.status == "suspended") & (Incident.suspended_until <= at),
            )
        )
        .order_by(Incident.id)
        .with_for_update()
    ).all()
    for incident in due:
        if incident.status == "open":
            incident.status = "escalated"
            incident.escalated_at = at
            _done(
                session,
                incident,
                system,
                "escalate",
                at,
                f"not acknowledged by {incident.sla_due_at.isoformat()}",
                result="escalated: SLA missed",
            )
        else:
            incident.status = "acknowledged" if incident.acknowledged_at else "open"
            incident.suspended_until = None
            if incident.acknowledged_at is None:
                incident.sla_due_at = at + SLA_BUDGET[Severity(incident.severity)]
            _done(session, incident, system, "resume", at, "suspension expired")
        changed.append(incident.id)
    return changed
