"""The audit log, read-only (auditor and admin): list and verify. No route writes it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from hub import audit
from hub.api.deps import AuthUser, DbSession, PageParams, paginate, require
from hub.api.schemas import AuditEntryPublic, AuditVerifyPublic, Page
from hub.db.models import AuditEntry
from hub.db.users import Role

router = APIRouter(prefix="/audit", tags=["audit"])

Reader = Annotated[AuthUser, Depends(require(Role.auditor, Role.admin))]


@router.get("", response_model=Page[AuditEntryPublic], summary="List audit rows")
def list_audit(
    _caller: Reader,
    session: DbSession,
    page: PageParams,
    actor: Annotated[str | None, Query(max_length=200, description="Only this actor.")] = None,
    action: Annotated[str | None, Query(max_length=100, description="Only this action.")] = None,
) -> Page[AuditEntryPublic]:
    """Audit rows in chain order, a page at a time."""
    stmt = select(AuditEntry)
    if actor is not None:
        stmt = stmt.where(AuditEntry.actor == actor)
    if action is not None:
        stmt = stmt.where(AuditEntry.action == action)
    return paginate(session, stmt, page, AuditEntryPublic.model_validate, AuditEntry.seq)


@router.get("/verify", response_model=AuditVerifyPublic, summary="Verify the audit chain")
def verify_audit(_caller: Reader, session: DbSession) -> AuditVerifyPublic:
    """Recompute the whole hash chain and report the first bad row, if any."""
    result = audit.verify(session)
    return AuditVerifyPublic(
        ok=result.ok,
        rows=result.rows,
        bad_seq=result.bad_seq,
        reason=result.reason,
        head_hash=result.head_hash,
    )
