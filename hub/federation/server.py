"""The answering side: a peer's signed search request, checked and answered.

:class:`PeerGuard` is the route's authentication: instead of a user's bearer token it
requires the four signature headers (:mod:`hub.federation.signing`) from a peer of the
federation file, addressed to this hub. Missing headers are a 422 (with their field
path), a signature that does not check out a 401, a hub without a federation file a 404.

:func:`answer_search` then applies the policy and searches:

* the signing hub must be the request's ``origin_hub``, else **403**;
* the policy must let that peer search every named gallery for the purpose, else
  **403** with a signed ``refused`` answer naming the reason;
* a model this hub neither holds templates of (in those galleries) nor runs is a
  **200** ``refused`` answer ("model not held"), since nothing could be compared;
* otherwise an investigative search (top ``k``, no threshold) of each gallery with
  each probe template; a person's score is their best over the probe templates and
  their templates, and the ``k`` best persons over all galleries are ranked.

Candidates name persons only as ``person:<id>`` of this hub, with their gallery, score,
rank, flags (``child``: the person's reunion case gives a birth year under which they
were under 18 when the matched photo was taken, or enrolled when its date is unknown),
and the face crop only when the policy allows crops for that peer. Every answered or
refused request is stored (``match_requests``, ``incoming``, with this hub's own
``match_request_regions`` row) and audited ``federation.search_received`` (actor
``hub:<peer>``, target ``request:<id>``). The same request id asked again by the same
peer (a retry) is answered again; one already used otherwise is a 409.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Header, HTTPException, Request, status
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from sqlalchemy import Engine, select

from hub import audit
from hub.db.engine import write_session
from hub.db.models import FaceTemplate, MatchRequest, MatchRequestRegion, Person, ReunionCase
from hub.federation.peers import FederationSettings, federation_for, nonces_for
from hub.federation.policy import check_policy
from hub.federation.signing import (
    HEADER_HUB,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    SignatureRefused,
    verify_message,
)
from hub.federation.wire import WireCandidate, WireSearchAnswer, WireSearchRequest
from hub.galleries import GalleryService
from matching.errors import MatchingError

__all__ = [
    "CHILD_AGE",
    "PeerGuard",
    "VerifiedPeer",
    "answer_search",
    "peer_guarded",
]

logger = logging.getLogger(__name__)

CHILD_AGE = 18
"""Below this age at the photo's time a candidate is flagged ``child``."""


@dataclass(frozen=True)
class VerifiedPeer:
    """A request whose signature checked out: the peer and this hub's federation."""

    hub_id: str
    settings: FederationSettings


class PeerGuard:
    """Dependency admitting a request signed by a known peer (see the module
    docstring). The signed path is fixed (``path``), so a proxy in front may rewrite
    the URL without breaking signatures."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"PeerGuard({self.path!r})"

    async def __call__(
        self,
        request: Request,
        x_lantern_hub: Annotated[
            str, Header(min_length=1, max_length=64, description="The sending hub's id.")
        ],
        x_lantern_timestamp: Annotated[
            str, Header(min_length=1, max_length=12, description="Unix seconds at signing.")
        ],
        x_lantern_nonce: Annotated[
            str, Header(min_length=16, max_length=64, description="A fresh random value.")
        ],
        x_lantern_signature: Annotated[
            str, Header(min_length=1, max_length=200, description="Base64 Ed25519 signature.")
        ],
    ) -> VerifiedPeer:
        settings = federation_for(request.app.state)
        if settings is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="federation is not configured")
        body = await request.body()
        headers = {
            HEADER_HUB: x_lantern_hub,
            HEADER_TIMESTAMP: x_lantern_timestamp,
            HEADER_NONCE: x_lantern_nonce,
            HEADER_SIGNATURE: x_lantern_signature,
        }
        try:
            sender = verify_message(
                settings.public_keys(),
                headers,
                method=request.method,
                path=self.path,
                audience=settings.hub_id,
                body=body,
                nonces=nonces_for(request.app.state),
            )
        except SignatureRefused as exc:
            logger.warning("federation request refused: %s", exc.reason)
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail=exc.reason,
                headers={"WWW-Authenticate": "Lantern-Signature"},
            ) from exc
        return VerifiedPeer(hub_id=sender, settings=settings)


def _peer_guards(dependant: Dependant) -> bool:
    return any(
        isinstance(sub.call, PeerGuard) or _peer_guards(sub) for sub in dependant.dependencies
    )


def peer_guarded(route: APIRoute) -> bool:
    """Whether ``route`` is authenticated by a :class:`PeerGuard`."""
    return _peer_guards(route.dependant)


def _child(birth_year: int | None, template: FaceTemplate) -> bool:
    if birth_year is None:
        return False
    taken = template.photo_taken_at or template.created_at
    return taken is not None and taken.year - birth_year < CHILD_AGE


def _search(
    engine: Engine, galleries: GalleryService, body: WireSearchRequest, crops: bool
) -> list[WireCandidate]:
    vectors = body.vectors()
    best: dict[tuple[str, int], tuple[float, int]] = {}
    for gallery in body.galleries:
        for hits in galleries.search(gallery, body.model_id, vectors, body.k):
            for hit in hits:
                key = (gallery, hit.person_id)
                if key not in best or hit.score > best[key][0]:
                    best[key] = (hit.score, hit.template_id)
    ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[0][1]))
    if not ranked:
        return []
    with write_session(engine) as session:
        person_ids = [person_id for (_, person_id), _ in ranked]
        persons = {
            p.id: p for p in session.scalars(select(Person).where(Person.id.in_(person_ids)))
        }
        templates = {
            t.id: t
            for t in session.scalars(
                select(FaceTemplate).where(FaceTemplate.id.in_([t for _, (_, t) in ranked]))
            )
        }
        births: dict[int, int | None] = {
            person_id: birth_year
            for person_id, birth_year in session.execute(
                select(ReunionCase.person_id, ReunionCase.birth_year).where(
                    ReunionCase.person_id.in_(person_ids)
                )
            )
        }
        out: list[WireCandidate] = []
        for (held_in, person_id), (score, template_id) in ranked:
            person = persons.get(person_id)
            template = templates.get(template_id)
            if person is None or template is None or person.category != held_in:
                continue  # deleted or moved since the gallery was read
            flags = ["child"] if _child(births.get(person_id), template) else []
            crop = template.crop_jpeg if crops else None
            out.append(
                WireCandidate(
                    candidate_ref=f"person:{person_id}",
                    gallery=held_in,  # type: ignore[arg-type]
                    model_id=body.model_id,
                    score=max(-1.0, min(1.0, score)),
                    rank=len(out) + 1,
                    flags=flags,
                    crop_jpeg=base64.b64encode(crop).decode("ascii") if crop else None,
                )
            )
            if len(out) == body.k:
                break
    return out


def answer_search(
    engine: Engine,
    galleries: GalleryService,
    settings: FederationSettings,
    peer: str,
    body: WireSearchRequest,
    *,
    engine_model_id: Callable[[], str | None],
) -> tuple[int, WireSearchAnswer]:
    """Check and answer a verified peer's request; ``(HTTP status, answer)``.
    ``engine_model_id`` gives the model this hub's face engine runs (None if it has
    none), asked only when no searched gallery holds the request's model."""
    if body.origin_hub != peer:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"origin_hub {body.origin_hub!r} is not the signing hub {peer!r}",
        )
    with write_session(engine) as session:
        existing = session.get(MatchRequest, body.request_id)
        if existing is not None and (
            existing.direction != "incoming" or existing.origin_hub != peer
        ):
            raise HTTPException(
                status.HTTP_409_CONFLICT, detail=f"request id {body.request_id} is already used"
            )
    decision = check_policy(settings.policy, peer, body.purpose, body.galleries)
    code = status.HTTP_200_OK
    candidates: list[WireCandidate] = []
    reason: str | None = None
    if not decision.allowed:
        code, reason = status.HTTP_403_FORBIDDEN, decision.reason
    elif not any(body.model_id in galleries.models(g) for g in body.galleries) and (
        body.model_id != engine_model_id()
    ):
        reason = f"model {body.model_id} not held here"
    else:
        try:
            candidates = _search(engine, galleries, body, decision.crops)
        except MatchingError as exc:
            reason = f"cannot search with this probe: {exc}"
    answer = WireSearchAnswer(
        request_id=body.request_id,
        hub_id=settings.hub_id,
        status="refused" if reason else "answered",
        reason=reason,
        candidates=candidates,
    )
    _record(engine, settings, peer, body, answer)
    return code, answer


def _record(
    engine: Engine,
    settings: FederationSettings,
    peer: str,
    body: WireSearchRequest,
    answer: WireSearchAnswer,
) -> None:
    with write_session(engine) as session:
        if session.get(MatchRequest, body.request_id) is None:
            session.add(
                MatchRequest(
                    id=body.request_id,
                    direction="incoming",
                    origin_hub=peer,
                    requester=body.requester,
                    case_id=body.case_id,
                    legal_basis=body.legal_basis,
                    purpose=body.purpose,
                    galleries=list(body.galleries),
                    k=body.k,
                    model_id=body.model_id,
                    probe=base64.b64decode(body.probe),
                )
            )
            session.flush()
        region = session.get(MatchRequestRegion, (body.request_id, settings.hub_id))
        if region is None:
            region = MatchRequestRegion(
                request_id=body.request_id, hub_id=settings.hub_id, attempts=0
            )
            session.add(region)
        region.status = answer.status
        region.reason = answer.reason
        region.attempts = (region.attempts or 0) + 1
        region.candidates = len(answer.candidates)
        audit.append(
            session,
            actor=f"hub:{peer}",
            role="peer",
            action="federation.search_received",
            purpose=body.purpose,
            case_id=body.case_id,
            target=f"request:{body.request_id}",
            result=(
                f"{answer.status}: {len(answer.candidates)} candidates from "
                f"{', '.join(body.galleries)} (k={body.k}, {body.model_id}); "
                f"requested by {body.requester} at {peer}; legal basis: {body.legal_basis}"
                + (f"; {answer.reason}" if answer.reason else "")
            )[:2000],
        )
