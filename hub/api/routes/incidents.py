"""Supervision alerts and incidents (admin and officer act; analysts read).

``GET /alerts`` lists the alerts raised by the supervision engine and by device
alarms (see :mod:`hub.alerts`); ``GET /incidents`` the incidents they were grouped
into; ``GET /incidents/{id}`` one incident with its alerts and timeline. The
lifecycle actions (``POST /incidents/{id}/acknowledge|assign|note|escalate|suspend|
clear``) answer the changed incident; an action the incident's status does not allow
answers 409 (e.g. clearing a cleared incident), bad input 422 with its field path.
Every action is audited as ``incident.<action>`` with the person's case id.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from hub import alerts
from hub.alerts import AlertPublic, alert_public
from hub.api.deps import MAX_ROW_ID, AuthUser, DbSession, EngineDep, PageParams, paginate, require
from hub.api.schemas import Page
from hub.db.engine import write_session
from hub.db.models import Alert, Incident, IncidentEvent
from hub.db.users import Role
from hub.supervision.model import Severity

from .positions import check_range

__all__ = [
    "AcknowledgeBody",
    "AssignBody",
    "ClearBody",
    "EscalateBody",
    "IncidentDetail",
    "IncidentEventPublic",
    "IncidentPublic",
    "IncidentStatus",
    "NoteBody",
    "SuspendBody",
    "router",
]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["incidents"])

Reader = Annotated[AuthUser, Depends(require(Role.admin, Role.officer, Role.analyst))]
Actor = Annotated[AuthUser, Depends(require(Role.admin, Role.officer))]
IncidentIdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="Incident id.")]

IncidentStatus = alerts.Status

MAX_DETAIL_ROWS = 500
"""Most alerts (and timeline entries) shown with one incident, the newest."""


class IncidentPublic(BaseModel):
    """One incident."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    id: int = Field(description="Incident id.")
    person_id: int | None = Field(description="The supervised person, if one is bound.")
    device_id: str | None = Field(description="The device of its first alert.")
    status: IncidentStatus = Field(description="Where it is in its lifecycle.")
    severity: Severity = Field(description="The highest severity of its alerts.")
    opened_at: datetime = Field(description="When the hub opened it (UTC).")
    last_alert_at: datetime = Field(description="When its latest alert was recorded.")
    sla_due_at: datetime = Field(description="Acknowledge by this time (per severity).")
    acknowledged_at: datetime | None = Field(description="When it was acknowledged.")
    acknowledged_by: str | None = Field(description="Who acknowledged it.")
    assigned_to: int | None = Field(description="User id of the officer it is assigned to.")
    suspended_until: datetime | None = Field(description="Suspended until this time.")
    suspend_reason: str | None = Field(description="Why it was suspended.")
    escalated_at: datetime | None = Field(description="When it was last escalated.")
    cleared_at: datetime | None = Field(description="When it was cleared.")
    cleared_by: str | None = Field(description="Who cleared it.")
    clear_note: str | None = Field(description="What happened, written when clearing.")


class IncidentEventPublic(BaseModel):
    """One step of an incident's timeline."""

    model_config = ConfigDict(extra="forbid", from_attributes=True)

    id: int = Field(description="Entry id.")
    at: datetime = Field(description="When (UTC).")
    actor: str = Field(description="Who: a username, or 'system'.")
    action: str = Field(description="open, alert, acknowledge, assign, note, escalate, ...")
    note: str | None = Field(description="Note, reason or summary.")


class IncidentDetail(IncidentPublic):
    """An incident with its alerts and timeline (newest first, at most 500 each)."""

    alerts: list[AlertPublic] = Field(description="Its alerts, newest first.")
    events: list[IncidentEventPublic] = Field(description="Its timeline, oldest first.")


class AcknowledgeBody(BaseModel):
    """Acknowledging an incident."""

    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=4000, description="Optional note.")


class AssignBody(BaseModel):
    """Assigning an incident."""

    model_config = ConfigDict(extra="forbid")

    user_id: int = Field(ge=1, le=MAX_ROW_ID, description="The officer or admin to assign it to.")


class NoteBody(BaseModel):
    """A note on an incident."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=4000, description="The note.")


class EscalateBody(BaseModel):
    """Escalating an incident."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=4000, description="Why it is escalated.")


class SuspendBody(BaseModel):
    """Suspending an incident."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=4000, description="Why it is suspended.")
    until: AwareDatetime = Field(description="When it resumes by itself (future, with offset).")


class ClearBody(BaseModel):
    """Clearing an incident."""

    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=4000, description="What happened (required).")


# -- alerts --------------------------------------------------------------------------------


@router.get("/alerts", response_model=Page[AlertPublic], summary="List alerts")
def list_alerts(
    _caller: Reader,
    session: DbSession,
    page: PageParams,
    person_id: Annotated[
        int | None, Query(ge=1, le=MAX_ROW_ID, description="Only this person's.")
    ] = None,
    device_id: Annotated[
        str | None, Query(max_length=64, description="Only this device's.")
    ] = None,
    rule_id: Annotated[str | None, Query(max_length=64, description="Only this rule's.")] = None,
    incident_id: Annotated[
        int | None, Query(ge=1, le=MAX_ROW_ID, description="Only this incident's.")
    ] = None,
    type_: Annotated[
        str | None, Query(alias="type", max_length=40, description="Only this type.")
    ] = None,
    severity: Annotated[Severity | None, Query(description="Only this severity.")] = None,
    open_: Annotated[
        bool | None, Query(alias="open", description="true: not cleared; false: cleared.")
    ] = None,
    since: Annotated[
        AwareDatetime | None, Query(description="Raised at or after this (with UTC offset).")
    ] = None,
    until: Annotated[
        AwareDatetime | None, Query(description="Raised at or before this (with UTC offset).")
    ] = None,
) -> Page[AlertPublic]:
    """Alerts matching the filters, newest first by the time the condition began."""
    check_range(since, until)
    stmt = select(Alert)
    if person_id is not None:
        stmt = stmt.where(Alert.person_id == person_id)
    if device_id is not None:
        stmt = stmt.where(Alert.device_id == device_id)
    if rule_id is not None:
        stmt = stmt.where(Alert.rule_id == rule_id)
    if incident_id is not None:
        stmt = stmt.where(Alert.incident_id == incident_id)
    if type_ is not None:
        stmt = stmt.where(Alert.type == type_)
    if severity is not None:
        stmt = stmt.where(Alert.severity == severity.value)
    if open_ is not None:
        stmt = stmt.where(Alert.cleared_at.is_(None) if open_ else Alert.cleared_at.is_not(None))
    if since is not None:
        stmt = stmt.where(Alert.raised_at >= since)
    if until is not None:
        stmt = stmt.where(Alert.raised_at <= until)
    return paginate(session, stmt, page, alert_public, Alert.raised_at.desc(), Alert.id.desc())


@router.get(
    "/alerts/{alert_id}",
    response_model=AlertPublic,
    summary="Read an alert",
    responses={404: {"description": "No such alert."}},
)
def get_alert(
    alert_id: Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="Alert id.")],
    _caller: Reader,
    session: DbSession,
) -> AlertPublic:
    """One alert by id."""
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such alert")
    return alert_public(alert)


# -- incidents -----------------------------------------------------------------------------


@router.get("/incidents", response_model=Page[IncidentPublic], summary="List incidents")
def list_incidents(
    _caller: Reader,
    session: DbSession,
    page: PageParams,
    status_: Annotated[
        IncidentStatus | None, Query(alias="status", description="Only this status.")
    ] = None,
    severity: Annotated[Severity | None, Query(description="Only this severity.")] = None,
    person_id: Annotated[
        int | None, Query(ge=1, le=MAX_ROW_ID, description="Only this person's.")
    ] = None,
    device_id: Annotated[
        str | None, Query(max_length=64, description="Only this device's.")
    ] = None,
) -> Page[IncidentPublic]:
    """Incidents matching the filters, newest first."""
    stmt = select(Incident)
    if status_ is not None:
        stmt = stmt.where(Incident.status == status_)
    if severity is not None:
        stmt = stmt.where(Incident.severity == severity.value)
    if person_id is not None:
        stmt = stmt.where(Incident.person_id == person_id)
    if device_id is not None:
        stmt = stmt.where(Incident.device_id == device_id)
    return paginate(
        session,
        stmt,
        page,
        IncidentPublic.model_validate,
        Incident.opened_at.desc(),
        Incident.id.desc(),
    )


def _detail(session: Session, incident: Incident) -> IncidentDetail:
    rows = session.scalars(
        select(Alert)
        .where(Alert.incident_id == incident.id)
        .order_by(Alert.raised_at.desc(), Alert.id.desc())
        .limit(MAX_DETAIL_ROWS)
    ).all()
    events = session.scalars(
        select(IncidentEvent)
        .where(IncidentEvent.incident_id == incident.id)
        .order_by(IncidentEvent.id.desc())
        .limit(MAX_DETAIL_ROWS)
    ).all()
    base = IncidentPublic.model_validate(incident).model_dump()
    return IncidentDetail(
        **base,
        alerts=[alert_public(alert) for alert in rows],
        events=[IncidentEventPublic.model_validate(event) for event in reversed(events)],
    )


@router.get(
    "/incidents/{incident_id}",
    response_model=IncidentDetail,
    summary="Read an incident with its alerts and timeline",
    responses={404: {"description": "No such incident."}},
)
def get_incident(
    incident_id: IncidentIdPath, _caller: Reader, session: DbSession
) -> IncidentDetail:
    """One incident, its alerts and its timeline."""
    incident = session.get(Incident, incident_id)
    if incident is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such incident")
    return _detail(session, incident)


_ACTION_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such incident."},
    409: {"description": "The incident's status does not allow this action."},
    422: {"description": "Bad input (the field path says which)."},
}


def _act(
    engine: Engine,
    caller: AuthUser,
    action: Callable[[Session, alerts.Actor], Incident],
) -> IncidentPublic:
    try:
        with write_session(engine) as session:
            incident = action(session, alerts.Actor(caller.username, caller.role.value))
            public = IncidentPublic.model_validate(incident)
    except alerts.IncidentInvalid as exc:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", exc.field), "msg": str(exc), "input": None}]
        ) from exc
    except alerts.IncidentError as exc:
        raise HTTPException(exc.status_code, detail=str(exc)) from exc
    logger.info("incident %s: %s by %s", public.id, public.status, caller.username)
    return public


@router.post(
    "/incidents/{incident_id}/acknowledge",
    response_model=IncidentPublic,
    summary="Acknowledge an incident",
    responses=_ACTION_RESPONSES,
)
def acknowledge_incident(
    incident_id: IncidentIdPath,
    caller: Actor,
    engine: EngineDep,
    body: AcknowledgeBody | None = None,
) -> IncidentPublic:
    """Take the incident on (open or escalated -> acknowledged); stops the SLA clock."""
    text = body.note if body is not None else None
    return _act(engine, caller, lambda s, a: alerts.acknowledge(s, incident_id, a, note=text))


@router.post(
    "/incidents/{incident_id}/assign",
    response_model=IncidentPublic,
    summary="Assign an incident",
    responses=_ACTION_RESPONSES,
)
def assign_incident(
    incident_id: IncidentIdPath, body: AssignBody, caller: Actor, engine: EngineDep
) -> IncidentPublic:
    """Give the incident to an enabled officer or admin."""
    return _act(engine, caller, lambda s, a: alerts.assign(s, incident_id, a, body.user_id))


@router.post(
    "/incidents/{incident_id}/note",
    response_model=IncidentPublic,
    summary="Add a note to an incident",
    responses=_ACTION_RESPONSES,
)
def note_incident(
    incident_id: IncidentIdPath, body: NoteBody, caller: Actor, engine: EngineDep
) -> IncidentPublic:
    """Add a note to the timeline (also on a cleared incident)."""
    return _act(engine, caller, lambda s, a: alerts.note(s, incident_id, a, body.text))


@router.post(
    "/incidents/{incident_id}/escalate",
    response_model=IncidentPublic,
    summary="Escalate an incident",
    responses=_ACTION_RESPONSES,
)
def escalate_incident(
    incident_id: IncidentIdPath, body: EscalateBody, caller: Actor, engine: EngineDep
) -> IncidentPublic:
    """Hand the incident up, saying why."""
    return _act(engine, caller, lambda s, a: alerts.escalate(s, incident_id, a, body.reason))


@router.post(
    "/incidents/{incident_id}/suspend",
    response_model=IncidentPublic,
    summary="Suspend an incident",
    responses=_ACTION_RESPONSES,
)
def suspend_incident(
    incident_id: IncidentIdPath, body: SuspendBody, caller: Actor, engine: EngineDep
) -> IncidentPublic:
    """Set the incident aside until ``until``; it resumes by itself then."""
    return _act(
        engine, caller, lambda s, a: alerts.suspend(s, incident_id, a, body.reason, body.until)
    )


@router.post(
    "/incidents/{incident_id}/clear",
    response_model=IncidentPublic,
    summary="Clear an incident",
    responses=_ACTION_RESPONSES,
)
def clear_incident(
    incident_id: IncidentIdPath, body: ClearBody, caller: Actor, engine: EngineDep
) -> IncidentPublic:
    """Close the incident with a note saying what happened."""
    return _act(engine, caller, lambda s, a: alerts.clear(s, incident_id, a, body.note))
