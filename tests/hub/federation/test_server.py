"""``POST /api/v1/federation/search`` called directly: signatures, policy, refusals,
on SQLite and PostgreSQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from devices.signing import private_key_from_b64, public_key_from_b64
from hub.db.engine import write_session
from hub.db.models import AuditEntry, MatchRequest
from hub.federation.signing import canonical_body, sign_message, verify_message
from hub.federation.wire import SEARCH_PATH, encode_probe
from tests.hub.federation.helpers import (
    DIM,
    MODEL,
    enrol_vector,
    hub_app,
    make_keys,
    near,
    unit,
    write_federation,
)


class Peer:
    def __init__(self, key_file: Path) -> None:
        self.key: Ed25519PrivateKey = private_key_from_b64(key_file.read_text())


@pytest.fixture
def setup(tmp_path: Path, engine: Engine) -> Iterator[tuple[TestClient, Any, Peer, str]]:
    c_key, c_pub = make_keys(tmp_path, "c")
    a_key, a_pub = make_keys(tmp_path, "a")
    b_key, b_pub = make_keys(tmp_path, "b")
    path = write_federation(
        tmp_path / "c.yaml", "region-c", c_key,
        [("region-a", "http://127.0.0.1:9", a_pub), ("region-b", "http://127.0.0.1:9", b_pub)],
        {"region-a": {"missing_person": ["found"], "criminal_investigation": ["watchlist"]}},
    )  # fmt: skip
    app = hub_app(engine, path)
    rng = np.random.default_rng(3)
    (vector,) = unit(rng)
    person = enrol_vector(engine, app.state.galleries, "found", vector)
    with TestClient(app) as client:
        yield client, (vector, person, rng), Peer(a_key), c_pub


def _body(vector: Any, rng: Any, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "request_id": str(uuid.uuid4()),
        "origin_hub": "region-a",
        "requester": "rita",
        "case_id": "MP-1",
        "legal_basis": "missing-persons act s.4",
        "purpose": "missing_person",
        "galleries": ["found"],
        "k": 3,
        "model_id": MODEL,
        "dim": DIM,
        "probe": encode_probe(near(vector, rng)[None, :]),
    }
    return body | over


def _post(client: TestClient, body: dict[str, Any], key: Ed25519PrivateKey, **sign: Any) -> Any:
    payload = canonical_body(body)
    args: dict[str, Any] = {
        "method": "POST", "path": SEARCH_PATH, "sender": "region-a",
        "audience": "region-c", "body": payload,
    } | sign  # fmt: skip
    headers = sign_message(key, **args) | {"Content-Type": "application/json"}
    return client.post(SEARCH_PATH, content=payload, headers=headers), headers


def test_a_signed_request_is_answered_and_the_answer_is_signed(setup: Any) -> None:
    client, (vector, person, rng), peer, c_pub = setup
    body = _body(vector, rng)
    response, _ = _post(client, body, peer.key)
    assert response.status_code == 200, response.text
    sender = verify_message(
        {"region-c": public_key_from_b64(c_pub)}, dict(response.headers), method="POST",
        path=SEARCH_PATH, audience="region-a", body=response.content, nonces=None,
    )  # fmt: skip
    assert sender == "region-c"
    answer = response.json()
    assert answer["status"] == "answered" and answer["request_id"] == body["request_id"]
    (candidate,) = answer["candidates"]
    assert candidate["candidate_ref"] == f"person:{person}" and candidate["rank"] == 1
    assert candidate["crop_jpeg"] is None  # crops not allowed for region-a
    assert "Secret Name" not in response.text


def test_signature_failures_are_401(setup: Any, tmp_path: Path) -> None:
    client, (vector, _, rng), peer, _ = setup
    body = _body(vector, rng)
    stranger_key, _ = make_keys(tmp_path / "x", "x")
    stranger = private_key_from_b64(stranger_key.read_text())
    cases = [
        _post(client, body, stranger)[0],  # region-a's name, another key
        _post(client, body, stranger, sender="region-x")[0],  # unknown hub
        _post(client, body, peer.key, audience="region-b")[0],  # signed for another hub
        _post(client, body, peer.key, timestamp=int(time.time()) - 3600)[0],  # skew
    ]
    assert [r.status_code for r in cases] == [401, 401, 401, 401]
    assert "bad signature" in cases[0].json()["detail"]
    assert "unknown hub" in cases[1].json()["detail"]
    assert "from this hub's clock" in cases[3].json()["detail"]
    assert cases[0].headers["www-authenticate"] == "Lantern-Signature"
    # a replay of a good request, byte for byte
    first, headers = _post(client, body, peer.key)
    assert first.status_code == 200
    replay = client.post(SEARCH_PATH, content=canonical_body(body), headers=headers)
    assert replay.status_code == 401 and "replay" in replay.json()["detail"]
    # a tampered body under a good signature
    tampered = canonical_body(body | {"k": 50})
    fresh = sign_message(peer.key, method="POST", path=SEARCH_PATH, sender="region-a",
                         audience="region-c", body=canonical_body(body))  # fmt: skip
    assert client.post(SEARCH_PATH, content=tampered, headers=fresh).status_code == 401
    # no signature headers at all: 422 naming them (what a user's token gets too)
    bare = client.post(SEARCH_PATH, json=body)
    assert bare.status_code == 422
    assert ["header", "x-lantern-hub"] in [e["loc"] for e in bare.json()["detail"]]


def test_policy_refusals_are_signed_403_and_audited(setup: Any, engine: Engine) -> None:
    client, (vector, _, rng), peer, _ = setup
    purpose = _body(vector, rng, purpose="found_person", galleries=["missing"])
    gallery = _body(vector, rng, galleries=["found", "watchlist"])
    origin = _body(vector, rng, origin_hub="region-b")
    r1, r2, r3 = (_post(client, b, peer.key)[0] for b in (purpose, gallery, origin))
    assert r1.status_code == 403 and r1.json()["status"] == "refused"
    assert r1.json()["reason"] == "purpose found_person is not allowed for peer region-a"
    assert r2.status_code == 403 and "gallery watchlist may not be searched" in r2.json()["reason"]
    assert "x-lantern-signature" in r1.headers
    assert r3.status_code == 403 and "not the signing hub" in r3.json()["detail"]
    with Session(engine) as session:
        rows = session.scalars(
            select(AuditEntry).where(AuditEntry.action == "federation.search_received")
        ).all()
        refused = session.get(MatchRequest, purpose["request_id"])
    assert len(rows) == 2 and all(r.result.startswith("refused") for r in rows)  # type: ignore[union-attr]
    assert {r.target for r in rows} == {f"request:{purpose['request_id']}",
                                        f"request:{gallery['request_id']}"}  # fmt: skip
    assert refused is not None and refused.direction == "incoming"


def test_bad_bodies_unknown_models_and_reused_ids(setup: Any, engine: Engine) -> None:
    client, (vector, _, rng), peer, _ = setup
    bad = _body(vector, rng, k=51)
    response = _post(client, bad, peer.key)[0]
    assert response.status_code == 422
    assert ["body", "k"] in [e["loc"] for e in response.json()["detail"]]
    short = _body(vector, rng, dim=DIM + 1)
    assert _post(client, short, peer.key)[0].status_code == 422
    # the watchlist is allowed for criminal investigations but holds no test-model
    # templates, and the hub's own engine runs another model
    other = _body(vector, rng, model_id="other-model", purpose="criminal_investigation",
                  galleries=["watchlist"])  # fmt: skip
    answer = _post(client, other, peer.key)[0]
    assert answer.status_code == 200
    assert (
        answer.json()["status"] == "refused" and "other-model not held" in answer.json()["reason"]
    )
    # a retry of an answered request (same id, new signature) is answered again
    body = _body(vector, rng)
    assert _post(client, body, peer.key)[0].status_code == 200
    assert _post(client, body, peer.key)[0].json()["status"] == "answered"
    # an id this hub used for a request of its own is not taken
    with write_session(engine) as session:
        session.add(
            MatchRequest(
                id="11111111-1111-4111-8111-111111111111", direction="outgoing",
                origin_hub="region-c", requester="x", case_id="c", legal_basis="l",
                purpose="missing_person", galleries=["found"], k=1, model_id=MODEL, probe=b"",
            )
        )  # fmt: skip
    clash = _body(vector, rng, request_id="11111111-1111-4111-8111-111111111111")
    assert _post(client, clash, peer.key)[0].status_code == 409


def test_a_hub_without_federation_has_no_search(engine: Engine, tmp_path: Path) -> None:
    a_key, _ = make_keys(tmp_path, "a")
    with TestClient(hub_app(engine, None)) as client:
        rng = np.random.default_rng(0)
        response, _ = _post(
            client, _body(unit(rng)[0], rng), private_key_from_b64(a_key.read_text())
        )
    assert response.status_code == 404


def test_a_federation_route_without_the_peer_guard_is_refused(engine: Engine) -> None:
    from fastapi import APIRouter

    from hub.api import UnguardedRouteError, check_guards
    from hub.api.app import FEDERATION_ROUTES

    assert ("POST", SEARCH_PATH) in FEDERATION_ROUTES
    app = hub_app(engine, None)
    check_guards(app)  # the real route carries the guard
    router = APIRouter()

    @router.post(SEARCH_PATH)
    def open_door() -> dict[str, str]:
        return {"open": "yes"}

    app.include_router(router)
    with pytest.raises(UnguardedRouteError, match="federation/search"):
        check_guards(app)
