"""Typed dependencies of the API: settings, database, pagination and the role guard.

Every protected route takes its caller through :func:`require`, which names the
roles admitted. The guard is a :class:`RoleGuard` object, so the declared roles can
be read back from a route (:func:`declared_roles`): the app factory refuses to build
an app with an unguarded ``/api`` route, and the tests walk every route and role.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, TypeVarTuple

from fastapi import Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.security import OAuth2PasswordBearer
from pydantic import BaseModel
from sqlalchemy import Engine, Row, Select, func, select
from sqlalchemy.orm import Session

from hub import audit
from hub.auth import InvalidToken, TokenClaims, decode_token
from hub.db.users import Role, User
from hub.federation.peers import federation_for
from hub.reunion import LOCAL_HUB_ID
from hub.settings import HubSettings

from .schemas import DEFAULT_LIMIT, MAX_LIMIT, Page

__all__ = [
    "API_PREFIX",
    "MAX_ROW_ID",
    "TOKEN_PATH",
    "AuthUser",
    "CaseIdQuery",
    "DbSession",
    "EngineDep",
    "PageParams",
    "RowId",
    "Pagination",
    "RoleGuard",
    "SettingsDep",
    "declared_roles",
    "fetch_page",
    "hub_id_of",
    "token_user",
    "paginate",
    "audited_crop",
    "crop_responses",
    "require",
    "to_page",
]

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
TOKEN_PATH = f"{API_PREFIX}/auth/token"

_bearer = OAuth2PasswordBearer(tokenUrl=TOKEN_PATH, auto_error=False)


def _settings(request: Request) -> HubSettings:
    settings: HubSettings = request.app.state.settings
    return settings


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


SettingsDep = Annotated[HubSettings, Depends(_settings)]
EngineDep = Annotated[Engine, Depends(_engine)]


def _session(engine: EngineDep) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


DbSession = Annotated[Session, Depends(_session)]
"""A read session; writes go through :func:`hub.db.engine.write_session`."""


@dataclass(frozen=True)
class Pagination:
    """``limit`` and ``offset`` of a list request."""

    limit: int
    offset: int


def _pagination(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size.")] = DEFAULT_LIMIT,
    # Bounded like a row id: a larger offset overflows the database's integer.
    offset: Annotated[int, Query(ge=0, le=2**63 - 1, description="Rows to skip.")] = 0,
) -> Pagination:
    return Pagination(limit=limit, offset=offset)


PageParams = Annotated[Pagination, Depends(_pagination)]

MAX_ROW_ID = 2**63 - 1
"""Largest surrogate key (BIGINT); larger path values are refused with 422, not
handed to the database."""

RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID, description="Row id.")]
"""A path parameter naming a row by its integer id."""

ItemT = TypeVar("ItemT", bound=BaseModel)
Columns = TypeVarTuple("Columns")


def fetch_page(
    session: Session, stmt: Select[*Columns], page: Pagination, *order_by: Any
) -> tuple[list[Row[*Columns]], int]:
    """The rows of one page of ``stmt`` (filters applied) ordered by ``order_by``, and
    the number of rows matching the filters over all pages."""
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.execute(stmt.order_by(*order_by).limit(page.limit).offset(page.offset))
    return list(rows.all()), total


def to_page(items: list[ItemT], total: int, page: Pagination) -> Page[ItemT]:
    """A :class:`Page` of ``items`` out of ``total``."""
    return Page[ItemT](items=items, total=total, limit=page.limit, offset=page.offset)


def paginate(
    session: Session,
    stmt: Select[Any],
    page: Pagination,
    item: Callable[[Any], ItemT],
    *order_by: Any,
) -> Page[ItemT]:
    """One page of ``stmt`` (a select of one ORM entity, filters applied) ordered by
    ``order_by``, each entity turned into a public model by ``item``."""
    rows, total = fetch_page(session, stmt, page, *order_by)
    return to_page([item(row[0]) for row in rows], total, page)


@dataclass(frozen=True)
class AuthUser:
    """The caller of a guarded route, as the database says now."""

    id: int
    username: str
    role: Role


def _unauthorised(detail: str) -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": "Bearer"},
    )


def hub_id_of(state: Any) -> str:
    """The id the app's tokens are bound to (``state`` is ``app.state``): the hub id of
    its federation file, else ``local`` (see :mod:`hub.auth`)."""
    federation = federation_for(state)
    return federation.hub_id if federation is not None else LOCAL_HUB_ID


def token_user(session: Session, claims: TokenClaims) -> User | None:
    """The enabled user a verified token names, or None: the user row of its id must
    exist, be enabled and carry the token's username (a token of another hub naming
    the same id is refused even when the hubs share the key and the hub id)."""
    user = session.get(User, claims.user_id)
    if user is None or user.disabled or user.username != claims.username:
        return None
    return user


class RoleGuard:
    """Dependency admitting a valid bearer token of an enabled user with one of ``roles``.

    No token, a bad token (another hub's included) or a disabled, deleted or renamed
    user: 401. A valid user of another role: 403.
    """

    def __init__(self, roles: frozenset[Role]) -> None:
        if not roles:
            raise ValueError("a route must admit at least one role")
        self.roles = roles

    def __repr__(self) -> str:
        return f"RoleGuard({sorted(self.roles)})"

    def __call__(
        self,
        request: Request,
        settings: SettingsDep,
        engine: EngineDep,
        token: Annotated[str | None, Depends(_bearer)],
    ) -> AuthUser:
        if not token:
            raise _unauthorised("not authenticated")
        try:
            claims = decode_token(
                settings.jwt_secret.get_secret_value(),
                token,
                hub_id=hub_id_of(request.app.state),
            )
        except InvalidToken as exc:
            logger.info("bearer token refused: %s", exc)
            raise _unauthorised("invalid or expired token") from exc
        with Session(engine) as session:
            user = token_user(session, claims)
            if user is None:
                logger.info("bearer token of user %d (%r) refused", claims.user_id, claims.username)
                raise _unauthorised("user unknown or disabled")
            caller = AuthUser(id=user.id, username=user.username, role=Role(user.role))
        if caller.role not in self.roles:
            raise HTTPException(
                status_code=status.HTTP_403_FORBIDDEN,
                detail=f"role {caller.role.value} may not do this",
            )
        return caller


def require(*roles: Role) -> RoleGuard:
    """The guard for a route admitting ``roles``; use as ``Depends(require(...))``."""
    return RoleGuard(frozenset(roles))


def _guards(dependant: Dependant) -> Iterator[RoleGuard]:
    for sub in dependant.dependencies:
        if isinstance(sub.call, RoleGuard):
            yield sub.call
        yield from _guards(sub)


def declared_roles(route: APIRoute) -> frozenset[Role] | None:
    """The roles a route admits, None if it has no guard.

    A route with more than one guard admits only the roles all of them admit.
    """
    guards = list(_guards(route.dependant))
    if not guards:
        return None
    roles = guards[0].roles
    for guard in guards[1:]:
        roles &= guard.roles
    return roles


CaseIdQuery = Annotated[
    str,
    Query(
        min_length=1,
        max_length=100,
        description="The case this viewing is for; recorded in the audit log.",
    ),
]
"""The case a face crop is viewed for (every view is audited with it)."""


def crop_responses(shows: str, missing: str) -> dict[int | str, dict[str, Any]]:
    """The documented answers of a face-crop route: the JPEG, or 404."""
    return {
        200: {"content": {"image/jpeg": {}}, "description": shows},
        404: {"description": missing},
    }


def audited_crop(
    session: Session,
    caller: AuthUser,
    data: bytes,
    *,
    action: str,
    case_id: str,
    target: str,
    result: str,
) -> Response:
    """Record the view of a face crop in the audit log (in the caller's write
    transaction) and answer the JPEG."""
    audit.append(
        session,
        actor=caller.username,
        role=caller.role.value,
        action=action,
        purpose="human_review",
        case_id=case_id,
        target=target,
        result=result,
    )
    return Response(content=data, media_type="image/jpeg")
