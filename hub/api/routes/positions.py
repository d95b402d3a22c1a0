"""Positions (admin, officer, analyst): each device's latest fix, a device's last
fixes, and a device's track as GeoJSON.

Every query runs on the ``(device_id, captured_at)`` index of ``positions``: the
latest fix of a device is a backward scan of one index entry, the last fixes a
backward scan, a track a range scan. Times are capture times by the device clock.

Tracks (``GET /positions/{device_id}/track``) are RFC 7946 GeoJSON ``Feature``
objects, served as ``application/geo+json``, coordinates ``[lon, lat]`` (WGS84).
The geometry depends on the number of fixes in the window: two or more give a
``LineString``, exactly one a ``Point`` (a LineString needs two positions), none a
``null`` geometry (allowed by RFC 7946 for an unlocated feature). The properties
list each fix's time and accuracy in the order of the coordinates. The window is
at most :data:`MAX_TRACK_RANGE`; a window with more than :data:`MAX_TRACK_POINTS`
fixes is cut to the first ones and flagged ``truncated``.

``/positions/latest`` is declared before ``/positions/{device_id}``, so a device
named ``latest`` can only be read through ``/positions/latest?device_id=latest``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import select

from hub.api.deps import AuthUser, DbSession, PageParams, fetch_page, paginate, require, to_page
from hub.api.schemas import Page
from hub.db.models import Device, Position
from hub.db.users import Role

__all__ = [
    "DEFAULT_TRACK_RANGE",
    "MAX_TRACK_POINTS",
    "MAX_TRACK_RANGE",
    "LatestPosition",
    "PositionFix",
    "TrackFeature",
    "check_range",
    "router",
]

router = APIRouter(prefix="/positions", tags=["positions"])

Reader = Annotated[AuthUser, Depends(require(Role.admin, Role.officer, Role.analyst))]

MAX_TRACK_RANGE = timedelta(days=7)
"""Longest window a track may span."""
DEFAULT_TRACK_RANGE = timedelta(hours=24)
"""Window of a track when ``since`` is not given: this long before ``until``."""
MAX_TRACK_POINTS = 20_000
"""Most fixes in one track; beyond this the track is cut and flagged."""

DeviceIdPath = Annotated[str, Path(max_length=64, description="Device id.")]


class GeoJSONResponse(JSONResponse):
    """JSON with the GeoJSON media type (RFC 7946, section 12)."""

    media_type = "application/geo+json"


class PositionFix(BaseModel):
    """One stored location fix."""

    model_config = ConfigDict(from_attributes=True, extra="forbid")

    id: int = Field(description="Row id.")
    device_id: str = Field(description="Device that took the fix.")
    event_id: str = Field(description="The device's event id (UUIDv7).")
    captured_at: datetime = Field(description="When the fix was taken, device clock (UTC).")
    received_at: datetime = Field(description="When the hub received it (UTC).")
    replayed: bool = Field(description="Sent late from the device's outbox.")
    lat: float = Field(description="Latitude, degrees WGS84.")
    lon: float = Field(description="Longitude, degrees WGS84.")
    acc: float = Field(description="Horizontal accuracy radius, metres.")
    src: str = Field(description="Source of the fix: gnss, wifi, cell, ble_beacon or uwb.")
    alt: float | None = Field(description="Altitude, metres above mean sea level.")
    vel: float | None = Field(description="Speed, metres per second.")
    cog: float | None = Field(description="Course over ground, degrees from true north.")
    sat: int | None = Field(description="Satellites used.")
    hdop: float | None = Field(description="Horizontal dilution of precision.")
    batt: float | None = Field(description="Battery charge, percent.")
    charging: bool | None = Field(description="On external power.")
    strap: str | None = Field(description="Strap circuit: closed (worn) or open.")
    rssi: int | None = Field(description="Cellular signal strength, dBm.")


class LatestPosition(PositionFix):
    """A device's latest fix, with the device's site."""

    site_id: str = Field(description="Site of the device.")


class LineStringGeometry(BaseModel):
    """A GeoJSON LineString: two or more ``[lon, lat]`` positions."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["LineString"] = Field(description="Always 'LineString'.")
    coordinates: list[tuple[float, float]] = Field(
        min_length=2, description="[lon, lat] of each fix, oldest first."
    )


class PointGeometry(BaseModel):
    """A GeoJSON Point: one ``[lon, lat]`` position."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["Point"] = Field(description="Always 'Point'.")
    coordinates: tuple[float, float] = Field(description="[lon, lat] of the only fix.")


class TrackProperties(BaseModel):
    """What a track is of, and per fix what the geometry cannot say."""

    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(description="Device of the track.")
    since: datetime = Field(description="Start of the window (inclusive, UTC).")
    until: datetime = Field(description="End of the window (inclusive, UTC).")
    count: int = Field(ge=0, description="Fixes in the track.")
    times: list[datetime] = Field(description="Capture time of each fix, as the coordinates.")
    acc: list[float] = Field(description="Accuracy radius of each fix (m), as the coordinates.")
    truncated: bool = Field(
        description=f"The window held more than {MAX_TRACK_POINTS} fixes; only the first "
        "ones are given."
    )


class TrackFeature(BaseModel):
    """A device's track as a GeoJSON Feature (RFC 7946)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["Feature"] = Field(description="Always 'Feature'.")
    geometry: LineStringGeometry | PointGeometry | None = Field(
        description="LineString for 2+ fixes, Point for one, null for none."
    )
    properties: TrackProperties = Field(description="Device, window and per-fix data.")


def check_range(since: datetime | None, until: datetime | None) -> None:
    """422 on ``until`` (with its field path) when it is before ``since``."""
    if since is not None and until is not None and until < since:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("query", "until"),
                    "msg": "until must not be before since",
                    "input": until.isoformat(),
                }
            ]
        )


def _device_or_404(session: DbSession, device_id: str) -> Device:
    device = session.get(Device, device_id)
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such device")
    return device


@router.get("/latest", response_model=Page[LatestPosition], summary="Latest fix of each device")
def latest_positions(
    _caller: Reader,
    session: DbSession,
    page: PageParams,
    site_id: Annotated[str | None, Query(max_length=64, description="Only this site.")] = None,
    device_id: Annotated[str | None, Query(max_length=64, description="Only this device.")] = None,
) -> Page[LatestPosition]:
    """The latest fix (by capture time) of every device that has one, by device id."""
    latest_id = (
        select(Position.id)
        .where(Position.device_id == Device.device_id)
        .order_by(Position.captured_at.desc(), Position.id.desc())
        .limit(1)
        .correlate(Device)
        .scalar_subquery()
    )
    stmt = (
        select(Position, Device.site_id)
        .select_from(Device)
        .join(Position, Position.id == latest_id)
    )
    if site_id is not None:
        stmt = stmt.where(Device.site_id == site_id)
    if device_id is not None:
        stmt = stmt.where(Device.device_id == device_id)
    rows, total = fetch_page(session, stmt, page, Device.device_id)
    items = [
        LatestPosition.model_validate(
            PositionFix.model_validate(position).model_dump() | {"site_id": site}
        )
        for position, site in rows
    ]
    return to_page(items, total, page)


@router.get(
    "/{device_id}/track",
    response_model=TrackFeature,
    response_class=GeoJSONResponse,
    summary="A device's track as GeoJSON",
    responses={
        404: {"description": "No such device."},
        422: {"description": "Naive times, until before since, or a window over 7 days."},
    },
)
def device_track(
    device_id: DeviceIdPath,
    _caller: Reader,
    session: DbSession,
    since: Annotated[
        AwareDatetime | None,
        Query(description="Window start, with a UTC offset; default 24 h before until."),
    ] = None,
    until: Annotated[
        AwareDatetime | None, Query(description="Window end, with a UTC offset; default now.")
    ] = None,
) -> TrackFeature:
    """Fixes captured in ``[since, until]``, oldest first, as one GeoJSON Feature
    (LineString; a Point when there is one fix; null geometry when none)."""
    end = (until or datetime.now(UTC)).astimezone(UTC)
    start = since.astimezone(UTC) if since is not None else end - DEFAULT_TRACK_RANGE
    check_range(start, end)
    if end - start > MAX_TRACK_RANGE:
        raise RequestValidationError(
            [
                {
                    "type": "value_error",
                    "loc": ("query", "since"),
                    "msg": f"the window may span at most {MAX_TRACK_RANGE.days} days",
                    "input": start.isoformat(),
                }
            ]
        )
    _device_or_404(session, device_id)
    rows = session.execute(
        select(Position.lon, Position.lat, Position.captured_at, Position.acc)
        .where(
            Position.device_id == device_id,
            Position.captured_at >= start,
            Position.captured_at <= end,
        )
        .order_by(Position.captured_at, Position.id)
        .limit(MAX_TRACK_POINTS + 1)
    ).all()
    truncated = len(rows) > MAX_TRACK_POINTS
    rows = rows[:MAX_TRACK_POINTS]
    coordinates = [(float(r.lon), float(r.lat)) for r in rows]
    geometry: LineStringGeometry | PointGeometry | None
    if len(coordinates) >= 2:
        geometry = LineStringGeometry(type="LineString", coordinates=coordinates)
    elif coordinates:
        geometry = PointGeometry(type="Point", coordinates=coordinates[0])
    else:
        geometry = None
    return TrackFeature(
        type="Feature",
        geometry=geometry,
        properties=TrackProperties(
            device_id=device_id,
            since=start,
            until=end,
            count=len(rows),
            times=[r.captured_at for r in rows],
            acc=[float(r.acc) for r in rows],
            truncated=truncated,
        ),
    )


@router.get(
    "/{device_id}",
    response_model=Page[PositionFix],
    summary="A device's last fixes",
    responses={404: {"description": "No such device."}},
)
def device_positions(
    device_id: DeviceIdPath,
    _caller: Reader,
    session: DbSession,
    page: PageParams,
) -> Page[PositionFix]:
    """The device's fixes, newest first by capture time: ``limit`` is how many."""
    _device_or_404(session, device_id)
    stmt = select(Position).where(Position.device_id == device_id)
    order = (Position.captured_at.desc(), Position.id.desc())
    return paginate(session, stmt, page, PositionFix.model_validate, *order)
