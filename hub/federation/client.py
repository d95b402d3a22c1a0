"""The requesting side: send a match request to peer hubs and record their answers.

:func:`send_match_request` records the request (``match_requests``, direction
``outgoing``) with one ``match_request_regions`` row per target and audits it
(``federation.request``); then it signs the request for each target and POSTs it to
all of them in parallel. Each peer has :attr:`FederationSettings.request_timeout_s`
as a whole: a peer that is down or slow is marked ``error`` or ``timed_out`` and does
not hold up the others. Every answer is checked (the peer's signature, addressed to
this hub, for this request) before it is believed; each region's outcome is stored
and audited (``federation.answer``, actor ``hub:<peer>``, same request id), and every
candidate enters the review queue (``review_candidates``) unless the same pair is
already there, including pairs rejected before, which are not proposed again.

:func:`retry_match_request` sends the stored request again to the regions that have
not answered.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

import httpx
import numpy as np
import numpy.typing as npt
from pydantic import ValidationError
from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from hub import audit
from hub.db.engine import write_session
from hub.db.models import MatchRequest, MatchRequestRegion, ReviewCandidate
from hub.federation.peers import FederationSettings, PeerConfig
from hub.federation.policy import DEFAULT_GALLERIES
from hub.federation.signing import SignatureRefused, canonical_body, sign_message, verify_message
from hub.federation.wire import (
    MAX_PROBES,
    SEARCH_PATH,
    WireCandidate,
    WireSearchAnswer,
    WireSearchRequest,
    encode_probe,
    probe_rows,
)

__all__ = [
    "RegionResult",
    "UnknownMatchRequest",
    "probe_ref_for",
    "retry_match_request",
    "send_match_request",
]

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]

_DEADLINE_MARGIN_S = 0.5
"""Extra wait, beyond the per-peer timeout, before a peer is marked timed out."""


class UnknownMatchRequest(LookupError):
    """No outgoing match request has this id."""


@dataclass(frozen=True)
class RegionResult:
    """What one target hub made of a request."""

    hub_id: str
    status: str
    """``answered``, ``refused`` (with ``reason``), ``timed_out`` or ``error``."""
    reason: str | None = None
    candidates: int = 0
    """Candidates the region answered."""
    new_candidates: int = 0
    """Of those, how many entered the review queue (the rest were already there)."""
    attempts: int = 0
    elapsed_s: float = 0.0


@dataclass
class _Outcome:
    status: str
    reason: str | None = None
    candidates: list[WireCandidate] = field(default_factory=list)
    elapsed_s: float = 0.0


def probe_ref_for(request_id: str, probe_person_id: int | None) -> str:
    """The review queue's ``probe_ref`` of a request's candidates."""
    return f"person:{probe_person_id}" if probe_person_id is not None else f"request:{request_id}"


def _unit_rows(probe: npt.ArrayLike) -> F32:
    rows = np.asarray(probe, dtype=np.float32)
    if rows.ndim == 1:
        rows = rows[None, :]
    if rows.ndim != 2 or not 1 <= len(rows) <= MAX_PROBES or rows.shape[1] < 1:
        raise ValueError(f"probe must be 1 to {MAX_PROBES} templates, got shape {rows.shape}")
    if not np.all(np.isfinite(rows)):
        raise ValueError("probe holds NaN or infinite values")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("probe holds a zero vector")
    unit: F32 = (rows / norms).astype(np.float32)
    return unit


def send_match_request(
    engine: Engine,
    settings: FederationSettings,
    *,
    request_id: str,
    case_id: str,
    legal_basis: str,
    purpose: str,
    galleries: Sequence[str] | None,
    k: int,
    model_id: str,
    probe: npt.ArrayLike,
    probe_person_id: int | None,
    requester: str,
    targets: Sequence[str] | None,
    role: str = "requester",
) -> list[RegionResult]:
    """Record, sign and send a match request to ``targets`` (default: every peer) in
    parallel; record each region's answer and queue its candidates for review. Returns
    one :class:`RegionResult` per target, in order. ``ValueError`` for an unknown
    target, no peers, or a request the peers would refuse as malformed."""
    chosen = list(dict.fromkeys(targets)) if targets is not None else settings.peer_ids()
    if not chosen:
        raise ValueError("no target hubs: the federation file lists no peers")
    unknown = [t for t in chosen if settings.peer(t) is None]
    if unknown:
        raise ValueError(f"unknown target hub(s): {', '.join(unknown)}")
    rows = _unit_rows(probe)
    searched = list(galleries) if galleries else list(DEFAULT_GALLERIES.get(purpose, ()))
    try:
        wire = WireSearchRequest(
            request_id=request_id,
            origin_hub=settings.hub_id,
            requester=requester,
            case_id=case_id,
            legal_basis=legal_basis,
            purpose=purpose,  # type: ignore[arg-type]
            galleries=searched,  # type: ignore[arg-type]
            k=k,
            model_id=model_id,
            dim=int(rows.shape[1]),
            probe=encode_probe(rows),
        )
    except ValidationError as exc:
        raise ValueError(f"match request refused: {exc}") from None
    with write_session(engine) as session:
        if session.get(MatchRequest, request_id) is not None:
            raise ValueError(f"match request {request_id} exists already")
        session.add(
            MatchRequest(
                id=request_id,
                direction="outgoing",
                origin_hub=settings.hub_id,
                requester=requester,
                case_id=case_id,
                legal_basis=legal_basis,
                purpose=purpose,
                galleries=searched,
                k=k,
                model_id=model_id,
                probe=np.ascontiguousarray(rows, dtype="<f4").tobytes(),
                probe_person_id=probe_person_id,
            )
        )
        session.flush()
        for hub_id in chosen:
            session.add(MatchRequestRegion(request_id=request_id, hub_id=hub_id, attempts=0))
        audit.append(
            session,
            actor=requester,
            role=role,
            action="federation.request",
            purpose=purpose,
            case_id=case_id,
            target=f"request:{request_id}",
            result=f"to {', '.join(chosen)}; galleries {', '.join(searched)}; k={k}; "
            f"{len(rows)} probe(s), {model_id}; legal basis: {legal_basis}"[:2000],
        )
    outcomes = _dispatch(settings, wire, chosen)
    return _record(engine, wire, probe_person_id, outcomes)


def retry_match_request(
    engine: Engine,
    settings: FederationSettings,
    request_id: str,
    *,
    requester: str | None = None,
    role: str = "requester",
) -> list[RegionResult]:
    """Send a stored outgoing request again to its regions that have not answered
    (pending, refused, timed out or in error); their results, in hub order. Regions
    that answered are not asked again. :class:`UnknownMatchRequest` if there is no
    such outgoing request."""
    with Session(engine) as session:
        stored = session.get(MatchRequest, request_id)
        if stored is None or stored.direction != "outgoing":
            raise UnknownMatchRequest(request_id)
        regions = session.scalars(
            select(MatchRequestRegion)
            .where(
                MatchRequestRegion.request_id == request_id,
                MatchRequestRegion.status != "answered",
            )
            .order_by(MatchRequestRegion.hub_id)
        ).all()
        rows = probe_rows(stored.probe)
        wire = WireSearchRequest(
            request_id=stored.id,
            origin_hub=settings.hub_id,
            requester=stored.requester,
            case_id=stored.case_id,
            legal_basis=stored.legal_basis,
            purpose=stored.purpose,  # type: ignore[arg-type]
            galleries=list(stored.galleries),  # type: ignore[arg-type]
            k=stored.k,
            model_id=stored.model_id,
            dim=int(rows.shape[1]),
            probe=encode_probe(rows),
        )
        probe_person_id = stored.probe_person_id
    targets = [r.hub_id for r in regions]
    if not targets:
        return []
    with write_session(engine) as session:
        audit.append(
            session,
            actor=requester or wire.requester,
            role=role,
            action="federation.retry",
            purpose=wire.purpose,
            case_id=wire.case_id,
            target=f"request:{request_id}",
            result=f"to {', '.join(targets)}",
        )
    known = [t for t in targets if settings.peer(t) is not None]
    outcomes = _dispatch(settings, wire, known)
    for gone in set(targets) - set(known):
        outcomes[gone] = _Outcome("error", "no longer a peer in the federation file")
    return _record(engine, wire, probe_person_id, outcomes)


# -- sending ---------------------------------------------------------------------------


def _dispatch(
    settings: FederationSettings, wire: WireSearchRequest, targets: Sequence[str]
) -> dict[str, _Outcome]:
    """POST the request to every target at once; each gets the timeout as a whole."""
    body = canonical_body(wire.model_dump(mode="json"))
    timeout = settings.request_timeout_s
    outcomes: dict[str, _Outcome] = {}
    if not targets:
        return outcomes
    pool = ThreadPoolExecutor(max_workers=len(targets), thread_name_prefix="federation")
    started = time.monotonic()
    try:
        futures = {
            pool.submit(_ask, settings, peer, wire.request_id, body): peer.hub_id
            for peer in (settings.peer(t) for t in targets)
            if peer is not None
        }
        done, not_done = wait(futures, timeout=timeout + _DEADLINE_MARGIN_S)
        for future in done:
            outcomes[futures[future]] = future.result()
        for future in not_done:
            outcomes[futures[future]] = _Outcome(
                "timed_out",
                f"no answer within {timeout:g} s",
                elapsed_s=time.monotonic() - started,
            )
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return {t: outcomes[t] for t in targets if t in outcomes}


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    text = detail if isinstance(detail, str) else response.text
    return f"HTTP {response.status_code}: {text[:300]}"


def _ask(settings: FederationSettings, peer: PeerConfig, request_id: str, body: bytes) -> _Outcome:
    """One peer's outcome; never raises."""
    started = time.monotonic()
    try:
        outcome = _ask_once(settings, peer, request_id, body)
    except Exception as exc:  # a peer's failure must not end the others' requests
        logger.exception("match request %s to %s failed", request_id, peer.hub_id)
        outcome = _Outcome("error", f"{type(exc).__name__}: {exc}"[:300])
    outcome.elapsed_s = time.monotonic() - started
    logger.info(
        "match request %s: %s %s in %.2f s%s",
        request_id,
        peer.hub_id,
        outcome.status,
        outcome.elapsed_s,
        f" ({outcome.reason})" if outcome.reason else "",
    )
    return outcome


def _ask_once(
    settings: FederationSettings, peer: PeerConfig, request_id: str, body: bytes
) -> _Outcome:
    headers = sign_message(
        settings.signing_key(),
        method="POST",
        path=SEARCH_PATH,
        sender=settings.hub_id,
        audience=peer.hub_id,
        body=body,
    )
    headers["Content-Type"] = "application/json"
    try:
        response = httpx.post(
            peer.url + SEARCH_PATH,
            content=body,
            headers=headers,
            timeout=settings.request_timeout_s,
        )
    except httpx.TimeoutException:
        return _Outcome("timed_out", f"no answer within {settings.request_timeout_s:g} s")
    except httpx.TransportError as exc:
        return _Outcome("error", f"cannot reach {peer.url}: {exc}"[:300])
    if response.status_code == 401:
        return _Outcome(
            "refused", f"the peer did not accept this hub's signature ({_detail(response)})"
        )
    if response.status_code not in (200, 403):
        return _Outcome("error", _detail(response))
    try:
        verify_message(
            {peer.hub_id: peer.key()},
            response.headers,
            method="POST",
            path=SEARCH_PATH,
            audience=settings.hub_id,
            body=response.content,
            nonces=None,
        )
    except SignatureRefused as exc:
        return _Outcome("error", f"answer not accepted: {exc.reason}")
    try:
        answer = WireSearchAnswer.model_validate_json(response.content)
    except ValidationError as exc:
        return _Outcome("error", f"malformed answer: {exc.errors()[:1]}")
    if answer.request_id != request_id or answer.hub_id != peer.hub_id:
        return _Outcome("error", "the answer is for another request or from another hub")
    if answer.status == "refused":
        return _Outcome("refused", answer.reason or "refused without a reason")
    return _Outcome("answered", None, answer.candidates)


# -- recording -------------------------------------------------------------------------


def _crop(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _record(
    engine: Engine,
    wire: WireSearchRequest,
    probe_person_id: int | None,
    outcomes: dict[str, _Outcome],
) -> list[RegionResult]:
    probe_ref = probe_ref_for(wire.request_id, probe_person_id)
    results: list[RegionResult] = []
    with write_session(engine) as session:
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        for hub_id in sorted(outcomes):
            outcome = outcomes[hub_id]
            region = session.get(MatchRequestRegion, (wire.request_id, hub_id))
            if region is None:
                region = MatchRequestRegion(request_id=wire.request_id, hub_id=hub_id, attempts=0)
                session.add(region)
            region.status = outcome.status
            region.reason = outcome.reason
            region.attempts = (region.attempts or 0) + 1
            region.candidates = len(outcome.candidates)
            new = 0
            for c in outcome.candidates:
                stmt = (
                    insert(ReviewCandidate)
                    .values(
                        probe_ref=probe_ref,
                        request_id=wire.request_id,
                        probe_person_id=probe_person_id,
                        hub_id=hub_id,
                        candidate_ref=c.candidate_ref,
                        gallery=c.gallery,
                        model_id=c.model_id,
                        score=c.score,
                        rank=c.rank,
                        crop_jpeg=_crop(c.crop_jpeg),
                        flags=list(c.flags),
                        status="pending",
                    )
                    .on_conflict_do_nothing(index_elements=["probe_ref", "hub_id", "candidate_ref"])
                    .returning(ReviewCandidate.id)
                )
                if session.execute(stmt).first() is not None:
                    new += 1
            audit.append(
                session,
                actor=f"hub:{hub_id}",
                role="peer",
                action="federation.answer",
                purpose=wire.purpose,
                case_id=wire.case_id,
                target=f"request:{wire.request_id}",
                result=f"{outcome.status}: {len(outcome.candidates)} candidates ({new} new)"
                + (f"; {outcome.reason}" if outcome.reason else ""),
            )
            results.append(
                RegionResult(
                    hub_id=hub_id,
                    status=outcome.status,
                    reason=outcome.reason,
                    candidates=len(outcome.candidates),
                    new_candidates=new,
                    attempts=region.attempts,
                    elapsed_s=outcome.elapsed_s,
                )
            )
    order = list(outcomes)
    return sorted(results, key=lambda r: order.index(r.hub_id))
