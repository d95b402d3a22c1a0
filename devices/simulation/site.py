"""Site maps: a GeoJSON FeatureCollection (RFC 7946) describing where simulated
wearables live and move.

Each feature says what it is in ``properties.role``:

``zone`` (Polygon, holes allowed)
    A geofence: ``kind`` ``inclusion`` (must stay inside) or ``exclusion`` (must stay
    out), with a ``name``.
``building`` (Polygon)
    Indoors. ``beacons: true`` when fixed BLE beacons are installed, so a wearable
    with indoor beacons enabled positions itself from them (``src`` ``ble_beacon``).
``home`` (Point)
    The curfew address of a supervised person: ``radius_m`` and ``curfew``
    (``start`` and ``end`` local times, in the site's time zone; an end before the
    start crosses midnight).
``track`` (LineString)
    A path a scenario walks, with optional ``dwell`` stops (``vertex`` index and
    ``seconds``). A track whose last position equals its first is closed.
``spot`` (Point)
    A named place to stand still (the GNSS jitter scenario's).

Site-wide facts live in the foreign member ``lantern`` of the collection (RFC 7946
section 6.1 allows foreign members): ``id``, ``name``, ``kind`` (``prison`` or
``community``), ``timezone`` (IANA), and the catalog model and firmware profile its
wearables use. Positions are ``[longitude, latitude]`` as RFC 7946 orders them.

Two demonstration sites ship in ``devices/simulation/sites`` (:data:`DEMO_SITES`):
``kereru-flats``, a prison compound, and ``totara-downs``, a small town with a
community-supervision caseload. Both places are invented; the coordinates are
farmland on the Canterbury Plains of New Zealand, chosen so the maps look plausible
and so tests exercise southern latitudes and eastern longitudes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from devices.catalog import DEVICE_ID_PATTERN
from devices.protocol import ProtocolError, loads_object
from devices.simulation.geo import XY, LocalFrame, Polygon
from devices.timezones import is_time_zone

__all__ = [
    "DEMO_SITES",
    "Building",
    "Home",
    "SiteDocument",
    "SiteError",
    "SiteMap",
    "Track",
    "Zone",
    "demo_site",
    "demo_site_path",
    "load_site_map",
    "parse_site_map",
]

logger = logging.getLogger(__name__)

DEMO_SITES: tuple[str, ...] = ("kereru-flats", "totara-downs")
"""The site maps shipped with Lantern, by id."""

_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_T = TypeVar("_T")


class SiteError(ValueError):
    """A site map that cannot be used, or a feature it does not have."""


# -- GeoJSON models ---------------------------------------------------------------------




def _position(value: list[float]) -> list[float]:
    if len(value) not in (2, 3):
        raise ValueError(
            f"a position is [longitude, latitude(, altitude)], not {len(value)} numbers"
        )
    lon, lat = value[0], value[1]
    if not -180.0 <= lon <= 180.0:
        raise ValueError(f"longitude {lon} is outside -180..180 (positions are [lon, lat])")
    if not -90.0 <= lat <= 90.0:
        raise ValueError(f"latitude {lat} is outside -90..90 (positions are [lon, lat])")
    return value


Position = Annotated[list[float], AfterValidator(_position)]


def _ring(value: list[list[float]]) -> list[list[float]]:
    if len(value) < 4:
        raise ValueError("a linear ring needs at least 4 positions")
    if value[0][:2] != value[-1][:2]:
        raise ValueError("a linear ring must end where it starts")
    return value


Ring = Annotated[list[Position], AfterValidator(_ring)]


class _Json(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PointGeometry(_Json):
    """A GeoJSON Point."""

    type: Literal["Point"]
    coordinates: Position


class LineStringGeometry(_Json):
    """A GeoJSON LineString."""

    type: Literal["LineString"]
    coordinates: list[Position] = Field(min_length=2)


class PolygonGeometry(_Json):
    """A GeoJSON Polygon: the exterior ring, then holes."""

    type: Literal["Polygon"]
    coordinates: list[Ring] = Field(min_length=1)


Geometry = Annotated[
    PointGeometry | LineStringGeometry | PolygonGeometry, Field(discriminator="type")
]
Name = Annotated[str, Field(pattern=_NAME_PATTERN, description="Name, unique per role")]


class ZoneProperties(_Json):
    """A geofence."""

    role: Literal["zone"]
    name: Name
    kind: Literal["inclusion", "exclusion"] = Field(
        description="inclusion: the wearer must stay inside; exclusion: must stay out"
    )
    description: str | None = Field(None, description="For people")


class BuildingProperties(_Json):
    """Indoors, for the choice of position source."""

    role: Literal["building"]
    name: Name
    beacons: bool = Field(False, description="Fixed BLE beacons are installed inside")
    description: str | None = Field(None, description="For people")


class Curfew(_Json):
    """A nightly window the wearer must spend at home, in the site's local time."""

    start: time = Field(description="Local time the curfew starts, HH:MM")
    end: time = Field(description="Local time it ends; before start means the next day")

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if self.start == self.end:
            raise ValueError("curfew start and end are equal")
        return self


class HomeProperties(_Json):
    """The curfew address."""

    role: Literal["home"]
    name: Name
    radius_m: float = Field(50.0, ge=5, le=1_000, description="Radius of the home geofence, m")
    curfew: Curfew


class Dwell(_Json):
    """A stop on a track."""

    vertex: int = Field(ge=0, description="Index of the track position to stop at")
    seconds: float = Field(gt=0, le=86_400, description="How long to stay")


class TrackProperties(_Json):
    """A path to walk."""

    role: Literal["track"]
    name: Name
    dwell: list[Dwell] = Field(default_factory=list, description="Stops along the way")
    description: str | None = Field(None, description="For people")


class SpotProperties(_Json):
    """A place to stand still."""

    role: Literal["spot"]
    name: Name
    description: str | None = Field(None, description="For people")


Properties = Annotated[
    ZoneProperties | BuildingProperties | HomeProperties | TrackProperties | SpotProperties,
    Field(discriminator="role"),
]

_GEOMETRY_OF_ROLE = {
    "zone": "Polygon",
    "building": "Polygon",
    "home": "Point",
    "track": "LineString",
    "spot": "Point",
}


class Feature(_Json):
    """A GeoJSON Feature whose properties say its role on the site."""

    type: Literal["Feature"]
    id: str | int | None = None
    bbox: list[float] | None = None
    geometry: Geometry
    properties: Properties

    @model_validator(mode="after")
    def _geometry_fits_role(self) -> Self:
        role = self.properties.role
        wanted = _GEOMETRY_OF_ROLE[role]
        if self.geometry.type != wanted:
            raise ValueError(f"a {role} is a {wanted}, not a {self.geometry.type}")
        if isinstance(self.properties, TrackProperties) and isinstance(
            self.geometry, LineStringGeometry
        ):
            last = len(self.geometry.coordinates) - 1
            for stop in self.properties.dwell:
                if stop.vertex > last:
                    raise ValueError(
                        f"dwell vertex {stop.vertex} of track {self.properties.name!r} is past "
                        f"its last position ({last})"
                    )
        return self


class SiteMeta(_Json):
    """Facts about the whole site (the collection's ``lantern`` member)."""

    id: str = Field(pattern=DEVICE_ID_PATTERN, description="Site id, as in site files")
    name: str = Field(min_length=1, max_length=120, description="Display name")
    kind: Literal["prison", "community"] = Field(description="Custodial or community site")
    timezone: str = Field(description="IANA time zone of the site, e.g. Pacific/Auckland")
    wearable_model: str = Field(description="Catalog model of the site's wearables")
    wearable_profile: str = Field(description="Firmware profile of the site's wearables")
    origin: Position | None = Field(
        None, description="Origin of the local metric frame; the centre of the features if unset"
    )
    description: str | None = Field(None, description="For people")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if not is_time_zone(value):
            raise ValueError(f"unknown time zone {value[:80]!r} (an IANA name, e.g. Europe/Paris)")
        return value


class SiteDocument(_Json):
    """A site map file: a FeatureCollection with a ``lantern`` member."""

    type: Literal["FeatureCollection"]
    bbox: list[float] | None = None
    lantern: SiteMeta
    features: list[Feature] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        seen: set[tuple[str, str]] = set()
        homes = 0
        for feature in self.features:
            key = (feature.properties.role, feature.properties.name)
            if key in seen:
                raise ValueError(f"two {key[0]} features are named {key[1]!r}")
            seen.add(key)
            homes += feature.properties.role == "home"
        if homes > 1:
            raise ValueError("a site has at most one home")
        return self


# -- the site in a local frame ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Zone:
    """A geofence in the site's local frame."""

    name: str
    kind: Literal["inclusion", "exclusion"]
    polygon: Polygon

    def contains_xy(self, x: float, y: float) -> bool:
        """Whether the local point is inside."""
        return self.polygon.contains(x, y)


@dataclass(frozen=True, slots=True)
class Building:
    """Indoors, in the site's local frame."""

    name: str
    beacons: bool
    polygon: Polygon


@dataclass(frozen=True, slots=True)
class Track:
    """A walkable path in the site's local frame."""

    name: str
    points: tuple[XY, ...]
    dwell: Mapping[int, float]
    """Seconds to stay at a vertex, by index."""

    @property
    def closed(self) -> bool:
        """Whether it ends where it starts (within a metre)."""
        (x0, y0), (x1, y1) = self.points[0], self.points[-1]
        return abs(x0 - x1) < 1.0 and abs(y0 - y1) < 1.0


@dataclass(frozen=True, slots=True)
class Home:
    """The curfew address."""

    name: str
    xy: XY
    lat: float
    lon: float
    radius_m: float
    curfew_start: time
    curfew_end: time

    def curfew_windows(self, after: datetime, tz: ZoneInfo) -> Iterator[tuple[datetime, datetime]]:
        """Curfew windows (start, end), as UTC datetimes, that end after ``after``,
        earliest first, without end."""
        day: date = after.astimezone(tz).date() - timedelta(days=1)
        crosses_midnight = self.curfew_end <= self.curfew_start
        while True:
            start = datetime.combine(day, self.curfew_start, tzinfo=tz)
            end_day = day + timedelta(days=1) if crosses_midnight else day
            end = datetime.combine(end_day, self.curfew_end, tzinfo=tz)
            if end.astimezone(UTC) > after:
                yield start.astimezone(UTC), end.astimezone(UTC)
            day += timedelta(days=1)


class SiteMap:
    """A site map ready for simulation: features projected into a local metric frame."""

    def __init__(self, document: SiteDocument, *, source: str | None = None) -> None:
        self.document = document
        self.source = source
        meta = document.lantern
        self.id = meta.id
        self.name = meta.name
        self.kind = meta.kind
        self.timezone = ZoneInfo(meta.timezone)
        self.wearable_model = meta.wearable_model
        self.wearable_profile = meta.wearable_profile
        lon0, lat0 = meta.origin[:2] if meta.origin else _centre(document)
        self.frame = LocalFrame(lat0, lon0)
        self.zones: dict[str, Zone] = {}
        self.buildings: dict[str, Building] = {}
        self.tracks: dict[str, Track] = {}
        self.spots: dict[str, XY] = {}
        self.home: Home | None = None
        for feature in document.features:
            self._add(feature)

    def __repr__(self) -> str:
        return f"SiteMap({self.id!r}, source={self.source!r})"

    def _add(self, feature: Feature) -> None:
        props, geometry = feature.properties, feature.geometry
        if isinstance(geometry, PolygonGeometry):
            polygon = Polygon(
                self._ring(geometry.coordinates[0]),
                tuple(self._ring(hole) for hole in geometry.coordinates[1:]),
            )
            if isinstance(props, ZoneProperties):
                self.zones[props.name] = Zone(props.name, props.kind, polygon)
            elif isinstance(props, BuildingProperties):
                self.buildings[props.name] = Building(props.name, props.beacons, polygon)
        elif isinstance(geometry, LineStringGeometry) and isinstance(props, TrackProperties):
            points = tuple(self.xy(p[1], p[0]) for p in geometry.coordinates)
            self.tracks[props.name] = Track(
                props.name, points, {d.vertex: d.seconds for d in props.dwell}
            )
        elif isinstance(geometry, PointGeometry):
            lon, lat = geometry.coordinates[:2]
            if isinstance(props, SpotProperties):
                self.spots[props.name] = self.xy(lat, lon)
            elif isinstance(props, HomeProperties):
                self.home = Home(
                    props.name,
                    self.xy(lat, lon),
                    lat,
                    lon,
                    props.radius_m,
                    props.curfew.start,
                    props.curfew.end,
                )

    def _ring(self, ring: list[list[float]]) -> tuple[XY, ...]:
        return tuple(self.xy(p[1], p[0]) for p in ring[:-1])

    # -- coordinates

    def xy(self, lat: float, lon: float) -> XY:
        """Local metres (east, north) of a WGS84 point."""
        return self.frame.to_xy(lat, lon)

    def latlon(self, x: float, y: float) -> tuple[float, float]:
        """WGS84 (lat, lon) of a local point."""
        return self.frame.to_latlon(x, y)

    # -- lookups

    def zone(self, name: str) -> Zone:
        """The zone called ``name``; :class:`SiteError` lists the known ones."""
        return _lookup(self.zones, name, "zone", self.id)

    def track(self, name: str) -> Track:
        """The track called ``name``; :class:`SiteError` lists the known ones."""
        return _lookup(self.tracks, name, "track", self.id)

    def spot(self, name: str) -> XY:
        """The local position of the spot called ``name``."""
        return _lookup(self.spots, name, "spot", self.id)

    def contains(self, zone: str, lat: float, lon: float) -> bool:
        """Whether a WGS84 point is inside the zone called ``zone``."""
        return self.zone(zone).contains_xy(*self.xy(lat, lon))

    def zones_at(self, lat: float, lon: float) -> list[Zone]:
        """The zones a WGS84 point is inside, in file order."""
        x, y = self.xy(lat, lon)
        return [z for z in self.zones.values() if z.contains_xy(x, y)]

    def building_at(self, x: float, y: float) -> Building | None:
        """The building a local point is inside, if any."""
        for building in self.buildings.values():
            if building.polygon.contains(x, y):
                return building
        return None

    def geojson(self) -> dict[str, Any]:
        """The site as a GeoJSON object (what the file says, normalised)."""
        return self.document.model_dump(mode="json", exclude_none=True)


def _lookup(table: Mapping[str, _T], name: str, what: str, site: str) -> _T:
    try:
        return table[name]
    except KeyError:
        known = ", ".join(sorted(table)) or "none"
        raise SiteError(f"site {site!r} has no {what} {name!r}; {what}s: {known}") from None


def _centre(document: SiteDocument) -> tuple[float, float]:
    """Middle of the bounding box of every position, as (lon, lat)."""
    lons: list[float] = []
    lats: list[float] = []
    for feature in document.features:
        geometry = feature.geometry
        if isinstance(geometry, PointGeometry):
            positions = [geometry.coordinates]
        elif isinstance(geometry, LineStringGeometry):
            positions = geometry.coordinates
        else:
            positions = [p for ring in geometry.coordinates for p in ring]
        lons.extend(p[0] for p in positions)
        lats.extend(p[1] for p in positions)
    if max(lons) - min(lons) > 180:
        raise SiteError("the site spans the antimeridian; give lantern.origin explicitly")
    return (min(lons) + max(lons)) / 2, (min(lats) + max(lats)) / 2


def _errors(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False)[:10]:
        loc = ".".join(str(p) for p in error["loc"])
        lines.append(f"{loc}: {error['msg']}" if loc else error["msg"])
    return "; ".join(lines)


def parse_site_map(data: Mapping[str, Any], *, source: str | None = None) -> SiteMap:
    """A :class:`SiteMap` from a decoded GeoJSON object; :class:`SiteError` says what is
    wrong."""
    try:
        document = SiteDocument.model_validate(data)
    except ValidationError as exc:
        where = f"{source}: " if source else ""
        raise SiteError(f"{where}not a usable site map: {_errors(exc)}") from None
    return SiteMap(document, source=source)


def load_site_map(path: Path) -> SiteMap:
    """Read a site map file (GeoJSON): a UTF-8 JSON object, read with the guards of
    :func:`devices.protocol.loads_object` (bounded nesting and numbers, no duplicate
    keys, no NaN); :class:`SiteError` says what is wrong."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SiteError(f"{path}: cannot read a site map ({exc})") from None
    try:
        data = loads_object(raw)
    except ProtocolError as exc:
        raise SiteError(f"{path}: cannot read a site map as a JSON object ({exc.reason})") from None
    site = parse_site_map(data, source=str(path))
    logger.debug(
        "loaded site %s: %d zones, %d buildings, %d tracks",
        site.id,
        len(site.zones),
        len(site.buildings),
        len(site.tracks),
    )
    return site


def demo_site_path(site_id: str) -> Path:
    """The file of a shipped site map (see :data:`DEMO_SITES`)."""
    if site_id not in DEMO_SITES:
        raise SiteError(f"no demo site {site_id!r}; demo sites: {', '.join(DEMO_SITES)}")
    root = files("devices.simulation") / "sites" / f"{site_id}.geojson"
    if not isinstance(root, Path):  # pragma: no cover - only for zipped installs
        raise SiteError(f"demo site {site_id!r} is not a file on disk: {root}")
    return root


def demo_site(site_id: str) -> SiteMap:
    """A shipped site map, by id."""
    return load_site_map(demo_site_path(site_id))
