"""The review queue (caseworkers): candidates of reunion searches, local and from
peer regions, for two-person review.

A candidate is never an identification: it becomes a confirmed match only when two
different caseworkers confirm it (:func:`hub.reunion.decide`); one rejection, with
its reason, rejects it, and a rejected pair is not proposed again. Viewing a
candidate's face crop is a separate route, audited with the case it is viewed for.
Caseworkers see the candidates of the missing and found galleries only.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from hub.api.deps import (
    AuthUser,
    CaseIdQuery,
    DbSession,
    EngineDep,
    PageParams,
    RowId,
    audited_crop,
    crop_responses,
    fetch_page,
    require,
    to_page,
)
from hub.api.schemas import Page
from hub.db.engine import write_session
from hub.db.models import ReviewCandidate, ReviewDecision
from hub.db.users import Role, User
from hub.enrolment import readable_categories
from hub.reunion import CaseNotFound, DecisionConflict, decide

__all__ = [
    "DecisionPublic",
    "RejectBody",
    "ReviewCandidatePublic",
    "ReviewDetail",
    "candidate_public",
    "router",
]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/review", tags=["review"])

Reviewer = Annotated[AuthUser, Depends(require(Role.caseworker))]

CandidateStatus = Literal["pending", "confirmed", "rejected"]


class ReviewCandidatePublic(BaseModel):
    """A candidate pair for human review; never an identity claim."""

    model_config = ConfigDict(extra="forbid")

    id: int = Field(description="Candidate id.")
    probe_ref: str = Field(description="What was searched: 'person:<id>' or 'request:<uuid>'.")
    probe_person_id: int | None = Field(description="The local record searched, if any.")
    request_id: str | None = Field(description="The match request that found it (peers).")
    hub_id: str = Field(description="Where the candidate is held ('local' or this hub's id).")
    candidate_ref: str = Field(description="The holding hub's reference of the candidate.")
    local_person_id: int | None = Field(description="The candidate's record when held here.")
    gallery: str = Field(description="Gallery the candidate is in.")
    model_id: str = Field(description="Embedding model; scores compare within one model only.")
    score: float = Field(description="Cosine similarity of the two faces.")
    rank: int = Field(ge=1, description="Rank among the candidates of the same search.")
    flags: list[str] = Field(
        description="Reasons for care: 'child' (a person may have been under 18 in the "
        "photo), 'age_gap' (photos ten or more years apart)."
    )
    status: CandidateStatus = Field(description="pending, confirmed (two caseworkers) or rejected.")
    confirmations: int = Field(ge=0, description="Caseworkers who confirmed it so far.")
    has_crop: bool = Field(description="Whether a face crop can be viewed (audited route).")
    created_at: datetime = Field(description="When it was proposed.")
    decided_at: datetime | None = Field(description="When it was confirmed or rejected.")


class DecisionPublic(BaseModel):
    """One reviewer's decision."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(description="The reviewer.")
    decision: Literal["confirm", "reject"] = Field(description="What they decided.")
    reason: str | None = Field(description="Why (rejections).")
    at: datetime = Field(description="When.")


class ReviewDetail(BaseModel):
    """A candidate with its reviewers' decisions."""

    model_config = ConfigDict(extra="forbid")

    candidate: ReviewCandidatePublic = Field(description="The candidate.")
    decisions: list[DecisionPublic] = Field(description="Decisions so far, oldest first.")


class RejectBody(BaseModel):
    """A rejection and its reason."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        min_length=1, max_length=2000, description="Why the pair is not the same person."
    )


def _confirmations(session: Session, ids: list[int]) -> dict[int, int]:
    if not ids:
        return {}
    rows = session.execute(
        select(ReviewDecision.candidate_id, func.count(ReviewDecision.id))
        .where(ReviewDecision.candidate_id.in_(ids), ReviewDecision.decision == "confirm")
        .group_by(ReviewDecision.candidate_id)
    ).all()
    return {int(c): int(n) for c, n in rows}


def candidate_public(candidate: ReviewCandidate, confirmations: int) -> ReviewCandidatePublic:
    """The public form of a candidate row."""
    return ReviewCandidatePublic(
        id=candidate.id,
        probe_ref=candidate.probe_ref,
        probe_person_id=candidate.probe_person_id,
        request_id=candidate.request_id,
        hub_id=candidate.hub_id,
        candidate_ref=candidate.candidate_ref,
        local_person_id=candidate.local_person_id,
        gallery=candidate.gallery,
        model_id=candidate.model_id,
        score=candidate.score,
        rank=candidate.rank,
        flags=list(candidate.flags or []),
        status=candidate.status,  # type: ignore[arg-type]
        confirmations=confirmations,
        has_crop=candidate.crop_jpeg is not None,
        created_at=candidate.created_at,
        decided_at=candidate.decided_at,
    )


def candidates_public(session: Session, rows: list[ReviewCandidate]) -> list[ReviewCandidatePublic]:
    """Public forms of candidate rows, with their confirmation counts."""
    counts = _confirmations(session, [c.id for c in rows])
    return [candidate_public(c, counts.get(c.id, 0)) for c in rows]


def _visible(session: Session, candidate_id: int, caller: AuthUser) -> ReviewCandidate:
    candidate = session.get(ReviewCandidate, candidate_id)
    if candidate is None or candidate.gallery not in readable_categories(caller.role):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such review candidate")
    return candidate


@router.get("", response_model=Page[ReviewCandidatePublic], summary="The review queue")
def review_queue(
    caller: Reviewer,
    session: DbSession,
    page: PageParams,
    status_: Annotated[
        CandidateStatus | None, Query(alias="status", description="Only this status.")
    ] = None,
    probe_person_id: Annotated[
        int | None, Query(ge=1, description="Only candidates of this searched record.")
    ] = None,
) -> Page[ReviewCandidatePublic]:
    """Candidates, pending first, grouped by probe and model, best rank first."""
    stmt = select(ReviewCandidate).where(
        ReviewCandidate.gallery.in_(sorted(readable_categories(caller.role)))
    )
    if status_ is not None:
        stmt = stmt.where(ReviewCandidate.status == status_)
    if probe_person_id is not None:
        stmt = stmt.where(ReviewCandidate.probe_person_id == probe_person_id)
    pending_first = case((ReviewCandidate.status == "pending", 0), else_=1)
    rows, total = fetch_page(
        session,
        stmt,
        page,
        pending_first,
        ReviewCandidate.probe_ref,
        ReviewCandidate.model_id,
        ReviewCandidate.rank,
        ReviewCandidate.id,
    )
    return to_page(candidates_public(session, [r[0] for r in rows]), total, page)


@router.get(
    "/{candidate_id}",
    response_model=ReviewDetail,
    summary="A review candidate and its decisions",
    responses={404: {"description": "No such candidate."}},
)
def review_detail(candidate_id: RowId, caller: Reviewer, session: DbSession) -> ReviewDetail:
    """One candidate with the decisions taken on it."""
    candidate = _visible(session, candidate_id, caller)
    decisions = session.execute(
        select(ReviewDecision, User.username)
        .join(User, User.id == ReviewDecision.user_id)
        .where(ReviewDecision.candidate_id == candidate_id)
        .order_by(ReviewDecision.at, ReviewDecision.id)
    ).all()
    return ReviewDetail(
        candidate=candidates_public(session, [candidate])[0],
        decisions=[
            DecisionPublic(username=name, decision=d.decision, reason=d.reason, at=d.at)  # type: ignore[arg-type]
            for d, name in decisions
        ],
    )


@router.get(
    "/{candidate_id}/crop",
    response_class=Response,
    summary="View a candidate's face crop",
    responses=crop_responses("The candidate's face (JPEG).", "No such candidate or no crop."),
)
def review_crop(
    candidate_id: RowId,
    case_id: CaseIdQuery,
    caller: Reviewer,
    engine: EngineDep,
) -> Response:
    """The candidate's face crop (audited ``review.view_crop`` with the case)."""
    with write_session(engine) as session:
        candidate = _visible(session, candidate_id, caller)
        if candidate.crop_jpeg is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="this candidate has no crop")
        return audited_crop(
            session,
            caller,
            candidate.crop_jpeg,
            action="review.view_crop",
            case_id=case_id,
            target=f"review:{candidate_id}",
            result=f"{candidate.candidate_ref}@{candidate.hub_id}",
        )


def _decide(
    engine: EngineDep,
    candidate_id: int,
    caller: AuthUser,
    decision: Literal["confirm", "reject"],
    reason: str | None,
) -> ReviewCandidatePublic:
    try:
        decide(
            engine,
            candidate_id,
            decision=decision,
            user_id=caller.id,
            actor=caller.username,
            role=caller.role.value,
            galleries=readable_categories(caller.role),
            reason=reason,
        )
    except CaseNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such review candidate") from exc
    except DecisionConflict as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
    with Session(engine) as session:
        candidate = _visible(session, candidate_id, caller)
        return candidates_public(session, [candidate])[0]


@router.post(
    "/{candidate_id}/confirm",
    response_model=ReviewCandidatePublic,
    summary="Confirm a candidate",
    responses={
        404: {"description": "No such candidate."},
        409: {"description": "Already decided, or already confirmed by this caseworker."},
    },
)
def confirm(candidate_id: RowId, caller: Reviewer, engine: EngineDep) -> ReviewCandidatePublic:
    """Confirm that the pair is the same person (audited ``review.confirm``). The first
    confirmation leaves the candidate pending; a second by another caseworker makes it
    a confirmed match. The same caseworker twice: 409."""
    return _decide(engine, candidate_id, caller, "confirm", None)


@router.post(
    "/{candidate_id}/reject",
    response_model=ReviewCandidatePublic,
    summary="Reject a candidate",
    responses={
        404: {"description": "No such candidate."},
        409: {"description": "Already decided."},
    },
)
def reject(
    candidate_id: RowId, body: RejectBody, caller: Reviewer, engine: EngineDep
) -> ReviewCandidatePublic:
    """Reject the pair with a reason (audited ``review.reject``): one rejection rejects
    it, and the pair is not proposed again."""
    return _decide(engine, candidate_id, caller, "reject", body.reason)
