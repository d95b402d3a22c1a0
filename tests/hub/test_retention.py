"""Closing reunion cases, the retention clock and erasure (hub.retention), on SQLite
and PostgreSQL with real faces: after erasure a search with the person's own photo
does not find them, in memory and after a restart from the saved galleries, and no
saved gallery file holds their vectors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import typer
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from hub.audit import verify
from hub.db.engine import write_session
from hub.db.models import (
    AuditEntry,
    FaceTemplate,
    MatchRequest,
    Person,
    ReunionCase,
    ReviewCandidate,
)
from hub.enrolment import HUB_ENGINE_CONFIG
from hub.galleries import GalleryService
from hub.retention import (
    DEFAULT_RETENTION,
    CaseAlreadyClosed,
    close_case,
    erase_person,
    expired_cases,
    purge_expired,
    retention_period,
)
from hub.retention_cli import purge_expired as purge_command
from hub.reunion import LOCAL_HUB_ID, CaseNotFound, search_local
from models.engine import FaceEngine, build_engine
from tests.hub.test_reunion import embed, enrol, lfw, open_case

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def face_engine() -> FaceEngine:
    return build_engine(HUB_ENGINE_CONFIG)


def _holds(root: Path, vectors: list[bytes]) -> list[bool]:
    """Whether any file under ``root`` holds each vector (float32, equal to 1e-5, at
    any byte offset): the galleries normalise again, so the bits may differ."""
    files = [p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()]
    out = []
    for blob in vectors:
        vec = np.frombuffer(blob, dtype="<f4")
        found = False
        for data in files:
            for off in range(4):
                n = (len(data) - off) // 4
                floats = np.frombuffer(data, dtype="<f4", count=n, offset=off)
                with np.errstate(invalid="ignore", over="ignore"):
                    head = np.abs(floats[: n - len(vec) + 1] - vec[0]) < 1e-5
                starts = np.flatnonzero(head)
                if any(np.allclose(floats[i : i + len(vec)], vec, atol=1e-5) for i in starts):
                    found = True
                    break
            if found:
                break
        out.append(found)
    return out


def _embeddings(engine: Engine, person_id: int) -> list[bytes]:
    with write_session(engine) as session:
        return [
            bytes(e)
            for e in session.scalars(
                select(FaceTemplate.embedding).where(FaceTemplate.person_id == person_id)
            )
        ]


def _found_person_ids(galleries: GalleryService, model_id: str, probe: object) -> list[int]:
    return [h.person_id for h in galleries.search("found", model_id, probe, k=10)[0]]


def test_retention_period_setting() -> None:
    assert retention_period(None) == DEFAULT_RETENTION == timedelta(days=30)
    assert retention_period(SimpleNamespace(reunion_retention_days=7)) == timedelta(days=7)
    assert retention_period(SimpleNamespace(reunion_retention_days=True)) == DEFAULT_RETENTION


def test_close_then_purge_erases_everywhere(
    engine: Engine, face_engine: FaceEngine, faces_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "galleries"
    galleries = GalleryService(cache_dir=cache)
    model = face_engine.model_id
    missing = open_case(engine, "missing", "powell-missing")
    found = open_case(engine, "found", "powell-found")
    stranger = open_case(engine, "found", "blair-found")
    enrol(engine, galleries, face_engine, missing, [lfw(faces_dir, "Colin_Powell", 4)])
    enrol(
        engine,
        galleries,
        face_engine,
        found,
        [lfw(faces_dir, "Colin_Powell", n) for n in (1, 2, 3)],
    )
    enrol(engine, galleries, face_engine, stranger, [lfw(faces_dir, "Tony_Blair", 1)])
    search_local(engine, galleries, missing, hub_id=LOCAL_HUB_ID, actor="cw", role="caseworker")
    with write_session(engine) as session:
        session.add(
            MatchRequest(
                id="00000000-0000-4000-8000-000000000001",
                direction="outgoing",
                origin_hub="hub-a",
                requester="cw",
                case_id="C-powell-found",
                legal_basis="test",
                purpose="found_person",
                galleries=["missing"],
                k=10,
                model_id=model,
                probe=_embeddings(engine, found)[0],
                probe_person_id=found,
            )
        )
    galleries.save(engine)
    own_photo = embed(face_engine, lfw(faces_dir, "Colin_Powell", 1))
    assert _found_person_ids(galleries, model, own_photo)[0] == found
    secret = _embeddings(engine, found)
    assert all(_holds(cache, secret))  # the test sees vectors on disk

    closed = close_case(
        engine,
        found,
        status="reunited",
        reason="family met at the shelter",
        actor="cw",
        role="caseworker",
        now=T0,
    )
    assert closed.status == "reunited" and closed.closed_at == T0
    assert closed.retention_until == T0 + DEFAULT_RETENTION
    with pytest.raises(CaseAlreadyClosed):
        close_case(engine, found, status="withdrawn", reason="x", actor="cw", role="caseworker")
    with pytest.raises(CaseNotFound):
        close_case(engine, 999_999, status="withdrawn", reason="x", actor="cw", role="cw")

    assert purge_expired(engine, galleries, T0 + timedelta(days=29)) == []
    assert expired_cases(engine, T0 + timedelta(days=31)) == [found]
    done = purge_expired(engine, galleries, T0 + timedelta(days=31))
    assert [e.person_id for e in done] == [found]
    erasure = done[0]
    assert erasure.templates == 3 and erasure.review_candidates == 1
    assert erasure.blanked_requests == 1 and erasure.galleries_ok
    assert erasure.gallery_vectors == 3

    # In memory: their own photo no longer finds them.
    hits = _found_person_ids(galleries, model, own_photo)
    assert found not in hits and hits == [stranger]
    # On disk: no saved file holds their vectors, and a restart loads the saved
    # galleries (not a rebuild) without them.
    assert not any(_holds(cache, secret))
    restarted = GalleryService(cache_dir=cache)
    sources = {(c.gallery, c.model_id): c.source for c in restarted.load_from_db(engine)}
    assert sources[("found", model)] == "cache"
    assert _found_person_ids(restarted, model, own_photo) == [stranger]

    with write_session(engine) as session:
        assert session.get(Person, found) is None and session.get(ReunionCase, found) is None
        assert (
            session.scalar(
                select(func.count())
                .select_from(FaceTemplate)
                .where(FaceTemplate.person_id == found)
            )
            == 0
        )
        assert session.scalar(select(func.count()).select_from(ReviewCandidate)) == 1
        request = session.get(MatchRequest, "00000000-0000-4000-8000-000000000001")
        assert request is not None and request.probe == b"" and request.probe_person_id is None
        rows = list(session.scalars(select(AuditEntry).where(AuditEntry.action == "reunion.erase")))
        assert verify(session).ok
    assert len(rows) == 1
    row = rows[0]
    assert (row.actor, row.purpose, row.case_id) == (
        "system:retention",
        "retention_expiry",
        "C-powell-found",
    )
    assert row.target == f"person:{found}" and row.result is not None
    assert "retention period ended" in row.result and "powell" not in row.result.lower()
    assert purge_expired(engine, galleries, T0 + timedelta(days=60)) == []


def test_erasure_scrubs_saved_galleries_this_process_never_loaded(
    engine: Engine, face_engine: FaceEngine, faces_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "galleries"
    writer = GalleryService(cache_dir=cache)
    found = open_case(engine, "found", "powell-found")
    enrol(engine, writer, face_engine, found, [lfw(faces_dir, "Colin_Powell", 1)])
    writer.save(engine)
    stranger = open_case(engine, "found", "blair-found")
    enrol(engine, writer, face_engine, stranger, [lfw(faces_dir, "Tony_Blair", 1)])
    writer.save(engine)  # two generations on disk now, both with Powell
    secret = _embeddings(engine, found)
    assert all(_holds(cache / "found", secret))

    fresh = GalleryService(cache_dir=cache)  # holds nothing in memory
    done = erase_person(engine, fresh, found, actor="cw", role="caseworker", reason="request")
    assert done.galleries_ok and done.gallery_vectors == 1
    assert not any(_holds(cache, secret))
    restarted = GalleryService(cache_dir=cache)
    restarted.load_from_db(engine)
    probe = embed(face_engine, lfw(faces_dir, "Colin_Powell", 2))
    assert _found_person_ids(restarted, face_engine.model_id, probe) == [stranger]
    with pytest.raises(CaseNotFound):
        erase_person(engine, fresh, found, actor="cw", role="caseworker", reason="again")


def test_purge_command(
    engine: Engine,
    face_engine: FaceEngine,
    faces_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("LANTERN_DATA_DIR", str(data_dir))
    galleries = GalleryService(cache_dir=data_dir / "galleries")
    found = open_case(engine, "found", "powell-found")
    enrol(engine, galleries, face_engine, found, [lfw(faces_dir, "Colin_Powell", 1)])
    galleries.save(engine)
    secret = _embeddings(engine, found)
    close_case(
        engine, found, status="withdrawn", reason="family withdrew", actor="cw", role="cw", now=T0
    )
    app = typer.Typer()
    app.command()(purge_command)
    app.command("noop")(lambda: None)  # a group, so the command is named
    url = engine.url.render_as_string(hide_password=False)
    runner = CliRunner()
    dry = runner.invoke(
        app, ["purge-expired", "--database-url", url, "--now", "2025-04-15", "--dry-run"]
    )
    assert dry.exit_code == 0, dry.output
    assert f"would erase person:{found}" in dry.output
    early = runner.invoke(app, ["purge-expired", "--database-url", url, "--now", "2025-03-20"])
    assert early.exit_code == 0 and "0 expired cases erased" in early.output
    assert all(_holds(data_dir / "galleries", secret))
    late = runner.invoke(app, ["purge-expired", "--database-url", url, "--now", "2025-04-15"])
    assert late.exit_code == 0, late.output
    assert f"erased person:{found}" in late.output and "1 expired cases erased" in late.output
    assert not any(_holds(data_dir / "galleries", secret))
