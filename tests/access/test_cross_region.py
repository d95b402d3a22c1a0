"""Regions cannot read each other's cases: two real hubs (``lantern hub serve --http``)
on loopback ports, each with its own SQLite database, JWT key, signing key and
federation file, checked over HTTP.

Each hub holds a found person (a reunion case with a name, case id and reporter that
must stay at home). A requester of region A asks B for a match, and a caseworker of B
asks A, so each hub has cases, match requests and a review queue to protect. Then:

- a token of region A (requester, caseworker) is refused with 401 by every route of B
  that shows cases, match requests or the review queue, and the other way round,
  while B's own caseworker reads the same URLs;
- the only route one hub opens to another without a user token is the signed search,
  whose answer carries candidate references and scores, never the case; A's hub
  signature opens no other route of B;
- within a hub, a requester sees only their own match requests (the design of
  ``hub/api/routes/match_requests.py``: ``_own`` and the list filter).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import numpy as np
import numpy.typing as npt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from devices.signing import private_key_from_b64
from hub.auth import TOKEN_AUDIENCE, Role, create_user, token_issuer
from hub.db.engine import make_engine, write_session
from hub.db.models import FaceTemplate, Person, ReunionCase
from hub.federation.signing import sign_message
from tests.access import evidence
from tests.edge.mqtt_helpers import PrivateBroker
from tests.hub.federation.helpers import DIM, MODEL, hub_app, make_keys, write_federation
from tests.hub.federation.test_three_hubs import FederatedHub
from tests.hub.test_serve import PASSWORD

SECRET_A = "region-A_key-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJKLMNOP-01"
SECRET_B = "region-B_key-9876543210-zyxwvutsrqponmlkjihgfedcba-PONMLKJIHGFEDCBA-02"
MAY_SEARCH_FOUND = {"missing_person": ["found"]}


class RegionHub(FederatedHub):
    """:class:`FederatedHub` with a JWT key of its own, as separate regions have."""

    def __init__(self, folder: Path, hub_id: str, broker_port: int, secret: str) -> None:
        super().__init__(folder, hub_id, broker_port)
        self.secret = secret

    def __enter__(self) -> RegionHub:
        return self

    def token(self, username: str) -> dict[str, str]:
        response = self.http.post(
            "/api/v1/auth/token", data={"username": username, "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}


@dataclass
class Region:
    """One hub with its people and the secrets of its case."""

    hub: RegionHub
    person_id: int
    vector: npt.NDArray[np.float32]
    secrets: tuple[str, ...]
    tokens: dict[str, dict[str, str]] = field(default_factory=dict)
    request_id: str = ""


def _unit(rng: np.random.Generator) -> npt.NDArray[np.float32]:
    v = rng.standard_normal(DIM).astype(np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32)


def _seed(
    engine: Engine, region: str, vector: npt.NDArray[np.float32]
) -> tuple[int, tuple[str, ...]]:
    """Users of every role and a found person with an open reunion case."""
    for role in (Role.requester, Role.caseworker, Role.auditor):
        create_user(
            engine, username=f"{region}-{role.value}", role=role, password=PASSWORD,
            actor="test", actor_role="cli",
        )  # fmt: skip
    create_user(
        engine, username=f"{region}-ruth", role=Role.requester, password=PASSWORD,
        actor="test", actor_role="cli",
    )  # fmt: skip
    name, case_id, reporter = (
        f"Secret Name of {region}",
        f"FP-{region}-SECRET",
        f"Shelter of {region}",
    )
    with write_session(engine) as session:
        person = Person(category="found", display_name=name, case_id=case_id)
        session.add(person)
        session.flush()
        session.add(
            FaceTemplate(
                person_id=person.id,
                model_id=MODEL,
                dim=DIM,
                embedding=np.asarray(vector, dtype="<f4").tobytes(),
            )
        )
        session.add(ReunionCase(person_id=person.id, reported_by=reporter, birth_year=1970))
        session.flush()
        person_id = person.id
    return person_id, (name, case_id, reporter)


def _match_request(
    hub: RegionHub, headers: dict[str, str], vector: npt.NDArray[np.float32], case_id: str
) -> dict[str, Any]:
    rng = np.random.default_rng(7)
    probe = vector + 0.05 * rng.standard_normal(DIM).astype(np.float32) / np.sqrt(DIM)
    probe = probe / np.linalg.norm(probe)
    body = {
        "case_id": case_id,
        "legal_basis": "missing-persons act s.4",
        "purpose": "missing_person",
        "model_id": MODEL,
        "templates": [probe.tolist()],
        "k": 5,
    }
    response = hub.http.post("/api/v1/match-requests", json=body, headers=headers)
    assert response.status_code == 201, response.text + hub.output()
    view: dict[str, Any] = response.json()
    return view


@pytest.fixture(scope="module")
def regions(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> Iterator[tuple[Region, Region]]:
    root = tmp_path_factory.mktemp("regions")
    rng = np.random.default_rng(2024)
    with (
        PrivateBroker(root / "broker") as broker,
        RegionHub(root / "a", "region-a", broker.port, SECRET_A) as hub_a,
        RegionHub(root / "b", "region-b", broker.port, SECRET_B) as hub_b,
    ):
        made: list[Region] = []
        for hub in (hub_a, hub_b):
            hub.data_dir.mkdir(parents=True)
            shutil.copy(sqlite_template, hub.data_dir / "lantern.db")
            engine = make_engine(hub.db_url)
            try:
                vector = _unit(rng)
                person_id, secrets = _seed(engine, hub.hub_id, vector)
            finally:
                engine.dispose()
            made.append(Region(hub, person_id, vector, secrets))
        a, b = made
        write_federation(
            hub_a.federation_file, "region-a", hub_a.key_file,
            [("region-b", hub_b.url, hub_b.public_key)], {"region-b": MAY_SEARCH_FOUND},
        )  # fmt: skip
        write_federation(
            hub_b.federation_file, "region-b", hub_b.key_file,
            [("region-a", hub_a.url, hub_a.public_key)], {"region-a": MAY_SEARCH_FOUND},
        )  # fmt: skip
        for hub in (hub_a, hub_b):
            hub.start()
        for hub in (hub_a, hub_b):
            hub.wait_healthy()
        for region in (a, b):
            name = region.hub.hub_id
            region.tokens = {
                who: region.hub.token(f"{name}-{who}")
                for who in ("requester", "caseworker", "auditor", "ruth")
            }
        # A's requester asks B (finds B's person); B's caseworker asks A (finds A's).
        a.request_id = _match_request(hub_a, a.tokens["requester"], b.vector, "MP-A-1")["id"]
        b.request_id = _match_request(hub_b, b.tokens["caseworker"], a.vector, "MP-B-1")["id"]
        yield a, b


def _protected_urls(home: Region, candidate_id: int) -> list[str]:
    """The URLs of ``home`` that show its cases, match requests and review queue."""
    return [
        "/api/v1/reunion/cases",
        f"/api/v1/reunion/cases/{home.person_id}",
        "/api/v1/match-requests",
        f"/api/v1/match-requests/{home.request_id}",
        "/api/v1/review",
        f"/api/v1/review/{candidate_id}",
        "/api/v1/persons",
        f"/api/v1/persons/{home.person_id}",
        "/api/v1/auth/me",
    ]


def _first_candidate(region: Region) -> int:
    queue = region.hub.http.get("/api/v1/review", headers=region.tokens["caseworker"])
    assert queue.status_code == 200, queue.text
    items = queue.json()["items"]
    assert items, "the review queue is empty: nothing to protect"
    candidate_id: int = items[0]["id"]
    return candidate_id


def test_a_token_of_one_region_is_refused_by_the_other(regions: tuple[Region, Region]) -> None:
    a, b = regions
    cells: dict[str, int] = {}
    for home, away in ((b, a), (a, b)):
        urls = _protected_urls(home, _first_candidate(home))
        # The owner's caseworker reads them (the request list is the caller's own:
        # B's caseworker made B's request; A's made none, so it is read by A's requester).
        for url in urls:
            owner = home.tokens["caseworker"]
            if "match-requests" in url and home is a:
                owner = home.tokens["requester"]
            if url.startswith("/api/v1/persons"):
                continue  # a caseworker reads persons of its categories; not the point here
            response = home.hub.http.get(url, headers=owner)
            assert response.status_code == 200, (url, response.text)
        for who in ("requester", "caseworker", "auditor"):
            token = away.tokens[who]
            assert away.hub.http.get("/api/v1/auth/me", headers=token).status_code == 200
            for url in urls:
                response = home.hub.http.get(url, headers=token)
                assert response.status_code == 401, (home.hub.hub_id, who, url, response.text)
                assert not any(secret in response.text for secret in home.secrets)
                key = f"{away.hub.hub_id}-{who}->{home.hub.hub_id}"
                cells[key] = cells.get(key, 0) + 1
    evidence.record(
        "cross_region",
        "foreign_tokens",
        {"requests_refused_401": sum(cells.values()), "per_token": cells},
    )


def test_peer_signed_routes_expose_no_case_lists(regions: tuple[Region, Region]) -> None:
    a, b = regions
    doc = b.hub.http.get("/api/v1/openapi.json").json()
    unguarded = sorted(
        f"{method.upper()} {path}"
        for path, operations in doc["paths"].items()
        for method, op in operations.items()
        if "security" not in op
    )
    assert unguarded == [
        "GET /api/v1/health",
        "POST /api/v1/auth/token",
        "POST /api/v1/federation/search",
    ]
    # What A's requester got from B: a reference and a score, no name, case or reporter.
    view = a.hub.http.get(f"/api/v1/match-requests/{a.request_id}", headers=a.tokens["requester"])
    assert view.status_code == 200, view.text
    (group,) = view.json()["candidate_groups"]
    refs = [(c["hub_id"], c["candidate_ref"]) for c in group["candidates"]]
    assert refs[0] == ("region-b", f"person:{b.person_id}")
    assert not any(secret in view.text for secret in b.secrets)
    # A's hub signature opens nothing but the search at B.
    key = private_key_from_b64(a.hub.key_file.read_text(encoding="ascii").strip())
    refused: dict[str, int] = {}
    for path in ("/api/v1/reunion/cases", "/api/v1/review", "/api/v1/match-requests"):
        signed = sign_message(
            key, method="GET", path=path, sender="region-a", audience="region-b", body=b""
        )
        response = b.hub.http.get(path, headers=signed)
        assert response.status_code == 401, (path, response.text)
        refused[path] = response.status_code
    # The search route with a user token of B's own caseworker and no peer signature
    # is refused: no user token opens the peer route.
    bare = b.hub.http.post(
        "/api/v1/federation/search", content=b"{}", headers=b.tokens["caseworker"]
    )
    assert bare.status_code in (401, 422), bare.text
    evidence.record(
        "cross_region",
        "peer_route",
        {
            "unguarded_operations_of_b": unguarded,
            "candidate_fields_seen_by_a": sorted(group["candidates"][0]),
            "b_case_secrets_in_a_view": 0,
            "signed_get_refused": refused,
            "search_with_user_token_only": bare.status_code,
        },
    )


def test_within_a_region_a_requester_sees_only_their_own_requests(
    regions: tuple[Region, Region],
) -> None:
    a, b = regions
    rita, ruth = a.tokens["requester"], a.tokens["ruth"]
    http = a.hub.http
    mine = http.get("/api/v1/match-requests", headers=rita).json()
    assert [item["id"] for item in mine["items"]] == [a.request_id]
    theirs = http.get("/api/v1/match-requests", headers=ruth).json()
    assert theirs["total"] == 0 and theirs["items"] == []
    other = http.get(f"/api/v1/match-requests/{a.request_id}", headers=ruth)
    assert other.status_code == 404
    retry = http.post(f"/api/v1/match-requests/{a.request_id}/retry", headers=ruth)
    assert retry.status_code == 404
    # A's case list holds A's case only; B's person is a reference in A's queue at most.
    cases = http.get("/api/v1/reunion/cases", headers=a.tokens["caseworker"]).json()
    assert [c["person_id"] for c in cases["items"]] == [a.person_id]
    assert not any(secret in json.dumps(cases) for secret in b.secrets)
    queue = b.hub.http.get("/api/v1/review", headers=b.tokens["caseworker"]).json()
    assert {(c["hub_id"], c["candidate_ref"]) for c in queue["items"]} == {
        ("region-a", f"person:{a.person_id}")
    }
    assert not any(secret in json.dumps(queue) for secret in a.secrets)
    evidence.record(
        "cross_region",
        "own_requests",
        {"other_requester_list_total": 0, "other_requester_get": 404, "other_requester_retry": 404},
    )


def test_bad_tokens_are_refused_by_every_guarded_route_of_a_served_hub(
    regions: tuple[Region, Region],
) -> None:
    """Expired, tampered, foreign and malformed tokens on every guarded GET route of a
    running hub (tests/hub/test_api.py::test_bad_tokens_are_401 does this in-process on
    ``/auth/me``)."""
    a, _b = regions
    http = a.hub.http
    me = http.get("/api/v1/auth/me", headers=a.tokens["requester"]).json()
    other = http.get("/api/v1/auth/me", headers=a.tokens["auditor"]).json()
    now = datetime.now(UTC)
    good = {
        "sub": str(me["id"]),
        "name": me["username"],
        "role": me["role"],
        "iss": token_issuer("region-a"),
        "aud": TOKEN_AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(minutes=5),
    }

    def forge(claims: dict[str, Any], key: str = SECRET_A, algorithm: str = "HS256") -> str:
        return jwt.encode(claims, key, algorithm=algorithm)

    def spliced(claims: dict[str, Any]) -> str:
        """Changed claims under the signature of the genuine token."""
        header, _payload, signature = forge(good).split(".")
        return f"{header}.{forge(claims).split('.')[1]}.{signature}"

    unsigned = jwt.encode(good, "", algorithm="none")
    bad = {
        "expired": forge(good | {"iat": now - timedelta(hours=2), "exp": now - timedelta(hours=1)}),
        "not-yet-valid": forge(good | {"nbf": now + timedelta(hours=1)}),
        "tampered-sub": spliced(good | {"sub": str(other["id"])}),
        "tampered-role": spliced(good | {"role": "admin"}),
        "signed-by-region-b": forge(good, key=SECRET_B),
        "hs512-same-key": forge(good, algorithm="HS512"),
        "alg-none": unsigned,
        "wrong-audience": forge(good | {"aud": "someone-else"}),
        "wrong-issuer": forge(good | {"iss": "someone-else"}),
        "issued-by-region-b": forge(good | {"iss": token_issuer("region-b")}),
        "issued-by-a-hub-without-federation": forge(good | {"iss": token_issuer("local")}),
        "other-username": forge(good | {"name": other["username"]}),
        "no-expiry": forge({k: v for k, v in good.items() if k != "exp"}),
        "truncated-signature": forge(good)[:-6],
        "garbage": "abc",
    }
    assert (
        http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {forge(good)}"}).json()[
            "username"
        ]
        == me["username"]
    )
    doc = http.get("/api/v1/openapi.json").json()
    routes = sorted(
        path
        for path, operations in doc["paths"].items()
        if "{" not in path and "security" in operations.get("get", {})
    )
    assert len(routes) >= 10, routes
    for name, token in bad.items():
        for path in routes:
            response = http.get(path, headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 401, (name, path, response.status_code)
    evidence.record(
        "tokens",
        "served_hub",
        {
            "bad_tokens": sorted(bad),
            "guarded_get_routes": len(routes),
            "requests_refused_401": len(bad) * len(routes),
            "in_process_cases": [
                "tests/hub/test_api.py::test_bad_tokens_are_401 (11 tokens + Basic on /auth/me)",
                "tests/hub/test_api.py::test_issued_token_expires",
                "tests/hub/test_api.py::test_disabling_a_user_revokes_their_tokens_at_once",
                "tests/hub/test_auth.py::test_bad_tokens_are_refused",
            ],
        },
    )


@pytest.mark.parametrize(
    "federated", [False, True], ids=["no-federation-other-username", "other-hub-id-same-username"]
)
def test_a_token_is_bound_to_its_hub_even_when_keys_are_shared(
    sqlite_template: Path, tmp_path: Path, federated: bool
) -> None:
    """Two apps with one JWT key (as tests/hub/federation/test_three_hubs.py runs
    them), each with its first user (id 1): A's requester must not become B's admin.

    Without federation both hubs are ``local`` and the usernames differ (the guard
    checks the token's username against the user row); with federation the usernames
    are the same and the hub ids differ (the token's issuer names its hub)."""
    apps = []
    for name, role in (("a", Role.requester), ("b", Role.admin)):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(sqlite_template, folder / "lantern.db")
        engine = make_engine(f"sqlite:///{folder / 'lantern.db'}")
        create_user(
            engine, username="first" if federated else f"{name}-first", role=role,
            password=PASSWORD, actor="test", actor_role="cli",
        )  # fmt: skip
        federation = None
        if federated:
            key_file, _public = make_keys(folder / "keys", name)
            federation = write_federation(
                folder / "federation.yaml", f"region-{name}", key_file, []
            )
        apps.append((engine, hub_app(engine, federation)))
    username = "first" if federated else "a-first"
    try:
        with TestClient(apps[0][1]) as at_a, TestClient(apps[1][1]) as at_b:
            login = at_a.post(
                "/api/v1/auth/token", data={"username": username, "password": PASSWORD}
            )
            assert login.status_code == 200
            token = {"Authorization": f"Bearer {login.json()['access_token']}"}
            mine = at_a.get("/api/v1/auth/me", headers=token).json()
            assert (mine["id"], mine["username"], mine["role"]) == (1, username, "requester")
            for path in ("/api/v1/auth/me", "/api/v1/users"):
                response = at_b.get(path, headers=token)
                assert response.status_code == 401, (path, response.json())
            # B's own admin, id 1 too, is let in by B and refused by A.
            login_b = at_b.post(
                "/api/v1/auth/token",
                data={"username": "first" if federated else "b-first", "password": PASSWORD},
            )
            token_b = {"Authorization": f"Bearer {login_b.json()['access_token']}"}
            assert at_b.get("/api/v1/users", headers=token_b).status_code == 200
            assert at_a.get("/api/v1/auth/me", headers=token_b).status_code == 401
    finally:
        for engine, _app in apps:
            engine.dispose()
    evidence.record(
        "cross_region",
        f"shared_key_{'federated' if federated else 'standalone'}",
        {"foreign_token_on_me_and_users": 401, "own_admin_on_users": 200},
    )
