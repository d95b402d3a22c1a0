"""Sites (admin writes; officers and analysts read): list, read, create, and each
site's map.

A site id follows :data:`devices.catalog.SITE_ID_PATTERN` (it appears in site files of
the firmware configuration folder); the time zone is an IANA name known to this
machine's zone database. Creating a site is audited (``site.create``).

A site's map (``GET``/``PUT /sites/{id}/map``) is a GeoJSON FeatureCollection (RFC 7946,
``[lon, lat]``) of what the command map draws under the zones: the outline, buildings,
paths. Each feature's ``properties`` are free (the map page reads ``name`` and
``role``: ``outline``, ``building``, ``path``, ...); foreign members of the collection
are not kept. A map holds at most :data:`MAX_MAP_FEATURES` features,
:data:`MAX_MAP_POINTS` positions and :data:`MAX_MAP_BYTES` bytes of JSON; every
geometry must be valid (shapely's rules: closed, non-self-intersecting rings ...) and
inside WGS84's range. Replacing a map is audited (``site.map.update``).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Annotated, Any, Literal

import shapely
from fastapi import APIRouter, Depends, HTTPException, Path, status
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from shapely.geometry import shape
from shapely.validation import explain_validity
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from hub import audit
from hub.api.deps import AuthUser, DbSession, EngineDep, PageParams, paginate, require
from hub.api.schemas import Page, SiteCreate, SitePublic
from hub.db.engine import write_session
from hub.db.models import Site
from hub.db.users import Role

__all__ = [
    "MAX_MAP_BYTES",
    "MAX_MAP_FEATURES",
    "MAX_MAP_POINTS",
    "MapFeature",
    "SiteMap",
    "SiteMapPublic",
    "check_map_geometry",
    "router",
]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/sites", tags=["sites"])

Reader = Annotated[AuthUser, Depends(require(Role.admin, Role.officer, Role.analyst))]
Admin = Annotated[AuthUser, Depends(require(Role.admin))]


@router.get("", response_model=Page[SitePublic], summary="List sites")
def list_sites(_caller: Reader, session: DbSession, page: PageParams) -> Page[SitePublic]:
    """Sites by id, a page at a time."""
    return paginate(session, select(Site), page, SitePublic.model_validate, Site.site_id)


@router.get(
    "/{site_id}",
    response_model=SitePublic,
    summary="Read a site",
    responses={404: {"description": "No such site."}},
)
def get_site(site_id: str, _caller: Reader, session: DbSession) -> SitePublic:
    """One site by id."""
    site = session.get(Site, site_id)
    if site is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such site")
    return SitePublic.model_validate(site)


@router.post(
    "",
    response_model=SitePublic,
    status_code=status.HTTP_201_CREATED,
    summary="Create a site",
    responses={409: {"description": "A site with this id exists."}},
)
def post_site(body: SiteCreate, caller: Admin, engine: EngineDep) -> SitePublic:
    """Create a site (audited as ``site.create``)."""
    try:
        with write_session(engine) as session:
            if session.get(Site, body.site_id) is not None:
                raise HTTPException(status.HTTP_409_CONFLICT, detail="site exists")
            site = Site(site_id=body.site_id, name=body.name, timezone=body.timezone)
            session.add(site)
            session.flush()
            audit.append(
                session,
                actor=caller.username,
                role=caller.role.value,
                action="site.create",
                target=f"site:{body.site_id}",
                result=f"timezone={body.timezone}",
            )
            public = SitePublic.model_validate(site)
    except IntegrityError as exc:  # created meanwhile by another request
        raise HTTPException(status.HTTP_409_CONFLICT, detail="site exists") from exc
    return public


# -- site maps -----------------------------------------------------------------------------

MAX_MAP_FEATURES = 2000
"""Most features one site map may hold."""

MAX_MAP_POINTS = 200_000
"""Most positions (vertices) over all geometries of one site map."""

MAX_MAP_BYTES = 2 * 1024 * 1024
"""Largest site map, as compact JSON."""

MAP_GEOMETRY_TYPES = (
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
)
"""GeoJSON geometry types a site map may use."""

SiteIdPath = Annotated[str, Path(min_length=1, max_length=64, description="Site id.")]


def check_map_geometry(value: dict[str, Any]) -> dict[str, Any]:
    """A GeoJSON geometry of a site map, checked with shapely; ``ValueError`` says why
    it is refused. Answers only ``type`` and ``coordinates`` (other members dropped)."""
    kind = value.get("type")
    if kind not in MAP_GEOMETRY_TYPES:
        raise ValueError(f"geometry type must be one of {', '.join(MAP_GEOMETRY_TYPES)}")
    if "coordinates" not in value:
        raise ValueError("geometry has no coordinates")
    clean = {"type": kind, "coordinates": value["coordinates"]}
    _check_rings(kind, clean["coordinates"])
    try:
        geom = shape(clean)
    except Exception as exc:  # shapely raises several kinds on malformed input
        raise ValueError(f"malformed {kind} coordinates: {exc}") from exc
    if geom.is_empty:
        raise ValueError(f"empty {kind}")
    coords = shapely.get_coordinates(geom)
    if len(coords) > MAX_MAP_POINTS:
        raise ValueError(f"more than {MAX_MAP_POINTS} positions")
    for lon, lat in coords:
        if not (math.isfinite(lon) and math.isfinite(lat)):
            raise ValueError("coordinates must be finite numbers")
        if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
            raise ValueError(f"position [{lon}, {lat}] is outside [lon, lat] WGS84 range")
    if not geom.is_valid:
        raise ValueError(f"invalid {kind}: {explain_validity(geom)}")
    return clean


def _check_rings(kind: str, coordinates: Any) -> None:
    """RFC 7946 linear rings: four or more positions, the last equal to the first
    (shapely would close an open ring silently)."""
    if kind == "Polygon":
        polygons = [coordinates]
    elif kind == "MultiPolygon":
        polygons = coordinates if isinstance(coordinates, list) else []
    else:
        return
    for polygon in polygons:
        for ring in polygon if isinstance(polygon, list) else []:
            if not isinstance(ring, list) or len(ring) < 4 or ring[0] != ring[-1]:
                raise ValueError(
                    f"malformed {kind}: each ring needs 4 or more positions, the last "
                    "equal to the first"
                )


class MapFeature(BaseModel):
    """One feature of a site map (a building, the outline, a path ...)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["Feature"] = Field(description="Always 'Feature'.")
    id: str | int | None = Field(default=None, description="Optional feature id.")
    geometry: dict[str, Any] = Field(
        description="GeoJSON geometry: Point, MultiPoint, LineString, MultiLineString, "
        "Polygon or MultiPolygon, [lon, lat] in WGS84, valid by shapely's rules."
    )
    properties: dict[str, Any] | None = Field(
        default=None,
        description="Free properties; the map page reads 'name' (a label) and 'role' "
        "(outline, building, path ...).",
    )
    bbox: list[float] | None = Field(default=None, description="Ignored if given.")

    @field_validator("geometry")
    @classmethod
    def _valid_geometry(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_map_geometry(value)


class SiteMap(BaseModel):
    """A site map as an admin puts it: a GeoJSON FeatureCollection."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["FeatureCollection"] = Field(description="Always 'FeatureCollection'.")
    features: list[MapFeature] = Field(
        max_length=MAX_MAP_FEATURES,
        description=f"The outline, buildings, paths ... (at most {MAX_MAP_FEATURES}).",
    )

    @model_validator(mode="after")
    def _limits(self) -> SiteMap:
        points = sum(len(shapely.get_coordinates(shape(f.geometry))) for f in self.features)
        if points > MAX_MAP_POINTS:
            raise ValueError(f"the map has {points} positions; at most {MAX_MAP_POINTS}")
        size = len(_compact(self.stored()))
        if size > MAX_MAP_BYTES:
            raise ValueError(f"the map takes {size} bytes as JSON; at most {MAX_MAP_BYTES}")
        return self

    def stored(self) -> dict[str, Any]:
        """The form kept in ``sites.map``."""
        return {
            "type": "FeatureCollection",
            "features": [
                feature.model_dump(exclude={"bbox"}, exclude_none=True)
                for feature in self.features
            ],
        }


class SiteMapFeaturePublic(BaseModel):
    """One stored feature of a site map."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["Feature"] = Field(default="Feature", description="Always 'Feature'.")
    id: str | int | None = Field(default=None, description="Feature id, if it was given.")
    geometry: dict[str, Any] = Field(description="GeoJSON geometry as stored (validated).")
    properties: dict[str, Any] | None = Field(default=None, description="Its properties.")


class SiteMapPublic(BaseModel):
    """A site's map as a GeoJSON FeatureCollection (empty until an admin puts one)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["FeatureCollection"] = Field(
        default="FeatureCollection", description="Always 'FeatureCollection'."
    )
    site_id: str = Field(description="Site the map is of (a GeoJSON foreign member).")
    features: list[SiteMapFeaturePublic] = Field(description="Outline, buildings, paths ...")


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _map_public(site: Site) -> SiteMapPublic:
    stored = site.map or {"features": []}
    return SiteMapPublic(
        site_id=site.site_id,
        features=[SiteMapFeaturePublic.model_validate(f) for f in stored["features"]],
    )


@router.get(
    "/{site_id}/map",
    response_model=SiteMapPublic,
    summary="Read a site's map",
    responses={404: {"description": "No such site."}},
)
def get_site_map(site_id: SiteIdPath, _caller: Reader, session: DbSession) -> SiteMapPublic:
    """The site's outline and buildings as GeoJSON (no features until one is put)."""
    site = session.get(Site, site_id)
    if site is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such site")
    return _map_public(site)


@router.put(
    "/{site_id}/map",
    response_model=SiteMapPublic,
    summary="Replace a site's map",
    responses={
        404: {"description": "No such site."},
        422: {"description": "Not a FeatureCollection, an invalid geometry, or too large."},
    },
)
def put_site_map(
    site_id: SiteIdPath, body: SiteMap, caller: Admin, engine: EngineDep
) -> SiteMapPublic:
    """Replace the site's map (audited as ``site.map.update``)."""
    with write_session(engine) as session:
        site = session.get(Site, site_id)
        if site is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such site")
        site.map = body.stored()
        session.flush()
        audit.append(
            session,
            actor=caller.username,
            role=caller.role.value,
            action="site.map.update",
            target=f"site:{site_id}",
            result=f"features={len(body.features)}",
        )
        public = _map_public(site)
    logger.info("site %s map replaced: %d features", site_id, len(body.features))
    return public
