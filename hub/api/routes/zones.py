"""Zones of the supervision engine (admin and officer write; analysts read).

Zones go in and out as RFC 7946 GeoJSON ``Feature`` objects (WGS84, ``[lon, lat]``):
the feature's ``id`` is the zone id, its ``geometry`` a Polygon (holes allowed),
MultiPolygon, Point (a circle, with ``properties.radius_m``) or LineString (a
corridor, with ``properties.buffer_m``), its ``properties`` the name, kind and site.
``POST /zones/import`` takes a ``FeatureCollection`` and stores all of it or none.

Geometry is checked by :func:`hub.supervision.zones.validate_zone` (self-intersections
repaired or refused): a refused geometry answers 422 with the reason at
``body.geometry``. A zone named by a rule cannot be deleted (409). Every change is
audited (``zone.create``, ``zone.update``, ``zone.delete``) and reloads the running
supervision service, if the app has one (``app.state.supervision``).
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hub import audit
from hub.api.deps import AuthUser, DbSession, EngineDep, PageParams, paginate, require
from hub.api.schemas import Page
from hub.db.engine import write_session
from hub.db.models import Site, SupervisionRule, SupervisionZone
from hub.db.users import Role
from hub.supervision.model import Zone, ZoneKind
from hub.supervision.zones import ZoneError, validate_zone

__all__ = [
    "ZoneCollectionIn",
    "ZoneFeature",
    "ZoneFeatureIn",
    "ZoneProperties",
    "reload_supervision",
    "router",
    "zones_in_rule",
]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/zones", tags=["zones"])

Reader = Annotated[AuthUser, Depends(require(Role.admin, Role.officer, Role.analyst))]
Writer = Annotated[AuthUser, Depends(require(Role.admin, Role.officer))]
ZoneIdPath = Annotated[str, Path(min_length=1, max_length=64, description="Zone id.")]


class ZoneProperties(BaseModel):
    """What a zone is, besides its shape."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="Display name.")
    kind: ZoneKind = Field(description="What the zone is for.")
    site_id: str | None = Field(default=None, max_length=64, description="Site it belongs to.")
    radius_m: float | None = Field(
        default=None, gt=0, le=100_000, description="Circle radius (Point geometry), metres."
    )
    buffer_m: float | None = Field(
        default=None, gt=0, le=10_000, description="Corridor half-width (LineString), metres."
    )


class ZoneFeatureIn(BaseModel):
    """A zone as a GeoJSON Feature."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["Feature"] = Field(description="Always 'Feature'.")
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Zone id; on create a new one is made when absent, on update it must "
        "be absent or equal the path's.",
    )
    geometry: dict[str, Any] = Field(description="GeoJSON geometry, WGS84 [lon, lat].")
    properties: ZoneProperties = Field(description="Name, kind, site, radius or buffer.")
    bbox: list[float] | None = Field(default=None, description="Ignored if given.")


class ZoneImportFeatureIn(ZoneFeatureIn):
    """A zone of an import: its id is required (the schema says so, as the API does)."""

    id: str = Field(min_length=1, max_length=64, description="Zone id (required on import).")


class ZoneCollectionIn(BaseModel):
    """Zones as a GeoJSON FeatureCollection."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["FeatureCollection"] = Field(description="Always 'FeatureCollection'.")
    features: list[ZoneImportFeatureIn] = Field(
        min_length=1, max_length=500, description="The zones (each with an id)."
    )
    bbox: list[float] | None = Field(default=None, description="Ignored if given.")


class ZoneFeatureProperties(ZoneProperties):
    """A stored zone's properties."""

    created_at: datetime = Field(description="When it was created (UTC).")
    updated_at: datetime = Field(description="When it last changed (UTC).")


class ZoneFeature(BaseModel):
    """A stored zone as a GeoJSON Feature."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["Feature"] = Field(default="Feature", description="Always 'Feature'.")
    id: str = Field(description="Zone id.")
    geometry: dict[str, Any] = Field(description="GeoJSON geometry as stored (validated).")
    properties: ZoneFeatureProperties = Field(description="Name, kind, site and timestamps.")


class ZoneCollection(BaseModel):
    """Stored zones as a GeoJSON FeatureCollection."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["FeatureCollection"] = Field(
        default="FeatureCollection", description="Always 'FeatureCollection'."
    )
    features: list[ZoneFeature] = Field(description="The zones.")


def _feature(row: SupervisionZone) -> ZoneFeature:
    return ZoneFeature(
        id=row.id,
        geometry=row.geometry,
        properties=ZoneFeatureProperties(
            name=row.name,
            kind=ZoneKind(row.kind),
            site_id=row.site_id,
            radius_m=row.radius_m,
            buffer_m=row.buffer_m,
            created_at=row.created_at,
            updated_at=row.updated_at,
        ),
    )


def zones_in_rule(params: dict[str, Any]) -> set[str]:
    """The zone ids a rule's parameters name."""
    named = set(params.get("zone_ids") or ())
    if params.get("zone_id"):
        named.add(params["zone_id"])
    return named


def reload_supervision(request: Request) -> None:
    """Tell the running supervision service (if any) that zones or rules changed."""
    service = getattr(request.app.state, "supervision", None)
    if service is not None:
        service.reload()


def _invalid(loc: tuple[str | int, ...], msg: str, kind: str = "value_error") -> dict[str, Any]:
    return {"type": kind, "loc": loc, "msg": msg, "input": None}


def _validated(
    session: Session, feature: ZoneFeatureIn, zone_id: str, loc: tuple[str | int, ...]
) -> Zone:
    """The validated zone of a feature, or 422 naming the field at fault."""
    props = feature.properties
    if props.site_id is not None and session.get(Site, props.site_id) is None:
        raise RequestValidationError(
            [_invalid((*loc, "properties", "site_id"), f"no site {props.site_id}")]
        )
    try:
        zone = Zone(
            id=zone_id,
            name=props.name,
            kind=props.kind,
            site_id=props.site_id,
            geometry=feature.geometry,
            radius_m=props.radius_m,
            buffer_m=props.buffer_m,
        )
        return validate_zone(zone)
    except ZoneError as exc:
        raise RequestValidationError(
            [_invalid((*loc, "geometry"), str(exc), "zone_invalid")]
        ) from exc
    except ValidationError as exc:
        raise RequestValidationError(
            [_invalid((*loc, *err["loc"]), err["msg"], err["type"]) for err in exc.errors()]
        ) from exc


def _store(session: Session, zone: Zone, row: SupervisionZone | None) -> SupervisionZone:
    if row is None:
        row = SupervisionZone(id=zone.id)
        session.add(row)
    row.name = zone.name
    row.kind = zone.kind.value
    row.site_id = zone.site_id
    row.geometry = zone.geometry
    row.radius_m = zone.radius_m
    row.buffer_m = zone.buffer_m
    session.flush()
    return row


def _audit(session: Session, caller: AuthUser, action: str, zone_id: str, result: str) -> None:
    audit.append(
        session,
        actor=caller.username,
        role=caller.role.value,
        action=action,
        target=f"zone:{zone_id}",
        result=result,
    )


@router.get("", response_model=Page[ZoneFeature], summary="List zones")
def list_zones(
    _caller: Reader,
    session: DbSession,
    page: PageParams,
    site_id: Annotated[str | None, Query(max_length=64, description="Only this site.")] = None,
) -> Page[ZoneFeature]:
    """Zones by id, each a GeoJSON Feature."""
    stmt = select(SupervisionZone)
    if site_id is not None:
        stmt = stmt.where(SupervisionZone.site_id == site_id)
    return paginate(session, stmt, page, _feature, SupervisionZone.id)


@router.get(
    "/{zone_id}",
    response_model=ZoneFeature,
    summary="Read a zone",
    responses={404: {"description": "No such zone."}},
)
def get_zone(zone_id: ZoneIdPath, _caller: Reader, session: DbSession) -> ZoneFeature:
    """One zone as a GeoJSON Feature."""
    row = session.get(SupervisionZone, zone_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such zone")
    return _feature(row)


@router.post(
    "",
    response_model=ZoneFeature,
    status_code=status.HTTP_201_CREATED,
    summary="Create a zone",
    responses={
        409: {"description": "A zone with this id exists."},
        422: {"description": "Invalid feature or geometry (the reason at body.geometry)."},
    },
)
def post_zone(
    body: ZoneFeatureIn, caller: Writer, engine: EngineDep, request: Request
) -> ZoneFeature:
    """Create a zone from a GeoJSON Feature (audited as ``zone.create``)."""
    zone_id = body.id or f"zone-{uuid.uuid4().hex[:16]}"
    try:
        with write_session(engine) as session:
            if session.get(SupervisionZone, zone_id) is not None:
                raise HTTPException(status.HTTP_409_CONFLICT, detail="zone exists")
            zone = _validated(session, body, zone_id, ("body",))
            row = _store(session, zone, None)
            _audit(session, caller, "zone.create", zone_id, f"{zone.kind.value} {zone.name}")
            public = _feature(row)
    except IntegrityError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="zone exists") from exc
    reload_supervision(request)
    return public


@router.post(
    "/import",
    response_model=ZoneCollection,
    status_code=status.HTTP_201_CREATED,
    summary="Create zones from a FeatureCollection",
    responses={
        409: {"description": "A zone with one of these ids exists."},
        422: {"description": "A feature is invalid (its index in the path); nothing stored."},
    },
)
def import_zones(
    body: ZoneCollectionIn, caller: Writer, engine: EngineDep, request: Request
) -> ZoneCollection:
    """Create every zone of a FeatureCollection, or none (each audited as ``zone.create``)."""
    try:
        with write_session(engine) as session:
            rows = []
            for index, feature in enumerate(body.features):
                loc: tuple[str | int, ...] = ("body", "features", index)
                if session.get(SupervisionZone, feature.id) is not None:
                    raise HTTPException(
                        status.HTTP_409_CONFLICT, detail=f"zone {feature.id} exists"
                    )
                zone = _validated(session, feature, feature.id, loc)
                rows.append(_store(session, zone, None))
                _audit(session, caller, "zone.create", zone.id, f"{zone.kind.value} {zone.name}")
            public = ZoneCollection(features=[_feature(row) for row in rows])
    except IntegrityError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="a zone exists") from exc
    reload_supervision(request)
    return public


@router.put(
    "/{zone_id}",
    response_model=ZoneFeature,
    summary="Replace a zone",
    responses={
        404: {"description": "No such zone."},
        422: {"description": "Invalid feature or geometry, or an id other than the path's."},
    },
)
def put_zone(
    zone_id: ZoneIdPath,
    body: ZoneFeatureIn,
    caller: Writer,
    engine: EngineDep,
    request: Request,
) -> ZoneFeature:
    """Replace a zone's shape and properties (audited as ``zone.update``)."""
    if body.id is not None and body.id != zone_id:
        raise RequestValidationError([_invalid(("body", "id"), "id differs from the path's")])
    with write_session(engine) as session:
        row = session.get(SupervisionZone, zone_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such zone")
        zone = _validated(session, body, zone_id, ("body",))
        row = _store(session, zone, row)
        _audit(session, caller, "zone.update", zone_id, f"{zone.kind.value} {zone.name}")
        public = _feature(row)
    reload_supervision(request)
    return public


@router.delete(
    "/{zone_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a zone",
    responses={
        404: {"description": "No such zone."},
        409: {"description": "A rule names the zone."},
    },
)
def delete_zone(zone_id: ZoneIdPath, caller: Writer, engine: EngineDep, request: Request) -> None:
    """Delete a zone no rule names (audited as ``zone.delete``)."""
    with write_session(engine) as session:
        row = session.get(SupervisionZone, zone_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such zone")
        users = sorted(
            rule_id
            for rule_id, params in session.execute(
                select(SupervisionRule.id, SupervisionRule.params)
            )
            if zone_id in zones_in_rule(params)
        )
        if users:
            raise HTTPException(
                status.HTTP_409_CONFLICT, detail=f"zone is used by rules: {', '.join(users)}"
            )
        session.delete(row)
        _audit(session, caller, "zone.delete", zone_id, "deleted")
    reload_supervision(request)
