"""User administration (admin only): list, read, create, disable."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.exceptions import RequestValidationError
from sqlalchemy import select

from hub.api.deps import AuthUser, DbSession, EngineDep, PageParams, RowId, paginate, require
from hub.api.schemas import Page, UserCreate, UserPublic
from hub.auth import UserExists, UserNotFound, create_user, disable_user
from hub.db.users import Role, User

router = APIRouter(prefix="/users", tags=["users"])

Admin = Annotated[AuthUser, Depends(require(Role.admin))]


@router.get("", response_model=Page[UserPublic], summary="List users")
def list_users(
    _caller: Admin,
    session: DbSession,
    page: PageParams,
    role: Annotated[Role | None, Query(description="Only users with this role.")] = None,
    disabled: Annotated[bool | None, Query(description="Only (not) disabled users.")] = None,
) -> Page[UserPublic]:
    """Users by id, a page at a time."""
    stmt = select(User)
    if role is not None:
        stmt = stmt.where(User.role == role.value)
    if disabled is not None:
        stmt = stmt.where(User.disabled == disabled)
    return paginate(session, stmt, page, UserPublic.model_validate, User.id)


@router.get(
    "/{user_id}",
    response_model=UserPublic,
    summary="Read a user",
    responses={404: {"description": "No such user."}},
)
def get_user(user_id: RowId, _caller: Admin, session: DbSession) -> UserPublic:
    """One user by id."""
    user = session.get(User, user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such user")
    return UserPublic.model_validate(user)


@router.post(
    "",
    response_model=UserPublic,
    status_code=status.HTTP_201_CREATED,
    summary="Create a user",
    responses={409: {"description": "The username is taken."}},
)
def post_user(body: UserCreate, caller: Admin, engine: EngineDep) -> UserPublic:
    """Create a user with a role and password (audited)."""
    try:
        user = create_user(
            engine,
            username=body.username,
            role=body.role,
            password=body.password,
            actor=caller.username,
            actor_role=caller.role.value,
        )
    except UserExists as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="username taken") from exc
    except ValueError as exc:
        # Shaped as FastAPI's own 422 (HTTPValidationError), which the schema documents.
        field = "password" if str(exc).startswith("password") else "username"
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", field), "msg": str(exc), "input": None}]
        ) from exc
    return UserPublic.model_validate(user)


@router.post(
    "/{user_id}/disable",
    response_model=UserPublic,
    summary="Disable a user",
    responses={
        404: {"description": "No such user."},
        409: {"description": "An admin cannot disable their own account."},
    },
)
def post_disable(user_id: RowId, caller: Admin, engine: EngineDep) -> UserPublic:
    """Disable a user at once: their tokens stop working (audited; idempotent)."""
    if user_id == caller.id:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="cannot disable yourself")
    try:
        user = disable_user(engine, user_id, actor=caller.username, actor_role=caller.role.value)
    except UserNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such user") from exc
    return UserPublic.model_validate(user)
