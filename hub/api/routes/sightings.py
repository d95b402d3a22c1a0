"""Face sightings reported by cameras, and the candidates they were matched to
(admin, officer, analyst).

The list shows sightings without embeddings or candidates. Reading one sighting's
candidates is audited (``sighting.view_candidates``), and so is viewing its face crop
(``sighting.view_crop``, with the case it is viewed for). Candidates are persons for a
human to compare with the sighting, never an identification.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session

from hub import audit
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
from hub.db.models import Device, Person, Sighting, SightingCandidate
from hub.db.users import Role

__all__ = ["CandidatePublic", "SightingDetail", "SightingPublic", "router"]

router = APIRouter(prefix="/sightings", tags=["sightings"])

Reader = Annotated[AuthUser, Depends(require(Role.admin, Role.officer, Role.analyst))]

CANDIDATE_NOTICE = "Candidates for human review; not an identification."


class SightingPublic(BaseModel):
    """A face a camera saw (no embedding)."""

    model_config = ConfigDict(extra="forbid")

    id: int = Field(description="Sighting id.")
    device_id: str = Field(description="The camera.")
    site_id: str = Field(description="The camera's site.")
    event_id: str = Field(description="The device's event id.")
    captured_at: datetime = Field(description="When the face was seen (device clock, UTC).")
    received_at: datetime = Field(description="When the hub received it.")
    model_id: str = Field(description="Embedding model of the camera.")
    quality: dict[str, Any] = Field(description="Quality measures reported by the camera.")
    bbox: list[float] = Field(description="Face box x0, y0, x1, y1 in the frame, pixels.")
    frame: list[int] | None = Field(description="Frame width and height, pixels.")
    track_id: int = Field(description="The camera's track of this face.")
    frames_fused: int = Field(description="Frames that went into the sighting.")
    has_crop: bool = Field(description="Whether a face crop was sent.")
    candidate_count: int = Field(ge=0, description="Candidates stored for the sighting.")


class CandidatePublic(BaseModel):
    """A person the sighting resembles, for a human to confirm or reject."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(ge=1, description="1 for the most similar.")
    person_id: int = Field(description="The candidate's person record.")
    display_name: str = Field(description="Name on the record.")
    external_ref: str | None = Field(description="Reference in another system.")
    gallery: str = Field(description="Gallery the candidate was found in.")
    template_id: int | None = Field(description="The candidate's most similar template.")
    model_id: str = Field(description="Embedding model compared.")
    score: float = Field(description="Cosine similarity of the sighting and the template.")


class SightingDetail(SightingPublic):
    """A sighting with its candidates."""

    notice: str = Field(description="How the candidates may be used.")
    candidates: list[CandidatePublic] = Field(description="Candidates, best first.")


def _public(s: Sighting, site_id: str, candidates: int) -> dict[str, Any]:
    return {
        "id": s.id,
        "device_id": s.device_id,
        "site_id": site_id,
        "event_id": s.event_id,
        "captured_at": s.captured_at,
        "received_at": s.received_at,
        "model_id": s.model_id,
        "quality": s.quality,
        "bbox": list(s.bbox),
        "frame": list(s.frame) if s.frame is not None else None,
        "track_id": s.track_id,
        "frames_fused": s.frames_fused,
        "has_crop": s.crop_jpeg is not None,
        "candidate_count": candidates,
    }


def _counts(session: Session, ids: list[int]) -> dict[int, int]:
    if not ids:
        return {}
    rows = session.execute(
        select(SightingCandidate.sighting_id, func.count(SightingCandidate.id))
        .where(SightingCandidate.sighting_id.in_(ids))
        .group_by(SightingCandidate.sighting_id)
    ).all()
    return {int(s): int(n) for s, n in rows}


@router.get("", response_model=Page[SightingPublic], summary="List sightings")
def list_sightings(
    _caller: Reader,
    session: DbSession,
    page: PageParams,
    site_id: Annotated[str | None, Query(max_length=64, description="Only this site.")] = None,
    device_id: Annotated[str | None, Query(max_length=64, description="Only this camera.")] = None,
    since: Annotated[
        AwareDatetime | None, Query(description="Captured at or after (with UTC offset).")
    ] = None,
    until: Annotated[
        AwareDatetime | None, Query(description="Captured before (with UTC offset).")
    ] = None,
    has_candidates: Annotated[
        bool | None, Query(description="Only sightings with (true) or without (false) candidates.")
    ] = None,
) -> Page[SightingPublic]:
    """Sightings, newest capture first, a page at a time."""
    stmt = select(Sighting, Device.site_id).join(Device, Device.device_id == Sighting.device_id)
    if site_id is not None:
        stmt = stmt.where(Device.site_id == site_id)
    if device_id is not None:
        stmt = stmt.where(Sighting.device_id == device_id)
    if since is not None:
        stmt = stmt.where(Sighting.captured_at >= since)
    if until is not None:
        stmt = stmt.where(Sighting.captured_at < until)
    if has_candidates is not None:
        matched = exists().where(SightingCandidate.sighting_id == Sighting.id)
        stmt = stmt.where(matched if has_candidates else ~matched)
    rows, total = fetch_page(session, stmt, page, Sighting.captured_at.desc(), Sighting.id.desc())
    counts = _counts(session, [s.id for s, _ in rows])
    items = [
        SightingPublic.model_validate(_public(s, site, counts.get(s.id, 0))) for s, site in rows
    ]
    return to_page(items, total, page)


def _load(session: Session, sighting_id: int) -> tuple[Sighting, str]:
    row = session.execute(
        select(Sighting, Device.site_id)
        .join(Device, Device.device_id == Sighting.device_id)
        .where(Sighting.id == sighting_id)
    ).first()
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such sighting")
    return row[0], row[1]


@router.get(
    "/{sighting_id}",
    response_model=SightingDetail,
    summary="Read a sighting and its candidates",
    responses={404: {"description": "No such sighting."}},
)
def get_sighting(
    sighting_id: RowId,
    caller: Reader,
    engine: EngineDep,
    case_id: Annotated[
        str | None,
        Query(min_length=1, max_length=100, description="Case the review is for (audited)."),
    ] = None,
) -> SightingDetail:
    """One sighting with its ranked candidates (audited ``sighting.view_candidates``)."""
    with write_session(engine) as session:
        sighting, site_id = _load(session, sighting_id)
        rows = session.execute(
            select(SightingCandidate, Person)
            .join(Person, Person.id == SightingCandidate.person_id)
            .where(SightingCandidate.sighting_id == sighting_id)
            .order_by(SightingCandidate.rank)
        ).all()
        candidates = [
            CandidatePublic(
                rank=c.rank,
                person_id=c.person_id,
                display_name=p.display_name,
                external_ref=p.external_ref,
                gallery=c.gallery,
                template_id=c.template_id,
                model_id=c.model_id,
                score=c.score,
            )
            for c, p in rows
        ]
        audit.append(
            session,
            actor=caller.username,
            role=caller.role.value,
            action="sighting.view_candidates",
            purpose="human_review",
            case_id=case_id,
            target=f"sighting:{sighting_id}",
            result=f"{len(candidates)} candidates shown",
        )
    return SightingDetail.model_validate(
        _public(sighting, site_id, len(candidates))
        | {"notice": CANDIDATE_NOTICE, "candidates": candidates}
    )


@router.get(
    "/{sighting_id}/crop",
    response_class=Response,
    summary="View a sighting's face crop",
    responses=crop_responses(
        "The face as the camera sent it.", "No such sighting, or no crop was sent."
    ),
)
def sighting_crop(
    sighting_id: RowId, caller: Reader, engine: EngineDep, case_id: CaseIdQuery
) -> Response:
    """The face crop the camera sent (audited ``sighting.view_crop``)."""
    with write_session(engine) as session:
        sighting, _site = _load(session, sighting_id)
        if sighting.crop_jpeg is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no crop for this sighting")
        return audited_crop(
            session,
            caller,
            sighting.crop_jpeg,
            action="sighting.view_crop",
            case_id=case_id,
            target=f"sighting:{sighting_id}",
            result="crop shown",
        )
