"""Geodesy and site maps of the simulators (devices/simulation/geo.py, site.py)."""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devices.simulation import (
    DEMO_SITES,
    LocalFrame,
    Polygon,
    SiteError,
    demo_site,
    demo_site_path,
    destination,
    haversine_m,
    initial_bearing,
    load_site_map,
    parse_site_map,
)


def raw_site(site_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(demo_site_path(site_id).read_text(encoding="utf-8"))
    return data


# -- great circles and the local frame ----------------------------------------------------


def test_haversine_known_distances() -> None:
    # One degree of latitude on the mean sphere, and a degree of longitude at 60 deg.
    assert haversine_m(0, 0, 1, 0) == pytest.approx(111_195, rel=1e-4)
    assert haversine_m(60, 10, 60, 11) == pytest.approx(111_195 / 2, rel=1e-3)
    # Across the antimeridian the short way round.
    assert haversine_m(0, 179.9, 0, -179.9) == pytest.approx(22_239, rel=1e-3)


@pytest.mark.parametrize("bearing", [0.0, 45.0, 135.0, 270.0, 359.0])
def test_destination_and_bearing_agree(bearing: float) -> None:
    lat, lon = destination(-43.6, 172.1, bearing, 25_000)
    assert haversine_m(-43.6, 172.1, lat, lon) == pytest.approx(25_000, rel=1e-9)
    assert initial_bearing(-43.6, 172.1, lat, lon) == pytest.approx(bearing, abs=1e-6)


def test_destination_wraps_the_antimeridian() -> None:
    lat, lon = destination(0.0, 179.99, 90.0, 5_000)
    assert -180 <= lon < -179.9
    assert haversine_m(0.0, 179.99, lat, lon) == pytest.approx(5_000, rel=1e-9)


@pytest.mark.parametrize(
    ("lat0", "lon0"),
    [(0.0, 0.0), (-43.615, 172.042), (51.5, -0.12), (89.9, 30.0), (-89.95, 0.0), (10.0, 179.999)],
)
def test_local_frame_round_trip_and_scale(lat0: float, lon0: float) -> None:
    frame = LocalFrame(lat0, lon0)
    assert frame.to_xy(lat0, lon0) == pytest.approx((0.0, 0.0), abs=1e-6)
    for east, north in [(100.0, 0.0), (0.0, -250.0), (-1_500.0, 900.0), (7_000.0, 7_000.0)]:
        lat, lon = frame.to_latlon(east, north)
        assert -90 <= lat <= 90 and -180 <= lon <= 180
        back = frame.to_xy(lat, lon)
        assert back == pytest.approx((east, north), abs=1e-3)
        # Metres on the plane are metres on the ground (the sphere of haversine_m and
        # the ellipsoid differ by up to 0.7%, north-south at the equator).
        assert haversine_m(lat0, lon0, lat, lon) == pytest.approx(math.hypot(east, north), rel=8e-3)


def test_local_frame_axes_point_east_and_north() -> None:
    frame = LocalFrame(-43.6, 172.1)
    lat, lon = frame.to_latlon(0.0, 100.0)
    assert lat > -43.6 and lon == pytest.approx(172.1, abs=1e-9)
    lat, lon = frame.to_latlon(100.0, 0.0)
    assert lon > 172.1 and lat == pytest.approx(-43.6, abs=1e-6)
    with pytest.raises(ValueError):
        LocalFrame(95.0, 0.0)


def test_polygon_with_hole() -> None:
    outer = ((0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0))
    hole = ((3.0, 3.0), (3.0, 7.0), (7.0, 7.0), (7.0, 3.0))
    ring = Polygon(outer, (hole,))
    assert ring.contains(1.0, 1.0)
    assert not ring.contains(5.0, 5.0)
    assert not ring.contains(11.0, 5.0)
    assert ring.distance_to_edge(5.0, 5.0) == pytest.approx(2.0)
    assert ring.bbox == (0.0, 0.0, 10.0, 10.0)
    with pytest.raises(ValueError):
        Polygon(((0.0, 0.0), (1.0, 1.0)))


# -- the shipped sites --------------------------------------------------------------------


@pytest.mark.parametrize("site_id", DEMO_SITES)
def test_demo_sites_load_and_are_consistent(site_id: str) -> None:
    site = demo_site(site_id)
    assert site.id == site_id
    inclusion = [z for z in site.zones.values() if z.kind == "inclusion"]
    exclusion = [z for z in site.zones.values() if z.kind == "exclusion"]
    assert len(inclusion) == 1 and exclusion
    (fence,) = inclusion
    # The walk stays inside the inclusion zone, outside every exclusion zone and outdoors,
    # everywhere along it (sampled every metre), with a margin for fix errors.
    walk = site.track("walk")
    for (ax, ay), (bx, by) in zip(walk.points, walk.points[1:], strict=False):
        steps = max(1, int(math.hypot(bx - ax, by - ay)))
        for i in range(steps + 1):
            x, y = ax + (bx - ax) * i / steps, ay + (by - ay) * i / steps
            assert fence.contains_xy(x, y)
            assert fence.polygon.distance_to_edge(x, y) > 40
            assert not any(z.contains_xy(x, y) for z in exclusion)
            assert site.building_at(x, y) is None
    # The breach dwells deep inside an exclusion zone; leave_inclusion dwells outside.
    breach = site.track("exclusion_breach")
    (stop,) = [v for v, s in breach.dwell.items() if s == 300]
    x, y = breach.points[stop]
    inside = [z for z in exclusion if z.contains_xy(x, y)]
    assert inside and inside[0].polygon.distance_to_edge(x, y) >= 25
    leave = site.track("leave_inclusion")
    x, y = leave.points[2]
    assert not fence.contains_xy(x, y) and fence.polygon.distance_to_edge(x, y) >= 45
    # The indoor track stops in at least two buildings, one with beacons; the jitter spot
    # is outdoors inside the fence.
    indoor = site.track("indoor_outdoor")
    stops = [site.building_at(*indoor.points[v]) for v in indoor.dwell]
    visited = [b for b in stops if b is not None]
    assert len(visited) >= 2 and any(b.beacons for b in visited)
    assert site.building_at(*site.spot("jitter")) is None
    assert fence.contains_xy(*site.spot("jitter"))
    # The GeoJSON goes back out as it came in.
    assert parse_site_map(site.geojson()).geojson() == site.geojson()


def test_community_site_home_and_curfew() -> None:
    site = demo_site("totara-downs")
    home = site.home
    assert home is not None
    building = site.building_at(*home.xy)
    assert building is not None and building.beacons
    assert site.contains("district", home.lat, home.lon)
    assert site.zones_at(home.lat, home.lon)[0].name == "district"


def test_prison_site_has_no_home_and_a_holed_sterile_zone() -> None:
    site = demo_site("kereru-flats")
    assert site.home is None
    sterile = site.zone("sterile-zone")
    assert len(sterile.polygon.holes) == 1
    assert not sterile.contains_xy(0.0, 0.0)  # the hole: the compound's interior
    assert sterile.contains_xy(0.0, 142.0)  # between the fences
    with pytest.raises(SiteError, match="no zone 'nope'.*zones: admin-block"):
        site.zone("nope")


def test_curfew_windows_follow_daylight_saving() -> None:
    site = demo_site("totara-downs")
    assert site.home is not None
    # New Zealand daylight time ends at 03:00 on 6 April 2025 (clocks go back an hour):
    # the 21:00-06:00 curfew of the night before lasts ten hours.
    after = datetime(2025, 4, 5, 0, 0, tzinfo=UTC)
    windows = site.home.curfew_windows(after, site.timezone)
    first = next(windows)
    assert first == (
        datetime(2025, 4, 5, 8, 0, tzinfo=UTC),  # 21:00 +13:00
        datetime(2025, 4, 5, 18, 0, tzinfo=UTC),  # 06:00 +12:00
    )
    second = next(windows)
    assert second[1] - second[0] == timedelta(hours=9)
    # A window already under way is the first one given.
    during = datetime(2025, 4, 5, 12, 0, tzinfo=UTC)
    assert next(site.home.curfew_windows(during, site.timezone)) == first


# -- bad site files fail loudly -----------------------------------------------------------


def _break(mutate: Any) -> dict[str, Any]:
    data = copy.deepcopy(raw_site("kereru-flats"))
    mutate(data)
    return data


def _feature(data: dict[str, Any], role: str, name: str) -> dict[str, Any]:
    for feature in data["features"]:
        if feature["properties"]["role"] == role and feature["properties"]["name"] == name:
            found: dict[str, Any] = feature
            return found
    raise AssertionError(f"no {role} {name}")


def _swap_lat_lon(data: dict[str, Any]) -> None:
    ring = _feature(data, "zone", "compound")["geometry"]["coordinates"][0]
    ring[:] = [[lat, lon] for lon, lat in ring]


def _open_ring(data: dict[str, Any]) -> None:
    _feature(data, "zone", "compound")["geometry"]["coordinates"][0].pop()


def _zone_as_point(data: dict[str, Any]) -> None:
    _feature(data, "zone", "compound")["geometry"] = {"type": "Point", "coordinates": [172, -43]}


def _duplicate_track(data: dict[str, Any]) -> None:
    data["features"].append(copy.deepcopy(_feature(data, "track", "walk")))


def _bad_dwell(data: dict[str, Any]) -> None:
    _feature(data, "track", "walk")["properties"]["dwell"] = [{"vertex": 99, "seconds": 5}]


def _bad_zone_kind(data: dict[str, Any]) -> None:
    _feature(data, "zone", "compound")["properties"]["kind"] = "maybe"


def _bad_timezone(data: dict[str, Any]) -> None:
    data["lantern"]["timezone"] = "Mars/Olympus_Mons"


def _unknown_field(data: dict[str, Any]) -> None:
    data["lantern"]["colour"] = "red"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_swap_lat_lon, "latitude 172"),
        (_open_ring, "end where it starts|at least 4"),
        (_zone_as_point, "a zone is a Polygon"),
        (_duplicate_track, "two track features are named 'walk'"),
        (_bad_dwell, "dwell vertex 99"),
        (_bad_zone_kind, "inclusion"),
        (_bad_timezone, "unknown time zone"),
        (_unknown_field, "colour"),
    ],
)
def test_bad_site_maps_are_refused(mutate: Any, message: str) -> None:
    with pytest.raises(SiteError, match=message):
        parse_site_map(_break(mutate), source="broken.geojson")


def test_load_site_map_errors(tmp_path: Any) -> None:
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(SiteError, match="bad.geojson: cannot read"):
        load_site_map(bad)
    bad.write_text("[]", encoding="utf-8")
    with pytest.raises(SiteError, match="JSON object"):
        load_site_map(bad)
    with pytest.raises(SiteError, match="no demo site"):
        demo_site("atlantis")
