"""``POST /auth/token`` (OAuth2 password form) and ``GET /auth/me``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.security import OAuth2PasswordRequestForm

from hub.api.deps import AuthUser, DbSession, EngineDep, SettingsDep, hub_id_of, require
from hub.api.schemas import Token, UserPublic
from hub.auth import LoginFailed, authenticate, issue_token
from hub.db.users import Role, User

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post(
    "/token",
    response_model=Token,
    summary="Exchange username and password for a bearer token",
    responses={401: {"description": "Incorrect username or password, or user disabled."}},
)
def token(
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    settings: SettingsDep,
    engine: EngineDep,
) -> Token:
    """Check the credentials (every attempt is audited) and issue an access token."""
    try:
        user = authenticate(engine, form.username, form.password)
    except LoginFailed as exc:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=str(exc),
            headers={"WWW-Authenticate": "Bearer"},
        ) from exc
    ttl = request.app.state.token_ttl
    access = issue_token(
        settings.jwt_secret.get_secret_value(), user, hub_id=hub_id_of(request.app.state), ttl=ttl
    )
    return Token(access_token=access, expires_in=int(ttl.total_seconds()))


@router.get("/me", response_model=UserPublic, summary="The caller's own user")
def me(caller: Annotated[AuthUser, Depends(require(*Role))], session: DbSession) -> UserPublic:
    """Who the token belongs to, with the role the hub currently gives them."""
    return UserPublic.model_validate(session.get(User, caller.id))
