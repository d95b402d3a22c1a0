"""Persons, enrolment, search, watchlists and sightings through the API, with real
faces (``../shared/faces``) on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import Engine, select

from devices.protocol import (
    SightingBody,
    SightingEvent,
    SightingQuality,
    decode,
    encode,
    encode_embedding,
    new_boot_id,
    new_event_id,
    topic_for,
)
from hub.api import create_app
from hub.db.engine import write_session
from hub.db.models import AuditEntry, Device, Sighting, SightingCandidate, Site
from hub.db.repositories import store_event
from hub.db.users import Role
from hub.enrolment import HUB_ENGINE_CONFIG, MAX_PHOTO_BYTES, decode_photo, process_photo
from hub.galleries import GalleryService
from hub.sighting_matching import MatchingSightingSink
from models.engine import FaceEngine, build_engine
from tests.hub.test_api import _add_user, _login, _settings

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


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
def headers(engine: Engine, client: TestClient) -> dict[Role, dict[str, str]]:
    out = {}
    for role in Role:
        _add_user(engine, f"{role.value}-user", role)
        out[role] = _login(client, f"{role.value}-user")
    return out


def _file(path: Path, content_type: str = "image/jpeg") -> tuple[str, bytes, str]:
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return (path.name, path.read_bytes(), content_type)


def _lfw(faces_dir: Path, person: str, n: int) -> tuple[str, bytes, str]:
    return _file(faces_dir / "lfw_dev" / person / f"{person}_{n:04d}.jpg")


def _create(client: TestClient, hdrs: dict[str, str], **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/persons", json=body, headers=hdrs)
    assert response.status_code == 201, response.text
    return dict(response.json())


def _audit(engine: Engine, action: str) -> list[AuditEntry]:
    with write_session(engine) as session:
        return list(
            session.scalars(
                select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)
            )
        )


def test_enrol_search_and_delete(
    engine: Engine,
    app: FastAPI,
    client: TestClient,
    headers: dict[Role, dict[str, str]],
    faces_dir: Path,
) -> None:
    officer = headers[Role.officer]
    powell = _create(
        client, officer, category="watchlist", display_name="Colin Powell", case_id="C-1"
    )
    assert powell["templates"] == 0
    examples = faces_dir / "people_small" / "face_recognition_examples"
    files = [
        ("photos", _lfw(faces_dir, "Colin_Powell", 1)),
        ("photos", _lfw(faces_dir, "Colin_Powell", 2)),
        ("photos", _file(examples / "two_people.jpg")),
        ("photos", _file(faces_dir / "groups" / "nonface" / "dog.jpg")),
        ("photos", _lfw(faces_dir, "Colin_Powell", 3)),
    ]
    response = client.post(f"/api/v1/persons/{powell['id']}/photos", files=files, headers=officer)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 3 and body["rejected"] == 2
    assert body["model_id"] == "dlib-resnet-v1"
    photos = {p["filename"]: p for p in body["photos"]}
    assert [p["accepted"] for p in body["photos"]] == [True, True, False, False, True]
    two = photos["two_people.jpg"]
    assert two["faces"] == 2 and two["template_id"] is None
    assert "2 faces found" in two["reasons"][0]
    assert photos["dog.jpg"]["faces"] == 0 and photos["dog.jpg"]["reasons"] == ["no face found"]
    good = photos["Colin_Powell_0001.jpg"]
    assert good["reasons"] == [] and good["quality"]["inter_ocular_px"] > 20
    enrol_audit = _audit(engine, "person.enrol")
    assert [(a.target, a.actor, a.case_id) for a in enrol_audit] == [
        (f"person:{powell['id']}", "officer-user", "C-1")
    ]
    assert enrol_audit[0].result is not None and enrol_audit[0].result.startswith("3 of 5")

    templates = client.get(
        f"/api/v1/persons/{powell['id']}/templates", headers=headers[Role.analyst]
    ).json()
    assert templates["total"] == 3
    assert all("embedding" not in t and t["has_crop"] for t in templates["items"])
    tid = templates["items"][0]["id"]
    crop_url = f"/api/v1/persons/{powell['id']}/templates/{tid}/crop"
    assert client.get(crop_url, headers=officer).status_code == 422  # case_id required
    crop = client.get(crop_url, params={"case_id": "C-1"}, headers=officer)
    assert crop.status_code == 200 and crop.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(crop.content)).size == (150, 150)
    assert [a.case_id for a in _audit(engine, "template.view_crop")] == ["C-1"]
    assert client.get(f"/api/v1/persons/{powell['id']}", headers=officer).json()["templates"] == 3

    # Search: Powell's 4th photo finds him first; candidates, not an identification.
    blair = _create(client, officer, category="watchlist", display_name="Tony Blair")
    client.post(
        f"/api/v1/persons/{blair['id']}/photos",
        files=[("photos", _lfw(faces_dir, "Tony_Blair", 1))],
        headers=officer,
    )
    form = {"case_id": "INV-7", "purpose": "investigation", "gallery": "watchlist", "k": "5"}
    probe = {"probe": _lfw(faces_dir, "Colin_Powell", 4)}
    found = client.post("/api/v1/search", data=form, files=probe, headers=headers[Role.analyst])
    assert found.status_code == 200, found.text
    result = found.json()
    assert "not an identification" in result["notice"]
    assert [c["person_id"] for c in result["candidates"]] == [powell["id"], blair["id"]]
    assert result["candidates"][0]["rank"] == 1
    assert result["candidates"][0]["score"] > result["candidates"][1]["score"]
    [searched] = _audit(engine, "biometric.search")
    assert (searched.case_id, searched.purpose, searched.target) == (
        "INV-7",
        "investigation",
        "gallery:watchlist",
    )
    # Purpose and case id are required; caseworkers search only missing/found.
    no_case = {k: v for k, v in form.items() if k != "case_id"}
    missing_case = client.post("/api/v1/search", data=no_case, files=probe, headers=officer)
    assert missing_case.status_code == 422
    assert missing_case.json()["detail"][0]["loc"] == ["body", "case_id"]
    bad_purpose = client.post(
        "/api/v1/search", data=form | {"purpose": "curiosity"}, files=probe, headers=officer
    )
    assert bad_purpose.json()["detail"][0]["loc"] == ["body", "purpose"]
    caseworker = client.post(
        "/api/v1/search", data=form, files=probe, headers=headers[Role.caseworker]
    )
    assert caseworker.status_code == 403

    # Deleting removes the person, their templates and their gallery vectors.
    galleries: GalleryService = app.state.galleries
    assert client.delete(f"/api/v1/persons/{powell['id']}", headers=officer).json() == {
        "id": powell["id"],
        "templates_removed": 3,
    }
    assert client.get(f"/api/v1/persons/{powell['id']}", headers=officer).status_code == 404
    vector = np.zeros(128, dtype=np.float32)
    vector[0] = 1.0
    remaining = galleries.search("watchlist", "dlib-resnet-v1", vector, 10)[0]
    assert [h.person_id for h in remaining] == [blair["id"]]
    assert [a.target for a in _audit(engine, "person.delete")] == [f"person:{powell['id']}"]
    again = client.post("/api/v1/search", data=form, files=probe, headers=officer).json()
    assert [c["person_id"] for c in again["candidates"]] == [blair["id"]]


def test_category_rules_and_validation(
    client: TestClient, headers: dict[Role, dict[str, str]], faces_dir: Path
) -> None:
    officer, caseworker = headers[Role.officer], headers[Role.caseworker]
    analyst = headers[Role.analyst]
    watch = _create(client, officer, category="watchlist", display_name="W")
    missing = _create(
        client,
        caseworker,
        category="missing",
        display_name="M",
        expires_at="2030-01-01T00:00:00+00:00",
    )
    assert missing["expires_at"].startswith("2030-01-01")
    refused = client.post(
        "/api/v1/persons", json={"category": "missing", "display_name": "x"}, headers=officer
    )
    assert refused.status_code == 403 and "missing" in refused.json()["detail"]
    assert (
        client.post(
            "/api/v1/persons",
            json={"category": "watchlist", "display_name": "x"},
            headers=caseworker,
        ).status_code
        == 403
    )
    assert (
        client.post(
            "/api/v1/persons", json={"category": "watchlist", "display_name": "x"}, headers=analyst
        ).status_code
        == 403
    )
    for body, field in [
        ({"category": "suspect", "display_name": "x"}, "category"),
        ({"category": "watchlist", "display_name": ""}, "display_name"),
        ({"category": "watchlist", "display_name": "x", "site_id": "nowhere"}, "site_id"),
        (
            {"category": "watchlist", "display_name": "x", "expires_at": "2030-01-01T00:00"},
            "expires_at",
        ),
    ]:
        response = client.post("/api/v1/persons", json=body, headers=officer)
        assert response.status_code == 422, body
        assert response.json()["detail"][0]["loc"] == ["body", field]

    # Each role sees only its categories.
    assert [p["id"] for p in client.get("/api/v1/persons", headers=analyst).json()["items"]] == [
        watch["id"]
    ]
    listed = client.get("/api/v1/persons", headers=caseworker).json()
    assert [p["id"] for p in listed["items"]] == [missing["id"]] and listed["total"] == 1
    assert client.get("/api/v1/persons", headers=headers[Role.admin]).json()["total"] == 2
    assert client.get(f"/api/v1/persons/{missing['id']}", headers=analyst).status_code == 403
    assert (
        client.get("/api/v1/persons", params={"category": "found"}, headers=analyst).status_code
        == 403
    )
    assert client.delete(f"/api/v1/persons/{watch['id']}", headers=caseworker).status_code == 403
    photo = [("photos", _lfw(faces_dir, "Tony_Blair", 2))]
    assert (
        client.post(
            f"/api/v1/persons/{missing['id']}/photos", files=photo, headers=officer
        ).status_code
        == 403
    )

    # Uploads: declared type, actual format and size are checked before any face work.
    url = f"/api/v1/persons/{watch['id']}/photos"
    text = client.post(
        url, files=[("photos", ("notes.txt", b"hello", "text/plain"))], headers=officer
    )
    assert text.status_code == 415 and "notes.txt" in text.json()["detail"]
    disguised = client.post(
        url, files=[("photos", ("x.jpg", b"GIF89a not really", "image/jpeg"))], headers=officer
    )
    assert disguised.status_code == 415
    png = io.BytesIO()
    Image.new("RGB", (32, 32)).save(png, format="PNG")
    mislabelled = client.post(
        url, files=[("photos", ("x.jpg", png.getvalue(), "image/jpeg"))], headers=officer
    )
    assert mislabelled.status_code == 415 and "PNG" in mislabelled.json()["detail"]
    huge = b"\xff\xd8\xff" + bytes(MAX_PHOTO_BYTES)
    too_big = client.post(url, files=[("photos", ("big.jpg", huge, "image/jpeg"))], headers=officer)
    assert too_big.status_code == 413
    eleven = [("photos", _lfw(faces_dir, "Tony_Blair", 2))] * 11
    many = client.post(url, files=eleven, headers=officer)
    assert many.status_code == 422 and many.json()["detail"][0]["loc"] == ["body", "photos"]
    truncated = _lfw(faces_dir, "Tony_Blair", 2)
    cut = client.post(
        url, files=[("photos", (truncated[0], truncated[1][:2000], "image/jpeg"))], headers=officer
    )
    assert cut.status_code == 200
    [outcome] = cut.json()["photos"]
    assert not outcome["accepted"] and "Tony_Blair_0002.jpg" in outcome["reasons"][0]


def test_watchlists_and_sightings(
    engine: Engine,
    app: FastAPI,
    client: TestClient,
    headers: dict[Role, dict[str, str]],
    face_engine: FaceEngine,
    faces_dir: Path,
) -> None:
    admin, officer = headers[Role.admin], headers[Role.officer]
    with write_session(engine) as session:
        session.add_all([Site(site_id="north", name="North"), Site(site_id="south", name="South")])
        session.flush()
        session.add_all(
            [
                Device(device_id="cam-n", site_id="north", model="cam"),
                Device(device_id="cam-s", site_id="south", model="cam"),
            ]
        )
    url = "/api/v1/sites/north/watchlists"
    assert client.get(url, headers=officer).json() == {"site_id": "north", "galleries": []}
    put = client.put(url, json={"galleries": ["watchlist", "supervised"]}, headers=admin)
    assert put.status_code == 200
    assert put.json()["galleries"] == ["supervised", "watchlist"]
    assert client.get(url, headers=headers[Role.analyst]).json()["galleries"] == [
        "supervised",
        "watchlist",
    ]
    dup = client.put(url, json={"galleries": ["watchlist", "watchlist"]}, headers=admin)
    assert dup.status_code == 422 and dup.json()["detail"][0]["loc"] == ["body", "galleries"]
    bad = client.put(url, json={"galleries": ["suspects"]}, headers=admin)
    assert bad.status_code == 422
    assert client.put(url, json={"galleries": []}, headers=officer).status_code == 403
    assert (
        client.put(
            "/api/v1/sites/nowhere/watchlists", json={"galleries": []}, headers=admin
        ).status_code
        == 404
    )
    [set_audit] = _audit(engine, "site.watchlists.set")
    assert set_audit.result == "- -> supervised,watchlist"

    # Enrol through the API, then match sightings with a sink sharing the app's galleries.
    person = _create(client, officer, category="watchlist", display_name="Colin Powell")
    enrolled = client.post(
        f"/api/v1/persons/{person['id']}/photos",
        files=[("photos", _lfw(faces_dir, "Colin_Powell", n)) for n in (1, 2, 3)],
        headers=officer,
    )
    assert enrolled.json()["accepted"] == 3
    sink = MatchingSightingSink(engine, app.state.galleries)
    crop = _lfw(faces_dir, "Colin_Powell", 4)[1]
    boot = new_boot_id()
    vector = process_photo(face_engine, "p4", decode_photo("p4", crop)).vector
    assert vector is not None
    for seq, device in enumerate(["cam-n", "cam-s", "cam-n"], start=1):
        event = SightingEvent(
            device_id=device,
            event_id=new_event_id(),
            boot_id=boot,
            seq=seq,
            captured_at=T0 + timedelta(minutes=seq),
            sent_at=T0 + timedelta(minutes=seq),
            body=SightingBody(
                model_id="dlib-resnet-v1",
                embedding=encode_embedding(vector),
                quality=SightingQuality(det_score=1.0, face_px=100),
                bbox=(1.0, 2.0, 101.0, 102.0),
                track_id=seq,
                frames_fused=2,
                crop_jpeg=base64.b64encode(crop).decode() if seq == 1 else None,
            ),
        )
        decoded = decode(topic_for(event), encode(event), now=T0 + timedelta(hours=1))
        with write_session(engine) as session:
            assert store_event(session, decoded)
        sink.on_sighting(event, decoded.received_at)
    with write_session(engine) as session:
        ids = list(session.scalars(select(Sighting.id).order_by(Sighting.seq)))
        matched = set(session.scalars(select(SightingCandidate.sighting_id)))
    # Site south matches against nothing: its sighting has no candidates.
    assert matched == {ids[0], ids[2]}

    everything = client.get("/api/v1/sightings", headers=officer).json()
    assert everything["total"] == 3
    assert [s["id"] for s in everything["items"]] == [ids[2], ids[1], ids[0]]  # newest first
    assert all("embedding" not in s for s in everything["items"])
    north = client.get(
        "/api/v1/sightings", params={"site_id": "north", "has_candidates": "true"}, headers=officer
    ).json()
    assert [s["id"] for s in north["items"]] == [ids[2], ids[0]]
    window = client.get(
        "/api/v1/sightings",
        params={
            "since": (T0 + timedelta(minutes=2)).isoformat(),
            "until": (T0 + timedelta(minutes=3)).isoformat(),
        },
        headers=officer,
    ).json()
    assert [s["id"] for s in window["items"]] == [ids[1]]
    by_camera = client.get(
        "/api/v1/sightings", params={"device_id": "cam-s", "limit": 1}, headers=officer
    ).json()
    assert by_camera["total"] == 1 and by_camera["items"][0]["candidate_count"] == 0
    naive = client.get(
        "/api/v1/sightings", params={"since": "2025-06-01T12:00:00"}, headers=officer
    )
    assert naive.status_code == 422 and naive.json()["detail"][0]["loc"] == ["query", "since"]

    detail = client.get(f"/api/v1/sightings/{ids[0]}", headers=headers[Role.analyst]).json()
    assert detail["candidates"][0]["person_id"] == person["id"]
    assert detail["candidates"][0]["rank"] == 1 and "not an identification" in detail["notice"]
    assert [a.target for a in _audit(engine, "sighting.view_candidates")] == [f"sighting:{ids[0]}"]
    crop_url = f"/api/v1/sightings/{ids[0]}/crop"
    assert client.get(crop_url, headers=officer).status_code == 422
    shown = client.get(crop_url, params={"case_id": "C-9"}, headers=officer)
    assert shown.status_code == 200 and shown.content == crop
    assert (
        client.get(
            f"/api/v1/sightings/{ids[1]}/crop", params={"case_id": "C-9"}, headers=officer
        ).status_code
        == 404
    )
    assert [a.case_id for a in _audit(engine, "sighting.view_crop")] == ["C-9"]
    assert client.get("/api/v1/sightings/999999", headers=officer).status_code == 404
