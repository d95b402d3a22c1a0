"""Positions and alarms API on SQLite and PostgreSQL, over events stored the way
ingest stores them (wire-encoded device messages through ``store_event``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from devices.protocol import (
    AlarmBody,
    AlarmEvent,
    DecodedMessage,
    EventEnvelope,
    PositionBody,
    PositionEvent,
    decode,
    encode,
    new_boot_id,
    new_event_id,
    topic_for,
)
from hub.api import create_app
from hub.auth import Role
from hub.db.models import Alarm, Device, Site
from hub.db.repositories import store_event
from tests.hub.test_api import _add_user, _login, _settings

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
BOOT = new_boot_id()


@pytest.fixture
def app(engine: Engine) -> FastAPI:
    return create_app(_settings(engine), engine)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def officer(engine: Engine, client: TestClient) -> dict[str, str]:
    _add_user(engine, "olivia", Role.officer)
    return _login(client, "olivia")


def wire(message: EventEnvelope) -> DecodedMessage:
    """The message as ingest receives it: encoded, then decoded a day later."""
    return decode(topic_for(message), encode(message), now=T0 + timedelta(days=9))


def fix(device_id: str, seq: int, minutes: float, lat: float, lon: float) -> PositionEvent:
    at = T0 + timedelta(minutes=minutes)
    return PositionEvent(
        device_id=device_id,
        event_id=new_event_id(),
        boot_id=BOOT,
        seq=seq,
        captured_at=at,
        sent_at=at,
        body=PositionBody(lat=lat, lon=lon, acc=5.0 + seq, src="gnss", batt=90),
    )


def alarm(
    device_id: str, seq: int, minutes: float, kind: Any, state: Any, alarm_id: str
) -> AlarmEvent:
    at = T0 + timedelta(minutes=minutes)
    return AlarmEvent(
        device_id=device_id,
        event_id=new_event_id(),
        boot_id=BOOT,
        seq=seq,
        captured_at=at,
        sent_at=at,
        body=AlarmBody(
            type=kind,
            state=state,
            alarm_id=alarm_id,
            position=PositionBody(lat=51.5, lon=-0.1, acc=9.0, src="gnss"),
            detail=f"{kind} {state}",
        ),
    )


def store(engine: Engine, events: list[EventEnvelope]) -> None:
    with Session(engine) as session, session.begin():
        for event in events:
            assert store_event(session, wire(event))


@pytest.fixture
def world(engine: Engine) -> None:
    """Sites north and south; ankle-a and ankle-b in north with fixes, cam-c in
    south with none."""
    with Session(engine) as session, session.begin():
        session.add_all([Site(site_id="north", name="North"), Site(site_id="south", name="South")])
        session.flush()
        session.add_all(
            [
                Device(device_id="ankle-a", site_id="north", model="ankle"),
                Device(device_id="ankle-b", site_id="north", model="ankle"),
                Device(device_id="cam-c", site_id="south", model="cam"),
            ]
        )
    # Stored out of capture order: "latest" must follow capture time, not arrival.
    store(
        engine,
        [
            fix("ankle-a", 0, 0, 51.50, -0.10),
            fix("ankle-a", 2, 20, 51.52, -0.12),
            fix("ankle-a", 1, 10, 51.51, -0.11),
            fix("ankle-b", 0, 5, 52.00, 1.00),
        ],
    )


def test_latest_position_of_each_device(
    client: TestClient, officer: dict[str, str], world: None
) -> None:
    body = client.get("/api/v1/positions/latest", headers=officer).json()
    assert body["total"] == 2 and body["limit"] == 50 and body["offset"] == 0
    a, b = body["items"]
    assert a["device_id"] == "ankle-a"
    assert a["lat"] == 51.52 and a["lon"] == -0.12 and a["site_id"] == "north"
    assert datetime.fromisoformat(a["captured_at"]) == T0 + timedelta(minutes=20)
    assert b["device_id"] == "ankle-b" and b["lat"] == 52.0
    page = client.get("/api/v1/positions/latest", params={"limit": 1, "offset": 1}, headers=officer)
    assert page.json()["total"] == 2 and [i["device_id"] for i in page.json()["items"]] == [
        "ankle-b"
    ]
    south = client.get("/api/v1/positions/latest", params={"site_id": "south"}, headers=officer)
    assert south.json() == {"items": [], "total": 0, "limit": 50, "offset": 0}
    one = client.get("/api/v1/positions/latest", params={"device_id": "ankle-b"}, headers=officer)
    assert [i["device_id"] for i in one.json()["items"]] == ["ankle-b"]


def test_last_fixes_of_a_device(client: TestClient, officer: dict[str, str], world: None) -> None:
    body = client.get("/api/v1/positions/ankle-a", params={"limit": 2}, headers=officer).json()
    assert body["total"] == 3 and body["limit"] == 2
    assert [i["lat"] for i in body["items"]] == [51.52, 51.51]
    rest = client.get(
        "/api/v1/positions/ankle-a", params={"limit": 2, "offset": 2}, headers=officer
    ).json()
    assert [i["lat"] for i in rest["items"]] == [51.50]
    assert client.get("/api/v1/positions/cam-c", headers=officer).json()["total"] == 0
    assert client.get("/api/v1/positions/nope", headers=officer).status_code == 404
    bad = client.get("/api/v1/positions/ankle-a", params={"limit": 0}, headers=officer)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "limit"]


def _track(client: TestClient, headers: dict[str, str], device: str, **params: str) -> Any:
    return client.get(f"/api/v1/positions/{device}/track", params=params, headers=headers)


def test_track_is_a_geojson_linestring_in_lon_lat_order(
    client: TestClient, officer: dict[str, str], world: None
) -> None:
    since = T0.isoformat()
    until = (T0 + timedelta(minutes=20)).isoformat()  # inclusive at both ends
    response = _track(client, officer, "ankle-a", since=since, until=until)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/geo+json")
    feature = response.json()
    assert feature["type"] == "Feature"
    assert feature["geometry"] == {
        "type": "LineString",
        "coordinates": [[-0.10, 51.50], [-0.11, 51.51], [-0.12, 51.52]],
    }
    props = feature["properties"]
    assert props["device_id"] == "ankle-a" and props["count"] == 3
    assert [datetime.fromisoformat(t) for t in props["times"]] == [
        T0 + timedelta(minutes=m) for m in (0, 10, 20)
    ]
    assert props["acc"] == [5.0, 6.0, 7.0] and props["truncated"] is False
    assert datetime.fromisoformat(props["since"]) == T0


def test_track_with_one_fix_is_a_point_and_with_none_has_no_geometry(
    client: TestClient, officer: dict[str, str], world: None
) -> None:
    window = {"since": T0.isoformat(), "until": (T0 + timedelta(minutes=5)).isoformat()}
    point = _track(client, officer, "ankle-a", **window).json()
    assert point["geometry"] == {"type": "Point", "coordinates": [-0.10, 51.50]}
    assert point["properties"]["count"] == 1
    empty = _track(client, officer, "cam-c", **window).json()
    assert empty["geometry"] is None and empty["properties"]["count"] == 0
    # Without since: the 24 hours before until.
    default = _track(client, officer, "ankle-b", until=(T0 + timedelta(hours=1)).isoformat())
    props = default.json()["properties"]
    assert props["count"] == 1
    assert datetime.fromisoformat(props["since"]) == T0 + timedelta(hours=1) - timedelta(days=1)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "2025-06-01T12:00:00", "until": "2025-06-01T13:00:00+00:00"}, "since"),
        ({"since": "2025-06-01T12:00:00+00:00", "until": "2025-06-01T13:00:00"}, "until"),
        ({"since": "2025-06-02T12:00:00+00:00", "until": "2025-06-01T12:00:00+00:00"}, "until"),
        ({"since": "2025-06-01T12:00:00+00:00", "until": "2025-06-08T12:00:01+00:00"}, "since"),
        ({"since": "yesterday"}, "since"),
    ],
)
def test_track_window_is_validated(
    client: TestClient, officer: dict[str, str], world: None, params: dict[str, str], field: str
) -> None:
    response = _track(client, officer, "ankle-a", **params)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", field]


def test_track_window_limits_and_unknown_device(
    client: TestClient, officer: dict[str, str], world: None
) -> None:
    week = {"since": T0.isoformat(), "until": (T0 + timedelta(days=7)).isoformat()}
    assert _track(client, officer, "ankle-a", **week).json()["properties"]["count"] == 3
    # A UTC offset other than zero names the same instants.
    plus2 = {"since": "2025-06-01T14:00:00+02:00", "until": "2025-06-01T14:10:00+02:00"}
    assert _track(client, officer, "ankle-a", **plus2).json()["properties"]["count"] == 2
    assert _track(client, officer, "nope", **week).status_code == 404


@pytest.fixture
def alarms(engine: Engine, world: None) -> list[EventEnvelope]:
    events: list[EventEnvelope] = [
        alarm("ankle-a", 10, 1, "strap.tamper", "active", "tamper-1"),
        alarm("ankle-a", 11, 2, "strap.tamper", "cleared", "tamper-1"),
        alarm("ankle-b", 10, 3, "sos", "active", "sos-1"),
        alarm("cam-c", 0, 4, "case.tamper", "active", "case-1"),
        alarm("ankle-a", 12, 5, "battery.low", "active", "batt-1"),
    ]
    store(engine, events)
    return events


def _ids(body: dict[str, Any]) -> list[str]:
    return [item["alarm_id"] + ":" + item["state"] for item in body["items"]]


def test_alarms_newest_first_with_filters(
    client: TestClient, officer: dict[str, str], alarms: list[EventEnvelope]
) -> None:
    everything = client.get("/api/v1/alarms", headers=officer).json()
    assert everything["total"] == 5
    assert _ids(everything) == [
        "batt-1:active",
        "case-1:active",
        "sos-1:active",
        "tamper-1:cleared",
        "tamper-1:active",
    ]
    first = everything["items"][0]
    assert first["device_id"] == "ankle-a" and first["site_id"] == "north"
    assert first["type"] == "battery.low" and first["detail"] == "battery.low active"
    assert first["position"]["lat"] == 51.5 and first["event_id"] == alarms[4].event_id

    def ids(**params: str) -> list[str]:
        response = client.get("/api/v1/alarms", params=params, headers=officer)
        assert response.status_code == 200, response.text
        return _ids(response.json())

    assert ids(site_id="south") == ["case-1:active"]
    assert ids(device_id="ankle-a") == ["batt-1:active", "tamper-1:cleared", "tamper-1:active"]
    assert ids(type="strap.tamper", state="cleared") == ["tamper-1:cleared"]
    assert ids(state="active", site_id="north") == [
        "batt-1:active",
        "sos-1:active",
        "tamper-1:active",
    ]
    window = {
        "since": (T0 + timedelta(minutes=2)).isoformat(),
        "until": (T0 + timedelta(minutes=4)).isoformat(),
    }
    assert ids(**window) == ["case-1:active", "sos-1:active", "tamper-1:cleared"]
    page = client.get("/api/v1/alarms", params={"limit": 2, "offset": 3}, headers=officer).json()
    assert page["total"] == 5 and _ids(page) == ["tamper-1:cleared", "tamper-1:active"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"type": "meltdown"}, "type"),
        ({"state": "raised"}, "state"),
        ({"since": "2025-06-01T12:00:00"}, "since"),
        ({"since": "2025-06-02T00:00:00Z", "until": "2025-06-01T00:00:00Z"}, "until"),
        ({"limit": 501}, "limit"),
    ],
)
def test_alarm_filters_are_validated(
    client: TestClient, officer: dict[str, str], params: dict[str, Any], field: str
) -> None:
    response = client.get("/api/v1/alarms", params=params, headers=officer)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", field]


def test_alarm_detail(
    engine: Engine, client: TestClient, officer: dict[str, str], alarms: list[EventEnvelope]
) -> None:
    with Session(engine) as session:
        row = session.query(Alarm).filter_by(alarm_id="sos-1").one()
    response = client.get(f"/api/v1/alarms/{row.id}", headers=officer)
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == row.id and body["type"] == "sos" and body["site_id"] == "north"
    assert datetime.fromisoformat(body["captured_at"]) == T0 + timedelta(minutes=3)
    assert client.get("/api/v1/alarms/999999", headers=officer).status_code == 404
    bad = client.get("/api/v1/alarms/abc", headers=officer)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["path", "alarm_id"]


def test_positions_and_alarms_refuse_other_roles(
    engine: Engine, client: TestClient, world: None
) -> None:
    _add_user(engine, "carl", Role.caseworker)
    _add_user(engine, "anna", Role.analyst)
    caseworker, analyst = _login(client, "carl"), _login(client, "anna")
    for path in ("/api/v1/positions/latest", "/api/v1/positions/ankle-a", "/api/v1/alarms"):
        assert client.get(path, headers=caseworker).status_code == 403
        assert client.get(path, headers=analyst).status_code == 200
        assert client.get(path).status_code == 401
