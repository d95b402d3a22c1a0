"""``/api/v1/match-requests`` at the requesting hub (SQLite and PostgreSQL), with a
peer served on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from hub.auth import Role
from hub.db.models import AuditEntry
from tests.edge.mqtt_helpers import free_port
from tests.hub.federation.helpers import (
    MODEL,
    ThreadedHub,
    enrol_vector,
    hub_app,
    make_keys,
    near,
    sqlite_engine,
    unit,
    write_federation,
)
from tests.hub.test_api import _add_user, _login


@pytest.fixture
def world(tmp_path: Path, engine: Engine, sqlite_template: Path) -> Iterator[dict[str, Any]]:
    keys = {h: make_keys(tmp_path / "keys", h) for h in ("a", "c", "d")}
    c_engine = sqlite_engine(sqlite_template, tmp_path / "c")
    c_app = hub_app(c_engine, None)
    rng = np.random.default_rng(21)
    (vector,) = unit(rng)
    person = enrol_vector(c_engine, c_app.state.galleries, "found", vector)
    c_app.state.settings.federation_file = write_federation(
        tmp_path / "c.yaml", "region-c", keys["c"][0],
        [("region-a", "http://127.0.0.1:9", keys["a"][1])],
        {"region-a": {"missing_person": ["found"], "crops": True}},
    )  # fmt: skip
    with ThreadedHub(c_app) as c:
        a_file = write_federation(
            tmp_path / "a.yaml", "region-a", keys["a"][0],
            [("region-c", c.url, keys["c"][1]),
             ("region-d", f"http://127.0.0.1:{free_port()}", keys["d"][1])],
            timeout=2.0,
        )  # fmt: skip
        with TestClient(hub_app(engine, a_file)) as client:
            headers = {}
            for name, role in [("rita", Role.requester), ("ruth", Role.requester),
                               ("cara", Role.caseworker)]:  # fmt: skip
                _add_user(engine, name, role)
                headers[name] = _login(client, name)
            yield {"client": client, "h": headers, "vector": vector, "person": person, "rng": rng}
    c_engine.dispose()


def _json(w: dict[str, Any], **over: Any) -> dict[str, Any]:
    probe = near(w["vector"], w["rng"])
    return {
        "case_id": "MP-77",
        "legal_basis": "missing-persons act s.4",
        "purpose": "missing_person",
        "model_id": MODEL,
        "templates": [probe.tolist()],
        "k": 5,
    } | over


def test_a_request_shows_each_region_and_the_candidates(
    world: dict[str, Any], engine: Engine
) -> None:
    client, h = world["client"], world["h"]
    response = client.post("/api/v1/match-requests", json=_json(world), headers=h["rita"])
    assert response.status_code == 201, response.text
    view = response.json()
    regions = {r["hub_id"]: r for r in view["regions"]}
    assert regions["region-c"]["status"] == "answered" and regions["region-c"]["candidates"] == 1
    assert regions["region-d"]["status"] == "error"
    (group,) = view["candidate_groups"]
    assert group["model_id"] == MODEL
    (candidate,) = group["candidates"]
    assert (
        candidate["hub_id"] == "region-c"
        and candidate["candidate_ref"] == f"person:{world['person']}"
    )
    assert candidate["has_crop"] is True and candidate["status"] == "pending"
    assert view["galleries"] == ["found"] and view["requester"] == "rita"

    got = client.get(f"/api/v1/match-requests/{view['id']}", headers=h["rita"])
    assert got.status_code == 200 and got.json()["candidate_groups"] == view["candidate_groups"]
    listed = client.get("/api/v1/match-requests?limit=1", headers=h["rita"]).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == view["id"]
    # another requester sees none of it
    assert client.get("/api/v1/match-requests", headers=h["ruth"]).json()["total"] == 0
    assert client.get(f"/api/v1/match-requests/{view['id']}", headers=h["ruth"]).status_code == 404
    # retry: region-d only
    retried = client.post(f"/api/v1/match-requests/{view['id']}/retry", headers=h["rita"]).json()
    attempts = {r["hub_id"]: r["attempts"] for r in retried["regions"]}
    assert attempts == {"region-c": 1, "region-d": 2}
    with Session(engine) as session:
        actions = session.scalars(
            select(AuditEntry.action).where(AuditEntry.target == f"request:{view['id']}")
        ).all()
    assert actions == ["federation.request", "federation.answer", "federation.answer",
                       "federation.retry", "federation.answer"]  # fmt: skip


def test_validation_and_role_rules(world: dict[str, Any]) -> None:
    client, h = world["client"], world["h"]
    cara = client.post(
        "/api/v1/match-requests",
        json=_json(world, purpose="criminal_investigation"),
        headers=h["cara"],
    )
    assert cara.status_code == 403
    assert (
        client.post("/api/v1/match-requests", json=_json(world), headers=h["cara"]).status_code
        == 201
    )
    bad = [
        (_json(world, k=51), ["body", "k"]),
        (_json(world, targets=["region-x"]), ["body", "targets"]),
        (_json(world, templates=[[0.0] * 16]), ["body", "templates"]),
        (_json(world, templates=[[0.1] * 16, [0.1] * 8]), ["body", "templates"]),
        (_json(world, purpose="curiosity"), ["body", "purpose"]),
        ({"case_id": "x"}, ["body", "legal_basis"]),
    ]
    for body, loc in bad:
        response = client.post("/api/v1/match-requests", json=body, headers=h["rita"])
        assert response.status_code == 422, (body, response.text)
        assert loc in [e["loc"] for e in response.json()["detail"]], response.text
    text = client.post("/api/v1/match-requests", content=b"hello", headers=h["rita"])
    assert text.status_code == 422 and text.json()["detail"][0]["loc"] == ["body"]
    no_photos = client.post(
        "/api/v1/match-requests",
        data={"case_id": "c", "legal_basis": "l", "purpose": "missing_person"},
        files={"other": ("x.txt", b"x", "text/plain")},
        headers=h["rita"],
    )
    assert no_photos.status_code == 422
    assert no_photos.json()["detail"][0]["loc"] == ["body", "photos"]


def test_a_hub_without_federation_says_so(engine: Engine) -> None:
    with TestClient(hub_app(engine, None)) as client:
        _add_user(engine, "rita", Role.requester)
        response = client.post(
            "/api/v1/match-requests",
            json={
                "case_id": "c",
                "legal_basis": "l",
                "purpose": "missing_person",
                "model_id": MODEL,
                "templates": [[0.25] * 16],
            },  # fmt: skip
            headers=_login(client, "rita"),
        )
    assert response.status_code == 409 and "not configured" in response.json()["detail"]
