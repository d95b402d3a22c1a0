"""Zones, rules, alerts and incidents through the API, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from hub import alerts
from hub.api import create_app
from hub.auth import Role
from hub.db.engine import write_session
from hub.db.models import AuditEntry, Device, Person, Site, SupervisionRuleState
from hub.supervision.model import AlertTransition, Severity
from hub.supervision.service import SupervisionService
from tests.hub.test_api import _add_user, _login, _settings

T0 = datetime(2026, 3, 2, 21, 0, tzinfo=UTC)
DEVICE = "ankle-0042"
VICTIM_DEVICE = "fob-0007"
SQUARE = {
    "type": "Polygon",
    "coordinates": [[[-0.1, 51.5], [-0.09, 51.5], [-0.09, 51.51], [-0.1, 51.51], [-0.1, 51.5]]],
}


@pytest.fixture
def app(engine: Engine) -> FastAPI:
    app = create_app(_settings(engine), engine)
    app.state.supervision = SupervisionService(engine)
    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def users(engine: Engine, client: TestClient) -> dict[str, dict[str, str]]:
    out = {}
    for name, role in (("olive", Role.officer), ("ann", Role.analyst), ("ada", Role.admin)):
        _add_user(engine, name, role)
        out[name] = _login(client, name)
    return out


@pytest.fixture
def people(engine: Engine) -> dict[str, int]:
    with write_session(engine) as session:
        session.add(Site(site_id="probation-east", name="Probation East"))
        session.flush()
        for device in (DEVICE, VICTIM_DEVICE):
            session.add(Device(device_id=device, site_id="probation-east", model="m"))
        subject = Person(category="supervised", display_name="Sam", case_id="CASE-7")
        missing = Person(category="missing", display_name="Mia")
        session.add_all([subject, missing])
        session.flush()
        return {"subject": subject.id, "missing": missing.id}


def feature(zone_id: str | None = "victim-home", **props: Any) -> dict[str, Any]:
    geometry = props.pop("geometry", SQUARE)
    body: dict[str, Any] = {
        "type": "Feature",
        "geometry": geometry,
        "properties": {"name": "Victim home", "kind": "victim"} | props,
    }
    if zone_id is not None:
        body["id"] = zone_id
    return body


def audited(engine: Engine, prefix: str) -> list[tuple[str, str, str | None]]:
    with Session(engine) as session:
        rows = session.execute(
            select(AuditEntry.action, AuditEntry.actor, AuditEntry.target)
            .where(AuditEntry.action.like(f"{prefix}%"))
            .order_by(AuditEntry.seq)
        ).all()
    return [(a, b, c) for a, b, c in rows]


def test_zone_crud_with_geojson(
    app: FastAPI, client: TestClient, engine: Engine, users: dict[str, dict[str, str]]
) -> None:
    olive, ann = users["olive"], users["ann"]
    created = client.post("/api/v1/zones", json=feature(), headers=olive)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["type"] == "Feature" and body["id"] == "victim-home"
    assert body["geometry"]["type"] == "Polygon" and body["properties"]["kind"] == "victim"
    assert client.post("/api/v1/zones", json=feature(), headers=olive).status_code == 409
    assert client.post("/api/v1/zones", json=feature(), headers=ann).status_code == 403
    circle = feature(
        None,
        geometry={"type": "Point", "coordinates": [-0.1, 51.5]},
        name="School",
        kind="school",
        radius_m=150,
    )
    made = client.post("/api/v1/zones", json=circle, headers=olive)
    assert made.status_code == 201 and made.json()["id"].startswith("zone-")
    assert made.json()["properties"]["radius_m"] == 150
    page = client.get("/api/v1/zones", params={"limit": 1}, headers=ann).json()
    assert page["total"] == 2 and len(page["items"]) == 1 and page["items"][0]["type"] == "Feature"
    got = client.get("/api/v1/zones/victim-home", headers=ann).json()
    assert got["properties"]["name"] == "Victim home"
    renamed = client.put("/api/v1/zones/victim-home", json=feature(name="V. home"), headers=olive)
    assert renamed.status_code == 200 and renamed.json()["properties"]["name"] == "V. home"
    other = client.put("/api/v1/zones/victim-home", json=feature("elsewhere"), headers=olive)
    assert other.status_code == 422 and other.json()["detail"][0]["loc"] == ["body", "id"]
    assert client.delete("/api/v1/zones/victim-home", headers=olive).status_code == 204
    assert client.get("/api/v1/zones/victim-home", headers=ann).status_code == 404
    assert [a for a, _, _ in audited(engine, "zone.")] == [
        "zone.create",
        "zone.create",
        "zone.update",
        "zone.delete",
    ]


@pytest.mark.parametrize(
    ("geometry", "props", "loc", "reason"),
    [
        (
            {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [2, 2], [0, 0]]]},
            {},
            ["body", "geometry"],
            "area",
        ),
        (
            {"type": "GeometryCollection", "geometries": []},
            {},
            ["body", "geometry"],
            "unsupported geometry type",
        ),
        ({"type": "Point", "coordinates": [-0.1, 51.5]}, {}, ["body", "geometry"], "radius_m"),
        (
            {"type": "Polygon", "coordinates": [[[0, 95], [1, 1], [2, 0], [0, 95]]]},
            {},
            ["body", "geometry"],
            "",
        ),
        (SQUARE, {"site_id": "nowhere"}, ["body", "properties", "site_id"], "no site"),
        (SQUARE, {"kind": "volcano"}, ["body", "properties", "kind"], ""),
    ],
)
def test_invalid_zones_are_422_with_the_reason(
    client: TestClient,
    users: dict[str, dict[str, str]],
    geometry: dict[str, Any],
    props: dict[str, Any],
    loc: list[str],
    reason: str,
) -> None:
    response = client.post(
        "/api/v1/zones", json=feature(geometry=geometry, **props), headers=users["olive"]
    )
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    assert error["loc"] == loc
    assert reason in error["msg"]


def test_a_bowtie_is_repaired(client: TestClient, users: dict[str, dict[str, str]]) -> None:
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
    response = client.post("/api/v1/zones", json=feature(geometry=bowtie), headers=users["olive"])
    assert response.status_code == 201, response.text
    assert response.json()["geometry"]["type"] == "MultiPolygon"


def test_zone_import_is_all_or_nothing(
    client: TestClient, users: dict[str, dict[str, str]]
) -> None:
    olive = users["olive"]
    bad = {
        "type": "FeatureCollection",
        "features": [feature("a"), feature("b", geometry={"type": "Point", "coordinates": [0, 0]})],
    }
    response = client.post("/api/v1/zones/import", json=bad, headers=olive)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "features", 1, "geometry"]
    assert client.get("/api/v1/zones", headers=olive).json()["total"] == 0
    good = {"type": "FeatureCollection", "features": [feature("a"), feature("b")]}
    response = client.post("/api/v1/zones/import", json=good, headers=olive)
    assert response.status_code == 201
    assert [f["id"] for f in response.json()["features"]] == ["a", "b"]


def rule(**over: Any) -> dict[str, Any]:
    return {
        "id": "r-excl",
        "device_id": DEVICE,
        "params": {"kind": "exclusion", "zone_ids": ["victim-home"]},
        "severity": "critical",
        "valid_from": T0.isoformat(),
    } | over


def test_rule_crud_and_validation(
    app: FastAPI,
    client: TestClient,
    engine: Engine,
    users: dict[str, dict[str, str]],
    people: dict[str, int],
) -> None:
    olive, ann = users["olive"], users["ann"]
    subject = people["subject"]
    assert client.post("/api/v1/zones", json=feature(), headers=olive).status_code == 201
    created = client.post("/api/v1/rules", json=rule(person_id=subject), headers=olive)
    assert created.status_code == 201, created.text
    assert created.json()["kind"] == "exclusion" and created.json()["confirm_n"] == 2
    # The running service was reloaded: it evaluates the rule now.
    assert set(app.state.supervision.engine.rules) == {"r-excl"}
    assert (
        client.post("/api/v1/rules", json=rule(person_id=subject), headers=olive).status_code == 409
    )
    # The zone is in use now.
    assert client.delete("/api/v1/zones/victim-home", headers=olive).status_code == 409
    refused = {
        "person_id": rule(id="r2", person_id=people["missing"]),
        "device_id": rule(id="r2", person_id=subject, device_id="nope"),
        "zone_ids": rule(
            id="r2", person_id=subject, params={"kind": "exclusion", "zone_ids": ["nowhere"]}
        ),
        "valid_until": rule(id="r2", person_id=subject, valid_until=T0.isoformat()),
        "other_device_id": rule(
            id="r2",
            person_id=subject,
            params={"kind": "proximity", "other_device_id": DEVICE, "min_distance_m": 500},
        ),
        "timezone": rule(
            id="r2",
            person_id=subject,
            params={
                "kind": "curfew",
                "zone_id": "victim-home",
                "timezone": "Mars/Olympus",
                "windows": [{"days": [0], "start": "21:00", "end": "07:00"}],
            },
        ),
    }
    for field, body in refused.items():
        response = client.post("/api/v1/rules", json=body, headers=olive)
        assert response.status_code == 422, (field, response.text)
        assert response.json()["detail"][0]["loc"][-1] == field, (field, response.text)
    bad_kind = client.post(
        "/api/v1/rules",
        json=rule(id="r2", person_id=subject, params={"kind": "teleport"}),
        headers=olive,
    )
    assert bad_kind.status_code == 422
    proximity = rule(
        id="r-prox",
        person_id=subject,
        params={"kind": "proximity", "other_device_id": VICTIM_DEVICE, "min_distance_m": 500},
    )
    assert client.post("/api/v1/rules", json=proximity, headers=olive).status_code == 201
    listed = client.get("/api/v1/rules", params={"kind": "proximity"}, headers=ann).json()
    assert [r["id"] for r in listed["items"]] == ["r-prox"]
    assert client.post("/api/v1/rules", json=proximity, headers=ann).status_code == 403
    # Update: same kind keeps the state, another kind drops it.
    with write_session(engine) as session:
        session.merge(
            SupervisionRuleState(rule_id="r-excl", subject_id=str(subject), data={"x": 1})
        )
    update = {k: v for k, v in rule(person_id=subject, enabled=False).items() if k != "id"}
    response = client.put("/api/v1/rules/r-excl", json=update, headers=olive)
    assert response.status_code == 200 and response.json()["enabled"] is False
    with Session(engine) as session:
        assert session.get(SupervisionRuleState, "r-excl") is not None
    update["params"] = {"kind": "silence", "max_silence_s": 900}
    assert client.put("/api/v1/rules/r-excl", json=update, headers=olive).status_code == 200
    with Session(engine) as session:
        assert session.get(SupervisionRuleState, "r-excl") is None
    assert client.get("/api/v1/rules/r-excl", headers=ann).json()["kind"] == "silence"
    assert client.delete("/api/v1/rules/r-excl", headers=olive).status_code == 204
    assert client.get("/api/v1/rules/r-excl", headers=ann).status_code == 404
    assert set(app.state.supervision.engine.rules) == {"r-prox"}
    actions = audited(engine, "rule.")
    assert [a for a, _, _ in actions] == [
        "rule.create",
        "rule.create",
        "rule.update",
        "rule.update",
        "rule.delete",
    ]
    with Session(engine) as session:
        cases = session.scalars(
            select(AuditEntry.case_id).where(AuditEntry.action.like("rule.%"))
        ).all()
    assert set(cases) == {"CASE-7"}


def _raise(
    engine: Engine, key: str, person_id: int, severity: Severity, type_: str, at: datetime
) -> int:
    transition = AlertTransition(
        key=key,
        action="raise",
        type=type_,
        severity=severity,
        subject_id=str(person_id),
        device_id=DEVICE,
        rule_id="r-1",
        at=at,
    )
    with write_session(engine) as session:
        (alert_id,) = alerts.record_transitions(session, [transition])
    return alert_id


def test_alerts_and_incident_workflow(
    client: TestClient, engine: Engine, users: dict[str, dict[str, str]], people: dict[str, int]
) -> None:
    olive, ann, ada = users["olive"], users["ann"], users["ada"]
    subject = people["subject"]
    _raise(engine, "k1", subject, Severity.serious, "silence", T0)
    _raise(engine, "k2", subject, Severity.critical, "strap.tamper", T0 + timedelta(minutes=1))
    page = client.get("/api/v1/alerts", headers=ann).json()
    assert page["total"] == 2 and [a["key"] for a in page["items"]] == ["k2", "k1"]
    crit = client.get("/api/v1/alerts", params={"severity": "critical"}, headers=ann).json()
    assert [a["type"] for a in crit["items"]] == ["strap.tamper"]
    since = client.get(
        "/api/v1/alerts", params={"since": "2026-03-02T21:00:30+00:00", "open": "true"}, headers=ann
    ).json()
    assert since["total"] == 1
    assert client.get("/api/v1/alerts", params={"open": "false"}, headers=ann).json()["total"] == 0
    backwards = client.get(
        "/api/v1/alerts",
        params={"since": "2026-03-03T00:00:00Z", "until": "2026-03-02T00:00:00Z"},
        headers=ann,
    )
    assert backwards.status_code == 422
    incidents = client.get("/api/v1/incidents", params={"status": "open"}, headers=ann).json()
    assert incidents["total"] == 1
    incident = incidents["items"][0]
    assert incident["severity"] == "critical" and incident["person_id"] == subject
    url = f"/api/v1/incidents/{incident['id']}"
    detail = client.get(url, headers=ann).json()
    assert [a["key"] for a in detail["alerts"]] == ["k2", "k1"]
    assert [e["action"] for e in detail["events"]] == ["open", "alert", "alert"]
    assert client.post(f"{url}/acknowledge", headers=ann).status_code == 403
    ack = client.post(f"{url}/acknowledge", json={"note": "seen"}, headers=olive)
    assert ack.status_code == 200 and ack.json()["status"] == "acknowledged"
    assert client.post(f"{url}/acknowledge", headers=olive).status_code == 409
    me = client.get("/api/v1/auth/me", headers=olive).json()
    assert (
        client.post(f"{url}/assign", json={"user_id": me["id"]}, headers=ada).json()["assigned_to"]
        == me["id"]
    )
    nobody = client.post(f"{url}/assign", json={"user_id": 987654}, headers=ada)
    assert nobody.status_code == 422 and nobody.json()["detail"][0]["loc"] == ["body", "user_id"]
    assert client.post(f"{url}/note", json={"text": "called"}, headers=olive).status_code == 200
    assert client.post(f"{url}/note", json={"text": ""}, headers=olive).status_code == 422
    assert (
        client.post(f"{url}/escalate", json={"reason": "no answer"}, headers=olive).json()["status"]
        == "escalated"
    )
    past = client.post(
        f"{url}/suspend", json={"reason": "court", "until": "2020-01-01T00:00:00Z"}, headers=olive
    )
    assert past.status_code == 422 and past.json()["detail"][0]["loc"] == ["body", "until"]
    future = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    assert (
        client.post(
            f"{url}/suspend", json={"reason": "court", "until": future}, headers=olive
        ).json()["status"]
        == "suspended"
    )
    no_note = client.post(f"{url}/clear", json={}, headers=olive)
    assert no_note.status_code == 422 and no_note.json()["detail"][0]["loc"] == ["body", "note"]
    cleared = client.post(f"{url}/clear", json={"note": "resolved"}, headers=olive)
    assert cleared.status_code == 200 and cleared.json()["clear_note"] == "resolved"
    again = client.post(f"{url}/clear", json={"note": "again"}, headers=olive)
    assert again.status_code == 409 and "cleared" in again.json()["detail"]
    assert (
        client.post("/api/v1/incidents/987654/clear", json={"note": "x"}, headers=olive).status_code
        == 404
    )
    actions = [(a, who) for a, who, _ in audited(engine, "incident.") if who != "system"]
    assert actions == [
        ("incident.acknowledge", "olive"),
        ("incident.assign", "ada"),
        ("incident.note", "olive"),
        ("incident.escalate", "olive"),
        ("incident.suspend", "olive"),
        ("incident.clear", "olive"),
    ]
    timeline = [e["action"] for e in client.get(url, headers=ann).json()["events"]]
    assert timeline[-6:] == ["acknowledge", "assign", "note", "escalate", "suspend", "clear"]
