"""Case-bound match requests to peer region hubs, and the hub-to-hub search endpoint.

``POST /match-requests`` (requester; a caseworker for ``missing_person`` and
``found_person`` only) takes either JSON with probe templates and their ``model_id``,
or ``multipart/form-data`` with 1 to 5 probe photos (``photos``), which this hub's
face engine turns into templates. The request is signed and sent to the target peers
(default: all) in parallel (:func:`hub.federation.client.send_match_request`); the
answer is the request's state: each region's status (answered, refused with reason,
timed out, error) and the merged candidates, grouped by ``model_id`` (scores of
different models are never compared). Users see their own requests only.

``POST /federation/search`` is for peer hubs, not users: it is authenticated by the
Ed25519 signature of a peer in the federation file (:class:`PeerGuard`), not by a
token, and is listed in :data:`hub.api.app.FEDERATION_ROUTES`. See
:mod:`hub.federation.server` for its status codes.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select

from hub.api.deps import AuthUser, DbSession, EngineDep, PageParams, fetch_page, require, to_page
from hub.api.routes.persons import read_upload
from hub.api.schemas import Page
from hub.db.models import MatchRequest, MatchRequestRegion, ReviewCandidate
from hub.db.users import Role
from hub.enrolment import (
    UploadRefused,
    decode_photo,
    engine_lock,
    face_engine_for,
    galleries_for,
    process_photo,
)
from hub.federation.client import UnknownMatchRequest, retry_match_request, send_match_request
from hub.federation.peers import FederationSettings, federation_for
from hub.federation.policy import GalleryName, Purpose
from hub.federation.server import PeerGuard, VerifiedPeer, answer_search
from hub.federation.signing import canonical_body, sign_message
from hub.federation.wire import (
    MAX_DIM,
    MAX_PROBES,
    SEARCH_PATH,
    WireSearchAnswer,
    WireSearchRequest,
)
from matching.gallery import MAX_K
from models.errors import InvalidImage
from models.quality import QualityConfig

__all__ = [
    "CandidateGroup",
    "MatchCandidate",
    "MatchRequestFields",
    "MatchRequestSummary",
    "MatchRequestTemplates",
    "MatchRequestView",
    "RegionStatus",
    "router",
]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["federation"])

Asker = Annotated[AuthUser, Depends(require(Role.requester, Role.caseworker))]
PEER_GUARD = PeerGuard(SEARCH_PATH)

CASEWORKER_PURPOSES = frozenset({"missing_person", "found_person"})
"""The purposes a caseworker may make match requests for."""

MATCH_NOTICE = (
    "Candidates for human review from each region, ranked by similarity within one "
    "model; not an identification. Scores of different models are not comparable."
)

UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
RequestId = Annotated[str, Path(pattern=UUID_PATTERN, description="The match request's id.")]

_PROBE_QUALITY = QualityConfig(
    min_inter_ocular_px=None,
    min_box_px=None,
    min_sharpness=None,
    max_abs_yaw_deg=None,
    max_abs_pitch_deg=None,
)
"""Probe photos are used whatever their quality, as in a local search."""


# -- schemas ---------------------------------------------------------------------------


class MatchRequestFields(BaseModel):
    """What every match request states."""

    model_config = ConfigDict(extra="forbid")

    case_id: str = Field(min_length=1, max_length=100, description="Case the request is for.")
    legal_basis: str = Field(
        min_length=1, max_length=300, description="The legal basis of the request."
    )
    purpose: Purpose = Field(description="Why the request is made.")
    galleries: list[GalleryName] | None = Field(
        default=None,
        min_length=1,
        max_length=4,
        description="Galleries to search at the peers; default by purpose "
        "(missing_person: found, found_person: missing, otherwise watchlist).",
    )
    targets: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Peer hub ids to ask; default every peer.",
    )
    k: int = Field(default=10, ge=1, le=MAX_K, description="Candidates wanted per region.")


class MatchRequestTemplates(MatchRequestFields):
    """A match request with probe templates (JSON)."""

    model_id: str = Field(min_length=1, max_length=64, description="Model of the templates.")
    templates: list[Annotated[list[float], Field(min_length=1, max_length=MAX_DIM)]] = Field(
        min_length=1,
        max_length=MAX_PROBES,
        description=f"1 to {MAX_PROBES} probe templates of one dimension.",
    )


class RegionStatus(BaseModel):
    """One target region's state of the request."""

    model_config = ConfigDict(extra="forbid")

    hub_id: str = Field(description="The target hub.")
    status: str = Field(description="pending, answered, refused, timed_out or error.")
    reason: str | None = Field(description="Why refused or failed.")
    attempts: int = Field(description="Times it was sent there.")
    candidates: int = Field(description="Candidates the region answered last time.")
    updated_at: datetime = Field(description="When the status last changed.")


class MatchCandidate(BaseModel):
    """A candidate in the review queue, held at a peer."""

    model_config = ConfigDict(extra="forbid")

    id: int = Field(description="Review-queue id of the candidate.")
    hub_id: str = Field(description="The hub holding the person.")
    candidate_ref: str = Field(description="That hub's reference of the person.")
    gallery: str = Field(description="The gallery there.")
    score: float = Field(description="Cosine similarity (comparable within the model only).")
    rank: int = Field(description="Rank in that hub's answer.")
    flags: list[str] = Field(description="Reasons for care: child, age_gap.")
    status: str = Field(description="pending, confirmed or rejected.")
    has_crop: bool = Field(description="Whether the peer sent a face crop.")


class CandidateGroup(BaseModel):
    """The candidates of one model, best first across regions."""

    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(description="Model of these scores.")
    candidates: list[MatchCandidate] = Field(description="Best first.")


class MatchRequestSummary(BaseModel):
    """A match request in a list."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="The request's id, the same at every hub asked.")
    case_id: str = Field(description="Case it was made for.")
    purpose: str = Field(description="Why it was made.")
    model_id: str = Field(description="Model of the probe.")
    created_at: datetime = Field(description="When it was made.")
    regions: list[RegionStatus] = Field(description="Each target region's state.")


class MatchRequestView(MatchRequestSummary):
    """A match request with its regions and merged candidates."""

    notice: str = Field(description="How the candidates may be used.")
    requester: str = Field(description="Who made it.")
    legal_basis: str = Field(description="Its legal basis.")
    galleries: list[str] = Field(description="Galleries searched at the peers.")
    k: int = Field(description="Candidates asked per region.")
    candidate_groups: list[CandidateGroup] = Field(
        description="Candidates first proposed by this request, per model."
    )


# -- helpers ---------------------------------------------------------------------------


def _invalid(errors: list[Any], prefix: tuple[str, ...] = ("body",)) -> RequestValidationError:
    return RequestValidationError([dict(e, loc=(*prefix, *e.get("loc", ()))) for e in errors])


def _body_error(msg: str, *loc: str) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", *loc), "msg": msg, "input": None}]
    )


def _federation(request: Request) -> FederationSettings:
    settings = federation_for(request.app.state)
    if settings is None:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail="federation is not configured on this hub (LANTERN_FEDERATION_FILE)",
        )
    return settings


def _regions(session: DbSession, ids: list[str]) -> dict[str, list[RegionStatus]]:
    out: dict[str, list[RegionStatus]] = {i: [] for i in ids}
    rows = session.scalars(
        select(MatchRequestRegion)
        .where(MatchRequestRegion.request_id.in_(ids))
        .order_by(MatchRequestRegion.request_id, MatchRequestRegion.hub_id)
    )
    for r in rows:
        out[r.request_id].append(
            RegionStatus(
                hub_id=r.hub_id,
                status=r.status,
                reason=r.reason,
                attempts=r.attempts,
                candidates=r.candidates,
                updated_at=r.updated_at,
            )
        )
    return out


def _own(session: DbSession, request_id: str, caller: AuthUser) -> MatchRequest:
    row = session.get(MatchRequest, request_id)
    if row is None or row.direction != "outgoing" or row.requester != caller.username:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such match request")
    return row


def _view(session: DbSession, row: MatchRequest) -> MatchRequestView:
    session.rollback()  # a fresh snapshot: the answers were written by other sessions
    candidates = session.scalars(
        select(ReviewCandidate)
        .where(ReviewCandidate.request_id == row.id)
        .order_by(ReviewCandidate.score.desc(), ReviewCandidate.hub_id, ReviewCandidate.rank)
    ).all()
    groups: dict[str, list[MatchCandidate]] = {}
    for c in candidates:
        groups.setdefault(c.model_id, []).append(
            MatchCandidate(
                id=c.id,
                hub_id=c.hub_id,
                candidate_ref=c.candidate_ref,
                gallery=c.gallery,
                score=c.score,
                rank=c.rank,
                flags=list(c.flags or []),
                status=c.status,
                has_crop=c.crop_jpeg is not None,
            )
        )
    return MatchRequestView(
        id=row.id,
        case_id=row.case_id,
        purpose=row.purpose,
        model_id=row.model_id,
        created_at=row.created_at,
        regions=_regions(session, [row.id])[row.id],
        notice=MATCH_NOTICE,
        requester=row.requester,
        legal_basis=row.legal_basis,
        galleries=list(row.galleries),
        k=row.k,
        candidate_groups=[
            CandidateGroup(model_id=m, candidates=cs) for m, cs in sorted(groups.items())
        ],
    )


async def _parse(request: Request) -> tuple[MatchRequestFields, list[UploadFile]]:
    """The request's fields and photos (multipart) or templates (JSON)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            raw = json.loads(await request.body())
        except ValueError:
            raise _body_error("the body is not JSON") from None
        try:
            return MatchRequestTemplates.model_validate(raw), []
        except ValidationError as exc:
            raise _invalid(exc.errors(include_url=False, include_context=False)) from None
    if content_type == "multipart/form-data":
        form = await request.form()
        photos = [p for p in form.getlist("photos") if not isinstance(p, str)]
        fields: dict[str, Any] = {}
        for name in ("case_id", "legal_basis", "purpose", "k"):
            value = form.get(name)
            if isinstance(value, str):
                fields[name] = value
        for name in ("galleries", "targets"):
            values = [v for v in form.getlist(name) if isinstance(v, str) and v]
            if values:
                fields[name] = values
        try:
            parsed = MatchRequestFields.model_validate(fields)
        except ValidationError as exc:
            raise _invalid(exc.errors(include_url=False, include_context=False)) from None
        if not 1 <= len(photos) <= MAX_PROBES:
            raise _body_error(f"send 1 to {MAX_PROBES} probe photos", "photos")
        return parsed, photos  # type: ignore[return-value]
    raise _body_error(
        "send application/json (templates with model_id) or multipart/form-data (photos)"
    )


def _embed(request: Request, photos: list[UploadFile]) -> tuple[str, np.ndarray[Any, Any]]:
    face_engine = face_engine_for(request.app.state)
    vectors = []
    for index, upload in enumerate(photos):
        try:
            name, data = read_upload(upload, index)
        except UploadRefused as exc:
            raise HTTPException(exc.status_code, detail=exc.reason) from exc
        try:
            image = decode_photo(name, data)
        except InvalidImage as exc:
            raise _body_error(str(exc), "photos", str(index)) from exc
        with engine_lock(face_engine):
            result = process_photo(
                face_engine, name, image, quality=_PROBE_QUALITY, single_face=False
            )
        if result.vector is None:
            raise _body_error(
                f"{name}: " + "; ".join(result.reasons or ["no usable face"]), "photos", str(index)
            )
        vectors.append(result.vector)
    return face_engine.model_id, np.stack(vectors).astype(np.float32)


_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["case_id", "legal_basis", "purpose", "photos"],
    "properties": {
        **MatchRequestFields.model_json_schema()["properties"],
        "photos": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "minItems": 1,
            "maxItems": MAX_PROBES,
            "description": "1 to 5 probe photos (JPEG, PNG, WebP, BMP, TIFF).",
        },
    },
}


# -- routes ----------------------------------------------------------------------------


@router.post(
    "/match-requests",
    response_model=MatchRequestView,
    status_code=status.HTTP_201_CREATED,
    summary="Send a case-bound match request to peer regions",
    responses={
        403: {"description": "A caseworker asked for a purpose other than missing/found."},
        409: {"description": "Federation is not configured on this hub."},
        413: {"description": "A photo is too large."},
        415: {"description": "A photo's content type or format is not accepted."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": MatchRequestTemplates.model_json_schema()},
                "multipart/form-data": {"schema": _FORM_SCHEMA},
            },
        }
    },
)
async def create_match_request(
    request: Request, caller: Asker, engine: EngineDep, session: DbSession
) -> MatchRequestView:
    """Sign and send the request to the target regions in parallel (each within the
    federation's timeout), record their answers and queue their candidates for review
    (audited ``federation.request`` and one ``federation.answer`` per region)."""
    fields, photos = await _parse(request)
    if caller.role is Role.caseworker and fields.purpose not in CASEWORKER_PURPOSES:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"a caseworker may ask only for {', '.join(sorted(CASEWORKER_PURPOSES))}",
        )
    settings = _federation(request)
    if fields.targets is not None:
        unknown = [t for t in fields.targets if settings.peer(t) is None]
        if unknown:
            raise _body_error(
                f"unknown peer(s): {', '.join(unknown)}; peers: {', '.join(settings.peer_ids())}",
                "targets",
            )
    if isinstance(fields, MatchRequestTemplates):
        if len({len(t) for t in fields.templates}) != 1:
            raise _body_error("templates must all have one dimension", "templates")
        model_id = fields.model_id
        probe = np.asarray(fields.templates, dtype=np.float32)
        if not np.all(np.isfinite(probe)) or np.any(np.linalg.norm(probe, axis=1) == 0):
            raise _body_error("templates must be finite and non-zero", "templates")
    else:
        model_id, probe = await run_in_threadpool(_embed, request, photos)
    request_id = str(uuid.uuid4())
    try:
        await run_in_threadpool(
            lambda: send_match_request(
                engine,
                settings,
                request_id=request_id,
                case_id=fields.case_id,
                legal_basis=fields.legal_basis,
                purpose=fields.purpose,
                galleries=fields.galleries,
                k=fields.k,
                model_id=model_id,
                probe=probe,
                probe_person_id=None,
                requester=caller.username,
                targets=fields.targets,
                role=caller.role.value,
            )
        )
    except ValueError as exc:
        raise _body_error(str(exc)) from exc
    return await run_in_threadpool(lambda: _view(session, _own(session, request_id, caller)))


@router.get(
    "/match-requests",
    response_model=Page[MatchRequestSummary],
    summary="List my match requests",
)
def list_match_requests(
    caller: Asker, session: DbSession, page: PageParams
) -> Page[MatchRequestSummary]:
    """The caller's outgoing match requests, newest first, with each region's state."""
    stmt = select(MatchRequest).where(
        MatchRequest.direction == "outgoing", MatchRequest.requester == caller.username
    )
    rows, total = fetch_page(session, stmt, page, MatchRequest.created_at.desc(), MatchRequest.id)
    requests = [r[0] for r in rows]
    regions = _regions(session, [r.id for r in requests])
    items = [
        MatchRequestSummary(
            id=r.id,
            case_id=r.case_id,
            purpose=r.purpose,
            model_id=r.model_id,
            created_at=r.created_at,
            regions=regions[r.id],
        )
        for r in requests
    ]
    return to_page(items, total, page)


@router.get(
    "/match-requests/{request_id}",
    response_model=MatchRequestView,
    summary="A match request: each region's state and the merged candidates",
    responses={404: {"description": "No such request of the caller."}},
)
def get_match_request(request_id: RequestId, caller: Asker, session: DbSession) -> MatchRequestView:
    """Status per region and the candidates, grouped by model, best first."""
    return _view(session, _own(session, request_id, caller))


@router.post(
    "/match-requests/{request_id}/retry",
    response_model=MatchRequestView,
    summary="Send a match request again to the regions that have not answered",
    responses={
        404: {"description": "No such request of the caller."},
        409: {"description": "Federation is not configured on this hub."},
    },
)
def retry(
    request_id: RequestId,
    request: Request,
    caller: Asker,
    engine: EngineDep,
    session: DbSession,
) -> MatchRequestView:
    """Regions pending, refused, timed out or in error are asked again (audited
    ``federation.retry``); regions that answered are not."""
    row = _own(session, request_id, caller)
    settings = _federation(request)
    try:
        retry_match_request(
            engine, settings, row.id, requester=caller.username, role=caller.role.value
        )
    except UnknownMatchRequest as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such match request") from exc
    return _view(session, row)


@router.post(
    SEARCH_PATH.removeprefix("/api/v1"),
    response_class=Response,
    summary="Answer a peer hub's signed search request (hub to hub)",
    responses={
        200: {"model": WireSearchAnswer, "description": "Signed answer (or model refusal)."},
        401: {"description": "Unknown peer, bad signature, clock skew or replayed nonce."},
        403: {"model": WireSearchAnswer, "description": "Refused by this hub's policy."},
        404: {"description": "Federation is not configured on this hub."},
        409: {"description": "The request id is already used for another request."},
    },
    openapi_extra={"x-lantern-auth": "peer-signature"},
)
def federation_search(
    request: Request,
    peer: Annotated[VerifiedPeer, Depends(PEER_GUARD)],
    engine: EngineDep,
    body: WireSearchRequest,
) -> Response:
    """Check the policy for the signing peer and answer with candidates (person
    references, scores, ranks, flags, crops if allowed), signed by this hub."""

    def engine_model_id() -> str | None:
        try:
            return face_engine_for(request.app.state).model_id
        except Exception:
            logger.exception("the face engine could not be built")
            return None

    code, answer = answer_search(
        engine,
        galleries_for(request.app.state, engine),
        peer.settings,
        peer.hub_id,
        body,
        engine_model_id=engine_model_id,
    )
    payload = canonical_body(answer.model_dump(mode="json"))
    headers = sign_message(
        peer.settings.signing_key(),
        method="POST",
        path=SEARCH_PATH,
        sender=peer.settings.hub_id,
        audience=peer.hub_id,
        body=payload,
    )
    return Response(
        content=payload, status_code=code, media_type="application/json", headers=headers
    )
