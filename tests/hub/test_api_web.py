"""The command map's routes on SQLite and PostgreSQL: the page and its assets (no token,
nothing from elsewhere), the map settings, and site maps (validated, audited)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from devices.simulation.site import demo_site_path
from hub.api import create_app
from hub.api.routes.sites import MAX_MAP_BYTES, MAX_MAP_FEATURES
from hub.auth import Role
from hub.db.engine import write_session
from hub.db.models import AuditEntry, Site
from tests.hub.test_api import _add_user, _login, _settings

SITE = "north-yard"
BUILDING = {
    "type": "Polygon",
    "coordinates": [
        [[-0.121, 51.501], [-0.119, 51.501], [-0.119, 51.502], [-0.121, 51.502], [-0.121, 51.501]]
    ],
}
MAP: dict[str, Any] = {
    "type": "FeatureCollection",
    "lantern": {"note": "a foreign member, not kept"},
    "features": [
        {"type": "Feature", "id": "b1", "geometry": BUILDING,
         "properties": {"role": "building", "name": "Block A"}},
        {"type": "Feature", "geometry": {"type": "LineString",
         "coordinates": [[-0.122, 51.500], [-0.118, 51.503]]}, "properties": {"role": "path"}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [-0.12, 51.5015]},
         "properties": None},
    ],
}  # fmt: skip


@pytest.fixture
def app(engine: Engine) -> FastAPI:
    with write_session(engine) as session:
        session.add(Site(site_id=SITE, name="North yard"))
    return create_app(_settings(engine), engine)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def users(engine: Engine, client: TestClient) -> dict[Role, dict[str, str]]:
    out = {}
    for role in (Role.admin, Role.officer, Role.analyst, Role.caseworker):
        _add_user(engine, f"web-{role.value}", role)
        out[role] = _login(client, f"web-{role.value}")
    return out


# -- the page ------------------------------------------------------------------------------


def test_the_page_and_its_assets_need_no_token_and_load_nothing_from_elsewhere(
    client: TestClient,
) -> None:
    page = client.get("/map")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    html = page.text
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert set(refs) == {"/map/map.css", "/map/app.js", "#panels", "data:,"}, refs
    for asset, media in (("app.js", "text/javascript"), ("map.css", "text/css")):
        response = client.get(f"/map/{asset}")
        assert response.status_code == 200, asset
        assert response.headers["content-type"].startswith(media)
        assert "http://" not in response.text and "https://" not in response.text, asset
    # The page's own script talks only to this hub's API and feed.
    script = client.get("/map/app.js").text
    assert 'const API = "/api/v1"' in script
    for name in ("nope.js", "index.html", "..%2Fapp.py", "__init__.py"):
        assert client.get(f"/map/{name}").status_code == 404, name


def test_map_config_is_for_any_signed_in_role_and_offline_by_default(
    client: TestClient, users: dict[Role, dict[str, str]]
) -> None:
    assert client.get("/api/v1/map/config").status_code == 401
    for headers in users.values():
        response = client.get("/api/v1/map/config", headers=headers)
        assert response.status_code == 200 and response.json() == {"tile_url": None}
    assert "img-src 'self' data: blob:;" in client.get("/map").headers["content-security-policy"]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("https://tiles.example.org/{z}/{x}/{y}.png", "https://tiles.example.org/{z}/{x}/{y}.png"),
        ("https://tiles.example.org/{z}/{x}.png", None),  # no {y}
        ("file:///srv/tiles/{z}/{x}/{y}.png", None),  # not http(s)
    ],
)
def test_a_tile_server_is_offered_only_when_its_template_is_usable(
    engine: Engine, template: str, expected: str | None
) -> None:
    settings = _settings(engine).model_copy(update={"map_tile_url": template})
    with TestClient(create_app(settings, engine)) as client:
        _add_user(engine, "tiles-analyst", Role.analyst)
        headers = _login(client, "tiles-analyst")
        assert client.get("/api/v1/map/config", headers=headers).json() == {"tile_url": expected}
        csp = client.get("/map").headers["content-security-policy"]
        assert ("https://tiles.example.org" in csp) == (expected is not None), csp


# -- site maps -----------------------------------------------------------------------------


def test_an_admin_puts_a_site_map_readers_get_it_and_the_change_is_audited(
    engine: Engine, client: TestClient, users: dict[Role, dict[str, str]]
) -> None:
    url = f"/api/v1/sites/{SITE}/map"
    empty = client.get(url, headers=users[Role.officer])
    assert empty.status_code == 200
    assert empty.json() == {"type": "FeatureCollection", "site_id": SITE, "features": []}

    put = client.put(url, json=MAP, headers=users[Role.admin])
    assert put.status_code == 200, put.text
    for role in (Role.admin, Role.officer, Role.analyst):
        got = client.get(url, headers=users[role]).json()
        assert got == put.json()
    assert "lantern" not in got
    assert [f.get("id") for f in got["features"]] == ["b1", None, None]
    assert got["features"][0] == {
        "type": "Feature", "id": "b1", "geometry": BUILDING,
        "properties": {"role": "building", "name": "Block A"},
    }  # fmt: skip
    assert client.get(url, headers=users[Role.caseworker]).status_code == 403
    assert client.put(url, json=MAP, headers=users[Role.officer]).status_code == 403
    elsewhere = client.put("/api/v1/sites/elsewhere/map", json=MAP, headers=users[Role.admin])
    assert elsewhere.status_code == 404
    with Session(engine) as session:
        rows = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "site.map.update")
        ).all()
        assert [(r.actor, r.target, r.result) for r in rows] == [
            ("web-admin", f"site:{SITE}", "features=3")
        ]
        site = session.get(Site, SITE)
        assert site is not None and site.map is not None and len(site.map["features"]) == 3

    cleared = client.put(url, json={"type": "FeatureCollection", "features": []},
                         headers=users[Role.admin])  # fmt: skip
    assert cleared.status_code == 200 and cleared.json()["features"] == []


def test_the_demo_site_files_are_accepted_as_site_maps(
    client: TestClient, users: dict[Role, dict[str, str]]
) -> None:
    for site_id in ("kereru-flats", "totara-downs"):
        collection = json.loads(demo_site_path(site_id).read_text())
        url = f"/api/v1/sites/{SITE}/map"
        response = client.put(url, json=collection, headers=users[Role.admin])
        assert response.status_code == 200, (site_id, response.text)
        assert len(response.json()["features"]) == len(collection["features"])


def _feature(geometry: dict[str, Any], **properties: Any) -> dict[str, Any]:
    return {"type": "Feature", "geometry": geometry, "properties": properties}


BOWTIE = {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]}
OPEN_RING = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}


@pytest.mark.parametrize(
    ("body", "loc", "reason"),
    [
        ({"type": "Feature", "features": []}, ["body", "type"], "FeatureCollection"),
        ({"type": "FeatureCollection"}, ["body", "features"], "required"),
        (
            {"type": "FeatureCollection", "features": [_feature(BOWTIE)]},
            ["body", "features", 0, "geometry"],
            "Self-intersection",
        ),
        (
            {"type": "FeatureCollection", "features": [_feature(BUILDING), _feature(OPEN_RING)]},
            ["body", "features", 1, "geometry"],
            "malformed Polygon",
        ),
        (
            {"type": "FeatureCollection",
             "features": [_feature({"type": "Point", "coordinates": [10.0, 95.0]})]},
            ["body", "features", 0, "geometry"],
            "outside",
        ),
        (
            {"type": "FeatureCollection", "features": [_feature(
                {"type": "GeometryCollection", "geometries": []})]},
            ["body", "features", 0, "geometry"],
            "geometry type must be one of",
        ),
        (
            {"type": "FeatureCollection",
             "features": [_feature({"type": "LineString", "coordinates": [[0, 0]]})]},
            ["body", "features", 0, "geometry"],
            "LineString",
        ),
        (
            {"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": BUILDING,
                                                        "style": "red"}]},
            ["body", "features", 0, "style"],
            "Extra inputs",
        ),
        (
            {"type": "FeatureCollection", "features": [
                _feature({"type": "Point", "coordinates": [0.0, float(i % 80)]})
                for i in range(MAX_MAP_FEATURES + 1)]},
            ["body", "features"],
            f"at most {MAX_MAP_FEATURES}",
        ),
        (
            {"type": "FeatureCollection",
             "features": [_feature(BUILDING, note="x" * (MAX_MAP_BYTES + 1))]},
            ["body"],
            f"at most {MAX_MAP_BYTES}",
        ),
    ],
    ids=[
        "not-a-collection", "no-features", "self-intersecting", "open-ring", "latitude-95",
        "geometry-collection", "one-point-line", "unknown-member", "too-many-features",
        "too-many-bytes",
    ],
)  # fmt: skip
def test_a_bad_site_map_is_422_with_the_field_path_and_the_reason(
    engine: Engine,
    client: TestClient,
    users: dict[Role, dict[str, str]],
    body: dict[str, Any],
    loc: list[Any],
    reason: str,
) -> None:
    url = f"/api/v1/sites/{SITE}/map"
    assert client.put(url, json=MAP, headers=users[Role.admin]).status_code == 200
    response = client.put(url, json=body, headers=users[Role.admin])
    assert response.status_code == 422, response.text
    error = response.json()["detail"][0]
    assert error["loc"] == loc, error
    assert reason in error["msg"], error
    # The map in place is untouched.
    assert len(client.get(url, headers=users[Role.analyst]).json()["features"]) == 3
