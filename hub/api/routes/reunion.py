"""Reunion cases (Lighthouse): missing-person reports and found persons.

Caseworkers open, enrol, search, close and erase cases; admins read them and may
erase. A case is a person of category ``missing`` or ``found`` with its reunion record:
a missing-person report needs the consent of the family member who made it
(``consent_by``), a found person the unit that reported them (``reported_by``).

Photos go through ``POST /reunion/cases/{person_id}/photos``: the person enrolment of
:mod:`hub.api.routes.persons`, plus an optional ``taken_at`` date for the photos of the
upload (for the age flags of candidates), followed at once by a search of the new
record against the opposite gallery (:func:`hub.reunion.search_new_record`). A search
can be repeated with ``POST /reunion/cases/{person_id}/search``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import status as http
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from hub import audit
from hub.api.deps import (
    AuthUser,
    DbSession,
    EngineDep,
    PageParams,
    RowId,
    fetch_page,
    require,
    to_page,
)
from hub.api.routes.persons import EnrolmentResult, enrol_photos
from hub.api.routes.review import ReviewCandidatePublic, candidates_public
from hub.api.schemas import Page
from hub.db.engine import write_session
from hub.db.models import FaceTemplate, Person, ReunionCase, ReviewCandidate, utcnow
from hub.db.users import Role
from hub.enrolment import MAX_PHOTOS, galleries_for
from hub.retention import CaseAlreadyClosed, close_case, erase_person, retention_period
from hub.reunion import (
    LOCAL_HUB_ID,
    SEARCH_K,
    CaseClosed,
    CaseNotFound,
    LocalSearchResult,
    PeerSearchResult,
    case_label,
    federation_of,
    person_ref,
    search_new_record,
)

__all__ = [
    "CaseClose",
    "CaseCreate",
    "CaseErase",
    "CaseErased",
    "CasePhotos",
    "CasePublic",
    "CaseSearch",
    "SearchOutcome",
    "router",
]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/reunion/cases", tags=["reunion"])

Caseworker = Annotated[AuthUser, Depends(require(Role.caseworker))]
CaseReader = Annotated[AuthUser, Depends(require(Role.caseworker, Role.admin))]
Eraser = Annotated[AuthUser, Depends(require(Role.caseworker, Role.admin))]

CaseCategory = Literal["missing", "found"]
CaseStatus = Literal["open", "reunited", "withdrawn", "deceased"]


class CaseCreate(BaseModel):
    """A new missing-person report or found-person record."""

    model_config = ConfigDict(extra="forbid")

    category: CaseCategory = Field(description="missing (reported by a family) or found.")
    display_name: str = Field(
        min_length=1, max_length=200, description="Name, or a description for an unknown person."
    )
    external_ref: str | None = Field(
        None, max_length=100, description="Reference in another system (police report, shelter)."
    )
    case_id: str | None = Field(
        None, min_length=1, max_length=100, description="Case file; default reunion-<person id>."
    )
    consent_by: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Family member who made the report and consented (required for missing).",
    )
    reported_by: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Shelter, hospital or police unit (required for found); for a missing "
        "person, default the caseworker.",
    )
    birth_year: int | None = Field(
        None, ge=1900, le=2100, description="Year of birth, if known (child flags)."
    )
    last_seen_at: AwareDatetime | None = Field(
        None, description="When the missing person was last seen / the found person found."
    )


class CasePublic(BaseModel):
    """A reunion case."""

    model_config = ConfigDict(extra="forbid")

    person_id: int = Field(description="The person record (also the case's key).")
    category: CaseCategory = Field(description="missing or found.")
    display_name: str = Field(description="Name or description.")
    external_ref: str | None = Field(description="Reference in another system.")
    case_id: str = Field(description="Case file id (audited with every action).")
    status: CaseStatus = Field(description="open, or how it was closed.")
    consent_by: str | None = Field(description="Who consented (missing persons).")
    consent_at: datetime | None = Field(description="When consent was recorded.")
    reported_by: str | None = Field(description="Who reported the person.")
    birth_year: int | None = Field(description="Year of birth, if known.")
    last_seen_at: datetime | None = Field(description="Last seen / found at.")
    templates: int = Field(ge=0, description="Face templates enrolled.")
    closed_at: datetime | None = Field(description="When the case was closed.")
    close_reason: str | None = Field(description="Why it was closed.")
    retention_until: datetime | None = Field(
        description="When the photos and templates will be erased (closed cases)."
    )
    created_at: datetime = Field(description="When the case was opened.")


class CaseSearch(BaseModel):
    """Options of a case search."""

    model_config = ConfigDict(extra="forbid")

    peers: bool = Field(
        True, description="Also ask the peer regions (when federation is configured)."
    )
    legal_basis: str | None = Field(
        None, min_length=1, max_length=300, description="Legal basis sent to the peers."
    )
    k: int = Field(SEARCH_K, ge=1, le=50, description="Candidates asked for per search.")


class RegionStatus(BaseModel):
    """How one peer region answered."""

    model_config = ConfigDict(extra="allow")

    hub_id: str | None = Field(None, description="The peer hub.")
    status: str | None = Field(None, description="answered, refused, timed_out or error.")
    reason: str | None = Field(None, description="Why it refused or failed.")


class PeerRequest(BaseModel):
    """One match request sent to the peers (one per embedding model)."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(description="Request id, shared with the peers' audit logs.")
    model_id: str = Field(description="Embedding model of the probe.")
    error: str | None = Field(None, description="Why the request could not be sent.")
    regions: list[RegionStatus] = Field(description="Per region status.")


class PeerOutcome(BaseModel):
    """What asking the peer regions did."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["sent", "not_requested", "not_configured", "no_templates"] = Field(
        description="'not_configured': this hub has no federation."
    )
    detail: str = Field(description="In words.")
    requests: list[PeerRequest] = Field(description="Requests sent.")


class SearchOutcome(BaseModel):
    """The outcome of a case search: new candidates for the review queue."""

    model_config = ConfigDict(extra="forbid")

    person_id: int = Field(description="The record searched.")
    gallery: CaseCategory = Field(description="The (opposite) gallery searched here.")
    models: list[str] = Field(description="Embedding models searched.")
    new_candidates: list[ReviewCandidatePublic] = Field(
        description="Local candidates added to the review queue (peer candidates are in "
        "the queue too, under their request)."
    )
    skipped_rejected: int = Field(ge=0, description="Pairs rejected before: not proposed again.")
    skipped_known: int = Field(ge=0, description="Pairs already in the queue.")
    skipped_closed: int = Field(ge=0, description="Candidates whose own case is closed.")
    peers: PeerOutcome = Field(description="The peer regions' part.")


class CasePhotos(BaseModel):
    """Enrolment of a case's photos and the search that followed."""

    model_config = ConfigDict(extra="forbid")

    enrolment: EnrolmentResult = Field(description="What became of each photo.")
    search: SearchOutcome | None = Field(
        description="The search of the opposite gallery (none when no photo was accepted)."
    )


class CaseClose(BaseModel):
    """Closing a case."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["reunited", "withdrawn", "deceased"] = Field(description="How it ended.")
    reason: str = Field(min_length=1, max_length=2000, description="Why / how, in words.")


class CaseErase(BaseModel):
    """An erasure request."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        min_length=1,
        max_length=500,
        description="Why the record is erased now (audited; name no personal details).",
    )


class CaseErased(BaseModel):
    """What an erasure deleted (counts only)."""

    model_config = ConfigDict(extra="forbid")

    person_id: int = Field(description="The erased record.")
    case_id: str = Field(description="Its case file id.")
    templates: int = Field(ge=0, description="Face templates (with their crops) deleted.")
    review_candidates: int = Field(ge=0, description="Review candidates deleted.")
    sighting_candidates: int = Field(ge=0, description="Sighting candidates deleted.")
    gallery_vectors: int = Field(ge=0, description="Vectors removed from galleries and copies.")
    galleries_ok: bool = Field(description="False: run `lantern hub rebuild-galleries`.")


def _not_found() -> HTTPException:
    return HTTPException(http.HTTP_404_NOT_FOUND, detail="no such reunion case")


def _field_error(field: str, msg: str, value: Any = None) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", field), "msg": msg, "input": value}]
    )


def _template_counts(session: Session, ids: list[int]) -> dict[int, int]:
    if not ids:
        return {}
    rows = session.execute(
        select(FaceTemplate.person_id, func.count(FaceTemplate.id))
        .where(FaceTemplate.person_id.in_(ids))
        .group_by(FaceTemplate.person_id)
    ).all()
    return {int(p): int(n) for p, n in rows}


def _public(person: Person, case: ReunionCase, templates: int) -> CasePublic:
    return CasePublic(
        person_id=person.id,
        category=person.category,  # type: ignore[arg-type]
        display_name=person.display_name,
        external_ref=person.external_ref,
        case_id=case_label(person),
        status=case.status,  # type: ignore[arg-type]
        consent_by=case.consent_by,
        consent_at=case.consent_at,
        reported_by=case.reported_by,
        birth_year=case.birth_year,
        last_seen_at=case.last_seen_at,
        templates=templates,
        closed_at=case.closed_at,
        close_reason=case.close_reason,
        retention_until=case.retention_until,
        created_at=case.created_at,
    )


def _read_case(session: Session, person_id: int) -> CasePublic:
    person = session.get(Person, person_id)
    case = session.get(ReunionCase, person_id)
    if person is None or case is None:
        raise _not_found()
    return _public(person, case, _template_counts(session, [person_id]).get(person_id, 0))


@router.post(
    "",
    response_model=CasePublic,
    status_code=http.HTTP_201_CREATED,
    summary="Open a reunion case",
)
def open_case(body: CaseCreate, caller: Caseworker, engine: EngineDep) -> CasePublic:
    """Create the person (missing or found) and their case (audited ``reunion.open``).
    A missing-person report needs ``consent_by``; a found person ``reported_by``."""
    if body.category == "missing" and body.consent_by is None:
        raise _field_error("consent_by", "a missing-person report needs the family's consent")
    if body.category == "found" and body.reported_by is None:
        raise _field_error("reported_by", "a found person needs the unit that reported them")
    now = utcnow()
    with write_session(engine) as session:
        person = Person(
            category=body.category,
            display_name=body.display_name,
            external_ref=body.external_ref,
            case_id=body.case_id,
        )
        session.add(person)
        session.flush()
        if person.case_id is None:
            person.case_id = f"reunion-{person.id}"
        case = ReunionCase(
            person_id=person.id,
            status="open",
            consent_by=body.consent_by,
            consent_at=now if body.consent_by is not None else None,
            reported_by=body.reported_by or caller.username,
            birth_year=body.birth_year,
            last_seen_at=body.last_seen_at,
            created_at=now,
        )
        session.add(case)
        session.flush()
        audit.append(
            session,
            actor=caller.username,
            role=caller.role.value,
            action="reunion.open",
            purpose=f"{body.category}_person",
            case_id=person.case_id,
            target=person_ref(person.id),
            result=f"category {body.category}"
            + ("; family consent recorded" if body.consent_by is not None else ""),
        )
        return _public(person, case, 0)


@router.get("", response_model=Page[CasePublic], summary="List reunion cases")
def list_cases(
    caller: CaseReader,
    session: DbSession,
    page: PageParams,
    category: Annotated[CaseCategory | None, Query(description="Only this category.")] = None,
    status_: Annotated[
        CaseStatus | None, Query(alias="status", description="Only this status.")
    ] = None,
) -> Page[CasePublic]:
    """Cases by person id, a page at a time."""
    stmt = select(Person, ReunionCase).join(ReunionCase, ReunionCase.person_id == Person.id)
    if category is not None:
        stmt = stmt.where(Person.category == category)
    if status_ is not None:
        stmt = stmt.where(ReunionCase.status == status_)
    rows, total = fetch_page(session, stmt, page, Person.id)
    counts = _template_counts(session, [r[0].id for r in rows])
    return to_page([_public(p, c, counts.get(p.id, 0)) for p, c in rows], total, page)


@router.get(
    "/{person_id}",
    response_model=CasePublic,
    summary="Read a reunion case",
    responses={404: {"description": "No such case."}},
)
def get_case(person_id: RowId, caller: CaseReader, session: DbSession) -> CasePublic:
    """One case."""
    return _read_case(session, person_id)


def _outcome(
    engine: EngineDep, local: LocalSearchResult, remote: PeerSearchResult
) -> SearchOutcome:
    with Session(engine) as session:
        rows = list(
            session.scalars(
                select(ReviewCandidate)
                .where(ReviewCandidate.id.in_(local.created))
                .order_by(ReviewCandidate.model_id, ReviewCandidate.rank)
            )
        )
        created = candidates_public(session, rows)
    return SearchOutcome(
        person_id=local.person_id,
        gallery=local.gallery,  # type: ignore[arg-type]
        models=local.models,
        new_candidates=created,
        skipped_rejected=local.skipped_rejected,
        skipped_known=local.skipped_known,
        skipped_closed=local.skipped_closed,
        peers=PeerOutcome(
            status=remote.status,
            detail=remote.detail,
            requests=[PeerRequest.model_validate(r) for r in remote.requests],
        ),
    )


def _search(
    request: Request,
    engine: EngineDep,
    caller: AuthUser,
    person_id: int,
    options: CaseSearch,
) -> SearchOutcome:
    state = request.app.state
    federation = federation_of(state)
    try:
        local, remote = search_new_record(
            engine,
            galleries_for(state, engine),
            person_id,
            hub_id=federation.hub_id if federation is not None else LOCAL_HUB_ID,
            actor=caller.username,
            role=caller.role.value,
            peers=options.peers,
            federation=federation,
            legal_basis=options.legal_basis,
            k=options.k,
        )
    except CaseNotFound as exc:
        raise _not_found() from exc
    except CaseClosed as exc:
        raise HTTPException(http.HTTP_409_CONFLICT, detail=str(exc)) from exc
    return _outcome(engine, local, remote)


@router.post(
    "/{person_id}/search",
    response_model=SearchOutcome,
    summary="Search a case against the opposite gallery",
    responses={404: {"description": "No such case."}, 409: {"description": "Case closed."}},
)
def search_case(
    person_id: RowId,
    request: Request,
    caller: Caseworker,
    engine: EngineDep,
    body: CaseSearch | None = None,
) -> SearchOutcome:
    """Search missing against found (or found against missing) with the person's
    templates, here and, with ``peers`` and federation configured, in the peer
    regions; new candidates enter the review queue, pairs rejected before are not
    proposed again (audited ``reunion.search``)."""
    return _search(request, engine, caller, person_id, body or CaseSearch())


@router.post(
    "/{person_id}/photos",
    response_model=CasePhotos,
    summary="Enrol a case's photos, then search",
    responses={
        404: {"description": "No such case."},
        409: {"description": "Case closed."},
        413: {"description": "A photo is too large."},
        415: {"description": "A photo's content type or format is not accepted."},
    },
)
def case_photos(
    person_id: RowId,
    request: Request,
    caller: Caseworker,
    engine: EngineDep,
    photos: Annotated[
        list[UploadFile],
        File(
            description=f"1 to {MAX_PHOTOS} photos of the person (one face each).",
            json_schema_extra={"minItems": 1, "maxItems": MAX_PHOTOS},
        ),
    ],
    taken_at: Annotated[
        AwareDatetime | None,
        Form(description="When these photos were taken, if known (age-gap flags)."),
    ] = None,
    peers: Annotated[
        bool, Form(description="Also search the peer regions (when configured).")
    ] = True,
) -> CasePhotos:
    """Enrol the photos as ``POST /persons/{id}/photos`` does (audited
    ``person.enrol``), record ``taken_at`` on the new templates, and search the record
    against the opposite gallery at once (audited ``reunion.search``)."""
    with Session(engine) as session:
        case = session.get(ReunionCase, person_id)
        if case is None:
            raise _not_found()
        if case.status != "open":
            raise HTTPException(http.HTTP_409_CONFLICT, detail=f"the case is {case.status}")
    enrolment = enrol_photos(person_id, request, caller, engine, photos)
    accepted = [p.template_id for p in enrolment.photos if p.template_id is not None]
    if accepted and taken_at is not None:
        with write_session(engine) as session:
            session.execute(
                update(FaceTemplate)
                .where(FaceTemplate.id.in_(accepted))
                .values(photo_taken_at=taken_at)
            )
    search = (
        _search(request, engine, caller, person_id, CaseSearch(peers=peers)) if accepted else None
    )
    return CasePhotos(enrolment=enrolment, search=search)


@router.post(
    "/{person_id}/close",
    response_model=CasePublic,
    summary="Close a case",
    responses={404: {"description": "No such case."}, 409: {"description": "Already closed."}},
)
def close(
    person_id: RowId, body: CaseClose, request: Request, caller: Caseworker, engine: EngineDep
) -> CasePublic:
    """Close the case (reunited, withdrawn, deceased) and start its retention clock:
    the photos and templates are erased at ``retention_until`` (audited
    ``reunion.close``)."""
    try:
        close_case(
            engine,
            person_id,
            status=body.status,
            reason=body.reason,
            actor=caller.username,
            role=caller.role.value,
            retention=retention_period(request.app.state.settings),
        )
    except CaseNotFound as exc:
        raise _not_found() from exc
    except CaseAlreadyClosed as exc:
        raise HTTPException(http.HTTP_409_CONFLICT, detail=str(exc)) from exc
    with Session(engine) as session:
        return _read_case(session, person_id)


@router.post(
    "/{person_id}/erase",
    response_model=CaseErased,
    summary="Erase a case now",
    responses={404: {"description": "No such case."}},
)
def erase(
    person_id: RowId, body: CaseErase, request: Request, caller: Eraser, engine: EngineDep
) -> CaseErased:
    """Erase the person at once, open or closed: templates and crops deleted, vectors
    removed from every gallery and its saved copies, review candidates deleted, the
    record deleted (audited ``reunion.erase`` with the reason, not the content)."""
    with Session(engine) as session:
        if session.get(ReunionCase, person_id) is None:
            raise _not_found()
    try:
        done = erase_person(
            engine,
            galleries_for(request.app.state, engine),
            person_id,
            actor=caller.username,
            role=caller.role.value,
            reason=body.reason,
        )
    except CaseNotFound as exc:
        raise _not_found() from exc
    return CaseErased(
        person_id=done.person_id,
        case_id=done.case_id,
        templates=done.templates,
        review_candidates=done.review_candidates,
        sighting_candidates=done.sighting_candidates,
        gallery_vectors=done.gallery_vectors,
        galleries_ok=done.galleries_ok,
    )
