"""The reunion API (cases, photos, search, review queue, close, erase) on SQLite and
PostgreSQL with real faces: Colin Powell missing (photo 4) and found (photos 1-3),
Tony Blair found as a stranger."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from hub.api import create_app
from hub.db.engine import write_session
from hub.db.models import AuditEntry
from hub.db.users import Role
from hub.enrolment import HUB_ENGINE_CONFIG, galleries_for
from models.engine import FaceEngine, build_engine
from tests.hub.test_api import _add_user, _login, _settings
from tests.hub.test_reunion import embed, lfw

API = "/api/v1"


@pytest.fixture(scope="session")
def face_engine() -> FaceEngine:
    return build_engine(HUB_ENGINE_CONFIG)


@pytest.fixture
def app(engine: Engine, face_engine: FaceEngine) -> FastAPI:
    app = create_app(_settings(engine), engine)
    app.state.face_engine = face_engine
    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def hdrs(engine: Engine, client: TestClient) -> dict[str, dict[str, str]]:
    out = {}
    for name, role in [
        ("cw1", Role.caseworker),
        ("cw2", Role.caseworker),
        ("admin", Role.admin),
        ("officer", Role.officer),
    ]:
        _add_user(engine, name, role)
        out[name] = _login(client, name)
    return out


def _photo(path: Path) -> tuple[str, tuple[str, bytes, str]]:
    return ("photos", (path.name, path.read_bytes(), "image/jpeg"))


def _open(client: TestClient, h: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post(f"{API}/reunion/cases", json=body, headers=h)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _audit(engine: Engine, action: str) -> list[AuditEntry]:
    with write_session(engine) as session:
        return list(
            session.scalars(
                select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)
            )
        )


def test_reunion_workflow(
    engine: Engine,
    app: FastAPI,
    client: TestClient,
    hdrs: dict[str, dict[str, str]],
    faces_dir: Path,
    face_engine: FaceEngine,
) -> None:
    cw1, cw2 = hdrs["cw1"], hdrs["cw2"]
    powell = [lfw(faces_dir, "Colin_Powell", n) for n in (1, 2, 3, 4)]
    blair = lfw(faces_dir, "Tony_Blair", 1)

    # Consent is required for a missing-person report, a reporter for a found person.
    bad = client.post(
        f"{API}/reunion/cases", json={"category": "missing", "display_name": "X"}, headers=cw1
    )
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "consent_by"]
    bad = client.post(
        f"{API}/reunion/cases", json={"category": "found", "display_name": "X"}, headers=cw1
    )
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "reported_by"]
    assert (
        client.post(
            f"{API}/reunion/cases",
            json={"category": "found", "display_name": "X", "reported_by": "p"},
            headers=hdrs["officer"],
        ).status_code
        == 403
    )

    found = _open(
        client,
        cw1,
        category="found",
        display_name="Unknown man, city shelter",
        reported_by="City shelter",
        birth_year=1937,
    )
    stranger = _open(
        client, cw1, category="found", display_name="Unknown man 2", reported_by="Hospital"
    )
    assert found["status"] == "open" and found["case_id"] == f"reunion-{found['person_id']}"
    fr = client.post(
        f"{API}/reunion/cases/{found['person_id']}/photos",
        files=[_photo(p) for p in powell[:3]],
        headers=cw1,
    )
    assert fr.status_code == 200, fr.text
    assert fr.json()["enrolment"]["accepted"] == 3
    assert fr.json()["search"]["new_candidates"] == []  # the missing gallery is empty
    assert fr.json()["search"]["peers"]["status"] == "not_configured"
    sr = client.post(
        f"{API}/reunion/cases/{stranger['person_id']}/photos", files=[_photo(blair)], headers=cw1
    )
    assert sr.status_code == 200 and sr.json()["enrolment"]["accepted"] == 1

    missing = _open(
        client,
        cw1,
        category="missing",
        display_name="Colin Powell",
        consent_by="His daughter",
        case_id="MP-2025-7",
    )
    assert missing["consent_by"] == "His daughter" and missing["consent_at"] is not None
    assert missing["reported_by"] == "cw1"
    mr = client.post(
        f"{API}/reunion/cases/{missing['person_id']}/photos",
        files=[_photo(powell[3])],
        data={"taken_at": "1990-06-01T00:00:00Z"},
        headers=cw1,
    )
    assert mr.status_code == 200, mr.text
    search = mr.json()["search"]
    assert search["gallery"] == "found" and search["models"] == [face_engine.model_id]
    cands = search["new_candidates"]
    assert [c["local_person_id"] for c in cands] == [found["person_id"], stranger["person_id"]]
    top = cands[0]
    assert top["rank"] == 1 and top["hub_id"] == "local" and top["status"] == "pending"
    assert top["flags"] == ["age_gap"] and top["has_crop"]
    assert top["probe_ref"] == f"person:{missing['person_id']}"
    assert cands[1]["score"] < top["score"]
    audits = _audit(engine, "reunion.search")
    assert audits[-1].case_id == "MP-2025-7" and audits[-1].purpose == "missing_person"

    # The review queue: pending first, paginated, caseworkers only.
    queue = client.get(f"{API}/review", params={"limit": 1}, headers=cw2)
    assert queue.status_code == 200
    assert queue.json()["total"] == 2 and len(queue.json()["items"]) == 1
    assert client.get(f"{API}/review", headers=hdrs["admin"]).status_code == 403

    # Viewing the crop needs a case id and is audited.
    tid = top["id"]
    assert client.get(f"{API}/review/{tid}/crop", headers=cw1).status_code == 422
    crop = client.get(f"{API}/review/{tid}/crop", params={"case_id": "MP-2025-7"}, headers=cw1)
    assert crop.status_code == 200 and crop.content[:2] == b"\xff\xd8"
    assert _audit(engine, "review.view_crop")[-1].case_id == "MP-2025-7"

    # Two different caseworkers confirm; the same one twice is refused.
    first = client.post(f"{API}/review/{tid}/confirm", headers=cw1)
    assert first.status_code == 200
    assert first.json()["status"] == "pending" and first.json()["confirmations"] == 1
    assert client.post(f"{API}/review/{tid}/confirm", headers=cw1).status_code == 409
    second = client.post(f"{API}/review/{tid}/confirm", headers=cw2)
    assert second.json()["status"] == "confirmed" and second.json()["confirmations"] == 2
    detail = client.get(f"{API}/review/{tid}", headers=cw1).json()
    assert [d["username"] for d in detail["decisions"]] == ["cw1", "cw2"]

    # One rejection, with a reason, rejects; the pair is not proposed again.
    other = cands[1]["id"]
    no_reason = client.post(f"{API}/review/{other}/reject", json={}, headers=cw2)
    assert no_reason.status_code == 422 and no_reason.json()["detail"][0]["loc"] == [
        "body",
        "reason",
    ]
    rej = client.post(f"{API}/review/{other}/reject", json={"reason": "not him"}, headers=cw2)
    assert rej.status_code == 200 and rej.json()["status"] == "rejected"
    again = client.post(
        f"{API}/reunion/cases/{missing['person_id']}/search", json={"peers": False}, headers=cw1
    )
    assert again.status_code == 200
    body = again.json()
    assert body["new_candidates"] == [] and body["skipped_rejected"] == 1
    assert body["skipped_known"] == 1 and body["peers"]["status"] == "not_requested"
    pending = client.get(f"{API}/review", params={"status": "pending"}, headers=cw1).json()
    assert pending["total"] == 0
    by_probe = client.get(
        f"{API}/review", params={"probe_person_id": missing["person_id"]}, headers=cw1
    ).json()
    assert [c["status"] for c in by_probe["items"]] == ["confirmed", "rejected"]

    # Closing starts the retention clock; a closed case is not searched.
    closed = client.post(
        f"{API}/reunion/cases/{missing['person_id']}/close",
        json={"status": "reunited", "reason": "met his daughter"},
        headers=cw1,
    )
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "reunited" and closed.json()["retention_until"]
    assert (
        client.post(
            f"{API}/reunion/cases/{missing['person_id']}/close",
            json={"status": "withdrawn", "reason": "x"},
            headers=cw1,
        ).status_code
        == 409
    )
    assert (
        client.post(f"{API}/reunion/cases/{missing['person_id']}/search", headers=cw1).status_code
        == 409
    )
    listed = client.get(f"{API}/reunion/cases", params={"status": "open"}, headers=hdrs["admin"])
    assert listed.status_code == 200 and listed.json()["total"] == 2

    # Erasure on request (an admin may): the found person is gone from the gallery.
    erased = client.post(
        f"{API}/reunion/cases/{found['person_id']}/erase",
        json={"reason": "identified; family asked for erasure"},
        headers=hdrs["admin"],
    )
    assert erased.status_code == 200, erased.text
    assert erased.json()["templates"] == 3 and erased.json()["review_candidates"] == 1
    own = embed(face_engine, powell[0])
    hits = galleries_for(app.state, engine).search("found", face_engine.model_id, own, k=10)[0]
    assert [h.person_id for h in hits] == [stranger["person_id"]]
    assert client.get(f"{API}/reunion/cases/{found['person_id']}", headers=cw1).status_code == 404
    assert client.get(f"{API}/persons/{found['person_id']}", headers=cw1).status_code == 404
    assert client.get(f"{API}/review/{tid}", headers=cw1).status_code == 404
    row = _audit(engine, "reunion.erase")[-1]
    assert row.actor == "admin" and row.purpose == "erasure_request"
    assert row.result is not None and "family asked for erasure" in row.result
    assert "Unknown man" not in row.result
    verify = client.get(f"{API}/audit/verify", headers=hdrs["admin"])
    assert verify.status_code == 200 and verify.json()["ok"] is True
