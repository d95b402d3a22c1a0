"""Role evidence derived from the app's own routes, on SQLite and PostgreSQL.

The route x role matrix itself is ``tests/hub/test_api.py::test_route_role_matrix``
(every route, no token and each role: 401/403 exactly when the declared roles say so,
the declarations pinned by ``test_declared_roles_match_the_policy``); this module
recomputes its size from the app for the evidence file, and checks the auditor
clause on a populated database: every write route of the app, called by an auditor
with ids of rows that exist, is refused with 403 and changes no table, and every read
route admitting auditors answers 200 with the audit log in it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from hub.api import api_routes, create_app
from hub.api.deps import declared_roles
from hub.auth import Role, create_user
from hub.db.engine import write_session
from hub.db.models import Base, Device, Site
from hub.settings import HubSettings
from tests.access import evidence
from tests.hub.policy_live import WEBSOCKET_POLICY
from tests.hub.test_api import PATH_VALUES, POLICY

SECRET = "roles-Test_key-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOP-7"
PASSWORD = "correct horse battery staple"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@pytest.fixture
def app(engine: Engine) -> FastAPI:
    url = engine.url.render_as_string(hide_password=False)
    settings = HubSettings(jwt_secret=SECRET, database_url=url)  # type: ignore[arg-type]
    return create_app(settings, engine)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def login(client: TestClient, engine: Engine, username: str, role: Role) -> dict[str, str]:
    create_user(
        engine, username=username, role=role, password=PASSWORD, actor="test", actor_role="cli"
    )
    response = client.post("/api/v1/auth/token", data={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def snapshot(engine: Engine) -> dict[str, str]:
    """A digest of every row of every table."""
    digests = {}
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            order = list(table.primary_key.columns) or list(table.columns)
            rows = conn.execute(select(table).order_by(*order)).all()
            digests[table.name] = hashlib.sha256(repr(rows).encode()).hexdigest()
    return digests


def test_route_role_cells_recomputed_from_the_app(app: FastAPI) -> None:
    """The size of the matrix test, from the app: its routes x (no token + each role)."""
    routes = [(method, path, declared_roles(route)) for method, path, route in api_routes(app)]
    assert {(method, path) for method, path, _ in routes} == set(POLICY)
    guarded = [roles for _, _, roles in routes if roles is not None]
    callers = len(Role) + 1
    admitted = {role.value: sum(role in roles for roles in guarded) for role in Role}
    evidence.record(
        "api_matrix",
        "route_role_matrix",
        {
            "test": "tests/hub/test_api.py::test_route_role_matrix",
            "routes": len(routes),
            "guarded_routes": len(guarded),
            "unguarded_routes": sorted(f"{m} {p}" for m, p, r in routes if r is None),
            "callers_per_route": callers,
            "cells": len(routes) * callers,
            "allowed_cells_per_role": admitted,
            "refused_cells": sum(len(Role) - len(r) for r in guarded) + len(guarded),
            "websocket_routes": len(WEBSOCKET_POLICY),
        },
    )
    assert len(routes) * callers > 0


def test_auditors_read_but_cannot_write(app: FastAPI, client: TestClient, engine: Engine) -> None:
    admin = login(client, engine, "root", Role.admin)
    auditor = login(client, engine, "ada", Role.auditor)
    with write_session(engine) as session:
        session.add(Site(site_id="north", name="North"))
        session.flush()
        session.add(Device(device_id="cam-01", site_id="north", model="cam", status="online"))
    person = client.post(
        "/api/v1/persons",
        json={"category": "watchlist", "display_name": "Someone", "case_id": "C-1"},
        headers=admin,
    )
    assert person.status_code == 201, person.text
    me = client.get("/api/v1/auth/me", headers=admin).json()
    existing = {
        "user_id": str(me["id"]),
        "site_id": "north",
        "device_id": "cam-01",
        "person_id": str(person.json()["id"]),
    }
    values = PATH_VALUES | existing

    routes = [(method, path, declared_roles(route)) for method, path, route in api_routes(app)]
    writes = [(m, p, r) for m, p, r in routes if m not in READ_METHODS]
    reads = [(m, p) for m, p, r in routes if m in READ_METHODS and r and Role.auditor in r]
    assert writes and reads

    before = snapshot(engine)
    refused: list[str] = []
    unguarded: dict[str, int] = {}
    for method, path, roles in writes:
        url = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
        response = client.request(method, url, headers=auditor, json={})
        if roles is None:  # login, and the peer-signed search: no user role opens them
            assert response.status_code in (401, 422), (method, path, response.text)
            unguarded[f"{method} {path}"] = response.status_code
            continue
        assert Role.auditor not in roles, (method, path)
        assert response.status_code == 403, (method, path, response.status_code, response.text)
        refused.append(f"{method} {path}")
    after = snapshot(engine)
    changed = sorted(name for name in before if before[name] != after[name])
    assert changed == [], changed

    answered = {}
    for method, path in reads:
        response = client.request(method, path, headers=auditor)
        assert response.status_code == 200, (method, path, response.text)
        answered[f"{method} {path}"] = response.status_code
    rows = client.get("/api/v1/audit", params={"limit": 500}, headers=auditor).json()
    assert {"user.create", "auth.login", "person.create"} <= {r["action"] for r in rows["items"]}
    assert client.get("/api/v1/audit/verify", headers=auditor).json()["ok"] is True

    evidence.record(
        "auditor",
        engine.dialect.name,
        {
            "write_routes": len(writes),
            "write_routes_refused_403": len(refused),
            "unguarded_write_routes": unguarded,
            "tables_changed_by_auditor_writes": len(changed),
            "tables_compared": len(before),
            "read_routes_admitting_auditor": sorted(answered),
        },
    )
