"""The hub's gallery service over the face_templates table, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine

from hub.db.engine import write_session
from hub.db.models import FaceTemplate, Person
from hub.galleries import DB_STATE_FILE, GalleryService, gallery_dir

DIM = 16
MODEL = "test-model-v1"


def _unit(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _enrol(
    engine: Engine, category: str, vectors: np.ndarray, model_id: str = MODEL
) -> tuple[int, list[int]]:
    with write_session(engine) as session:
        person = Person(category=category, display_name=f"{category} person")
        session.add(person)
        session.flush()
        rows = [
            FaceTemplate(
                person_id=person.id,
                model_id=model_id,
                dim=DIM,
                embedding=np.asarray(v, dtype="<f4").tobytes(),
            )
            for v in vectors
        ]
        session.add_all(rows)
        session.flush()
        return person.id, [r.id for r in rows]


def test_galleries_are_built_per_category_and_model(engine: Engine) -> None:
    rng = np.random.default_rng(1)
    watch = [_enrol(engine, "watchlist", _unit(rng, 2)) for _ in range(5)]
    missing_pid, missing_tids = _enrol(engine, "missing", _unit(rng, 3))
    other_pid, _ = _enrol(engine, "watchlist", _unit(rng, 1), model_id="other-model")

    service = GalleryService()
    counts = service.load_from_db(engine)
    summary = {(c.gallery, c.model_id): (c.templates, c.persons, c.source) for c in counts}
    assert summary == {
        ("missing", MODEL): (3, 1, "database"),
        ("watchlist", MODEL): (10, 5, "database"),
        ("watchlist", "other-model"): (1, 1, "database"),
    }
    assert service.models("watchlist") == ["other-model", MODEL]

    # A probe near one of person 2's templates: that person first, one entry per person.
    pid, tids = watch[2]
    with write_session(engine) as session:
        stored = session.get(FaceTemplate, tids[1])
        assert stored is not None
        vector = np.frombuffer(stored.embedding, dtype="<f4")
    probe = vector + 0.05 * _unit(rng)[0]
    probe /= np.linalg.norm(probe)
    hits = service.search("watchlist", MODEL, probe, k=10)[0]
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0].person_id == pid and hits[0].template_id == tids[1]
    assert len({h.person_id for h in hits}) == 5
    assert hits[0].score > 0.95 > hits[1].score
    # Alert mode keeps only scores at or above the threshold.
    assert [h.person_id for h in service.search("watchlist", MODEL, probe, 10, 0.95)[0]] == [pid]
    # Other models and categories are separate galleries.
    assert all(h.person_id != other_pid for h in hits)
    assert service.search("found", MODEL, probe, 5) == [[]]
    assert service.search("watchlist", "unknown-model", probe, 5) == [[]]

    # Deleting templates removes them from whatever gallery holds them.
    assert service.remove_templates(tids + missing_tids + [424242]) == 5
    after = service.search("watchlist", MODEL, probe, 10)[0]
    assert pid not in {h.person_id for h in after} and len(after) == 4
    assert service.search("missing", MODEL, probe, 5) == [[]]
    assert missing_pid > 0


def test_add_creates_a_gallery_and_refuses_unknown_categories(engine: Engine) -> None:
    rng = np.random.default_rng(2)
    service = GalleryService()
    assert service.load_from_db(engine) == []
    pid, tids = _enrol(engine, "found", _unit(rng, 2))
    vectors = _unit(rng, 2)
    service.add("found", MODEL, tids, [pid, pid], vectors)
    assert service.keys() == [("found", MODEL)]
    assert service.search("found", MODEL, vectors[0], 3)[0][0].template_id == tids[0]
    with pytest.raises(ValueError, match="unknown gallery"):
        service.add("suspects", MODEL, [99], [1], vectors[:1])


def test_saved_galleries_load_only_while_they_match_the_database(
    engine: Engine, tmp_path: Path
) -> None:
    rng = np.random.default_rng(3)
    for _ in range(4):
        _enrol(engine, "supervised", _unit(rng, 2))
    cache = tmp_path / "galleries"
    first = GalleryService(cache_dir=cache)
    assert [c.source for c in first.load_from_db(engine)] == ["database"]
    [written] = first.save(engine)
    assert written == gallery_dir(cache, "supervised", MODEL)
    state = json.loads((written / DB_STATE_FILE).read_text())
    assert state["count"] == 8

    probe = _unit(rng)[0]
    expected = first.search("supervised", MODEL, probe, 4)
    second = GalleryService(cache_dir=cache)
    assert [(c.source, c.templates) for c in second.load_from_db(engine)] == [("cache", 8)]
    assert second.search("supervised", MODEL, probe, 4) == expected

    # A template enrolled since the save: the saved copy is stale and is rebuilt.
    new_pid, new_tids = _enrol(engine, "supervised", _unit(rng, 1))
    third = GalleryService(cache_dir=cache)
    assert [(c.source, c.templates) for c in third.load_from_db(engine)] == [("database", 9)]
    assert new_pid in {h.person_id for h in third.search("supervised", MODEL, probe, 10)[0]}
    assert new_tids

    # A damaged record is not trusted either.
    (written / DB_STATE_FILE).write_text("{not json")
    fourth = GalleryService(cache_dir=cache)
    assert [c.source for c in fourth.load_from_db(engine)] == ["database"]
