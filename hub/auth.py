"""API users and bearer tokens, without any HTTP in sight.

Passwords are kept as PBKDF2-HMAC-SHA512 hashes (:func:`hub.credentials.hash_api_secret`)
and must be at least :data:`MIN_PASSWORD_CHARS` long. A token is an HS256 JWT signed
with the hub's ``jwt_secret``; it names the user by id and username, names the hub
that issued it, and expires after a short while. Decoding accepts HS256 only, so
``alg: none`` and any other algorithm are refused, and insists on ``exp``, ``iat``,
``sub``, ``name``, the audience and the issuer of *this* hub.

A token is bound to its hub: the issuer is ``lantern-hub:<hub id>``
(:func:`token_issuer`), where the hub id is the one of the hub's federation file, or
``local`` for a hub without federation. User ids are small integers that every hub
counts from 1, so without that binding two hubs that share a JWT key (a deployment
mistake, but an easy one) would take each other's tokens, a requester of one as the
admin of the other. The API guard also checks the token's username against the user
row it names, which still refuses a foreign token when both hubs have the same id.

A token only says who is asking: the user's current role and whether they are
disabled are read from the database on each request, so disabling a user takes
effect at once.

Every login attempt, successful or not, is written to the audit log, as are the
creation and disabling of users. Failures raise the domain errors below; the API
layer turns them into HTTP answers.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import jwt
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from hub import audit
from hub.credentials import hash_api_secret, verify_api_secret
from hub.db.engine import write_session
from hub.db.models import utcnow
from hub.db.users import Role, User

__all__ = [
    "ACCESS_TOKEN_TTL",
    "JWT_ALGORITHM",
    "MAX_PASSWORD_CHARS",
    "MIN_PASSWORD_CHARS",
    "TOKEN_AUDIENCE",
    "TOKEN_ISSUER_PREFIX",
    "USERNAME_PATTERN",
    "AuthError",
    "InvalidToken",
    "LoginFailed",
    "Role",
    "TokenClaims",
    "User",
    "UserExists",
    "UserNotFound",
    "authenticate",
    "check_password",
    "check_username",
    "create_user",
    "decode_token",
    "disable_user",
    "issue_token",
    "token_issuer",
]

logger = logging.getLogger(__name__)

JWT_ALGORITHM = "HS256"
"""The only signing algorithm issued and accepted."""

TOKEN_ISSUER_PREFIX = "lantern-hub"
"""The issuer of a hub's tokens is this, a colon and the hub id (:func:`token_issuer`)."""
TOKEN_AUDIENCE = "lantern-api"

ACCESS_TOKEN_TTL = timedelta(minutes=30)
"""How long an access token stays valid by default."""

MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024

USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{2,63}$"
"""Lower-case letters, digits, ``.``, ``_`` and ``-``; 3 to 64 characters."""
_USERNAME_RE = re.compile(USERNAME_PATTERN)


@cache
def _dummy_hash() -> str:
    """A hash checked when the username is unknown, so a miss costs as much as a hit
    and response times do not tell which usernames exist."""
    return hash_api_secret(secrets.token_urlsafe(16))


class AuthError(Exception):
    """Base of the errors raised here."""


class UserExists(AuthError):
    """A user with that username already exists."""


class UserNotFound(AuthError):
    """No user has that id or username."""


class LoginFailed(AuthError):
    """Wrong username or password, or a disabled user; ``reason`` is for the audit only."""

    def __init__(self, reason: str) -> None:
        super().__init__("incorrect username or password")
        self.reason = reason


class InvalidToken(AuthError):
    """A bearer token that is malformed, expired, tampered with or signed otherwise."""


def check_username(username: str) -> str:
    """Return ``username`` if it is acceptable, else raise ValueError."""
    if not _USERNAME_RE.fullmatch(username):
        raise ValueError(
            "username must be 3-64 characters of a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return username


def check_password(password: str) -> str:
    """Return ``password`` if long enough and not absurdly long, else raise ValueError."""
    if len(password.strip()) < MIN_PASSWORD_CHARS:
        raise ValueError(f"password must be at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValueError(f"password must be at most {MAX_PASSWORD_CHARS} characters")
    if "\x00" in password:
        raise ValueError("password must not contain NUL")
    return password


def create_user(
    engine: Engine,
    *,
    username: str,
    role: Role,
    password: str,
    actor: str,
    actor_role: str,
) -> User:
    """Create a user (audited as done by ``actor``); UserExists if the name is taken."""
    check_username(username)
    check_password(password)
    password_hash = hash_api_secret(password)
    with write_session(engine) as session:
        taken = session.scalar(select(User.id).where(User.username == username))
        if taken is not None:
            raise UserExists(username)
        user = User(username=username, role=role.value, password_hash=password_hash)
        session.add(user)
        session.flush()
        audit.append(
            session,
            actor=actor,
            role=actor_role,
            action="user.create",
            target=f"user:{username}",
            result=f"role={role.value}",
        )
    logger.info("user %s created with role %s by %s", username, role.value, actor)
    return user


def disable_user(engine: Engine, user_id: int, *, actor: str, actor_role: str) -> User:
    """Disable a user (idempotent, audited); UserNotFound if there is no such user."""
    with write_session(engine) as session:
        user = session.get(User, user_id)
        if user is None:
            raise UserNotFound(str(user_id))
        if not user.disabled:
            user.disabled = True
            user.disabled_at = utcnow()
            audit.append(
                session,
                actor=actor,
                role=actor_role,
                action="user.disable",
                target=f"user:{user.username}",
                result="disabled",
            )
            logger.info("user %s disabled by %s", user.username, actor)
    return user


def authenticate(engine: Engine, username: str, password: str) -> User:
    """The user with these credentials, or LoginFailed; every attempt is audited."""
    with Session(engine, expire_on_commit=False) as session:
        user = session.scalar(select(User).where(User.username == username))
    if user is None:
        verify_api_secret(password, _dummy_hash())
        reason = "unknown user"
    elif not verify_api_secret(password, user.password_hash):
        reason = "wrong password"
    elif user.disabled:
        reason = "user disabled"
    else:
        reason = ""
    audit.record(
        engine,
        actor=username[:200],
        role=user.role if user is not None else "-",
        action="auth.login",
        result="ok" if not reason else f"refused: {reason}",
    )
    if reason or user is None:
        logger.warning("login refused for %r: %s", username[:200], reason)
        raise LoginFailed(reason)
    logger.info("login of %s", username)
    return user


def token_issuer(hub_id: str) -> str:
    """The ``iss`` of the tokens of hub ``hub_id`` (its federation id, or ``local``)."""
    if not hub_id or any(c.isspace() or c == ":" for c in hub_id):
        raise ValueError(f"hub id {hub_id!r} is empty or holds white space or ':'")
    return f"{TOKEN_ISSUER_PREFIX}:{hub_id}"


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says: who, the role at issue time, and when it expires."""

    user_id: int
    username: str
    role: str
    expires_at: datetime


def issue_token(
    secret: str,
    user: User,
    *,
    hub_id: str,
    ttl: timedelta = ACCESS_TOKEN_TTL,
    now: datetime | None = None,
) -> str:
    """A signed access token for ``user`` of hub ``hub_id``, valid for ``ttl``."""
    issued = (now or datetime.now(UTC)).astimezone(UTC)
    claims: dict[str, Any] = {
        "sub": str(user.id),
        "name": user.username,
        "role": user.role,
        "iss": token_issuer(hub_id),
        "aud": TOKEN_AUDIENCE,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl,
        "jti": secrets.token_urlsafe(12),
    }
    return jwt.encode(claims, secret, algorithm=JWT_ALGORITHM)


def decode_token(secret: str, token: str, *, hub_id: str) -> TokenClaims:
    """Verify ``token`` as one of hub ``hub_id`` and return its claims, or raise
    InvalidToken (also for a token another hub issued, whatever its key)."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[JWT_ALGORITHM],
            audience=TOKEN_AUDIENCE,
            issuer=token_issuer(hub_id),
            options={"require": ["exp", "iat", "sub", "name", "iss", "aud"]},
            leeway=timedelta(seconds=5),
        )
        username = claims["name"]
        if not isinstance(username, str) or not username:
            raise InvalidToken("the name claim is not a username")
        return TokenClaims(
            user_id=int(claims["sub"]),
            username=username,
            role=str(claims.get("role", "")),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        )
    except (jwt.InvalidTokenError, KeyError, TypeError, ValueError) as exc:
        raise InvalidToken(str(exc)) from exc
