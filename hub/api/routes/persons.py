"""Persons (supervised, watchlist, missing, found) and their enrolment.

Who may do what depends on the person's category (see :mod:`hub.enrolment`): officers
create, enrol and delete supervised persons and watchlist entries, caseworkers missing
and found persons, admins all; analysts read supervised and watchlist persons. The
route guards admit every role that may act on some category; the category itself is
checked inside each route (403 naming the reason).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Literal

from fastapi import (
    APIRouter,
    Depends,
    File,
    HTTPException,
    Query,
    Request,
    Response,
    UploadFile,
    status,
)
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import func, select

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
    paginate,
    require,
    to_page,
)
from hub.api.schemas import Page
from hub.db.engine import write_session
from hub.db.models import FaceTemplate, Person, Site
from hub.db.users import Role
from hub.enrolment import (
    MAX_PHOTO_BYTES,
    MAX_PHOTOS,
    PhotoResult,
    UploadRefused,
    check_upload,
    decode_photo,
    engine_lock,
    face_engine_for,
    galleries_for,
    may_read,
    may_write,
    process_photo,
    readable_categories,
    store_templates,
)
from models.errors import InvalidImage

__all__ = [
    "EnrolmentResult",
    "PersonCreate",
    "PersonDeleted",
    "PersonPublic",
    "PhotoOutcome",
    "TemplatePublic",
    "router",
]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/persons", tags=["persons"])

Category = Literal["supervised", "watchlist", "missing", "found"]

Writer = Annotated[AuthUser, Depends(require(Role.admin, Role.officer, Role.caseworker))]
Reader = Annotated[
    AuthUser, Depends(require(Role.admin, Role.officer, Role.analyst, Role.caseworker))
]


class PersonCreate(BaseModel):
    """A new person record."""

    model_config = ConfigDict(extra="forbid")

    category: Category = Field(description="What the record is: its gallery.")
    display_name: str = Field(min_length=1, max_length=200, description="Name shown to users.")
    external_ref: str | None = Field(
        None, max_length=100, description="Reference in another system (offender, case file)."
    )
    site_id: str | None = Field(None, max_length=64, description="Site the person belongs to.")
    case_id: str | None = Field(
        None, min_length=1, max_length=100, description="Case the record was opened under."
    )
    expires_at: AwareDatetime | None = Field(
        None, description="When the record must be reviewed or removed (UTC offset required)."
    )


class PersonPublic(BaseModel):
    """A person record as the API shows it."""

    model_config = ConfigDict(from_attributes=True, extra="forbid")

    id: int = Field(description="Person id.")
    category: Category = Field(description="The person's gallery.")
    display_name: str = Field(description="Name shown to users.")
    external_ref: str | None = Field(description="Reference in another system.")
    site_id: str | None = Field(description="Site the person belongs to.")
    case_id: str | None = Field(description="Case the record was opened under.")
    expires_at: datetime | None = Field(description="Review or removal date.")
    templates: int = Field(ge=0, description="Face templates enrolled.")
    created_at: datetime = Field(description="When the record was created.")
    updated_at: datetime = Field(description="When the record last changed.")


class PersonDeleted(BaseModel):
    """What a deletion removed."""

    model_config = ConfigDict(extra="forbid")

    id: int = Field(description="The deleted person's id.")
    templates_removed: int = Field(ge=0, description="Face templates deleted with the person.")


class TemplatePublic(BaseModel):
    """A face template's record (never its embedding)."""

    model_config = ConfigDict(from_attributes=True, extra="forbid")

    id: int = Field(description="Template id.")
    person_id: int = Field(description="Whose face it is.")
    model_id: str = Field(description="Embedding model that made it.")
    dim: int = Field(description="Vector dimension.")
    quality: float | None = Field(description="Sharpness of the aligned crop at enrolment.")
    source: str | None = Field(description="Uploaded file name it came from.")
    has_crop: bool = Field(description="Whether the aligned face crop is kept.")
    created_at: datetime = Field(description="When it was enrolled.")


class PhotoQuality(BaseModel):
    """Quality figures of the face in one photo (see models.quality)."""

    model_config = ConfigDict(extra="forbid")

    inter_ocular_px: float = Field(description="Distance between the eye centres, pixels.")
    box_min_side_px: float = Field(description="Shorter side of the face box, pixels.")
    sharpness: float = Field(description="Variance of the Laplacian of the aligned crop.")
    yaw_deg: float | None = Field(description="Head yaw proxy, degrees.")
    pitch_deg: float | None = Field(description="Head pitch proxy, degrees.")
    detector_score: float = Field(description="The detector's confidence.")


class PhotoOutcome(BaseModel):
    """What became of one uploaded photo."""

    model_config = ConfigDict(extra="forbid")

    filename: str = Field(description="The uploaded file's name.")
    accepted: bool = Field(description="Whether a template was stored from it.")
    template_id: int | None = Field(description="The stored template, when accepted.")
    faces: int = Field(ge=0, description="Faces found in the photo.")
    quality: PhotoQuality | None = Field(description="Figures of the face, when one was measured.")
    reasons: list[str] = Field(description="Why the photo was not enrolled (empty if it was).")


class EnrolmentResult(BaseModel):
    """The outcome of an enrolment request."""

    model_config = ConfigDict(extra="forbid")

    person_id: int = Field(description="The person enrolled.")
    model_id: str = Field(description="Embedding model of the new templates.")
    accepted: int = Field(ge=0, description="Photos enrolled.")
    rejected: int = Field(ge=0, description="Photos refused, each with its reasons.")
    photos: list[PhotoOutcome] = Field(description="One entry per photo, in upload order.")


def _forbid(reason: str) -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, detail=reason)


def _not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail="no such person")


def _template_counts(session: DbSession, ids: list[int]) -> dict[int, int]:
    if not ids:
        return {}
    rows = session.execute(
        select(FaceTemplate.person_id, func.count(FaceTemplate.id))
        .where(FaceTemplate.person_id.in_(ids))
        .group_by(FaceTemplate.person_id)
    ).all()
    return {int(pid): int(n) for pid, n in rows}


def _public(person: Person, templates: int) -> PersonPublic:
    return PersonPublic.model_validate(
        {
            "id": person.id,
            "category": person.category,
            "display_name": person.display_name,
            "external_ref": person.external_ref,
            "site_id": person.site_id,
            "case_id": person.case_id,
            "expires_at": person.expires_at,
            "templates": templates,
            "created_at": person.created_at,
            "updated_at": person.updated_at,
        }
    )


def _readable(session: DbSession, person_id: int, caller: AuthUser) -> Person:
    person = session.get(Person, person_id)
    if person is None:
        raise _not_found()
    if not may_read(caller.role, person.category):
        raise _forbid(f"role {caller.role.value} may not read {person.category} persons")
    return person


@router.post(
    "",
    response_model=PersonPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Create a person",
    responses={403: {"description": "The role may not create persons of this category."}},
)
def create_person(body: PersonCreate, caller: Writer, engine: EngineDep) -> PersonPublic:
    """Create a person record (audited ``person.create``); enrol photos next."""
    if not may_write(caller.role, body.category):
        raise _forbid(f"role {caller.role.value} may not create {body.category} persons")
    with write_session(engine) as session:
        if body.site_id is not None and session.get(Site, body.site_id) is None:
            raise RequestValidationError(
                [
                    {
                        "type": "value_error",
                        "loc": ("body", "site_id"),
                        "msg": f"no site {body.site_id!r}",
                        "input": body.site_id,
                    }
                ]
            )
        person = Person(
            category=body.category,
            display_name=body.display_name,
            external_ref=body.external_ref,
            site_id=body.site_id,
            case_id=body.case_id,
            expires_at=body.expires_at,
        )
        session.add(person)
        session.flush()
        audit.append(
            session,
            actor=caller.username,
            role=caller.role.value,
            action="person.create",
            purpose="enrolment",
            case_id=body.case_id,
            target=f"person:{person.id}",
            result=f"category {body.category}",
        )
    return _public(person, 0)


@router.get("", response_model=Page[PersonPublic], summary="List persons")
def list_persons(
    caller: Reader,
    session: DbSession,
    page: PageParams,
    category: Annotated[Category | None, Query(description="Only this category.")] = None,
    site_id: Annotated[str | None, Query(max_length=64, description="Only this site.")] = None,
) -> Page[PersonPublic]:
    """Persons of the categories the caller may read, by id, a page at a time."""
    visible = readable_categories(caller.role)
    if category is not None and category not in visible:
        raise _forbid(f"role {caller.role.value} may not read {category} persons")
    stmt = select(Person).where(Person.category.in_([category] if category else sorted(visible)))
    if site_id is not None:
        stmt = stmt.where(Person.site_id == site_id)
    rows, total = fetch_page(session, stmt, page, Person.id)
    persons = [row[0] for row in rows]
    counts = _template_counts(session, [p.id for p in persons])
    return to_page([_public(p, counts.get(p.id, 0)) for p in persons], total, page)


@router.get(
    "/{person_id}",
    response_model=PersonPublic,
    summary="Read a person",
    responses={404: {"description": "No such person."}},
)
def get_person(person_id: RowId, caller: Reader, session: DbSession) -> PersonPublic:
    """One person record."""
    person = _readable(session, person_id, caller)
    return _public(person, _template_counts(session, [person.id]).get(person.id, 0))


@router.delete(
    "/{person_id}",
    response_model=PersonDeleted,
    summary="Delete a person",
    responses={404: {"description": "No such person."}},
)
def delete_person(
    person_id: RowId, request: Request, caller: Writer, engine: EngineDep
) -> PersonDeleted:
    """Delete a person with their templates and sighting candidates, and remove their
    vectors from every gallery (audited ``person.delete``)."""
    with write_session(engine) as session:
        person = session.get(Person, person_id)
        if person is None:
            raise _not_found()
        if not may_write(caller.role, person.category):
            raise _forbid(f"role {caller.role.value} may not delete {person.category} persons")
        template_ids = [
            int(t)
            for t in session.scalars(
                select(FaceTemplate.id).where(FaceTemplate.person_id == person_id)
            )
        ]
        session.delete(person)
        session.flush()
        audit.append(
            session,
            actor=caller.username,
            role=caller.role.value,
            action="person.delete",
            purpose="record_management",
            case_id=person.case_id,
            target=f"person:{person_id}",
            result=f"deleted with {len(template_ids)} templates",
        )
    galleries_for(request.app.state, engine).remove_templates(template_ids)
    return PersonDeleted(id=person_id, templates_removed=len(template_ids))


def _outcome(result: PhotoResult) -> PhotoOutcome:
    q = result.quality
    return PhotoOutcome(
        filename=result.filename,
        accepted=result.template_id is not None,
        template_id=result.template_id,
        faces=result.faces,
        quality=None
        if q is None
        else PhotoQuality(
            inter_ocular_px=q.inter_ocular_px,
            box_min_side_px=q.box_min_side_px,
            sharpness=q.sharpness,
            yaw_deg=q.yaw_deg,
            pitch_deg=q.pitch_deg,
            detector_score=q.score,
        ),
        reasons=list(result.reasons),
    )


def read_upload(upload: UploadFile, index: int) -> tuple[str, bytes]:
    """The file name and bytes of an upload, refusing more than the size cap."""
    name = (upload.filename or f"photo-{index + 1}")[:200]
    data = upload.file.read(MAX_PHOTO_BYTES + 1)
    check_upload(name, upload.content_type, data)
    return name, data


@router.post(
    "/{person_id}/photos",
    response_model=EnrolmentResult,
    summary="Enrol photos of a person",
    responses={
        404: {"description": "No such person."},
        413: {"description": f"A photo is larger than {MAX_PHOTO_BYTES // 2**20} MiB."},
        415: {"description": "A photo's content type or format is not accepted."},
    },
)
def enrol_photos(
    person_id: RowId,
    request: Request,
    caller: Writer,
    engine: EngineDep,
    photos: Annotated[
        list[UploadFile],
        File(
            description=f"1 to {MAX_PHOTOS} photos (JPEG, PNG, WebP, BMP, TIFF) of the person.",
            # Documents the bounds enrol_photos enforces, so clients see them.
            json_schema_extra={"minItems": 1, "maxItems": MAX_PHOTOS},
        ),
    ],
) -> EnrolmentResult:
    """Detect, quality-check and embed the face of each photo and store a template per
    accepted photo. A photo with no face, several faces or a face failing the quality
    gate is reported with its reasons; the others still enrol (audited ``person.enrol``)."""
    if not 1 <= len(photos) <= MAX_PHOTOS:
        raise RequestValidationError(
            [
                {
                    "type": "too_long",
                    "loc": ("body", "photos"),
                    "msg": f"send 1 to {MAX_PHOTOS} photos, got {len(photos)}",
                    "input": None,
                }
            ]
        )
    with write_session(engine) as session:
        person = session.get(Person, person_id)
        if person is None:
            raise _not_found()
        if not may_write(caller.role, person.category):
            raise _forbid(f"role {caller.role.value} may not enrol {person.category} persons")
    try:
        uploads = [read_upload(p, i) for i, p in enumerate(photos)]
    except UploadRefused as exc:
        raise HTTPException(exc.status_code, detail=exc.reason) from exc
    face_engine = face_engine_for(request.app.state)
    galleries = galleries_for(request.app.state, engine)
    results: list[PhotoResult] = []
    for name, data in uploads:
        try:
            image = decode_photo(name, data)
        except InvalidImage as exc:
            results.append(PhotoResult(filename=name, reasons=[str(exc)]))
            continue
        with engine_lock(face_engine):
            results.append(process_photo(face_engine, name, image))
    stored = store_templates(
        engine,
        galleries,
        person_id,
        results,
        model_id=face_engine.model_id,
        actor=caller.username,
        role=caller.role.value,
    )
    if stored is None:
        raise _not_found()
    outcomes = [_outcome(r) for r in results]
    accepted = sum(o.accepted for o in outcomes)
    return EnrolmentResult(
        person_id=person_id,
        model_id=face_engine.model_id,
        accepted=accepted,
        rejected=len(outcomes) - accepted,
        photos=outcomes,
    )


@router.get(
    "/{person_id}/templates",
    response_model=Page[TemplatePublic],
    summary="List a person's templates",
    responses={404: {"description": "No such person."}},
)
def list_templates(
    person_id: RowId, caller: Reader, session: DbSession, page: PageParams
) -> Page[TemplatePublic]:
    """The person's face templates by id (records only: no embeddings, no crops)."""
    _readable(session, person_id, caller)
    stmt = select(FaceTemplate).where(FaceTemplate.person_id == person_id)
    return paginate(
        session,
        stmt,
        page,
        lambda t: TemplatePublic(
            id=t.id,
            person_id=t.person_id,
            model_id=t.model_id,
            dim=t.dim,
            quality=t.quality,
            source=t.source,
            has_crop=t.crop_jpeg is not None,
            created_at=t.created_at,
        ),
        FaceTemplate.id,
    )


@router.get(
    "/{person_id}/templates/{template_id}/crop",
    response_class=Response,
    summary="View a template's face crop",
    responses=crop_responses("The aligned face (JPEG).", "No such person, template or crop."),
)
def template_crop(
    person_id: RowId,
    template_id: RowId,
    case_id: CaseIdQuery,
    caller: Reader,
    engine: EngineDep,
) -> Response:
    """The aligned face a template was made from (audited ``template.view_crop`` with
    the case it is viewed for)."""
    with write_session(engine) as session:
        person = session.get(Person, person_id)
        if person is None:
            raise _not_found()
        if not may_read(caller.role, person.category):
            raise _forbid(f"role {caller.role.value} may not read {person.category} persons")
        template = session.get(FaceTemplate, template_id)
        if template is None or template.person_id != person_id or template.crop_jpeg is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such template crop")
        return audited_crop(
            session,
            caller,
            template.crop_jpeg,
            action="template.view_crop",
            case_id=case_id,
            target=f"template:{template_id}",
            result=f"person:{person_id}",
        )
