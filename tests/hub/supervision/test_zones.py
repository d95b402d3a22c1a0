"""Zone validation, GeoJSON output, metric classification and the site index."""

from __future__ import annotations

import math
from typing import Any

import pytest

from devices.simulation.geo import LocalFrame, haversine_m
from hub.supervision.model import Zone
from hub.supervision.zones import ZoneError, ZoneIndex, prepare, validate_zone, zone_to_geojson


def _zone(geometry: dict[str, Any], **extra: Any) -> Zone:
    return Zone(id="z", name="Z", kind="other", geometry=geometry, **extra)


def test_polygon_is_closed_and_oriented() -> None:
    # Clockwise and not closed.
    z = validate_zone(_zone({"type": "Polygon", "coordinates": [[[0, 0], [0, 1], [1, 1], [1, 0]]]}))
    ring = z.geometry["coordinates"][0]
    assert ring[0] == ring[-1]
    area2 = sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(ring, ring[1:], strict=False))
    assert area2 > 0  # counter-clockwise exterior (RFC 7946)


def test_bow_tie_is_repaired_into_two_triangles() -> None:
    z = validate_zone(
        _zone({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]})
    )
    assert z.geometry["type"] == "MultiPolygon"
    assert len(z.geometry["coordinates"]) == 2


@pytest.mark.parametrize(
    ("zone", "reason"),
    [
        (
            _zone({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [2, 2], [0, 0]]]}),
            "self-intersects",
        ),
        (_zone({"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [0, 0]]]}), "3 distinct"),
        (_zone({"type": "Polygon", "coordinates": []}), "exterior"),
        (_zone({"type": "Polygon", "coordinates": [[[0, 0], [200, 1], [1, 0]]]}), "out of range"),
        (_zone({"type": "Polygon", "coordinates": [[[0, 0], [math.nan, 1], [1, 0]]]}), "finite"),
        (_zone({"type": "GeometryCollection", "geometries": []}), "unsupported"),
        (_zone({"type": "Point", "coordinates": [0, 0]}), "radius_m"),
        (_zone({"type": "LineString", "coordinates": [[0, 0], [1, 1]]}), "buffer_m"),
        (_zone({"type": "LineString", "coordinates": [[0, 0], [0, 0]]}, buffer_m=5), "2 distinct"),
    ],
)
def test_unusable_geometry_is_refused_with_the_reason(zone: Zone, reason: str) -> None:
    with pytest.raises(ZoneError, match=reason):
        validate_zone(zone)


def test_circle_geojson_carries_its_polygon() -> None:
    z = _zone({"type": "Point", "coordinates": [4.9, 52.37]}, radius_m=100)
    feature = zone_to_geojson(z)
    assert feature["type"] == "Feature"
    assert feature["properties"]["kind"] == "other"
    ring = feature["properties"]["area"]["coordinates"][0]
    for lon, lat in ring:
        assert haversine_m(52.37, 4.9, lat, lon) == pytest.approx(100, rel=0.01)


@pytest.mark.parametrize(("lat0", "lon0"), [(0.0, 0.0), (52.37, 4.9), (78.2, 15.6), (-33.9, 151.2)])
def test_margins_are_metres_anywhere(lat0: float, lon0: float) -> None:
    frame = LocalFrame(lat0, lon0)
    ring = []
    for e, n in [(-500, -500), (500, -500), (500, 500), (-500, 500), (-500, -500)]:
        lat, lon = frame.to_latlon(e, n)
        ring.append([lon, lat])
    pz = prepare(_zone({"type": "Polygon", "coordinates": [ring]}))
    lat, lon = frame.to_latlon(470, 0)  # 30 m inside the east edge
    assert pz.signed_distance_m(lat, lon) == pytest.approx(30, abs=0.5)
    assert pz.classify(lat, lon, 10, 15) == "inside"
    assert pz.classify(lat, lon, 10, 25) == "uncertain"
    lat, lon = frame.to_latlon(540, 0)  # 40 m outside
    assert pz.distance_m(lat, lon) == pytest.approx(40, abs=0.5)
    assert pz.classify(lat, lon, 10, 25) == "outside"
    assert pz.classify(lat, lon, 20, 25) == "uncertain"


def test_memo_does_not_change_answers() -> None:
    frame = LocalFrame(52.0, 5.0)
    ring = [
        list(reversed(frame.to_latlon(e, n)))
        for e, n in [(-100, -100), (100, -100), (100, 100), (-100, 100)]
    ]
    pz = prepare(_zone({"type": "Polygon", "coordinates": [ring]}))
    fresh = prepare(_zone({"type": "Polygon", "coordinates": [ring]}))
    for i in range(200):
        e = -150 + 1.5 * i
        lat, lon = frame.to_latlon(e, 0)
        expected = fresh.signed_distance_m(lat, lon)
        want = "inside" if expected >= 15 else "outside" if expected <= -15 else "uncertain"
        assert pz.classify(lat, lon, 5, 10) == want


def test_corridor_is_a_buffered_line() -> None:
    frame = LocalFrame(52.0, 5.0)
    line = [list(reversed(frame.to_latlon(e, 0))) for e in (0, 1000)]
    pz = prepare(_zone({"type": "LineString", "coordinates": line}, buffer_m=50))
    assert pz.classify(*frame.to_latlon(500, 20), 5, 10) == "inside"
    assert pz.classify(*frame.to_latlon(500, 90), 5, 10) == "outside"
    assert pz.classify(*frame.to_latlon(500, 50), 5, 10) == "uncertain"


def test_index_finds_the_zones_at_a_point() -> None:
    frame = LocalFrame(52.0, 5.0)
    zones = []
    for i in range(50):
        lat, lon = frame.to_latlon(i * 300.0, 0)
        zones.append(
            prepare(
                Zone(
                    id=f"c{i:02d}",
                    name="c",
                    kind="school",
                    geometry={"type": "Point", "coordinates": [lon, lat]},
                    radius_m=200,
                )
            )
        )
    index = ZoneIndex(zones)
    assert index.zones_at(*frame.to_latlon(450, 0)) == ["c01", "c02"]
    assert index.zones_at(*frame.to_latlon(300, 0)) == ["c01"]
    assert index.zones_at(*frame.to_latlon(0, 5000)) == []
