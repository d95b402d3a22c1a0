"""Sites and devices through the API (hub/api/routes/sites.py, devices.py), on SQLite
and PostgreSQL: sites, device registration with its one-time secret, credential
rotation, desired vs applied configuration. Publishing to a real broker is in
``test_configpush.py``; here no publisher is set, so pushes stay pending."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from devices.firmware import config_sha256, packaged_config_dir
from devices.protocol import DeviceState, StateBody, decode, encode, new_boot_id, state_topic
from hub.api import api_routes, create_app
from hub.auth import Role
from hub.credentials import verify_api_secret
from hub.db.engine import write_session
from hub.db.models import AuditEntry, Credential, Device
from hub.db.repositories import apply_device_state
from hub.provision_cli import API_KID, CREDENTIAL_KIND
from hub.settings import HubSettings
from tests.hub import policy_devices
from tests.hub.test_api import SECRET, _add_user, _login

SITE = "north-wing"
MODEL = "lantern-ankle-a1"


def config_copy(folder: Path) -> Path:
    """A private copy of the packaged firmware configuration folder."""
    return Path(
        shutil.copytree(packaged_config_dir(), folder, ignore=shutil.ignore_patterns("*.py"))
    )


def make_app(engine: Engine, config_dir: Path) -> FastAPI:
    url = engine.url.render_as_string(hide_password=False)
    settings = HubSettings(jwt_secret=SECRET, database_url=url, config_dir=config_dir)  # type: ignore[arg-type]
    return create_app(settings, engine)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return config_copy(tmp_path / "firmware")


@pytest.fixture
def client(engine: Engine, config_dir: Path) -> Iterator[TestClient]:
    with TestClient(make_app(engine, config_dir)) as test_client:
        yield test_client


@pytest.fixture
def headers(engine: Engine, client: TestClient) -> dict[Role, dict[str, str]]:
    out = {}
    for role in Role:
        _add_user(engine, f"{role.value}-user", role)
        out[role] = _login(client, f"{role.value}-user")
    return out


@pytest.fixture
def admin(headers: dict[Role, dict[str, str]]) -> dict[str, str]:
    return headers[Role.admin]


def make_site(client: TestClient, admin: dict[str, str], site_id: str = SITE) -> None:
    response = client.post(
        "/api/v1/sites", json={"site_id": site_id, "name": "North wing"}, headers=admin
    )
    assert response.status_code == 201, response.text


def register(
    client: TestClient, admin: dict[str, str], device_id: str, **extra: Any
) -> dict[str, Any]:
    body = {"device_id": device_id, "model": MODEL, "site_id": SITE, **extra}
    response = client.post("/api/v1/devices", json=body, headers=admin)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def api_hash(engine: Engine, device_id: str) -> str:
    with Session(engine) as session:
        value = session.scalar(
            select(Credential.secret_hash).where(
                Credential.device_id == device_id,
                Credential.kind == CREDENTIAL_KIND,
                Credential.kid == API_KID,
            )
        )
    assert value is not None
    return value


def audit_actions(engine: Engine) -> list[tuple[str, str | None, str]]:
    with Session(engine) as session:
        rows = session.execute(
            select(AuditEntry.action, AuditEntry.target, AuditEntry.actor).order_by(AuditEntry.seq)
        )
        return [(a, t, actor) for a, t, actor in rows]


def locs(response: Any) -> list[list[Any]]:
    return [error["loc"] for error in response.json()["detail"]]


# -- access -----------------------------------------------------------------------------


def test_role_matrix_of_these_routes(
    engine: Engine, client: TestClient, headers: dict[Role, dict[str, str]]
) -> None:
    """Each of these routes: no token 401, an admitted role 200/404/422, others 403."""
    mine = {
        (method, path): route
        for method, path, route in api_routes(client.app)  # type: ignore[arg-type]
        if (method, path) in policy_devices.POLICY
    }
    assert set(mine) == set(policy_devices.POLICY)
    for method, path in mine:
        url = re.sub(r"\{(\w+)\}", lambda m: policy_devices.PATH_VALUES[m.group(1)], path)
        assert client.request(method, url).status_code == 401, (method, path)
        for role in Role:
            code = client.request(method, url, headers=headers[role]).status_code
            roles = policy_devices.POLICY[(method, path)]
            assert roles is not None
            expected = {200, 404, 422} if role in roles else {403}
            assert code in expected, (method, path, role, code)


# -- sites ------------------------------------------------------------------------------


def test_sites_create_list_read(
    engine: Engine, client: TestClient, headers: dict[Role, dict[str, str]]
) -> None:
    admin = headers[Role.admin]
    created = client.post(
        "/api/v1/sites",
        json={"site_id": "hmp-b", "name": " HMP B ", "timezone": "Pacific/Auckland"},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    assert created.json()["name"] == "HMP B" and created.json()["timezone"] == "Pacific/Auckland"
    make_site(client, admin, "hmp-a")
    again = client.post("/api/v1/sites", json={"site_id": "hmp-a", "name": "x"}, headers=admin)
    assert again.status_code == 409
    page = client.get("/api/v1/sites", params={"limit": 1}, headers=headers[Role.analyst])
    assert page.status_code == 200
    assert page.json()["total"] == 2 and [s["site_id"] for s in page.json()["items"]] == ["hmp-a"]
    one = client.get("/api/v1/sites/hmp-b", headers=headers[Role.officer])
    assert one.status_code == 200 and one.json()["timezone"] == "Pacific/Auckland"
    assert client.get("/api/v1/sites/hmp-c", headers=admin).status_code == 404
    assert (
        client.post(
            "/api/v1/sites", json={"site_id": "hmp-d", "name": "x"}, headers=headers[Role.officer]
        ).status_code
        == 403
    )
    assert ("site.create", "site:hmp-b", "admin-user") in audit_actions(engine)


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"site_id": "Bad Id", "name": "x"}, ["body", "site_id"]),
        ({"site_id": "ok-id", "name": "x", "timezone": "Mars/Olympus"}, ["body", "timezone"]),
        ({"site_id": "ok-id", "name": "x", "timezone": "../../etc/passwd"}, ["body", "timezone"]),
        ({"site_id": "ok-id", "name": "   "}, ["body", "name"]),
        ({"site_id": "ok-id"}, ["body", "name"]),
    ],
)
def test_bad_sites_are_422_with_the_field(
    client: TestClient, admin: dict[str, str], body: dict[str, Any], loc: list[str]
) -> None:
    response = client.post("/api/v1/sites", json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert loc in locs(response)


# -- registration -----------------------------------------------------------------------


def test_register_shows_the_secret_once_and_renders_the_config(
    engine: Engine, client: TestClient, headers: dict[Role, dict[str, str]]
) -> None:
    admin = headers[Role.admin]
    make_site(client, admin)
    result = register(client, admin, "ankle-0001")
    secret = result["secret"]
    assert result["broker_username"] == "ankle-0001"
    assert len(secret) >= 43 and verify_api_secret(secret, api_hash(engine, "ankle-0001"))
    device = result["device"]
    assert device["site_id"] == SITE and device["model"] == MODEL and device["status"] == "unknown"
    assert device["desired_config_version"] == 1
    config = result["config"]
    assert config["push"] == "pending_push"  # no publisher in this app
    assert config["desired_version"] == 1 and config["applied_version"] is None
    assert config["desired"]["sha256"] == config_sha256(config["desired"]["config"])
    assert config["desired"]["config"]["type"] == "wearable"
    # The secret is not shown again, and is not stored anywhere in clear.
    for path in ("/api/v1/devices/ankle-0001", "/api/v1/devices/ankle-0001/config"):
        assert secret not in client.get(path, headers=admin).text
    with Session(engine) as session:
        stored = session.scalars(select(Credential.secret_hash)).all()
        assert all(secret not in (value or "") for value in stored)
    actions = audit_actions(engine)
    assert ("device.provision", "device:ankle-0001", "admin-user") in actions
    assert ("device.config_push", "device:ankle-0001", "admin-user") in actions
    again = client.post(
        "/api/v1/devices",
        json={"device_id": "ankle-0001", "model": MODEL, "site_id": SITE},
        headers=admin,
    )
    assert again.status_code == 409


@pytest.mark.parametrize(
    ("changes", "loc"),
    [
        ({"device_id": "Bad ID"}, ["body", "device_id"]),
        ({"model": "lantern-toaster"}, ["body", "model"]),
        ({"site_id": "no-such-site"}, ["body", "site_id"]),
        ({"profile": "no_such_profile"}, ["body", "profile"]),
        ({"profile": "fixed_camera"}, ["body", "profile"]),  # a camera profile for an ankle tag
        ({"extra": 1}, ["body", "extra"]),
    ],
)
def test_bad_registrations_are_422_and_leave_nothing(
    engine: Engine,
    client: TestClient,
    admin: dict[str, str],
    changes: dict[str, Any],
    loc: list[str],
) -> None:
    make_site(client, admin)
    body = {"device_id": "ankle-0002", "model": MODEL, "site_id": SITE, **changes}
    response = client.post("/api/v1/devices", json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert loc in locs(response), response.text
    with Session(engine) as session:
        assert session.scalar(select(Device.device_id)) is None
        assert session.scalar(select(Credential.id)) is None


def test_register_with_a_profile_and_a_broken_device_file(
    engine: Engine, client: TestClient, admin: dict[str, str], config_dir: Path
) -> None:
    make_site(client, admin)
    result = register(client, admin, "wrist-0001", model="lantern-wrist-w1", profile="wristband")
    assert result["device"]["profile"] == "wristband"
    # A device file that breaks the profile's rules: refused, pointing into the file.
    (config_dir / "devices" / "ankle-0003.yaml").write_text(
        "device_id: ankle-0003\nmodel: lantern-ankle-a1\nsite: north-wing\n"
        "overrides:\n  report_interval_s:\n    in_violation: 999\n",
        encoding="utf-8",
    )
    response = client.post(
        "/api/v1/devices",
        json={"device_id": "ankle-0003", "model": MODEL, "site_id": SITE},
        headers=admin,
    )
    assert response.status_code == 422, response.text
    assert [
        "config",
        "devices/ankle-0003.yaml",
        "overrides",
        "report_interval_s",
        "in_violation",
    ] in locs(response)
    # A device file for another model than the one registered is refused too.
    (config_dir / "devices" / "ankle-0004.yaml").write_text(
        "device_id: ankle-0004\nmodel: lantern-wrist-w1\nsite: north-wing\n", encoding="utf-8"
    )
    response = client.post(
        "/api/v1/devices",
        json={"device_id": "ankle-0004", "model": MODEL, "site_id": SITE},
        headers=admin,
    )
    assert response.status_code == 422
    assert ["config", "devices/ankle-0004.yaml", "model"] in locs(response)


# -- credentials ------------------------------------------------------------------------


def test_rotation_replaces_the_secret_at_once(
    engine: Engine, client: TestClient, headers: dict[Role, dict[str, str]]
) -> None:
    admin = headers[Role.admin]
    make_site(client, admin)
    old = register(client, admin, "ankle-0005")["secret"]
    rotated = client.post("/api/v1/devices/ankle-0005/credentials/rotate", headers=admin)
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    assert body["rotated"] is True and body["broker_username"] == "ankle-0005"
    new = body["secret"]
    assert new != old
    stored = api_hash(engine, "ankle-0005")
    assert verify_api_secret(new, stored) and not verify_api_secret(old, stored)
    assert ("device.rotate_credential", "device:ankle-0005", "admin-user") in audit_actions(
        engine
    )
    assert (
        client.post(
            "/api/v1/devices/ankle-0005/credentials/rotate", headers=headers[Role.officer]
        ).status_code
        == 403
    )
    assert (
        client.post("/api/v1/devices/nope-0001/credentials/rotate", headers=admin).status_code
        == 404
    )


# -- configuration ----------------------------------------------------------------------


def apply_state(engine: Engine, device_id: str, **body: Any) -> None:
    state = DeviceState(
        device_id=device_id,
        boot_id=new_boot_id(),
        sent_at=datetime.now(UTC),
        body=StateBody.model_validate({"status": "online", "fw": "1.0.0", **body}),
    )
    decoded = decode(state_topic(device_id), encode(state))
    with write_session(engine) as session:
        assert apply_device_state(session, decoded) is not None


def test_config_versions_grow_only_with_content_and_applied_is_reported(
    engine: Engine, client: TestClient, headers: dict[Role, dict[str, str]], config_dir: Path
) -> None:
    admin = headers[Role.admin]
    make_site(client, admin)
    first = register(client, admin, "ankle-0006")["config"]["desired"]
    url = "/api/v1/devices/ankle-0006/config"
    same = client.post(url, headers=admin)
    assert same.status_code == 200, same.text
    assert same.json()["desired"] == first and same.json()["push"] == "pending_push"
    (config_dir / "devices" / "ankle-0006.yaml").write_text(
        "device_id: ankle-0006\nmodel: lantern-ankle-a1\nsite: north-wing\n"
        "overrides:\n  heartbeat_s: 120\n",
        encoding="utf-8",
    )
    changed = client.post(url, headers=admin).json()
    assert changed["desired_version"] == 2
    assert changed["desired"]["config"]["heartbeat_s"] == 120
    assert changed["in_sync"] is False
    # A broken edit is refused and the stored version stays.
    (config_dir / "devices" / "ankle-0006.yaml").write_text(
        "device_id: ankle-0006\nmodel: lantern-ankle-a1\nsite: north-wing\n"
        "overrides:\n  heartbeat_s: 1\n",
        encoding="utf-8",
    )
    broken = client.post(url, headers=admin)
    assert broken.status_code == 422
    assert ["config", "devices/ankle-0006.yaml", "overrides", "heartbeat_s"] in locs(broken)
    # The device reports the version it runs: first the old one and a refusal...
    apply_state(
        engine,
        "ankle-0006",
        config_version=1,
        config_sha256=first["sha256"],
        config_error="version 2 refused: test",
    )
    read = client.get(url, headers=headers[Role.officer])
    assert read.status_code == 200
    view = read.json()
    assert (view["desired_version"], view["applied_version"]) == (2, 1)
    assert view["applied_sha256"] == first["sha256"]
    assert view["config_error"] == "version 2 refused: test" and view["in_sync"] is False
    assert view["push"] == "none"
    # ...then the new one.
    apply_state(engine, "ankle-0006", config_version=2, config_sha256=changed["desired"]["sha256"])
    view = client.get(url, headers=admin).json()
    assert view["applied_version"] == 2 and view["in_sync"] is True and view["config_error"] is None
    assert client.get(url, headers=headers[Role.analyst]).status_code == 403
    assert client.get("/api/v1/devices/nope-0001/config", headers=admin).status_code == 404
    assert client.post("/api/v1/devices/nope-0001/config", headers=admin).status_code == 404
    listed = client.get("/api/v1/devices", headers=headers[Role.analyst]).json()
    assert [
        (d["applied_config_version"], d["desired_config_version"]) for d in listed["items"]
    ] == [(2, 2)]
