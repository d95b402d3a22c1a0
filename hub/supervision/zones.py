"""Zone geometry: validation, GeoJSON out, and prepared metric geometry for the engine.

Every zone is measured in its own local azimuthal equidistant projection (pyproj),
centred on the zone, so margins and accuracies in metres are right anywhere on Earth
(distances from the centre are exact; a 50 km zone is off by a few parts per million at
its edge). A circle is a centre and a radius, a corridor a polyline and a half-width;
both are evaluated exactly (distance to the centre or to the line), and their polygon
is only drawn for the map (:func:`zone_to_geojson`).

:meth:`PreparedZone.classify` treats a fix as a disc of radius ``acc``: it is *inside*
when the whole disc, grown by the margin, lies inside the zone, *outside* when it lies
wholly outside, else *uncertain*.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any, Literal

import shapely
from pyproj import Transformer
from shapely.geometry import MultiPolygon, Point, Polygon, mapping, shape
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient
from shapely.strtree import STRtree

from hub.supervision.model import Zone

__all__ = [
    "Classification",
    "PreparedZone",
    "ZoneError",
    "ZoneIndex",
    "prepare",
    "validate_zone",
    "zone_to_geojson",
]

Classification = Literal["inside", "outside", "uncertain"]

_CIRCLE_SEGMENTS = 16
"""Segments per quarter circle when a circle or corridor is drawn as a polygon."""


class ZoneError(ValueError):
    """A zone's geometry cannot be used; the message says why."""


# --- validation ------------------------------------------------------------------------


def _check_position(pos: Any, where: str) -> tuple[float, float]:
    if not isinstance(pos, (list, tuple)) or len(pos) not in (2, 3):
        raise ZoneError(f"{where}: a position is [lon, lat] (optionally with altitude)")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pos):
        raise ZoneError(f"{where}: coordinates must be numbers")
    try:
        lon, lat = float(pos[0]), float(pos[1])
    except OverflowError:  # an integer too large for a float: far out of range anyway
        raise ZoneError(f"{where}: coordinate out of range (too large a number)") from None
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise ZoneError(f"{where}: coordinates must be finite")
    if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
        raise ZoneError(f"{where}: coordinate out of range (lon {lon}, lat {lat})")
    return lon, lat


def _check_positions(seq: Any, where: str) -> list[tuple[float, float]]:
    if not isinstance(seq, (list, tuple)) or not seq:
        raise ZoneError(f"{where}: empty coordinates")
    return [_check_position(p, where) for p in seq]


def _check_rings(rings: Any, where: str) -> list[list[tuple[float, float]]]:
    if not isinstance(rings, (list, tuple)) or not rings:
        raise ZoneError(f"{where}: a polygon needs at least its exterior ring")
    out = []
    for i, ring in enumerate(rings):
        label = f"{where} ring {i}"
        pts = _check_positions(ring, label)
        if pts[0] != pts[-1]:
            pts.append(pts[0])
        if len(set(pts)) < 3:
            raise ZoneError(f"{label}: a ring needs at least 3 distinct positions")
        out.append(pts)
    return out


def _invalid_reason(geom: BaseGeometry) -> str:
    reason = shapely.is_valid_reason(geom)
    if reason.startswith("Self-intersection"):
        where = reason[len("Self-intersection") :].strip("[]")
        return f"ring self-intersects at {where}"
    return reason.lower()


def _polygonal(geom: BaseGeometry) -> Polygon | MultiPolygon | None:
    """The polygonal part of a repaired geometry, or None if it has other parts too."""
    parts = list(shapely.get_parts(geom))
    if not parts or any(not isinstance(p, (Polygon, MultiPolygon)) for p in parts):
        return None
    merged = shapely.union_all(parts)
    if merged.is_empty or merged.area <= 0 or not isinstance(merged, (Polygon, MultiPolygon)):
        return None
    return merged


def _oriented(geom: Polygon | MultiPolygon) -> Polygon | MultiPolygon:
    """RFC 7946 winding: exteriors counter-clockwise, holes clockwise."""
    if isinstance(geom, Polygon):
        return orient(geom, sign=1.0)
    return MultiPolygon([orient(p, sign=1.0) for p in geom.geoms])


def _as_lists(obj: Any) -> Any:
    if isinstance(obj, (list, tuple)):
        return [_as_lists(o) for o in obj]
    return obj


def validate_zone(zone: Zone) -> Zone:
    """Check a zone's geometry and return the zone with it normalised: rings closed and
    oriented (RFC 7946), a self-intersecting polygon repaired when the repair is still
    an area. Raises :class:`ZoneError` with the reason otherwise."""
    geo = zone.geometry
    gtype = geo.get("type")
    coords = geo.get("coordinates")
    if gtype == "Point":
        if zone.radius_m is None:
            raise ZoneError("a circle (Point) needs radius_m")
        lon, lat = _check_position(coords, "Point")
        return zone.model_copy(update={"geometry": {"type": "Point", "coordinates": [lon, lat]}})
    if gtype == "LineString":
        if zone.buffer_m is None:
            raise ZoneError("a corridor (LineString) needs buffer_m")
        pts = _check_positions(coords, "LineString")
        if len(set(pts)) < 2:
            raise ZoneError("LineString: a corridor needs at least 2 distinct positions")
        return zone.model_copy(
            update={"geometry": {"type": "LineString", "coordinates": _as_lists(pts)}}
        )
    if gtype == "Polygon":
        geom: BaseGeometry = Polygon(*_split(_check_rings(coords, "Polygon")))
    elif gtype == "MultiPolygon":
        if not isinstance(coords, (list, tuple)) or not coords:
            raise ZoneError("MultiPolygon: empty coordinates")
        geom = MultiPolygon(
            [
                Polygon(*_split(_check_rings(p, f"MultiPolygon polygon {i}")))
                for i, p in enumerate(coords)
            ]
        )
    else:
        raise ZoneError(
            f"unsupported geometry type {gtype!r}: use Polygon, MultiPolygon, "
            "Point (circle) or LineString (corridor)"
        )
    if not geom.is_valid:
        reason = _invalid_reason(geom)
        repaired = _polygonal(shapely.make_valid(geom))
        if repaired is None:
            raise ZoneError(f"{reason}; it cannot be repaired into an area")
        geom = repaired
    assert isinstance(geom, (Polygon, MultiPolygon))
    if geom.area <= 0:
        raise ZoneError("the polygon has no area")
    normal = mapping(_oriented(geom))
    return zone.model_copy(
        update={
            "geometry": {"type": normal["type"], "coordinates": _as_lists(normal["coordinates"])}
        }
    )


def _split(rings: list[list[tuple[float, float]]]) -> tuple[Any, Any]:
    return rings[0], rings[1:]


# --- projection ------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _transformers(lat0: float, lon0: float) -> tuple[Transformer, Transformer]:
    """WGS84 (lon, lat in degrees) to and from an azimuthal equidistant frame in metres
    centred on (lat0, lon0).

    Written as PROJ pipelines rather than ``Transformer.from_crs``: the same operation
    (identical coordinates), but built in about 0.05 ms instead of about 12 ms, which
    no longer dominates loading thousands of zones (three per supervised person)."""
    aeqd = f"+proj=aeqd +lat_0={lat0} +lon_0={lon0} +ellps=WGS84 +units=m"
    fwd = Transformer.from_pipeline(
        f"+proj=pipeline +step +proj=unitconvert +xy_in=deg +xy_out=rad +step {aeqd}"
    )
    inv = Transformer.from_pipeline(
        f"+proj=pipeline +step +inv {aeqd} +step +proj=unitconvert +xy_in=rad +xy_out=deg"
    )
    return fwd, inv


def _centre(geom: BaseGeometry) -> tuple[float, float]:
    minx, miny, maxx, maxy = geom.bounds
    return round((miny + maxy) / 2, 7), round((minx + maxx) / 2, 7)


def _project(geom: BaseGeometry, fwd: Transformer) -> BaseGeometry:
    return shapely.transform(geom, lambda xy: _stack(fwd.transform(xy[:, 0], xy[:, 1])))


def _stack(xy: tuple[Any, Any]) -> Any:
    import numpy as np

    return np.column_stack(xy)


class PreparedZone:
    """A zone in its own metric projection, prepared for fast repeated queries."""

    __slots__ = ("zone", "_fwd", "_inv", "_shape", "_metric", "_boundary", "_radius", "_memo")

    def __init__(self, zone: Zone) -> None:
        self.zone = zone
        geom = shape(zone.geometry)
        lat0, lon0 = _centre(geom)
        self._fwd, self._inv = _transformers(lat0, lon0)
        self._radius = 0.0
        self._shape: Literal["circle", "corridor", "area"]
        if zone.geometry["type"] == "Point":
            self._shape = "circle"
            self._radius = float(zone.radius_m or 0.0)
            self._metric: BaseGeometry = Point(0.0, 0.0)
        elif zone.geometry["type"] == "LineString":
            self._shape = "corridor"
            self._radius = float(zone.buffer_m or 0.0)
            self._metric = _project(geom, self._fwd)
        else:
            self._shape = "area"
            self._metric = _project(geom, self._fwd)
        self._boundary: BaseGeometry = (
            self._metric.boundary if self._shape == "area" else self._metric
        )
        shapely.prepare(self._metric)
        shapely.prepare(self._boundary)
        # (x, y, signed distance) of the last exact query: a later point closer to it
        # than its distance to the boundary is on the same side, no geometry needed.
        self._memo = (math.inf, math.inf, 0.0)

    @property
    def id(self) -> str:
        return self.zone.id

    def area(self) -> BaseGeometry:
        """The zone as a metric polygon (circles and corridors drawn)."""
        if self._shape == "area":
            return self._metric
        return self._metric.buffer(self._radius, quad_segs=_CIRCLE_SEGMENTS)

    def area_wgs84(self) -> BaseGeometry:
        """The zone as a WGS84 polygon (lon, lat)."""
        inv = self._inv
        return shapely.transform(self.area(), lambda xy: _stack(inv.transform(xy[:, 0], xy[:, 1])))

    def _exact(self, x: float, y: float) -> float:
        if self._shape == "circle":
            return self._radius - math.hypot(x, y)
        p = Point(x, y)
        if self._shape == "corridor":
            s = self._radius - float(self._metric.distance(p))
        else:
            d = float(self._boundary.distance(p))
            s = d if self._metric.contains(p) else -d
        self._memo = (x, y, s)
        return s

    def signed_distance_m(self, lat: float, lon: float) -> float:
        """Metres from the point to the zone's edge: positive inside, negative outside."""
        x, y = self._fwd.transform(lon, lat)
        return self._exact(x, y)

    def classify(self, lat: float, lon: float, acc_m: float, margin_m: float) -> Classification:
        """Inside / outside / uncertain for a fix disc of radius ``acc_m``, which must
        clear the edge by ``margin_m`` to count."""
        need = acc_m + margin_m
        x, y = self._fwd.transform(lon, lat)
        if self._shape != "circle":
            mx, my, ms = self._memo
            slack = abs(ms) - math.hypot(x - mx, y - my)
            if slack >= need:
                return "inside" if ms >= 0 else "outside"
        s = self._exact(x, y)
        if s >= need:
            return "inside"
        if -s >= need:
            return "outside"
        return "uncertain"

    def distance_m(self, lat: float, lon: float) -> float:
        """Metres from the point to the zone; 0 inside it."""
        return max(0.0, -self.signed_distance_m(lat, lon))

    def contains(self, lat: float, lon: float) -> bool:
        return self.signed_distance_m(lat, lon) >= 0


def prepare(zone: Zone) -> PreparedZone:
    """Validate a zone and prepare it for the engine."""
    return PreparedZone(validate_zone(zone))


def zone_to_geojson(zone: Zone) -> dict[str, Any]:
    """A GeoJSON Feature for the zone; circles and corridors also carry the polygon they
    stand for in ``properties["area"]``."""
    props: dict[str, Any] = {"id": zone.id, "name": zone.name, "kind": str(zone.kind)}
    if zone.site_id is not None:
        props["site_id"] = zone.site_id
    if zone.radius_m is not None:
        props["radius_m"] = zone.radius_m
    if zone.buffer_m is not None:
        props["buffer_m"] = zone.buffer_m
    if zone.geometry.get("type") in ("Point", "LineString"):
        area = mapping(_oriented(_polygon_of(PreparedZone(validate_zone(zone)))))
        props["area"] = {"type": area["type"], "coordinates": _as_lists(area["coordinates"])}
    return {"type": "Feature", "id": zone.id, "geometry": zone.geometry, "properties": props}


def _polygon_of(pz: PreparedZone) -> Polygon | MultiPolygon:
    geom = pz.area_wgs84()
    assert isinstance(geom, (Polygon, MultiPolygon))
    return geom


class ZoneIndex:
    """An STRtree over many zones for map and site queries ("which zones is this
    point in?"); built once, rebuilt by the owner when zones change."""

    def __init__(self, zones: Iterable[PreparedZone]) -> None:
        self._zones: Sequence[PreparedZone] = list(zones)
        boxes = [shapely.box(*z.area_wgs84().bounds) for z in self._zones]
        self._tree = STRtree(boxes)

    def __len__(self) -> int:
        return len(self._zones)

    def zones_at(self, lat: float, lon: float) -> list[str]:
        """Ids of the zones containing the point, sorted."""
        hits = self._tree.query(Point(lon, lat))
        return sorted(
            self._zones[int(i)].id for i in hits if self._zones[int(i)].contains(lat, lon)
        )
