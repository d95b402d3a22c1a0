"""Registered devices, read-only (admin, officer, analyst): list with filters, detail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status
from sqlalchemy import func, select

from hub.api.deps import AuthUser, DbSession, PageParams, require
from hub.api.schemas import DevicePublic, DeviceStatus, Page
from hub.db.models import Device
from hub.db.users import Role

router = APIRouter(prefix="/devices", tags=["devices"])

Reader = Annotated[AuthUser, Depends(require(Role.admin, Role.officer, Role.analyst))]


@router.get("", response_model=Page[DevicePublic], summary="List devices")
def list_devices(
    _caller: Reader,
    session: DbSession,
    page: PageParams,
    site_id: Annotated[str | None, Query(max_length=64, description="Only this site.")] = None,
    status_: Annotated[
        DeviceStatus | None, Query(alias="status", description="Only this status.")
    ] = None,
) -> Page[DevicePublic]:
    """Devices by id, a page at a time."""
    stmt = select(Device)
    if site_id is not None:
        stmt = stmt.where(Device.site_id == site_id)
    if status_ is not None:
        stmt = stmt.where(Device.status == status_)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(Device.device_id).limit(page.limit).offset(page.offset))
    return Page[DevicePublic](
        items=[DevicePublic.model_validate(d) for d in rows],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get(
    "/{device_id}",
    response_model=DevicePublic,
    summary="Read a device",
    responses={404: {"description": "No such device."}},
)
def get_device(device_id: str, _caller: Reader, session: DbSession) -> DevicePublic:
    """One device by id."""
    device = session.get(Device, device_id)
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such device")
    return DevicePublic.model_validate(device)
