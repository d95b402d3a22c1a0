"""Sightings matched against a site's galleries: real LFW faces, both DB backends."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, func, select

from devices.protocol import (
    DecodedMessage,
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
from hub.db.engine import write_session
from hub.db.models import AuditEntry, Device, Person, SightingCandidate, Site, SiteGallery
from hub.db.repositories import store_event
from hub.enrolment import HUB_ENGINE_CONFIG, decode_photo, process_photo, store_templates
from hub.galleries import GalleryService
from hub.sighting_matching import DLIB_ALERT_THRESHOLD, MatchedCandidate, MatchingSightingSink
from models.engine import FaceEngine, build_engine

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
CAMERA = "cam-gate-01"
BOOT = new_boot_id()


@pytest.fixture(scope="session")
def face_engine() -> FaceEngine:
    return build_engine(HUB_ENGINE_CONFIG)


def _vector(engine: FaceEngine, path: Path) -> np.ndarray:
    result = process_photo(engine, path.name, decode_photo(path.name, path.read_bytes()))
    assert result.vector is not None, result.reasons
    return result.vector


def _lfw(faces_dir: Path, person: str, n: int) -> Path:
    path = faces_dir / "lfw_dev" / person / f"{person}_{n:04d}.jpg"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def _sighting(vector: np.ndarray, seq: int) -> DecodedMessage:
    event = SightingEvent(
        device_id=CAMERA,
        event_id=new_event_id(),
        boot_id=BOOT,
        seq=seq,
        captured_at=T0 + timedelta(seconds=seq),
        sent_at=T0 + timedelta(seconds=seq),
        body=SightingBody(
            model_id="dlib-resnet-v1",
            embedding=encode_embedding(vector),
            quality=SightingQuality(det_score=1.2, face_px=110),
            bbox=(40.0, 50.0, 150.0, 160.0),
            track_id=seq,
            frames_fused=4,
        ),
    )
    return decode(topic_for(event), encode(event), now=T0 + timedelta(minutes=5))


def _enrol(
    db: Engine,
    galleries: GalleryService,
    face_engine: FaceEngine,
    category: str,
    name: str,
    photos: Sequence[Path],
) -> int:
    with write_session(db) as session:
        person = Person(category=category, display_name=name)
        session.add(person)
        session.flush()
        person_id = person.id
    results = [
        process_photo(face_engine, p.name, decode_photo(p.name, p.read_bytes())) for p in photos
    ]
    assert all(r.accepted for r in results), [r.reasons for r in results]
    store_templates(
        db, galleries, person_id, results, model_id=face_engine.model_id, actor="t", role="admin"
    )
    return person_id


def test_mated_sighting_ranks_the_person_first_and_a_stranger_gets_none(
    engine: Engine, faces_dir: Path, face_engine: FaceEngine
) -> None:
    galleries = GalleryService()
    galleries.load_from_db(engine)
    with write_session(engine) as session:
        session.add(Site(site_id="gate", name="Gate"))
        session.flush()
        session.add(Device(device_id=CAMERA, site_id="gate", model="lantern-cam"))
        session.add_all([SiteGallery(site_id="gate", gallery="watchlist")])
    powell = _enrol(
        engine,
        galleries,
        face_engine,
        "watchlist",
        "Colin Powell",
        [_lfw(faces_dir, "Colin_Powell", n) for n in (1, 2, 3)],
    )
    blair = _enrol(
        engine,
        galleries,
        face_engine,
        "watchlist",
        "Tony Blair",
        [_lfw(faces_dir, "Tony_Blair", 1)],
    )
    # A person of a gallery the site does not match against is never a candidate.
    _enrol(
        engine,
        galleries,
        face_engine,
        "missing",
        "Powell again",
        [_lfw(faces_dir, "Colin_Powell", 5)],
    )

    matched: list[tuple[int, Sequence[MatchedCandidate]]] = []
    sink = MatchingSightingSink(
        engine, galleries, on_matched=lambda sid, cands: matched.append((sid, cands))
    )
    mated = _sighting(_vector(face_engine, _lfw(faces_dir, "Colin_Powell", 4)), 1)
    stranger = _sighting(_vector(face_engine, _lfw(faces_dir, "Tony_Blair", 4)), 2)
    nobody = _sighting(_vector(face_engine, _lfw(faces_dir, "Aaron_Patterson", 1)), 3)
    for decoded in (mated, stranger, nobody):
        with write_session(engine) as session:
            assert store_event(session, decoded)
        assert isinstance(decoded.message, SightingEvent)
        sink.on_sighting(decoded.message, decoded.received_at)

    with write_session(engine) as session:
        rows = session.scalars(select(SightingCandidate).order_by(SightingCandidate.id)).all()
        audits = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.action == "sighting.search")
            .order_by(AuditEntry.seq)
        ).all()
    # Powell's 4th photo against his first three: above the dlib threshold, ranked first.
    assert [(r.person_id, r.rank, r.gallery) for r in rows][:1] == [(powell, 1, "watchlist")]
    assert rows[0].score >= DLIB_ALERT_THRESHOLD and rows[0].model_id == "dlib-resnet-v1"
    assert {r.sighting_id for r in rows} == {matched[0][0]}
    assert blair not in {r.person_id for r in rows}
    assert len(matched) == 1 and matched[0][1][0].person_id == powell
    # Each sighting searched is audited once, by the matcher, for the watchlist purpose.
    assert [a.target for a in audits] == [f"sighting:{rows[0].sighting_id}"] + [
        f"sighting:{rows[0].sighting_id + i}" for i in (1, 2)
    ]
    assert {(a.actor, a.purpose) for a in audits} == {("hub:matching", "watchlist")}
    assert audits[0].result == f"{len(rows)} candidates"
    assert [a.result for a in audits[1:]] == ["0 candidates", "0 candidates"]


def test_sightings_without_a_gallery_of_their_model_are_not_searched(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    galleries = GalleryService()
    with write_session(engine) as session:
        session.add(Site(site_id="gate", name="Gate"))
        session.flush()
        session.add(Device(device_id=CAMERA, site_id="gate", model="lantern-cam"))
        session.add(SiteGallery(site_id="gate", gallery="watchlist"))
    vector = np.zeros(128, dtype=np.float32)
    vector[0] = 1.0
    decoded = _sighting(vector, 1)
    with write_session(engine) as session:
        store_event(session, decoded)
    sink = MatchingSightingSink(engine, galleries)
    assert isinstance(decoded.message, SightingEvent)
    assert sink.match(CAMERA, decoded.message.event_id) is None
    sink.on_sighting(decoded.message, decoded.received_at)
    # An unknown sighting is logged, never raised into ingest.
    with caplog.at_level(logging.WARNING, logger="hub.sighting_matching"):
        sink.on_sighting(
            decoded.message.model_copy(update={"event_id": new_event_id()}), decoded.received_at
        )
    assert "not found" in caplog.text
    with write_session(engine) as session:
        assert session.scalar(select(func.count()).select_from(SightingCandidate)) == 0
        assert (
            session.scalar(
                select(func.count())
                .select_from(AuditEntry)
                .where(AuditEntry.action == "sighting.search")
            )
            == 0
        )
