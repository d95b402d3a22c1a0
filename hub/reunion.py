"""The reunion (Lighthouse) workflow: missing and found persons searched against each
other, candidates reviewed by two caseworkers.

A *missing* person is reported by staff for a family, with the family's consent
recorded; a *found* (unidentified) person is reported by a shelter, hospital or police
unit. Both are persons of those categories with a :class:`~hub.db.models.ReunionCase`.
Every record is searched against the opposite gallery (missing against found and
found against missing): locally with :func:`search_local`, and in peer regions through
the federation client (:func:`search_peers`) when federation is configured.
:func:`search_new_record` does both and is run after each enrolment of a case's photos.

Each new candidate becomes a :class:`~hub.db.models.ReviewCandidate`: never an
identity, only a pair for people to compare. :func:`decide` records the reviewers'
decisions: a candidate becomes a *confirmed match* only when two different caseworkers
confirm it; one rejection (with its reason) rejects it. A local pair is proposed once,
whichever side is searched: a rejected pair stays rejected and is never proposed again.

Candidates carry flags where face comparison is known to be less reliable
(:func:`candidate_flags`): ``child`` when either person may have been under 18 in
their photo, ``age_gap`` when the two photos are ten or more years apart.
"""

from __future__ import annotations

import importlib
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
from sqlalchemy import Engine, and_, func, or_, select
from sqlalchemy.exc import IntegrityError
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
    utcnow,
)
from hub.galleries import GalleryService, template_vectors

__all__ = [
    "AGE_GAP_YEARS",
    "CHILD_AGE",
    "CONFIRMATIONS_NEEDED",
    "DEFAULT_LEGAL_BASIS",
    "FLAG_AGE_GAP",
    "FLAG_CHILD",
    "LOCAL_HUB_ID",
    "OPPOSITE",
    "PURPOSES",
    "REUNION_CATEGORIES",
    "SEARCH_K",
    "CaseClosed",
    "CaseNotFound",
    "DecisionConflict",
    "DecisionOutcome",
    "LocalSearchResult",
    "PeerSearchResult",
    "PhotoAge",
    "ReunionError",
    "candidate_flags",
    "case_label",
    "decide",
    "Federation",
    "federation_of",
    "own_hub_id",
    "person_ref",
    "search_local",
    "search_new_record",
    "search_peers",
]

logger = logging.getLogger(__name__)

LOCAL_HUB_ID = "local"
"""``hub_id`` of local candidates when the hub has no federation identity."""

REUNION_CATEGORIES = ("missing", "found")
OPPOSITE = {"missing": "found", "found": "missing"}
"""The gallery a record of each category is searched against."""
PURPOSES = {"missing": "missing_person", "found": "found_person"}
"""The match-request purpose of a search for a record of each category."""

SEARCH_K = 10
"""Candidates asked for per search (investigative: the top k, whatever their score)."""

CHILD_AGE = 18
AGE_GAP_YEARS = 10
FLAG_CHILD = "child"
FLAG_AGE_GAP = "age_gap"

CONFIRMATIONS_NEEDED = 2
"""Different caseworkers who must confirm a candidate before it is a match."""

DEFAULT_LEGAL_BASIS = (
    "reunion case: missing-person report with family consent / found-person report"
)
"""Legal basis sent with a peer search when the caller names none."""


class ReunionError(Exception):
    """A reunion operation refused; the message says why."""


class CaseNotFound(ReunionError):
    """No reunion case (or review candidate) of that id visible to the caller."""


class CaseClosed(ReunionError):
    """The case is closed; it is no longer searched."""


class DecisionConflict(ReunionError):
    """A review decision that cannot be taken (already decided, same reviewer twice)."""


def person_ref(person_id: int) -> str:
    """How a person is referred to in the review queue: ``person:<id>``."""
    return f"person:{person_id}"


def case_label(person: Person) -> str:
    """The case id audited for a record: its ``case_id``, else ``reunion-<id>``."""
    return person.case_id or f"reunion-{person.id}"


def own_hub_id(state: Any) -> str:
    """This hub's id in the federation, else :data:`LOCAL_HUB_ID`."""
    federation = federation_of(state)
    return federation.hub_id if federation is not None else LOCAL_HUB_ID


# -- flags -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PhotoAge:
    """When a face photo was taken (else enrolled) and the person's birth year."""

    taken_at: datetime
    birth_year: int | None


def candidate_flags(probe: PhotoAge, candidate: PhotoAge) -> list[str]:
    """Reasons to be careful with a pair, since published face-recognition accuracy
    drops for children and across long age gaps:

    * ``child``: either person may have been under :data:`CHILD_AGE` in their photo.
      Only the birth year is known, so a difference of exactly 18 years (possibly
      still 17) is flagged too.
    * ``age_gap``: the photos were taken :data:`AGE_GAP_YEARS` or more years apart.
    """
    flags: list[str] = []
    if any(
        p.birth_year is not None and p.taken_at.year - p.birth_year <= CHILD_AGE
        for p in (probe, candidate)
    ):
        flags.append(FLAG_CHILD)
    if _whole_years_apart(probe.taken_at, candidate.taken_at) >= AGE_GAP_YEARS:
        flags.append(FLAG_AGE_GAP)
    return flags


def _whole_years_apart(a: datetime, b: datetime) -> int:
    early, late = sorted((a, b))
    return late.year - early.year - ((late.month, late.day) < (early.month, early.day))


# -- local search ----------------------------------------------------------------------


@dataclass
class LocalSearchResult:
    """What a search of the opposite gallery on this hub did."""

    person_id: int
    gallery: str
    """The gallery searched."""
    models: list[str]
    """Embedding models of the person's templates (each searched separately)."""
    created: list[int] = field(default_factory=list)
    """Ids of the new review candidates, best first per model."""
    skipped_rejected: int = 0
    """Pairs found again but rejected before: not proposed again."""
    skipped_known: int = 0
    """Pairs already in the review queue (pending or confirmed)."""
    skipped_closed: int = 0
    """Candidates whose own case is closed."""


@dataclass
class _Best:
    score: float
    probe_template: int
    template_id: int


def _load_case(session: Session, person_id: int) -> tuple[Person, ReunionCase]:
    person = session.get(Person, person_id)
    case = session.get(ReunionCase, person_id)
    if person is None or case is None or person.category not in OPPOSITE:
        raise CaseNotFound(f"no reunion case for person {person_id}")
    return person, case


def search_local(
    engine: Engine,
    galleries: GalleryService,
    person_id: int,
    *,
    hub_id: str,
    actor: str,
    role: str,
    k: int = SEARCH_K,
) -> LocalSearchResult:
    """Search the opposite gallery with each of the person's templates, store the new
    candidates (top ``k`` persons per model, by their best score over the probe's
    templates) as pending review candidates, and audit ``reunion.search``.

    Raises :class:`CaseNotFound` or :class:`CaseClosed`."""
    with Session(engine) as session:
        person, case = _load_case(session, person_id)
        if case.status != "open":
            raise CaseClosed(f"the case of person {person_id} is {case.status}")
        gallery = OPPOSITE[person.category]
        templates = list(
            session.scalars(
                select(FaceTemplate)
                .where(FaceTemplate.person_id == person_id)
                .order_by(FaceTemplate.id)
            )
        )
        probe_birth_year = case.birth_year
        label = case_label(person)
    by_model: dict[str, list[FaceTemplate]] = {}
    for t in templates:
        by_model.setdefault(t.model_id, []).append(t)
    result = LocalSearchResult(person_id=person_id, gallery=gallery, models=sorted(by_model))
    proposals: list[ReviewCandidate] = []
    for model_id, probes in sorted(by_model.items()):
        dims = {t.dim for t in probes}
        if len(dims) != 1:
            logger.warning("person %d has %s templates of mixed dims; skipped", person_id, model_id)
            continue
        vectors = template_vectors([bytes(t.embedding) for t in probes], dims.pop())
        best: dict[int, _Best] = {}
        for qi, hits in enumerate(galleries.search(gallery, model_id, vectors, k=k)):
            for hit in hits:
                seen = best.get(hit.person_id)
                if seen is None or hit.score > seen.score:
                    best[hit.person_id] = _Best(hit.score, qi, hit.template_id)
        ranked = sorted(best.items(), key=lambda kv: (-kv[1].score, kv[0]))[:k]
        proposals.extend(
            _proposals(
                engine,
                person_id,
                probes,
                probe_birth_year,
                ranked,
                gallery,
                model_id,
                hub_id,
                result,
            )
        )
    with write_session(engine) as session:
        for proposal in proposals:
            try:
                with session.begin_nested():
                    session.add(proposal)
            except IntegrityError:  # proposed meanwhile by a concurrent search
                result.skipped_known += 1
                continue
            result.created.append(proposal.id)
        audit.append(
            session,
            actor=actor,
            role=role,
            action="reunion.search",
            purpose=PURPOSES[OPPOSITE[gallery]],
            case_id=label,
            target=person_ref(person_id),
            result=f"local {gallery} gallery, models {','.join(result.models) or 'none'}: "
            f"{len(result.created)} new candidates, {result.skipped_rejected} rejected before, "
            f"{result.skipped_known} already queued, {result.skipped_closed} closed cases",
        )
    return result


def _proposals(
    engine: Engine,
    person_id: int,
    probes: Sequence[FaceTemplate],
    probe_birth_year: int | None,
    ranked: Sequence[tuple[int, _Best]],
    gallery: str,
    model_id: str,
    hub_id: str,
    result: LocalSearchResult,
) -> list[ReviewCandidate]:
    """The new candidates of one model's ranked hits; counts the skipped ones."""
    if not ranked:
        return []
    ids = [pid for pid, _ in ranked]
    with Session(engine) as session:
        known: dict[tuple[int | None, int | None], str] = {
            (p, c): status
            for p, c, status in session.execute(
                select(
                    ReviewCandidate.probe_person_id,
                    ReviewCandidate.local_person_id,
                    ReviewCandidate.status,
                ).where(
                    or_(
                        and_(
                            ReviewCandidate.probe_person_id == person_id,
                            ReviewCandidate.local_person_id.in_(ids),
                        ),
                        and_(
                            ReviewCandidate.probe_person_id.in_(ids),
                            ReviewCandidate.local_person_id == person_id,
                        ),
                    )
                )
            )
        }
        statuses = dict(
            session.execute(
                select(Person.id, func.coalesce(ReunionCase.status, "open"))
                .outerjoin(ReunionCase, ReunionCase.person_id == Person.id)
                .where(Person.id.in_(ids), Person.category == gallery)
            ).all()
        )
        births = dict(
            session.execute(
                select(ReunionCase.person_id, ReunionCase.birth_year).where(
                    ReunionCase.person_id.in_(ids)
                )
            ).all()
        )
        chosen = {
            t.id: t
            for t in session.scalars(
                select(FaceTemplate).where(FaceTemplate.id.in_([b.template_id for _, b in ranked]))
            )
        }
    out: list[ReviewCandidate] = []
    rank = 0
    for pid, best in ranked:
        pair = [known.get((person_id, pid)), known.get((pid, person_id))]
        if "rejected" in pair:
            result.skipped_rejected += 1
            continue
        if any(s is not None for s in pair):
            result.skipped_known += 1
            continue
        status = statuses.get(pid)
        template = chosen.get(best.template_id)
        if status is None or template is None:  # erased or re-categorised meanwhile
            continue
        if status != "open":
            result.skipped_closed += 1
            continue
        probe = probes[best.probe_template]
        rank += 1
        out.append(
            ReviewCandidate(
                probe_ref=person_ref(person_id),
                probe_person_id=person_id,
                hub_id=hub_id,
                candidate_ref=person_ref(pid),
                local_person_id=pid,
                gallery=gallery,
                model_id=model_id,
                score=float(best.score),
                rank=rank,
                crop_jpeg=template.crop_jpeg,
                flags=candidate_flags(
                    PhotoAge(probe.photo_taken_at or probe.created_at, probe_birth_year),
                    PhotoAge(template.photo_taken_at or template.created_at, births.get(pid)),
                ),
                status="pending",
            )
        )
    return out


# -- peer search -----------------------------------------------------------------------


@dataclass
class PeerSearchResult:
    """What asking the peer regions did."""

    status: Literal["sent", "not_requested", "not_configured", "no_templates"]
    detail: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    """Per request sent: ``request_id``, ``model_id`` and ``regions`` (each with
    ``hub_id``, ``status``, ``reason``, ``candidates``)."""


SendMatchRequest = Callable[..., Any]


@dataclass(frozen=True)
class Federation:
    """This hub's federation: its settings and the client's ``send_match_request``."""

    settings: Any
    send: SendMatchRequest

    @property
    def hub_id(self) -> str:
        hub_id = getattr(self.settings, "hub_id", None)
        return hub_id if isinstance(hub_id, str) and hub_id else LOCAL_HUB_ID


def federation_of(state: Any) -> Federation | None:
    """The app's federation (:func:`hub.federation.peers.federation_for`) with the
    client's ``send_match_request``; None when federation is not configured (no
    federation file) or the federation package is missing."""
    try:
        peers = importlib.import_module("hub.federation.peers")
        client = importlib.import_module("hub.federation.client")
    except ImportError:
        return None
    settings = peers.federation_for(state)
    send = getattr(client, "send_match_request", None)
    if settings is None or not callable(send):
        return None
    return Federation(settings=settings, send=send)


def _region(item: Any) -> dict[str, Any]:
    if isinstance(item, dict):
        return dict(item)
    out: dict[str, Any] = {}
    for name in ("hub_id", "status", "reason", "candidates"):
        value = getattr(item, name, None)
        out[name] = len(value) if isinstance(value, list) else value
    return out


def search_peers(
    engine: Engine,
    federation: Federation | None,
    person_id: int,
    *,
    requester: str,
    role: str,
    legal_basis: str | None = None,
    k: int = SEARCH_K,
    targets: list[str] | None = None,
) -> PeerSearchResult:
    """Ask the peer regions to search their opposite gallery with the person's
    templates (one request per model id) through the federation client, which stores
    the answers as review candidates and audits the requests. Without a federation:
    ``not_configured``."""
    if federation is None:
        return PeerSearchResult("not_configured", "federation not configured on this hub")
    with Session(engine) as session:
        person, case = _load_case(session, person_id)
        if case.status != "open":
            raise CaseClosed(f"the case of person {person_id} is {case.status}")
        rows = session.execute(
            select(FaceTemplate.model_id, FaceTemplate.dim, FaceTemplate.embedding)
            .where(FaceTemplate.person_id == person_id)
            .order_by(FaceTemplate.id)
        ).all()
        category, label = person.category, case_label(person)
    if not rows:
        return PeerSearchResult("no_templates", "the person has no face templates yet")
    grouped: dict[tuple[str, int], list[bytes]] = {}
    for model_id, dim, blob in rows:
        grouped.setdefault((str(model_id), int(dim)), []).append(bytes(blob))
    result = PeerSearchResult("sent", "")
    for (model_id, dim), blobs in sorted(grouped.items()):
        request_id = str(uuid.uuid4())
        try:
            regions = federation.send(
                engine,
                federation.settings,
                request_id=request_id,
                case_id=label,
                legal_basis=legal_basis or DEFAULT_LEGAL_BASIS,
                purpose=PURPOSES[category],
                galleries=[OPPOSITE[category]],
                k=k,
                model_id=model_id,
                probe=np.asarray(template_vectors(blobs, dim), dtype=np.float32),
                probe_person_id=person_id,
                requester=requester,
                targets=targets,
                role=role,
            )
        except Exception as exc:  # a federation failure must not lose the local search
            logger.exception("peer search for person %d failed", person_id)
            result.requests.append(
                {"request_id": request_id, "model_id": model_id, "error": str(exc), "regions": []}
            )
            continue
        result.requests.append(
            {
                "request_id": request_id,
                "model_id": model_id,
                "regions": [_region(r) for r in (regions or [])],
            }
        )
    result.detail = f"{len(result.requests)} match request(s) sent"
    return result


def search_new_record(
    engine: Engine,
    galleries: GalleryService,
    person_id: int,
    *,
    hub_id: str,
    actor: str,
    role: str,
    peers: bool = True,
    federation: Federation | None = None,
    legal_basis: str | None = None,
    k: int = SEARCH_K,
) -> tuple[LocalSearchResult, PeerSearchResult]:
    """Search a record against the opposite gallery here and, with ``peers`` and a
    federation client, in the peer regions."""
    local = search_local(engine, galleries, person_id, hub_id=hub_id, actor=actor, role=role, k=k)
    if not peers:
        return local, PeerSearchResult("not_requested", "peer regions not asked")
    remote = search_peers(
        engine, federation, person_id, requester=actor, role=role, legal_basis=legal_basis, k=k
    )
    return local, remote


# -- review decisions --------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionOutcome:
    """The candidate's state after a decision."""

    candidate_id: int
    status: str
    confirmations: int


def _case_of(session: Session, candidate: ReviewCandidate) -> str | None:
    if candidate.probe_person_id is not None:
        person = session.get(Person, candidate.probe_person_id)
        if person is not None:
            return case_label(person)
    if candidate.request_id is not None:
        request = session.get(MatchRequest, candidate.request_id)
        if request is not None:
            return request.case_id
    return None


def confirmations(session: Session, candidate_id: int) -> int:
    """How many different reviewers confirmed a candidate."""
    return int(
        session.scalar(
            select(func.count(ReviewDecision.id)).where(
                ReviewDecision.candidate_id == candidate_id, ReviewDecision.decision == "confirm"
            )
        )
        or 0
    )


def decide(
    engine: Engine,
    candidate_id: int,
    *,
    decision: Literal["confirm", "reject"],
    user_id: int,
    actor: str,
    role: str,
    galleries: frozenset[str],
    reason: str | None = None,
) -> DecisionOutcome:
    """Record a reviewer's decision (audited ``review.confirm`` / ``review.reject``).

    A confirmation by a reviewer who has not decided yet counts; the
    :data:`CONFIRMATIONS_NEEDED`-th makes the candidate ``confirmed``. A rejection
    (``reason`` required) rejects it at once; a reviewer who confirmed earlier may
    still reject, which replaces their confirmation. Only candidates of ``galleries``
    are visible (others: :class:`CaseNotFound`). Decided candidates and a second
    confirmation by the same reviewer: :class:`DecisionConflict`."""
    if decision == "reject" and not (reason and reason.strip()):
        raise ValueError("a rejection needs a reason")
    with write_session(engine) as session:
        candidate = session.get(ReviewCandidate, candidate_id, with_for_update=True)
        if candidate is None or candidate.gallery not in galleries:
            raise CaseNotFound(f"no review candidate {candidate_id}")
        if candidate.status != "pending":
            raise DecisionConflict(f"candidate {candidate_id} is already {candidate.status}")
        mine = session.scalar(
            select(ReviewDecision).where(
                ReviewDecision.candidate_id == candidate_id, ReviewDecision.user_id == user_id
            )
        )
        now = utcnow()
        if decision == "confirm":
            if mine is not None:
                raise DecisionConflict(
                    "you have already confirmed this candidate; the second confirmation "
                    "must come from another caseworker"
                )
            session.add(
                ReviewDecision(
                    candidate_id=candidate_id, user_id=user_id, decision="confirm", at=now
                )
            )
            session.flush()
            count = confirmations(session, candidate_id)
            if count >= CONFIRMATIONS_NEEDED:
                candidate.status = "confirmed"
                candidate.decided_at = now
                summary = f"confirmed match ({count} caseworkers)"
            else:
                summary = f"confirmation {count} of {CONFIRMATIONS_NEEDED}; still pending"
        else:
            if mine is not None:
                mine.decision, mine.reason, mine.at = "reject", reason, now
            else:
                session.add(
                    ReviewDecision(
                        candidate_id=candidate_id,
                        user_id=user_id,
                        decision="reject",
                        reason=reason,
                        at=now,
                    )
                )
            session.flush()
            count = confirmations(session, candidate_id)
            candidate.status = "rejected"
            candidate.decided_at = now
            summary = f"rejected: {reason}"
        audit.append(
            session,
            actor=actor,
            role=role,
            action=f"review.{decision}",
            purpose="human_review",
            case_id=_case_of(session, candidate),
            target=f"review:{candidate_id}",
            result=f"{candidate.probe_ref} ~ {candidate.candidate_ref}@{candidate.hub_id}: "
            + summary,
        )
        return DecisionOutcome(candidate_id, candidate.status, count)
