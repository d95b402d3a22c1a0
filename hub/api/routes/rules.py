"""Supervision rules (admin and officer write; analysts read).

A rule binds a supervised person, through their registered device, to a condition
(:mod:`hub.supervision.model`): inclusion, exclusion, curfew, proximity or silence,
with a validity period (the monitoring order). A rule is refused with 422 (and the
field path) when the person is not a supervised person, the device is not
registered, a zone it names does not exist, the proximity device is unknown or the
subject's own, the curfew's time zone is unknown, ``valid_until`` is not after
``valid_from`` or ``confirm_n`` exceeds ``confirm_m``. Every change is audited
(``rule.create``, ``rule.update``, ``rule.delete``, with the person's case id) and
reloads the running supervision service; deleting a rule deletes its evaluation
state, its alerts stay.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hub import audit
from hub.api.deps import MAX_ROW_ID, AuthUser, DbSession, EngineDep, PageParams, paginate, require
from hub.api.schemas import Page
from hub.db.engine import write_session
from hub.db.models import (
    Device,
    Person,
    SupervisionRule,
    SupervisionRuleState,
    SupervisionZone,
)
from hub.db.users import Role
from hub.supervision.model import (
    CurfewParams,
    ProximityParams,
    RuleKind,
    RuleParams,
    Severity,
)

from .zones import reload_supervision, zones_in_rule

__all__ = ["RuleBody", "RuleCreate", "RulePublic", "router"]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/rules", tags=["rules"])

Reader = Annotated[AuthUser, Depends(require(Role.admin, Role.officer, Role.analyst))]
Writer = Annotated[AuthUser, Depends(require(Role.admin, Role.officer))]
RuleIdPath = Annotated[str, Path(min_length=1, max_length=64, description="Rule id.")]

_PARAMS: TypeAdapter[RuleParams] = TypeAdapter(Annotated[RuleParams, Field(discriminator="kind")])


class RuleBody(BaseModel):
    """A rule's content (everything but its id)."""

    model_config = ConfigDict(extra="forbid")

    person_id: int = Field(ge=1, le=MAX_ROW_ID, description="The supervised person.")
    device_id: str = Field(min_length=1, max_length=64, description="The person's device.")
    params: RuleParams = Field(discriminator="kind", description="Kind and parameters.")
    severity: Severity = Field(default=Severity.serious, description="Severity of its alerts.")
    valid_from: AwareDatetime = Field(description="Evaluation starts (the order's start).")
    valid_until: AwareDatetime | None = Field(
        default=None, description="Evaluation stops (the order's end); null: open-ended."
    )
    enter_margin_m: float = Field(default=10.0, ge=0, le=1000, description="Entry margin, m.")
    exit_margin_m: float = Field(default=25.0, ge=0, le=1000, description="Exit margin, m.")
    confirm_n: int = Field(default=2, ge=1, le=20, description="Confident fixes needed ...")
    confirm_m: int = Field(default=3, ge=1, le=20, description="... out of the last M.")
    dwell_s: int = Field(default=30, ge=0, le=3600, description="Violation must last this long.")
    enabled: bool = Field(default=True, description="Evaluated by the engine.")


class RuleCreate(RuleBody):
    """A new rule."""

    id: str = Field(
        min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$", description="Rule id."
    )


class RulePublic(RuleBody):
    """A stored rule."""

    id: str = Field(description="Rule id.")
    kind: RuleKind = Field(description="The rule's kind (also params.kind).")
    created_at: datetime = Field(description="When it was created (UTC).")
    updated_at: datetime = Field(description="When it last changed (UTC).")


def _public(row: SupervisionRule) -> RulePublic:
    return RulePublic(
        id=row.id,
        kind=RuleKind(row.kind),
        person_id=row.person_id,
        device_id=row.device_id,
        params=_PARAMS.validate_python(row.params),
        severity=Severity(row.severity),
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        enter_margin_m=row.enter_margin_m,
        exit_margin_m=row.exit_margin_m,
        confirm_n=row.confirm_n,
        confirm_m=row.confirm_m,
        dwell_s=row.dwell_s,
        enabled=row.enabled,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _error(loc: tuple[str, ...], msg: str) -> dict[str, Any]:
    return {"type": "value_error", "loc": ("body", *loc), "msg": msg, "input": None}


def _check(session: Session, body: RuleBody) -> Person:
    """The rule's person, or 422 with every problem found."""
    errors: list[dict[str, Any]] = []
    person = session.get(Person, body.person_id)
    if person is None:
        errors.append(_error(("person_id",), f"no person {body.person_id}"))
    elif person.category != "supervised":
        errors.append(_error(("person_id",), f"person {person.id} is not a supervised person"))
    if session.get(Device, body.device_id) is None:
        errors.append(_error(("device_id",), f"device {body.device_id} is not registered"))
    params = body.params
    missing = sorted(
        zone_id
        for zone_id in zones_in_rule(params.model_dump())
        if session.get(SupervisionZone, zone_id) is None
    )
    if missing:
        field = "zone_id" if isinstance(params, CurfewParams) else "zone_ids"
        errors.append(_error(("params", field), f"no such zones: {', '.join(missing)}"))
    if isinstance(params, CurfewParams):
        try:
            ZoneInfo(params.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            errors.append(_error(("params", "timezone"), f"unknown time zone {params.timezone}"))
    if isinstance(params, ProximityParams):
        if params.other_device_id == body.device_id:
            errors.append(
                _error(("params", "other_device_id"), "the protected device is the subject's")
            )
        elif session.get(Device, params.other_device_id) is None:
            errors.append(
                _error(
                    ("params", "other_device_id"),
                    f"device {params.other_device_id} is not registered",
                )
            )
    if body.valid_until is not None and body.valid_until <= body.valid_from:
        errors.append(_error(("valid_until",), "valid_until must be after valid_from"))
    if body.confirm_n > body.confirm_m:
        errors.append(_error(("confirm_n",), "confirm_n must not exceed confirm_m"))
    if errors:
        raise RequestValidationError(errors)
    assert person is not None
    return person


def _store(row: SupervisionRule, body: RuleBody) -> None:
    row.person_id = body.person_id
    row.device_id = body.device_id
    row.kind = body.params.kind
    row.params = body.params.model_dump(mode="json")
    row.severity = body.severity.value
    row.valid_from = body.valid_from
    row.valid_until = body.valid_until
    row.enter_margin_m = body.enter_margin_m
    row.exit_margin_m = body.exit_margin_m
    row.confirm_n = body.confirm_n
    row.confirm_m = body.confirm_m
    row.dwell_s = body.dwell_s
    row.enabled = body.enabled


def _audit(
    session: Session,
    caller: AuthUser,
    action: str,
    rule_id: str,
    person: Person | None,
    result: str,
) -> None:
    audit.append(
        session,
        actor=caller.username,
        role=caller.role.value,
        action=action,
        purpose="supervision order",
        case_id=person.case_id if person is not None else None,
        target=f"rule:{rule_id}",
        result=result,
    )


@router.get("", response_model=Page[RulePublic], summary="List rules")
def list_rules(
    _caller: Reader,
    session: DbSession,
    page: PageParams,
    person_id: Annotated[
        int | None, Query(ge=1, le=MAX_ROW_ID, description="Only this person's.")
    ] = None,
    device_id: Annotated[
        str | None, Query(max_length=64, description="Only this device's.")
    ] = None,
    kind: Annotated[RuleKind | None, Query(description="Only this kind.")] = None,
    enabled: Annotated[bool | None, Query(description="Only enabled or disabled rules.")] = None,
) -> Page[RulePublic]:
    """Rules by id."""
    stmt = select(SupervisionRule)
    if person_id is not None:
        stmt = stmt.where(SupervisionRule.person_id == person_id)
    if device_id is not None:
        stmt = stmt.where(SupervisionRule.device_id == device_id)
    if kind is not None:
        stmt = stmt.where(SupervisionRule.kind == kind.value)
    if enabled is not None:
        stmt = stmt.where(SupervisionRule.enabled == enabled)
    return paginate(session, stmt, page, _public, SupervisionRule.id)


@router.get(
    "/{rule_id}",
    response_model=RulePublic,
    summary="Read a rule",
    responses={404: {"description": "No such rule."}},
)
def get_rule(rule_id: RuleIdPath, _caller: Reader, session: DbSession) -> RulePublic:
    """One rule by id."""
    row = session.get(SupervisionRule, rule_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such rule")
    return _public(row)


@router.post(
    "",
    response_model=RulePublic,
    status_code=status.HTTP_201_CREATED,
    summary="Create a rule",
    responses={
        409: {"description": "A rule with this id exists."},
        422: {"description": "Not a supervised person, unknown device or zone, bad period."},
    },
)
def post_rule(body: RuleCreate, caller: Writer, engine: EngineDep, request: Request) -> RulePublic:
    """Create a rule (audited as ``rule.create``)."""
    try:
        with write_session(engine) as session:
            if session.get(SupervisionRule, body.id) is not None:
                raise HTTPException(status.HTTP_409_CONFLICT, detail="rule exists")
            person = _check(session, body)
            row = SupervisionRule(id=body.id)
            _store(row, body)
            session.add(row)
            session.flush()
            _audit(session, caller, "rule.create", body.id, person, f"{row.kind} {row.device_id}")
            public = _public(row)
    except IntegrityError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="rule exists") from exc
    reload_supervision(request)
    return public


@router.put(
    "/{rule_id}",
    response_model=RulePublic,
    summary="Replace a rule",
    responses={
        404: {"description": "No such rule."},
        422: {"description": "Not a supervised person, unknown device or zone, bad period."},
    },
)
def put_rule(
    rule_id: RuleIdPath, body: RuleBody, caller: Writer, engine: EngineDep, request: Request
) -> RulePublic:
    """Replace a rule's content (audited as ``rule.update``); its evaluation state is
    kept when the kind is unchanged and dropped otherwise."""
    with write_session(engine) as session:
        row = session.get(SupervisionRule, rule_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such rule")
        person = _check(session, body)
        if row.kind != body.params.kind:
            state = session.get(SupervisionRuleState, rule_id)
            if state is not None:
                session.delete(state)
        _store(row, body)
        session.flush()
        _audit(
            session,
            caller,
            "rule.update",
            rule_id,
            person,
            f"{row.kind} {row.device_id} enabled={row.enabled}",
        )
        public = _public(row)
    reload_supervision(request)
    return public


@router.delete(
    "/{rule_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a rule",
    responses={404: {"description": "No such rule."}},
)
def delete_rule(rule_id: RuleIdPath, caller: Writer, engine: EngineDep, request: Request) -> None:
    """Delete a rule and its evaluation state (audited as ``rule.delete``)."""
    with write_session(engine) as session:
        row = session.get(SupervisionRule, rule_id)
        if row is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such rule")
        person = session.get(Person, row.person_id)
        session.delete(row)
        session.flush()
        _audit(session, caller, "rule.delete", rule_id, person, "deleted")
    reload_supervision(request)
