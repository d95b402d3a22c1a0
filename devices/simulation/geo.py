"""Geodesy for the simulators: great-circle distances, a local metric frame, polygons.

Movement is planned in a flat local frame: east/north metres on the plane tangent to
the WGS84 ellipsoid at the site's origin (ENU), reached through Earth-centred
coordinates (ECEF), so it works the same at the equator, near the poles and across
the antimeridian, where naive "degrees times a constant" arithmetic breaks. Within a
few tens of kilometres of the origin the plane and the ellipsoid differ by
centimetres, far below any fix's accuracy.

Great-circle helpers (:func:`haversine_m`, :func:`destination`,
:func:`initial_bearing`) use a sphere of the mean Earth radius: good to about 0.5%,
which is what tests of "speed between two fixes" need.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "EARTH_RADIUS_M",
    "LocalFrame",
    "Polygon",
    "XY",
    "destination",
    "haversine_m",
    "initial_bearing",
    "point_in_ring",
]

EARTH_RADIUS_M = 6_371_008.8
"""Mean Earth radius (IUGG), metres, for the spherical helpers."""

_A = 6_378_137.0
_F = 1 / 298.257223563
_E2 = _F * (2 - _F)

XY = tuple[float, float]
"""A point of a :class:`LocalFrame`: metres east and north of its origin."""


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance between two WGS84 points, metres (spherical Earth)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def initial_bearing(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Bearing from the first point towards the second, degrees clockwise from true
    north in [0, 360)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dl = math.radians(lon2 - lon1)
    y = math.sin(dl) * math.cos(p2)
    x = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    return math.degrees(math.atan2(y, x)) % 360.0


def destination(
    lat: float, lon: float, bearing_deg: float, distance_m: float
) -> tuple[float, float]:
    """The point ``distance_m`` from (lat, lon) along ``bearing_deg``; (lat, lon) with
    the longitude wrapped into [-180, 180)."""
    p1, l1 = math.radians(lat), math.radians(lon)
    theta = math.radians(bearing_deg)
    delta = distance_m / EARTH_RADIUS_M
    p2 = math.asin(
        math.sin(p1) * math.cos(delta) + math.cos(p1) * math.sin(delta) * math.cos(theta)
    )
    l2 = l1 + math.atan2(
        math.sin(theta) * math.sin(delta) * math.cos(p1),
        math.cos(delta) - math.sin(p1) * math.sin(p2),
    )
    lon2 = (math.degrees(l2) + 180.0) % 360.0 - 180.0
    return math.degrees(p2), lon2


class LocalFrame:
    """East/north metres on the plane tangent to the WGS84 ellipsoid at an origin.

    ``to_xy`` is the orthographic projection (the vertical is dropped) and
    ``to_latlon`` its inverse, exact to well under a millimetre within 10 km of the
    origin and to millimetres at 50 km.
    """

    __slots__ = ("lat0", "lon0", "_x0", "_y0", "_z0", "_sp", "_cp", "_sl", "_cl", "_radius")

    def __init__(self, lat0: float, lon0: float) -> None:
        if not -90.0 <= lat0 <= 90.0 or not -180.0 <= lon0 <= 180.0:
            raise ValueError(f"origin ({lat0}, {lon0}) is not a WGS84 latitude/longitude")
        self.lat0 = lat0
        self.lon0 = lon0
        phi, lam = math.radians(lat0), math.radians(lon0)
        self._sp, self._cp = math.sin(phi), math.cos(phi)
        self._sl, self._cl = math.sin(lam), math.cos(lam)
        self._x0, self._y0, self._z0 = _ecef(phi, lam)
        # Gaussian radius of curvature at the origin: how fast the ground falls away
        # below the plane, used to bring plane points down onto the ellipsoid.
        w2 = 1 - _E2 * self._sp * self._sp
        self._radius = _A * math.sqrt(1 - _E2) / w2

    def __repr__(self) -> str:
        return f"LocalFrame({self.lat0!r}, {self.lon0!r})"

    def to_xy(self, lat: float, lon: float) -> XY:
        """Metres east and north of the origin of a WGS84 point (on the ellipsoid)."""
        x, y, z = _ecef(math.radians(lat), math.radians(lon))
        dx, dy, dz = x - self._x0, y - self._y0, z - self._z0
        east = -self._sl * dx + self._cl * dy
        north = -self._sp * self._cl * dx - self._sp * self._sl * dy + self._cp * dz
        return east, north

    def to_latlon(self, east: float, north: float) -> tuple[float, float]:
        """The WGS84 (lat, lon) whose :meth:`to_xy` is (east, north)."""
        sp, cp, sl, cl = self._sp, self._cp, self._sl, self._cl
        # The ellipsoid lies about d^2 / 2R below the plane at distance d; step down
        # to it so that to_xy, which drops the vertical, gives (east, north) back.
        up = -(east * east + north * north) / (2 * self._radius)
        x = self._x0 - sl * east - sp * cl * north + cp * cl * up
        y = self._y0 + cl * east - sp * sl * north + cp * sl * up
        z = self._z0 + cp * north + sp * up
        return _geodetic(x, y, z)


def _ecef(phi: float, lam: float) -> tuple[float, float, float]:
    sp = math.sin(phi)
    n = _A / math.sqrt(1 - _E2 * sp * sp)
    cp = math.cos(phi)
    return n * cp * math.cos(lam), n * cp * math.sin(lam), n * (1 - _E2) * sp


def _geodetic(x: float, y: float, z: float) -> tuple[float, float]:
    """Latitude and longitude, degrees, of an Earth-centred point near the surface.

    Fixed-point iteration on ``tan(lat) = (z + e^2 N sin(lat)) / p``, which needs no
    height and stays defined at the poles (p = 0).
    """
    lon = math.atan2(y, x)
    p = math.hypot(x, y)
    lat = math.atan2(z, p * (1 - _E2))
    for _ in range(6):
        s = math.sin(lat)
        n = _A / math.sqrt(1 - _E2 * s * s)
        lat = math.atan2(z + _E2 * n * s, p)
    return math.degrees(lat), math.degrees(lon)


def point_in_ring(x: float, y: float, ring: Sequence[XY]) -> bool:
    """Whether (x, y) is inside a closed or open ring (even-odd rule). Points exactly
    on an edge may fall either way."""
    inside = False
    n = len(ring)
    if n < 3:
        return False
    x1, y1 = ring[-1]
    for x2, y2 in ring:
        if (y1 > y) != (y2 > y):
            cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            if x < cross:
                inside = not inside
        x1, y1 = x2, y2
    return inside


@dataclass(frozen=True, slots=True)
class Polygon:
    """A polygon in a local frame: an exterior ring and holes, with its bounding box."""

    exterior: tuple[XY, ...]
    holes: tuple[tuple[XY, ...], ...] = ()
    bbox: tuple[float, float, float, float] = field(init=False)
    """(min x, min y, max x, max y) of the exterior."""

    def __post_init__(self) -> None:
        if len(self.exterior) < 3:
            raise ValueError("a polygon needs at least three corners")
        xs = [p[0] for p in self.exterior]
        ys = [p[1] for p in self.exterior]
        object.__setattr__(self, "bbox", (min(xs), min(ys), max(xs), max(ys)))

    def contains(self, x: float, y: float) -> bool:
        """Inside the exterior and outside every hole."""
        x0, y0, x1, y1 = self.bbox
        if not (x0 <= x <= x1 and y0 <= y <= y1):
            return False
        if not point_in_ring(x, y, self.exterior):
            return False
        return not any(point_in_ring(x, y, hole) for hole in self.holes)

    def distance_to_edge(self, x: float, y: float) -> float:
        """Distance from (x, y) to the nearest edge of any ring, metres."""
        best = math.inf
        for ring in (self.exterior, *self.holes):
            n = len(ring)
            for i in range(n):
                ax, ay = ring[i]
                bx, by = ring[(i + 1) % n]
                best = min(best, _segment_distance(x, y, ax, ay, bx, by))
        return best


def _segment_distance(px: float, py: float, ax: float, ay: float, bx: float, by: float) -> float:
    dx, dy = bx - ax, by - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / length2))
    return math.hypot(px - (ax + t * dx), py - (ay + t * dy))
