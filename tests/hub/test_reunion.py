"""The reunion workflow's domain logic (hub.reunion) on SQLite and PostgreSQL, with
real faces from ``../shared/faces``: the opposite-gallery search, rejected pairs not
proposed again, two-person confirmation, and the age flags."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from sqlalchemy import Engine, select

from hub.auth import create_user
from hub.db.engine import write_session
from hub.db.models import AuditEntry, FaceTemplate, Person, ReunionCase, ReviewCandidate
from hub.db.users import Role
from hub.enrolment import HUB_ENGINE_CONFIG, decode_photo, process_photo, store_templates
from hub.galleries import GalleryService
from hub.reunion import (
    FLAG_AGE_GAP,
    FLAG_CHILD,
    LOCAL_HUB_ID,
    CaseClosed,
    CaseNotFound,
    DecisionConflict,
    PhotoAge,
    candidate_flags,
    decide,
    search_local,
    search_new_record,
)
from models.engine import FaceEngine, build_engine

READ = frozenset({"missing", "found"})


@pytest.fixture(scope="session")
def face_engine() -> FaceEngine:
    return build_engine(HUB_ENGINE_CONFIG)


def lfw(faces_dir: Path, person: str, n: int) -> Path:
    path = faces_dir / "lfw_dev" / person / f"{person}_{n:04d}.jpg"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def embed(face_engine: FaceEngine, path: Path) -> npt.NDArray[np.float32]:
    result = process_photo(face_engine, path.name, decode_photo(path.name, path.read_bytes()))
    assert result.accepted and result.vector is not None, result.reasons
    return np.asarray(result.vector, dtype=np.float32)


def open_case(
    engine: Engine,
    category: str,
    name: str,
    *,
    birth_year: int | None = None,
    status: str = "open",
) -> int:
    with write_session(engine) as session:
        person = Person(category=category, display_name=name, case_id=f"C-{name}")
        session.add(person)
        session.flush()
        session.add(
            ReunionCase(
                person_id=person.id,
                status=status,
                consent_by="family" if category == "missing" else None,
                reported_by="shelter" if category == "found" else "caseworker",
                birth_year=birth_year,
            )
        )
        return person.id


def enrol(
    engine: Engine,
    galleries: GalleryService,
    face_engine: FaceEngine,
    person_id: int,
    photos: list[Path],
    *,
    taken_at: datetime | None = None,
) -> list[int]:
    results = [
        process_photo(face_engine, p.name, decode_photo(p.name, p.read_bytes())) for p in photos
    ]
    store_templates(
        engine,
        galleries,
        person_id,
        results,
        model_id=face_engine.model_id,
        actor="test",
        role="caseworker",
    )
    ids = [r.template_id for r in results if r.template_id is not None]
    assert len(ids) == len(photos), [r.reasons for r in results]
    if taken_at is not None:
        with write_session(engine) as session:
            for t in session.scalars(select(FaceTemplate).where(FaceTemplate.id.in_(ids))):
                t.photo_taken_at = taken_at
    return ids


def users(engine: Engine, *names: str) -> list[int]:
    return [
        create_user(
            engine,
            username=n,
            role=Role.caseworker,
            password="correct horse battery staple",
            actor="test",
            actor_role="cli",
        ).id
        for n in names
    ]


@pytest.fixture
def world(
    engine: Engine, face_engine: FaceEngine, faces_dir: Path
) -> tuple[GalleryService, dict[str, int]]:
    """Missing: Colin Powell (photo 4). Found: Colin Powell (photos 1-3), Tony Blair."""
    galleries = GalleryService()
    ids = {
        "missing": open_case(engine, "missing", "powell-missing"),
        "found": open_case(engine, "found", "powell-found", birth_year=1937),
        "stranger": open_case(engine, "found", "blair-found"),
    }
    enrol(
        engine,
        galleries,
        face_engine,
        ids["missing"],
        [lfw(faces_dir, "Colin_Powell", 4)],
        taken_at=datetime(1990, 6, 1, tzinfo=UTC),
    )
    enrol(
        engine,
        galleries,
        face_engine,
        ids["found"],
        [lfw(faces_dir, "Colin_Powell", n) for n in (1, 2, 3)],
        taken_at=datetime(2003, 6, 1, tzinfo=UTC),
    )
    enrol(engine, galleries, face_engine, ids["stranger"], [lfw(faces_dir, "Tony_Blair", 1)])
    return galleries, ids


def _candidates(engine: Engine) -> list[ReviewCandidate]:
    with write_session(engine) as session:
        return list(session.scalars(select(ReviewCandidate).order_by(ReviewCandidate.id)))


def test_flags() -> None:
    adult = PhotoAge(datetime(2020, 1, 1, tzinfo=UTC), 1980)
    assert candidate_flags(adult, PhotoAge(datetime(2019, 1, 1, tzinfo=UTC), None)) == []
    child = PhotoAge(datetime(2010, 1, 1, tzinfo=UTC), 2000)
    assert candidate_flags(adult, child) == [FLAG_CHILD, FLAG_AGE_GAP]
    assert candidate_flags(PhotoAge(datetime(2018, 5, 1, tzinfo=UTC), 2000), adult) == [FLAG_CHILD]
    assert candidate_flags(PhotoAge(datetime(2019, 1, 1, tzinfo=UTC), 2000), adult) == []
    nine = PhotoAge(datetime(2011, 2, 1, tzinfo=UTC), None)
    assert candidate_flags(adult, nine) == []


def test_search_both_ways_and_rejected_pairs_stay_rejected(
    engine: Engine, world: tuple[GalleryService, dict[str, int]]
) -> None:
    galleries, ids = world
    first = search_local(
        engine, galleries, ids["missing"], hub_id=LOCAL_HUB_ID, actor="cw", role="caseworker"
    )
    assert first.gallery == "found" and len(first.created) == 2
    rows = _candidates(engine)
    best = rows[0] if rows[0].rank == 1 else rows[1]
    assert best.local_person_id == ids["found"] and best.probe_person_id == ids["missing"]
    assert best.probe_ref == f"person:{ids['missing']}" and best.hub_id == LOCAL_HUB_ID
    assert best.candidate_ref == f"person:{ids['found']}" and best.status == "pending"
    assert best.crop_jpeg and best.crop_jpeg[:2] == b"\xff\xd8"
    assert best.flags == [FLAG_AGE_GAP]  # 1990 vs 2003
    other = next(r for r in rows if r.id != best.id)
    assert other.local_person_id == ids["stranger"] and other.score < best.score

    # Again: both pairs are known, nothing new.
    again = search_local(
        engine, galleries, ids["missing"], hub_id=LOCAL_HUB_ID, actor="cw", role="caseworker"
    )
    assert again.created == [] and again.skipped_known == 2

    # Reject the stranger: remembered, from either side, whatever the hub id.
    (cw1,) = users(engine, "cw1")
    decide(
        engine,
        other.id,
        decision="reject",
        user_id=cw1,
        actor="cw1",
        role="caseworker",
        galleries=READ,
        reason="different person: ear shape",
    )
    from_found = search_local(
        engine, galleries, ids["stranger"], hub_id="hub-a", actor="cw", role="caseworker"
    )
    assert from_found.gallery == "missing"
    assert from_found.created == [] and from_found.skipped_rejected == 1
    from_powell = search_local(
        engine, galleries, ids["found"], hub_id=LOCAL_HUB_ID, actor="cw", role="caseworker"
    )
    assert from_powell.created == [] and from_powell.skipped_known == 1
    assert len(_candidates(engine)) == 2

    with write_session(engine) as session:
        searches = list(
            session.scalars(select(AuditEntry).where(AuditEntry.action == "reunion.search"))
        )
    assert len(searches) == 4
    assert searches[0].case_id == "C-powell-missing" and searches[0].purpose == "missing_person"
    assert searches[2].purpose == "found_person"


def test_closed_cases_are_not_searched_nor_proposed(
    engine: Engine, world: tuple[GalleryService, dict[str, int]]
) -> None:
    galleries, ids = world
    with write_session(engine) as session:
        case = session.get(ReunionCase, ids["found"])
        assert case is not None
        case.status = "reunited"
    result = search_local(
        engine, galleries, ids["missing"], hub_id=LOCAL_HUB_ID, actor="cw", role="caseworker"
    )
    assert result.skipped_closed == 1 and len(result.created) == 1
    with pytest.raises(CaseClosed):
        search_local(
            engine, galleries, ids["found"], hub_id=LOCAL_HUB_ID, actor="cw", role="caseworker"
        )
    with pytest.raises(CaseNotFound):
        search_local(engine, galleries, 999_999, hub_id=LOCAL_HUB_ID, actor="cw", role="x")


def test_no_federation_means_local_only(
    engine: Engine, world: tuple[GalleryService, dict[str, int]]
) -> None:
    galleries, ids = world
    local, remote = search_new_record(
        engine, galleries, ids["found"], hub_id=LOCAL_HUB_ID, actor="cw", role="caseworker"
    )
    assert local.gallery == "missing" and len(local.created) == 1
    assert remote.status == "not_configured" and remote.requests == []
    _, skipped = search_new_record(
        engine,
        galleries,
        ids["found"],
        hub_id=LOCAL_HUB_ID,
        actor="cw",
        role="caseworker",
        peers=False,
    )
    assert skipped.status == "not_requested"


def test_two_person_confirmation(
    engine: Engine, world: tuple[GalleryService, dict[str, int]]
) -> None:
    galleries, ids = world
    result = search_local(
        engine, galleries, ids["missing"], hub_id=LOCAL_HUB_ID, actor="cw", role="caseworker"
    )
    cand = result.created[0]
    cw1, cw2, cw3 = users(engine, "cw1", "cw2", "cw3")
    kw = {"role": "caseworker", "galleries": READ}
    one = decide(engine, cand, decision="confirm", user_id=cw1, actor="cw1", **kw)  # type: ignore[arg-type]
    assert one.status == "pending" and one.confirmations == 1
    with pytest.raises(DecisionConflict, match="another caseworker"):
        decide(engine, cand, decision="confirm", user_id=cw1, actor="cw1", **kw)  # type: ignore[arg-type]
    two = decide(engine, cand, decision="confirm", user_id=cw2, actor="cw2", **kw)  # type: ignore[arg-type]
    assert two.status == "confirmed" and two.confirmations == 2
    with pytest.raises(DecisionConflict, match="already confirmed"):
        decide(engine, cand, decision="reject", user_id=cw3, actor="cw3", reason="no", **kw)  # type: ignore[arg-type]
    with pytest.raises(CaseNotFound):
        decide(
            engine,
            cand,
            decision="confirm",
            user_id=cw3,
            actor="cw3",
            role="officer",
            galleries=frozenset({"watchlist"}),
        )
    # A reviewer who confirmed may still reject (their confirmation is replaced).
    other = result.created[1]
    decide(engine, other, decision="confirm", user_id=cw1, actor="cw1", **kw)  # type: ignore[arg-type]
    rejected = decide(
        engine,
        other,
        decision="reject",
        user_id=cw1,
        actor="cw1",
        reason="not him",
        **kw,  # type: ignore[arg-type]
    )
    assert rejected.status == "rejected" and rejected.confirmations == 0
    with pytest.raises(ValueError, match="reason"):
        decide(engine, cand, decision="reject", user_id=cw3, actor="cw3", reason=" ", **kw)  # type: ignore[arg-type]
    with write_session(engine) as session:
        actions = [
            (a.action, a.actor, a.target)
            for a in session.scalars(
                select(AuditEntry)
                .where(AuditEntry.action.like("review.%"))
                .order_by(AuditEntry.seq)
            )
        ]
    assert [a[0] for a in actions] == [
        "review.confirm",
        "review.confirm",
        "review.confirm",
        "review.reject",
    ]
    assert actions[0][2] == f"review:{cand}"
