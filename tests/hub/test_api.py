"""The hub API built from the factory, on SQLite and PostgreSQL.

The centre is the route x role matrix: every ``/api`` route is called with no token
and with a token of each role, and must answer 401/403 exactly when its declared
roles say so; the declared roles themselves are pinned to :data:`POLICY`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from hub.api import UnguardedRouteError, api_routes, check_guards, create_app
from hub.api.deps import declared_roles
from hub.auth import Role, create_user, issue_token, token_issuer
from hub.db.engine import write_session
from hub.db.models import Device, Site
from hub.db.users import User
from hub.settings import HubSettings
from tests.hub import (
    policy_devices,
    policy_federation,
    policy_live,
    policy_persons,
    policy_reunion,
    policy_supervision,
    policy_web,
)

SECRET = "api-Test_key-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOP-42"
PASSWORD = "correct horse battery staple"
ALL = frozenset(Role)
PUBLIC = None

CORE_POLICY: dict[tuple[str, str], frozenset[Role] | None] = {
    ("GET", "/api/v1/health"): PUBLIC,
    ("POST", "/api/v1/auth/token"): PUBLIC,
    ("GET", "/api/v1/auth/me"): ALL,
    ("GET", "/api/v1/users"): frozenset({Role.admin}),
    ("POST", "/api/v1/users"): frozenset({Role.admin}),
    ("GET", "/api/v1/users/{user_id}"): frozenset({Role.admin}),
    ("POST", "/api/v1/users/{user_id}/disable"): frozenset({Role.admin}),
    ("GET", "/api/v1/audit"): frozenset({Role.auditor, Role.admin}),
    ("GET", "/api/v1/audit/verify"): frozenset({Role.auditor, Role.admin}),
}
"""The access policy of the core routes; each domain's table is in its own module."""

POLICY = (
    CORE_POLICY
    | policy_devices.POLICY
    | policy_persons.POLICY
    | policy_live.POLICY
    | policy_supervision.POLICY
    | policy_reunion.POLICY
    | policy_federation.POLICY
    | policy_web.POLICY
)
"""The access policy: who may call what. A route change must change these tables."""

PATH_VALUES = (
    {"user_id": "999999", "device_id": "no-such-device"}
    | policy_devices.PATH_VALUES
    | policy_persons.PATH_VALUES
    | policy_live.PATH_VALUES
    | policy_supervision.PATH_VALUES
    | policy_reunion.PATH_VALUES
    | policy_federation.PATH_VALUES
    | policy_web.PATH_VALUES
)


def _settings(engine: Engine) -> HubSettings:
    url = engine.url.render_as_string(hide_password=False)
    return HubSettings(jwt_secret=SECRET, database_url=url)  # type: ignore[arg-type]


@pytest.fixture
def app(engine: Engine) -> FastAPI:
    return create_app(_settings(engine), engine)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def _add_user(engine: Engine, username: str, role: Role) -> User:
    return create_user(
        engine, username=username, role=role, password=PASSWORD, actor="test", actor_role="cli"
    )


def _login(client: TestClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    response = client.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] > 0
    return {"Authorization": f"Bearer {body['access_token']}"}


@pytest.fixture
def headers(engine: Engine, client: TestClient) -> dict[Role, dict[str, str]]:
    """A logged-in user of every role."""
    out = {}
    for role in Role:
        _add_user(engine, f"{role.value}-user", role)
        out[role] = _login(client, f"{role.value}-user")
    return out


def _api_routes(app: FastAPI) -> list[tuple[str, str, APIRoute]]:
    return list(api_routes(app))


def test_declared_roles_match_the_policy(tmp_path: Any) -> None:
    engine_url = f"sqlite:///{tmp_path / 'unused.db'}"
    app = create_app(HubSettings(jwt_secret=SECRET, database_url=engine_url))  # type: ignore[arg-type]
    seen = {(method, path): declared_roles(route) for method, path, route in _api_routes(app)}
    assert seen == POLICY


def test_an_unguarded_route_is_refused(app: FastAPI) -> None:
    router = APIRouter()

    @router.get("/api/v1/leak")
    def leak() -> dict[str, str]:
        return {"secret": "yes"}

    app.include_router(router)
    with pytest.raises(UnguardedRouteError, match="/api/v1/leak"):
        check_guards(app)


def test_route_role_matrix(
    app: FastAPI, client: TestClient, headers: dict[Role, dict[str, str]]
) -> None:
    """Every route x (no token + every role): 401/403 iff the role is not admitted."""
    checked = 0
    table: list[str] = []
    for method, path, _route in _api_routes(app):
        roles = POLICY[(method, path)]
        url = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES[m.group(1)], path)
        callers: list[tuple[str, dict[str, str]]] = [("none", {})]
        callers += [(role.value, headers[role]) for role in Role]
        row = []
        for name, hdrs in callers:
            response = client.request(method, url, headers=hdrs)
            code = response.status_code
            if roles is PUBLIC:
                assert code not in (401, 403) or path.endswith("/auth/token"), (method, path)
            elif name == "none":
                assert code == 401, (method, path, code)
                assert response.headers["www-authenticate"] == "Bearer"
            elif Role(name) in roles:
                assert code in (200, 404, 422), (method, path, name, code, response.text)
            else:
                assert code == 403, (method, path, name, code)
            row.append(f"{name}={code}")
            checked += 1
        table.append(f"{method} {path}: " + " ".join(row))
    assert checked == len(POLICY) * (len(Role) + 1)


def test_health_needs_no_token(client: TestClient) -> None:
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_login_failures_are_401_and_indistinguishable(engine: Engine, client: TestClient) -> None:
    _add_user(engine, "carol", Role.officer)
    wrong = client.post("/api/v1/auth/token", data={"username": "carol", "password": "nope-nope"})
    unknown = client.post("/api/v1/auth/token", data={"username": "dave", "password": PASSWORD})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "incorrect username or password"}
    missing = client.post("/api/v1/auth/token", data={"username": "carol"})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "password"]


def _token(claims: dict[str, Any], key: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def test_bad_tokens_are_401(engine: Engine, client: TestClient) -> None:
    user = _add_user(engine, "erin", Role.analyst)
    now = datetime.now(UTC)
    good = {
        "sub": str(user.id),
        "name": "erin",
        "iss": token_issuer("local"),
        "aud": "lantern-api",
        "iat": now,
        "exp": now + timedelta(minutes=5),
    }
    valid = _token(good)
    header, _payload, sig = valid.split(".")
    tampered_payload = _token(good | {"sub": str(user.id + 1)}).split(".")[1]
    bad = {
        "expired": _token(good | {"iat": now - timedelta(hours=2), "exp": now - timedelta(1)}),
        "tampered": f"{header}.{tampered_payload}.{sig}",
        "wrong-key": _token(good, key=SECRET[::-1]),
        "hs512": _token(good, algorithm="HS512"),
        "alg-none": jwt.encode(good, None, algorithm="none"),
        "unknown-user": _token(good | {"sub": "424242"}),
        # Another hub's user number N is not this hub's user number N.
        "other-hub": _token(good | {"iss": token_issuer("region-b")}),
        "hubless-issuer": _token(good | {"iss": "lantern-hub"}),
        "other-username": _token(good | {"name": "mallory"}),
        "no-username": _token({k: v for k, v in good.items() if k != "name"}),
        "garbage": "abc",
    }
    assert (
        client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {valid}"}).json()[
            "username"
        ]
        == "erin"
    )
    for name, token in bad.items():
        response = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, name
    basic = client.get("/api/v1/auth/me", headers={"Authorization": "Basic ZXJpbjp4"})
    assert basic.status_code == 401


def test_disabling_a_user_revokes_their_tokens_at_once(
    engine: Engine, client: TestClient, headers: dict[Role, dict[str, str]]
) -> None:
    victim = _add_user(engine, "frank", Role.officer)
    frank = _login(client, "frank")
    assert client.get("/api/v1/devices", headers=frank).status_code == 200
    admin = headers[Role.admin]
    response = client.post(f"/api/v1/users/{victim.id}/disable", headers=admin)
    assert response.status_code == 200 and response.json()["disabled"] is True
    assert response.json()["disabled_at"] is not None
    assert client.get("/api/v1/devices", headers=frank).status_code == 401
    login = client.post("/api/v1/auth/token", data={"username": "frank", "password": PASSWORD})
    assert login.status_code == 401
    # Disabling again is harmless; an admin may not lock themselves out.
    assert client.post(f"/api/v1/users/{victim.id}/disable", headers=admin).status_code == 200
    me = client.get("/api/v1/auth/me", headers=admin).json()
    assert client.post(f"/api/v1/users/{me['id']}/disable", headers=admin).status_code == 409


def test_user_administration(client: TestClient, headers: dict[Role, dict[str, str]]) -> None:
    admin = headers[Role.admin]
    body = {"username": "grace", "role": "caseworker", "password": PASSWORD}
    created = client.post("/api/v1/users", json=body, headers=admin)
    assert created.status_code == 201, created.text
    public = created.json()
    assert public["username"] == "grace" and public["role"] == "caseworker"
    assert "password" not in public and "password_hash" not in public
    assert client.post("/api/v1/users", json=body, headers=admin).status_code == 409
    got = client.get(f"/api/v1/users/{public['id']}", headers=admin)
    assert got.json() == public
    assert client.get("/api/v1/users/999999", headers=admin).status_code == 404
    assert client.get("/api/v1/users/abc", headers=admin).status_code == 422

    short = client.post("/api/v1/users", json=body | {"password": "short"}, headers=admin)
    assert short.status_code == 422
    assert short.json()["detail"][0]["loc"] == ["body", "password"]
    bad_role = client.post("/api/v1/users", json=body | {"role": "root"}, headers=admin)
    assert bad_role.json()["detail"][0]["loc"] == ["body", "role"]
    extra = client.post("/api/v1/users", json=body | {"is_admin": True}, headers=admin)
    assert extra.status_code == 422
    assert extra.json()["detail"][0]["loc"] == ["body", "is_admin"]

    listed = client.get("/api/v1/users", params={"limit": 3, "offset": 2}, headers=admin).json()
    assert listed["total"] == 7 and listed["limit"] == 3 and listed["offset"] == 2
    assert len(listed["items"]) == 3
    ids = [u["id"] for u in listed["items"]]
    assert ids == sorted(ids)
    only = client.get("/api/v1/users", params={"role": "caseworker"}, headers=admin).json()
    assert {u["username"] for u in only["items"]} == {"caseworker-user", "grace"}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"status": "asleep"}, "status"),
    ],
)
def test_list_parameters_are_validated_with_a_field_path(
    client: TestClient,
    headers: dict[Role, dict[str, str]],
    params: dict[str, Any],
    field: str,
) -> None:
    response = client.get("/api/v1/devices", params=params, headers=headers[Role.officer])
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", field]


def test_devices_list_filters_and_detail(
    engine: Engine, client: TestClient, headers: dict[Role, dict[str, str]]
) -> None:
    with write_session(engine) as session:
        session.add_all([Site(site_id="north", name="North"), Site(site_id="south", name="South")])
        session.flush()
        for i in range(7):
            session.add(
                Device(
                    device_id=f"cam-{i:02d}",
                    site_id="north" if i < 5 else "south",
                    model="cam",
                    status="online" if i % 2 == 0 else "offline",
                )
            )
    officer = headers[Role.officer]
    everything = client.get("/api/v1/devices", headers=officer).json()
    assert everything["total"] == 7 and everything["limit"] == 50 and everything["offset"] == 0
    assert [d["device_id"] for d in everything["items"]] == [f"cam-{i:02d}" for i in range(7)]
    north_online = client.get(
        "/api/v1/devices", params={"site_id": "north", "status": "online"}, headers=officer
    ).json()
    assert [d["device_id"] for d in north_online["items"]] == ["cam-00", "cam-02", "cam-04"]
    page = client.get("/api/v1/devices", params={"limit": 2, "offset": 6}, headers=officer)
    assert page.json()["total"] == 7 and len(page.json()["items"]) == 1
    detail = client.get("/api/v1/devices/cam-05", headers=headers[Role.analyst])
    assert detail.status_code == 200 and detail.json()["site_id"] == "south"
    assert client.get("/api/v1/devices/nope", headers=officer).status_code == 404


def test_audit_is_readable_and_verifiable_but_not_writable(
    client: TestClient, headers: dict[Role, dict[str, str]]
) -> None:
    auditor = headers[Role.auditor]
    rows = client.get("/api/v1/audit", params={"limit": 500}, headers=auditor).json()
    # Six users created and six logins by the fixture.
    assert rows["total"] == 12
    assert [r["seq"] for r in rows["items"]] == list(range(1, 13))
    logins = client.get("/api/v1/audit", params={"action": "auth.login"}, headers=auditor).json()
    assert logins["total"] == 6 and {r["result"] for r in logins["items"]} == {"ok"}
    verified = client.get("/api/v1/audit/verify", headers=auditor).json()
    assert verified["ok"] is True and verified["rows"] == 12
    assert verified["head_hash"] == rows["items"][-1]["hash"]
    for path in ("/api/v1/audit", "/api/v1/audit/verify", "/api/v1/audit/1"):
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            response = client.request(method, path, headers=headers[Role.admin], json={})
            assert response.status_code in (404, 405), (method, path)
            if path != "/api/v1/audit/1":
                assert response.status_code == 405, (method, path)


def test_openapi_document(app: FastAPI, client: TestClient) -> None:
    doc = client.get("/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert documented == set(POLICY)
    scheme = doc["components"]["securitySchemes"]["OAuth2PasswordBearer"]
    assert scheme["flows"]["password"]["tokenUrl"] == "/api/v1/auth/token"
    for (method, path), roles in POLICY.items():
        op = doc["paths"][path][method.lower()]
        if roles is PUBLIC:
            assert "security" not in op and "x-lantern-roles" not in op
        else:
            assert op["security"] == [{"OAuth2PasswordBearer": []}]
            assert op["x-lantern-roles"] == sorted(r.value for r in roles)
    devices = doc["paths"]["/api/v1/devices"]["get"]
    names = {p["name"] for p in devices["parameters"]}
    assert names == {"limit", "offset", "site_id", "status"}
    limit = next(p for p in devices["parameters"] if p["name"] == "limit")
    assert limit["schema"]["minimum"] == 1 and limit["schema"]["maximum"] == 500
    token_body = doc["paths"]["/api/v1/auth/token"]["post"]["requestBody"]
    assert "application/x-www-form-urlencoded" in token_body["content"]
    assert client.get("/api/v1/docs").status_code == 200


def test_issued_token_expires(engine: Engine, app: FastAPI, client: TestClient) -> None:
    user = _add_user(engine, "heidi", Role.auditor)
    old = issue_token(
        SECRET, user, hub_id="local", ttl=timedelta(minutes=1), now=datetime.now(UTC) - timedelta(1)
    )
    response = client.get("/api/v1/audit", headers={"Authorization": f"Bearer {old}"})
    assert response.status_code == 401


def test_an_undecodable_body_is_422_at_body(
    client: TestClient, headers: dict[Role, dict[str, str]]
) -> None:
    response = client.post(
        "/api/v1/users",
        content=b"\x80\x81",  # not UTF-8: FastAPI itself would answer 400
        headers=headers[Role.admin] | {"Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body"]


def test_ids_beyond_bigint_are_422_not_a_server_error(
    client: TestClient, headers: dict[Role, dict[str, str]]
) -> None:
    response = client.get("/api/v1/users/10648412277694747639808", headers=headers[Role.admin])
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["path", "user_id"]
