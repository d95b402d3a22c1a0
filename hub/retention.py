"""Closing reunion cases, their retention clock, and erasure.

Closing a case (:func:`close_case`: reunited, withdrawn or deceased) sets
``closed_at`` and starts the retention clock: ``retention_until = closed_at +`` the
retention period (:data:`DEFAULT_RETENTION`, 30 days, unless the hub's settings carry
``reunion_retention_days``; see :func:`retention_period`). When it runs out
(:func:`purge_expired`, run by ``lantern hub purge-expired``) or on an erasure request
(:func:`erase_person`), the person is erased:

* their face templates (the embeddings and the aligned face crops: the hub keeps no
  other copy of the uploaded photos) are deleted, and their vectors removed from
  **every** gallery, in memory and in every copy saved under the gallery cache
  (:meth:`hub.galleries.GalleryService.erase_templates`);
* the review candidates in which they are the probe or the candidate are deleted,
  with their reviewers' decisions: a candidate holds a face crop and a score linking
  two people, which is data about the erased person. With the person gone the pair
  can never be proposed again, so nothing is lost by forgetting the rejections;
* sighting candidates naming them are deleted, and the probe templates of match
  requests sent to peers for them are blanked (the request rows stay: the peers hold
  the same request id in their audit logs);
* the person row and their reunion case are deleted, not kept as a tombstone: a
  tombstone would keep a name, a birth year and a consent record for no purpose.

The audit log keeps who erased whom (``person:<id>`` and the case id), when and why,
and how many records went: never the deleted content.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import CursorResult, Engine, Result, delete, or_, select, update
from sqlalchemy.orm import Session

from hub import audit
from hub.db.engine import write_session
from hub.db.models import (
    FaceTemplate,
    MatchRequest,
    Person,
    ReunionCase,
    ReviewCandidate,
    ReviewDecision,
    SightingCandidate,
    utcnow,
)
from hub.galleries import GalleryService
from hub.reunion import REUNION_CATEGORIES, CaseNotFound, ReunionError, case_label, person_ref

__all__ = [
    "CLOSED_STATUSES",
    "DEFAULT_RETENTION",
    "RETENTION_SETTING",
    "CaseAlreadyClosed",
    "Erasure",
    "close_case",
    "erase_person",
    "expired_cases",
    "purge_expired",
    "retention_period",
]

logger = logging.getLogger(__name__)

DEFAULT_RETENTION = timedelta(days=30)
"""How long a closed case's photos and templates are kept after closing."""

RETENTION_SETTING = "reunion_retention_days"
"""Name of the (optional) hub setting that overrides :data:`DEFAULT_RETENTION`."""

CLOSED_STATUSES = ("reunited", "withdrawn", "deceased")
ClosedStatus = Literal["reunited", "withdrawn", "deceased"]


class CaseAlreadyClosed(ReunionError):
    """The case was closed before."""


def retention_period(settings: Any = None) -> timedelta:
    """The retention period: ``settings.reunion_retention_days`` when the settings
    carry it (a positive number), else :data:`DEFAULT_RETENTION`."""
    days = getattr(settings, RETENTION_SETTING, None)
    if isinstance(days, int | float) and not isinstance(days, bool) and days >= 0:
        return timedelta(days=float(days))
    return DEFAULT_RETENTION


def close_case(
    engine: Engine,
    person_id: int,
    *,
    status: ClosedStatus,
    reason: str,
    actor: str,
    role: str,
    retention: timedelta = DEFAULT_RETENTION,
    now: datetime | None = None,
) -> ReunionCase:
    """Close an open case and start its retention clock (audited ``reunion.close``).

    Raises :class:`~hub.reunion.CaseNotFound` or :class:`CaseAlreadyClosed`."""
    if status not in CLOSED_STATUSES:
        raise ValueError(f"status must be one of {', '.join(CLOSED_STATUSES)}")
    when = now or utcnow()
    with write_session(engine) as session:
        person = session.get(Person, person_id)
        case = session.get(ReunionCase, person_id, with_for_update=True)
        if person is None or case is None:
            raise CaseNotFound(f"no reunion case for person {person_id}")
        if case.status != "open":
            raise CaseAlreadyClosed(f"the case of person {person_id} is already {case.status}")
        case.status = status
        case.closed_at = when
        case.close_reason = reason
        case.retention_until = when + retention
        audit.append(
            session,
            actor=actor,
            role=role,
            action="reunion.close",
            purpose="case_management",
            case_id=case_label(person),
            target=person_ref(person_id),
            result=f"{status}; retained until {case.retention_until.isoformat()}",
        )
        session.flush()
        session.expunge(case)
        return case


@dataclass(frozen=True)
class Erasure:
    """What one erasure deleted (counts only)."""

    person_id: int
    case_id: str
    templates: int
    review_candidates: int
    sighting_candidates: int
    blanked_requests: int
    gallery_vectors: int
    """Vectors removed from galleries in memory and saved copies (a template held in
    memory and in a saved copy counts once per place)."""
    galleries_ok: bool
    """False when removing the vectors from the galleries failed (logged); the
    database no longer holds them, so a gallery rebuild (``lantern hub
    rebuild-galleries``) finishes the erasure."""


def erase_person(
    engine: Engine,
    galleries: GalleryService,
    person_id: int,
    *,
    actor: str,
    role: str,
    reason: str,
    purpose: str = "erasure_request",
) -> Erasure:
    """Erase a missing or found person as the module docstring says, audited
    ``reunion.erase`` with ``reason``. Raises :class:`~hub.reunion.CaseNotFound` for
    a person who is not a reunion record."""
    with write_session(engine) as session:
        person = session.get(Person, person_id)
        if person is None or person.category not in REUNION_CATEGORIES:
            raise CaseNotFound(f"no reunion record for person {person_id}")
        label = case_label(person)
        template_ids = [
            int(t)
            for t in session.scalars(
                select(FaceTemplate.id).where(FaceTemplate.person_id == person_id)
            )
        ]
        candidate_ids = [
            int(c)
            for c in session.scalars(
                select(ReviewCandidate.id).where(
                    or_(
                        ReviewCandidate.probe_person_id == person_id,
                        ReviewCandidate.local_person_id == person_id,
                    )
                )
            )
        ]
        if candidate_ids:
            session.execute(
                delete(ReviewDecision).where(ReviewDecision.candidate_id.in_(candidate_ids))
            )
            session.execute(delete(ReviewCandidate).where(ReviewCandidate.id.in_(candidate_ids)))
        sightings = _count(
            session.execute(
                delete(SightingCandidate).where(SightingCandidate.person_id == person_id)
            )
        )
        blanked = _count(
            session.execute(
                update(MatchRequest)
                .where(MatchRequest.probe_person_id == person_id)
                .values(probe=b"", probe_person_id=None)
            )
        )
        session.execute(delete(FaceTemplate).where(FaceTemplate.person_id == person_id))
        session.execute(delete(ReunionCase).where(ReunionCase.person_id == person_id))
        session.execute(delete(Person).where(Person.id == person_id))
        audit.append(
            session,
            actor=actor,
            role=role,
            action="reunion.erase",
            purpose=purpose,
            case_id=label,
            target=person_ref(person_id),
            result=f"reason: {reason}; deleted {len(template_ids)} templates with their "
            f"crops, {len(candidate_ids)} review candidates, {sightings} sighting candidates; "
            f"{blanked} request probes blanked; vectors removed from every gallery",
        )
    removed, ok = 0, True
    try:
        removed = galleries.erase_templates(engine, template_ids).removed
    except Exception:
        ok = False
        logger.exception(
            "person %d erased from the database but not from the galleries; "
            "run `lantern hub rebuild-galleries`",
            person_id,
        )
    logger.info("person %d erased (%s)", person_id, purpose)
    return Erasure(
        person_id=person_id,
        case_id=label,
        templates=len(template_ids),
        review_candidates=len(candidate_ids),
        sighting_candidates=sightings,
        blanked_requests=blanked,
        gallery_vectors=removed,
        galleries_ok=ok,
    )


def _count(result: Result[Any]) -> int:
    """Rows a DELETE or UPDATE touched."""
    return int(cast(CursorResult[Any], result).rowcount or 0)


def expired_cases(engine: Engine, now: datetime | None = None) -> list[int]:
    """Person ids of closed cases whose retention ran out by ``now``."""
    with Session(engine) as session:
        return [
            int(p)
            for p in session.scalars(
                select(ReunionCase.person_id)
                .where(
                    ReunionCase.status != "open",
                    ReunionCase.retention_until.is_not(None),
                    ReunionCase.retention_until <= (now or utcnow()),
                )
                .order_by(ReunionCase.person_id)
            )
        ]


def purge_expired(
    engine: Engine,
    galleries: GalleryService,
    now: datetime | None = None,
    *,
    actor: str = "system:retention",
    role: str = "system",
) -> list[Erasure]:
    """Erase every closed case whose retention ran out by ``now`` (audited
    ``reunion.erase`` with purpose ``retention_expiry``)."""
    done: list[Erasure] = []
    for person_id in expired_cases(engine, now):
        try:
            done.append(
                erase_person(
                    engine,
                    galleries,
                    person_id,
                    actor=actor,
                    role=role,
                    reason="retention period ended",
                    purpose="retention_expiry",
                )
            )
        except CaseNotFound:  # erased meanwhile by a request
            continue
    return done
