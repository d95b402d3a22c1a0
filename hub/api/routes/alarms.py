"""Device alarms (admin, officer, analyst): the stored alarm events, newest first.

Each row is one alarm event as the device sent it: ``state`` is ``active`` when the
condition was raised and ``cleared`` when it ended, both naming the same
``alarm_id`` (the occurrence). An alarm is open while its ``active`` event has no
``cleared`` partner. The path parameter of ``GET /alarms/{alarm_id}`` is the row
``id`` of the event (an integer), not the device's ``alarm_id`` string.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import Select, select

from devices.protocol import AlarmType
from hub.api.deps import AuthUser, DbSession, PageParams, RowId, fetch_page, require, to_page
from hub.api.schemas import Page
from hub.db.models import Alarm, Device
from hub.db.users import Role

from .positions import check_range

__all__ = ["AlarmPublic", "AlarmState", "alarm_select", "router"]

router = APIRouter(prefix="/alarms", tags=["alarms"])

Reader = Annotated[AuthUser, Depends(require(Role.admin, Role.officer, Role.analyst))]

AlarmState = Literal["active", "cleared"]


class AlarmPublic(BaseModel):
    """One stored alarm event."""

    model_config = ConfigDict(extra="forbid")

    id: int = Field(description="Row id (the path parameter of GET /alarms/{alarm_id}).")
    device_id: str = Field(description="Device that raised or cleared the alarm.")
    site_id: str = Field(description="Site of the device.")
    event_id: str = Field(description="The device's event id (UUIDv7).")
    alarm_id: str = Field(description="The occurrence: its active and cleared events share it.")
    type: str = Field(description="What happened, e.g. strap.tamper, sos, battery.low.")
    state: AlarmState = Field(description="active: raised; cleared: ended.")
    captured_at: datetime = Field(description="When it changed, device clock (UTC).")
    received_at: datetime = Field(description="When the hub received it (UTC).")
    replayed: bool = Field(description="Sent late from the device's outbox.")
    position: dict[str, Any] | None = Field(
        description="Where the device was when the alarm changed, if it knew."
    )
    related_event_id: str | None = Field(description="An event it refers to, e.g. a sighting.")
    detail: str | None = Field(description="A short note from the device.")

    @classmethod
    def of(cls, alarm: Alarm, site_id: str) -> AlarmPublic:
        """The public form of a row and its device's site."""
        return cls(
            id=alarm.id,
            device_id=alarm.device_id,
            site_id=site_id,
            event_id=alarm.event_id,
            alarm_id=alarm.alarm_id,
            type=alarm.type,
            state=cast(AlarmState, alarm.state),
            captured_at=alarm.captured_at,
            received_at=alarm.received_at,
            replayed=alarm.replayed,
            position=alarm.position,
            related_event_id=alarm.related_event_id,
            detail=alarm.detail,
        )


def alarm_select() -> Select[Alarm, str]:
    """Alarms with their device's site."""
    return select(Alarm, Device.site_id).join(Device, Device.device_id == Alarm.device_id)


@router.get("", response_model=Page[AlarmPublic], summary="List alarm events")
def list_alarms(
    _caller: Reader,
    session: DbSession,
    page: PageParams,
    site_id: Annotated[str | None, Query(max_length=64, description="Only this site.")] = None,
    device_id: Annotated[str | None, Query(max_length=64, description="Only this device.")] = None,
    type_: Annotated[AlarmType | None, Query(alias="type", description="Only this type.")] = None,
    state: Annotated[AlarmState | None, Query(description="Only this state.")] = None,
    since: Annotated[
        AwareDatetime | None, Query(description="Captured at or after this (with UTC offset).")
    ] = None,
    until: Annotated[
        AwareDatetime | None, Query(description="Captured at or before this (with UTC offset).")
    ] = None,
) -> Page[AlarmPublic]:
    """Alarm events matching the filters, newest first by capture time."""
    check_range(since, until)
    stmt = alarm_select()
    if site_id is not None:
        stmt = stmt.where(Device.site_id == site_id)
    if device_id is not None:
        stmt = stmt.where(Alarm.device_id == device_id)
    if type_ is not None:
        stmt = stmt.where(Alarm.type == type_)
    if state is not None:
        stmt = stmt.where(Alarm.state == state)
    if since is not None:
        stmt = stmt.where(Alarm.captured_at >= since)
    if until is not None:
        stmt = stmt.where(Alarm.captured_at <= until)
    rows, total = fetch_page(session, stmt, page, Alarm.captured_at.desc(), Alarm.id.desc())
    return to_page([AlarmPublic.of(alarm, site) for alarm, site in rows], total, page)


@router.get(
    "/{alarm_id}",
    response_model=AlarmPublic,
    summary="Read an alarm event",
    responses={404: {"description": "No such alarm event."}},
)
def get_alarm(
    alarm_id: RowId,
    _caller: Reader,
    session: DbSession,
) -> AlarmPublic:
    """One alarm event by row id."""
    row = session.execute(alarm_select().where(Alarm.id == alarm_id)).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such alarm")
    alarm, site = row
    return AlarmPublic.of(alarm, site)
