"""End to end through one ``lantern hub serve --http`` process: a person enrolled
through the API is in the gallery that ingest matches a camera's sighting against,
and the match reaches a live-feed client and the sightings API.

This is what proves ingest and the API share one runtime (galleries, feed): a real
Mosquitto, a real hub process, real face images (skipped without them).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from devices.protocol import (
    SightingBody,
    SightingEvent,
    SightingQuality,
    encode,
    encode_embedding,
    new_boot_id,
    new_event_id,
    topic_for,
)
from hub.enrolment import HUB_ENGINE_CONFIG, decode_photo, process_photo
from models.engine import build_engine
from tests.edge.mqtt_helpers import PrivateBroker, unique_id
from tests.hub.served import ServedHub
from tests.hub.test_ingest import FakeDevices

PERSON = "Colin_Powell"


def _photo(faces_dir: Path, n: int) -> Path:
    path = faces_dir / "lfw_dev" / PERSON / f"{PERSON}_{n:04d}.jpg"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    with PrivateBroker(tmp_path / "broker") as running:
        yield running


def _sighting(camera: str, vector: Any) -> SightingEvent:
    now = datetime.now(UTC)
    return SightingEvent(
        device_id=camera,
        event_id=new_event_id(),
        boot_id=new_boot_id(),
        seq=1,
        captured_at=now,
        sent_at=now,
        body=SightingBody(
            model_id="dlib-resnet-v1",
            embedding=encode_embedding(vector),
            quality=SightingQuality(det_score=1.2, face_px=110),
            bbox=(40.0, 50.0, 150.0, 160.0),
            track_id=7,
            frames_fused=3,
        ),
    )


def test_an_enrolled_person_is_matched_in_a_sighting_and_fed_live(
    tmp_path: Path, broker: PrivateBroker, faces_dir: Path
) -> None:
    enrol = [_photo(faces_dir, n) for n in (1, 2, 3)]
    probe = _photo(faces_dir, 4)
    # The camera's embedding of a photo the gallery does not hold, made in this process.
    face_engine = build_engine(HUB_ENGINE_CONFIG)
    seen = process_photo(face_engine, probe.name, decode_photo(probe.name, probe.read_bytes()))
    assert seen.vector is not None, seen.reasons

    with ServedHub(tmp_path, broker.port) as hub:
        http = hub.http
        site = {"site_id": "gate-site", "name": "Main gate"}
        assert http.post("/api/v1/sites", json=site).status_code == 201
        watch = http.put("/api/v1/sites/gate-site/watchlists", json={"galleries": ["watchlist"]})
        assert watch.status_code == 200, watch.text
        camera = unique_id("cam")
        registered = http.post(
            "/api/v1/devices",
            json={"device_id": camera, "model": "lantern-fixcam-f1", "site_id": "gate-site"},
        )
        assert registered.status_code == 201, registered.text
        person = http.post(
            "/api/v1/persons",
            json={"category": "watchlist", "display_name": "Colin Powell", "case_id": "C-1"},
        )
        assert person.status_code == 201, person.text
        person_id = person.json()["id"]
        files = [("photos", (p.name, p.read_bytes(), "image/jpeg")) for p in enrol]
        enrolled = http.post(f"/api/v1/persons/{person_id}/photos", files=files)
        assert enrolled.status_code == 200, enrolled.text
        assert enrolled.json()["accepted"] == 3, enrolled.text

        with connect(hub.feed_url("&types=sighting"), open_timeout=10) as feed:
            snapshot = json.loads(feed.recv(timeout=10))
            assert snapshot["type"] == "snapshot"
            with FakeDevices(broker.settings(), [camera]) as devices:
                event = _sighting(camera, seen.vector)
                devices.send_raw(topic_for(event), encode(event))
                delta = json.loads(feed.recv(timeout=20))
        assert delta["type"] == "sighting" and delta["device_id"] == camera, delta
        candidates = delta["data"]["candidates"]
        assert candidates and candidates[0]["person_id"] == person_id, delta
        assert candidates[0]["display_name"] == "Colin Powell"
        assert candidates[0]["rank"] == 1 and candidates[0]["gallery"] == "watchlist"

        listed = http.get("/api/v1/sightings", params={"has_candidates": "true"}).json()
        assert listed["total"] == 1, listed
        assert listed["items"][0]["id"] == delta["data"]["sighting_id"]
        assert hub.stop() == 0, hub.output()
    # A clean stop saved the galleries for the next start.
    assert any((hub.data_dir / "galleries").rglob("*")), hub.output()
