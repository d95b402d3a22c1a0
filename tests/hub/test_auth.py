"""Tokens, passwords and logins in hub.auth, without HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from hub.auth import (
    TOKEN_AUDIENCE,
    InvalidToken,
    LoginFailed,
    Role,
    User,
    UserExists,
    authenticate,
    check_password,
    check_username,
    create_user,
    decode_token,
    disable_user,
    issue_token,
    token_issuer,
)
from hub.db.models import AuditEntry
from hub.settings import HubSettings

SECRET = "t3st-Key_for-Lantern-hub-0123456789-abcdefghij-KLMNOPQRSTUVWXYZ-0123456789"
OTHER_SECRET = "another-Key_for-Lantern-hub-9876543210-zyxwvu-TSRQPONMLKJIHGFEDCBA-98765"
HUB = "region-a"
OTHER_HUB = "region-b"


def _user(uid: int = 7, role: str = "officer") -> User:
    return User(id=uid, username="alice", role=role, password_hash="x", disabled=False)


def test_token_round_trip() -> None:
    token = issue_token(SECRET, _user(), hub_id=HUB, ttl=timedelta(minutes=5))
    claims = decode_token(SECRET, token, hub_id=HUB)
    assert (claims.user_id, claims.username, claims.role) == (7, "alice", "officer")
    assert claims.expires_at > datetime.now(UTC)
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == "lantern-hub:region-a"


def test_a_token_is_bound_to_the_hub_that_issued_it() -> None:
    """Same key, same user id and name: a token of another hub is still refused."""
    token = issue_token(SECRET, _user(), hub_id=OTHER_HUB)
    assert decode_token(SECRET, token, hub_id=OTHER_HUB).user_id == 7
    with pytest.raises(InvalidToken, match="issuer"):
        decode_token(SECRET, token, hub_id=HUB)
    with pytest.raises(InvalidToken):
        decode_token(SECRET, token, hub_id="local")


@pytest.mark.parametrize("hub_id", ["", "a b", "a:b", "x\n"])
def test_a_hub_id_that_cannot_name_an_issuer_is_refused(hub_id: str) -> None:
    with pytest.raises(ValueError):
        token_issuer(hub_id)


def _forge(payload: dict[str, object], key: str, algorithm: str) -> str:
    return jwt.encode(payload, key, algorithm=algorithm)


def _claims(**overrides: object) -> dict[str, object]:
    now = datetime.now(UTC)
    claims: dict[str, object] = {
        "sub": "7",
        "name": "alice",
        "role": "admin",
        "iss": token_issuer(HUB),
        "aud": TOKEN_AUDIENCE,
        "iat": now,
        "exp": now + timedelta(minutes=5),
    }
    claims.update(overrides)
    return claims


def _alg_none(payload: dict[str, object]) -> str:
    import base64
    import json

    def part(obj: dict[str, object]) -> str:
        raw = json.dumps(obj, default=lambda d: int(d.timestamp())).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


def _tampered() -> str:
    header, payload, sig = issue_token(SECRET, _user(role="officer"), hub_id=HUB).split(".")
    forged_payload = _forge(_claims(role="admin"), SECRET, "HS256").split(".")[1]
    return f"{header}.{forged_payload}.{sig}"


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(
            issue_token(SECRET, _user(), hub_id=HUB, now=datetime.now(UTC) - timedelta(hours=2)),
            id="expired",
        ),
        pytest.param(_tampered(), id="tampered"),
        pytest.param(issue_token(OTHER_SECRET, _user(), hub_id=HUB), id="other-key"),
        pytest.param(issue_token(SECRET, _user(), hub_id=OTHER_HUB), id="other-hub"),
        pytest.param(_forge(_claims(iss="lantern-hub"), SECRET, "HS256"), id="hubless-issuer"),
        pytest.param(_forge(_claims(), SECRET, "HS512"), id="hs512"),
        pytest.param(_forge(_claims(), SECRET, "HS384"), id="hs384"),
        pytest.param(_alg_none(_claims()), id="alg-none"),
        pytest.param(_forge(_claims(aud="someone-else"), SECRET, "HS256"), id="audience"),
        pytest.param(_forge(_claims(iss="someone-else"), SECRET, "HS256"), id="issuer"),
        pytest.param(
            _forge({k: v for k, v in _claims().items() if k != "exp"}, SECRET, "HS256"),
            id="no-exp",
        ),
        pytest.param(_forge(_claims(sub="not-a-number"), SECRET, "HS256"), id="bad-sub"),
        pytest.param(
            _forge({k: v for k, v in _claims().items() if k != "name"}, SECRET, "HS256"),
            id="no-name",
        ),
        pytest.param(_forge(_claims(name=""), SECRET, "HS256"), id="empty-name"),
        pytest.param(_forge(_claims(name=7), SECRET, "HS256"), id="number-name"),
        pytest.param("not.a.token", id="garbage"),
        pytest.param("", id="empty"),
    ],
)
def test_bad_tokens_are_refused(token: str) -> None:
    with pytest.raises(InvalidToken):
        decode_token(SECRET, token, hub_id=HUB)


@pytest.mark.parametrize("secret", ["changeme", "secret", "short-but-random-9x", "a" * 64])
def test_weak_signing_keys_refused_at_start(secret: str) -> None:
    with pytest.raises(ValidationError):
        HubSettings(jwt_secret=secret)  # type: ignore[arg-type]


def test_username_and_password_rules() -> None:
    assert check_username("alice.b-1") == "alice.b-1"
    for bad in ("", "ab", "Alice", "-alice", "al ice", "a" * 65):
        with pytest.raises(ValueError):
            check_username(bad)
    assert check_password("correct horse battery") == "correct horse battery"
    for bad in ("", "short", " " * 20, "x" * 1025, "twelve-chars\x00"):
        with pytest.raises(ValueError):
            check_password(bad)


def test_logins_are_audited_and_disabled_users_refused(engine: Engine) -> None:
    user = create_user(
        engine,
        username="bob",
        role=Role.analyst,
        password="a long enough password",
        actor="root",
        actor_role="cli",
    )
    with pytest.raises(UserExists):
        create_user(
            engine,
            username="bob",
            role=Role.admin,
            password="another long password",
            actor="root",
            actor_role="cli",
        )
    assert authenticate(engine, "bob", "a long enough password").id == user.id
    with pytest.raises(LoginFailed) as wrong:
        authenticate(engine, "bob", "not the password!")
    with pytest.raises(LoginFailed) as unknown:
        authenticate(engine, "nobody", "a long enough password")
    assert wrong.value.reason == "wrong password"
    assert unknown.value.reason == "unknown user"
    assert str(wrong.value) == str(unknown.value)  # the caller cannot tell them apart
    disable_user(engine, user.id, actor="root", actor_role="cli")
    with pytest.raises(LoginFailed) as disabled:
        authenticate(engine, "bob", "a long enough password")
    assert disabled.value.reason == "user disabled"

    with Session(engine) as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
        stored = session.scalar(select(User.password_hash).where(User.username == "bob"))
    assert [(r.action, r.actor, r.result) for r in rows] == [
        ("user.create", "root", "role=analyst"),
        ("auth.login", "bob", "ok"),
        ("auth.login", "bob", "refused: wrong password"),
        ("auth.login", "nobody", "refused: unknown user"),
        ("user.disable", "root", "disabled"),
        ("auth.login", "bob", "refused: user disabled"),
    ]
    assert stored is not None and "a long enough password" not in stored
