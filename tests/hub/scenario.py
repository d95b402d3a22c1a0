"""A supervised-person scenario built through a served hub's API, for end-to-end tests.

One site ("town") with a map (an outline and two buildings), three zones (a victim's
address as a 200 m circle, the subject's residence, the county), a supervised person
wearing one ankle tag, and an exclusion rule on the victim's address that fires on
the first confirmed fix inside (no dwell). Positions are given as metres east and
north of the protected address (:func:`at`, :func:`fix`), so a test can walk the tag
in and out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from devices.protocol import PositionBody, PositionEvent, new_event_id
from tests.edge.mqtt_helpers import unique_id

CENTRE = (51.5, -0.12)
"""lat, lon of the protected address."""

RADIUS_M = 200.0
"""Exclusion radius round the protected address."""

_M_PER_DEG_LAT = 111_320.0
_M_PER_DEG_LON = _M_PER_DEG_LAT * math.cos(math.radians(CENTRE[0]))


def at(east_m: float, north_m: float = 0.0) -> tuple[float, float]:
    """lat, lon of a point ``east_m`` east and ``north_m`` north of :data:`CENTRE`."""
    return CENTRE[0] + north_m / _M_PER_DEG_LAT, CENTRE[1] + east_m / _M_PER_DEG_LON


def fix(
    device_id: str,
    boot_id: str,
    seq: int,
    east_m: float,
    captured_at: datetime,
    *,
    north_m: float = 0.0,
    acc: float = 8.0,
    batt: int | None = None,
) -> PositionEvent:
    """A GNSS fix of ``device_id`` ``east_m`` east and ``north_m`` north of the address,
    taken at ``captured_at``. Space fixes in time like a walk: the engine ignores fixes
    that imply more than 70 m/s."""
    lat, lon = at(east_m, north_m)
    return PositionEvent(
        event_id=new_event_id(),
        device_id=device_id,
        boot_id=boot_id,
        seq=seq,
        captured_at=captured_at,
        sent_at=captured_at,
        body=PositionBody(lat=lat, lon=lon, acc=acc, src="gnss", batt=batt),
    )


def _lonlat(east_m: float, north_m: float) -> list[float]:
    lat, lon = at(east_m, north_m)
    return [lon, lat]


def _ring(west: float, south: float, east: float, north: float) -> list[list[float]]:
    """A closed rectangle ring, [lon, lat], from offsets in metres."""
    (s_lat, w_lon), (n_lat, e_lon) = at(west, south), at(east, north)
    return [[w_lon, s_lat], [e_lon, s_lat], [e_lon, n_lat], [w_lon, n_lat], [w_lon, s_lat]]


def site_map() -> dict[str, Any]:
    """The town's map: an outline round everything and two buildings."""
    return {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "geometry": {"type": "Polygon",
             "coordinates": [_ring(-400, -350, 700, 350)]},
             "properties": {"role": "outline", "name": "Town centre"}},
            {"type": "Feature", "geometry": {"type": "Polygon",
             "coordinates": [_ring(-40, -30, 30, 25)]},
             "properties": {"role": "building", "name": "Protected address"}},
            {"type": "Feature", "geometry": {"type": "Polygon",
             "coordinates": [_ring(430, 120, 520, 200)]},
             "properties": {"role": "building", "name": "Library"}},
            {"type": "Feature", "geometry": {"type": "LineString",
             "coordinates": [_lonlat(650, -10), _lonlat(-350, -10)]},
             "properties": {"role": "path", "name": "High street"}},
        ],
    }  # fmt: skip


@dataclass
class Scenario:
    """What :func:`build` made."""

    site_id: str
    device_id: str
    person_id: int
    rule_id: str
    zone_ids: list[str]


def _created(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


def build(http: httpx.Client, site_id: str = "town") -> Scenario:
    """Create the scenario through ``http`` (an admin's client of a served hub)."""
    _created(http.post("/api/v1/sites", json={"site_id": site_id, "name": "Town (test)"}))
    _created(http.put(f"/api/v1/sites/{site_id}/map", json=site_map()))
    tag = unique_id("ankle")
    _created(
        http.post(
            "/api/v1/devices",
            json={"device_id": tag, "model": "lantern-ankle-a1", "site_id": site_id},
        )
    )
    person = _created(
        http.post(
            "/api/v1/persons",
            json={"category": "supervised", "display_name": "Subject 17", "case_id": "P-17"},
        )
    )
    zones = [
        {"type": "Feature", "id": f"{site_id}-victim",
         "geometry": {"type": "Point", "coordinates": [CENTRE[1], CENTRE[0]]},
         "properties": {"name": "Protected address", "kind": "victim", "radius_m": RADIUS_M,
                        "site_id": site_id}},
        {"type": "Feature", "id": f"{site_id}-home",
         "geometry": {"type": "Polygon", "coordinates": [_ring(450, -180, 520, -120)]},
         "properties": {"name": "Residence", "kind": "residence", "site_id": site_id}},
        {"type": "Feature", "id": f"{site_id}-county",
         "geometry": {"type": "Polygon", "coordinates": [_ring(-380, -330, 680, 330)]},
         "properties": {"name": "County", "kind": "county", "site_id": site_id}},
    ]  # fmt: skip
    for zone in zones:
        _created(http.post("/api/v1/zones", json=zone))
    rule_id = f"{site_id}-excl"
    _created(
        http.post(
            "/api/v1/rules",
            json={
                "id": rule_id,
                "person_id": person["id"],
                "device_id": tag,
                "params": {"kind": "exclusion", "zone_ids": [f"{site_id}-victim"]},
                "severity": "critical",
                "valid_from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
                "dwell_s": 0,
            },
        )
    )
    return Scenario(
        site_id=site_id,
        device_id=tag,
        person_id=int(person["id"]),
        rule_id=rule_id,
        zone_ids=[str(z["id"]) for z in zones],
    )
