"""Purpose-bound 1:N search with a probe photo (analyst, officer, caseworker).

The answer is a ranked list of candidates for human review, never an identification.
Every search is audited (``biometric.search``) with its case id and purpose; a
caseworker may search only the missing and found galleries, officers and analysts
only the supervised and watchlist galleries.
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from hub import audit
from hub.api.deps import AuthUser, EngineDep, require
from hub.api.routes.persons import PhotoQuality, read_upload
from hub.db.engine import write_session
from hub.db.models import Person
from hub.db.users import Role
from hub.enrolment import (
    UploadRefused,
    decode_photo,
    engine_lock,
    face_engine_for,
    galleries_for,
    may_read,
    process_photo,
)
from matching.gallery import MAX_K
from models.errors import InvalidImage
from models.quality import QualityConfig

__all__ = ["SEARCH_NOTICE", "SearchCandidate", "SearchPurpose", "SearchResult", "router"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/search", tags=["search"])


def _probe_invalid(reason: str) -> RequestValidationError:
    """A probe photo that cannot be used: a 422 shaped as FastAPI's own
    (HTTPValidationError), which is what the schema documents for 422."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", "probe"), "msg": reason, "input": None}]
    )


Searcher = Annotated[AuthUser, Depends(require(Role.analyst, Role.officer, Role.caseworker))]

SearchPurpose = Literal["investigation", "missing_person", "watchlist_review"]
Gallery = Literal["supervised", "watchlist", "missing", "found"]

SEARCH_NOTICE = (
    "Candidates for human review, ranked by similarity; not an identification. A "
    "trained reviewer must compare the faces before any action is taken."
)

_PROBE_QUALITY = QualityConfig(
    min_inter_ocular_px=None,
    min_box_px=None,
    min_sharpness=None,
    max_abs_yaw_deg=None,
    max_abs_pitch_deg=None,
)
"""Probes are searched whatever their quality (an investigator may have only a poor
photo); the figures are returned so the reviewer can weigh the candidates."""


class SearchCandidate(BaseModel):
    """A person whose enrolled face resembles the probe."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(ge=1, description="1 for the most similar.")
    person_id: int = Field(description="The candidate's person record.")
    display_name: str = Field(description="Name on the record.")
    external_ref: str | None = Field(description="Reference in another system.")
    category: Gallery = Field(description="The gallery searched.")
    template_id: int = Field(description="The candidate's most similar template.")
    score: float = Field(description="Cosine similarity of the probe and that template.")


class SearchResult(BaseModel):
    """Candidates for human review; never an identity claim."""

    model_config = ConfigDict(extra="forbid")

    notice: str = Field(description="How the candidates may be used.")
    case_id: str = Field(description="Case the search was made for.")
    purpose: SearchPurpose = Field(description="Stated purpose.")
    gallery: Gallery = Field(description="Gallery searched.")
    model_id: str = Field(description="Embedding model of the probe and templates.")
    k: int = Field(description="Candidates asked for.")
    probe_faces: int = Field(ge=1, description="Faces found in the probe (the largest is used).")
    probe_quality: PhotoQuality | None = Field(description="Figures of the probe's face.")
    candidates: list[SearchCandidate] = Field(description="Ranked candidates, best first.")


@router.post(
    "",
    response_model=SearchResult,
    summary="Search a gallery with a probe photo",
    responses={
        403: {"description": "The role may not search this gallery."},
        413: {"description": "The probe is too large."},
        415: {"description": "The probe's content type or format is not accepted."},
    },
)
def search(
    request: Request,
    caller: Searcher,
    engine: EngineDep,
    probe: Annotated[UploadFile, File(description="Probe photo (JPEG, PNG, WebP, BMP, TIFF).")],
    case_id: Annotated[
        str, Form(min_length=1, max_length=100, description="Case the search is made for.")
    ],
    purpose: Annotated[SearchPurpose, Form(description="Why the search is made.")],
    gallery: Annotated[Gallery, Form(description="Gallery (person category) to search.")],
    k: Annotated[int, Form(ge=1, le=MAX_K, description="Candidates to return.")] = 10,
) -> SearchResult:
    """Investigative search: the ``k`` most similar persons of one gallery, for human
    review (audited ``biometric.search`` with case id and purpose)."""
    if not may_read(caller.role, gallery):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"role {caller.role.value} may not search the {gallery} gallery",
        )
    try:
        name, data = read_upload(probe, 0)
    except UploadRefused as exc:
        raise HTTPException(exc.status_code, detail=exc.reason) from exc
    try:
        image = decode_photo(name, data)
    except InvalidImage as exc:
        raise _probe_invalid(str(exc)) from exc
    face_engine = face_engine_for(request.app.state)
    with engine_lock(face_engine):
        result = process_photo(face_engine, name, image, quality=_PROBE_QUALITY, single_face=False)
    if result.vector is None:
        raise _probe_invalid(f"{name}: " + "; ".join(result.reasons or ["no usable face"]))
    hits = galleries_for(request.app.state, engine).search(
        gallery, face_engine.model_id, result.vector, k
    )[0]
    with write_session(engine) as session:
        persons = {
            p.id: p
            for p in session.scalars(
                select(Person).where(Person.id.in_([h.person_id for h in hits]))
            )
        }
        candidates = [
            SearchCandidate(
                rank=h.rank,
                person_id=h.person_id,
                display_name=persons[h.person_id].display_name,
                external_ref=persons[h.person_id].external_ref,
                category=gallery,
                template_id=h.template_id,
                score=h.score,
            )
            for h in hits
            if h.person_id in persons  # deleted since the gallery was read
        ]
        audit.append(
            session,
            actor=caller.username,
            role=caller.role.value,
            action="biometric.search",
            purpose=purpose,
            case_id=case_id,
            target=f"gallery:{gallery}",
            result=f"{len(candidates)} candidates (k={k}, {face_engine.model_id})",
        )
    q = result.quality
    return SearchResult(
        notice=SEARCH_NOTICE,
        case_id=case_id,
        purpose=purpose,
        gallery=gallery,
        model_id=face_engine.model_id,
        k=k,
        probe_faces=result.faces,
        probe_quality=None
        if q is None
        else PhotoQuality(
            inter_ocular_px=q.inter_ocular_px,
            box_min_side_px=q.box_min_side_px,
            sharpness=q.sharpness,
            yaw_deg=q.yaw_deg,
            pitch_deg=q.pitch_deg,
            detector_score=q.score,
        ),
        candidates=candidates,
    )
