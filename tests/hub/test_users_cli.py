"""``lantern users``: passwords from stdin only, weak ones refused, changes audited."""

from __future__ import annotations

from importlib.metadata import entry_points

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from hub.auth import LoginFailed, authenticate
from hub.db.models import AuditEntry
from hub.db.users import User
from hub.users_cli import app

PASSWORD = "a perfectly long passphrase"


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _create(engine: Engine, stdin: str, *extra: str, username: str = "ivan") -> tuple[int, str]:
    args = ["create", "--username", username, "--role", "officer", "--password-stdin"]
    result = CliRunner().invoke(app, [*args, "--database-url", _url(engine), *extra], input=stdin)
    return result.exit_code, result.output


def test_create_reads_the_password_from_stdin(engine: Engine) -> None:
    code, output = _create(engine, PASSWORD + "\n")
    assert code == 0, output
    assert "created user ivan" in output and PASSWORD not in output
    assert authenticate(engine, "ivan", PASSWORD).role == "officer"
    with Session(engine) as session:
        stored = session.scalar(select(User.password_hash).where(User.username == "ivan"))
        actions = session.scalars(select(AuditEntry.action).order_by(AuditEntry.seq)).all()
    assert stored is not None and PASSWORD not in stored
    assert actions == ["user.create", "auth.login"]
    code, output = _create(engine, PASSWORD + "\n")
    assert code == 1 and "already exists" in output


@pytest.mark.parametrize("stdin", ["", "\n", "short\n", "            \n"])
def test_empty_or_short_passwords_are_refused(engine: Engine, stdin: str) -> None:
    code, output = _create(engine, stdin)
    assert code == 2 and "password must be at least" in output
    with Session(engine) as session:
        assert session.scalar(select(User).where(User.username == "ivan")) is None


def test_password_is_never_taken_from_argv(engine: Engine) -> None:
    code, _output = _create(engine, "", "--password", PASSWORD)
    assert code == 2
    with Session(engine) as session:
        assert session.scalar(select(User)) is None


def test_bad_username_and_role_are_refused(engine: Engine) -> None:
    code, output = _create(engine, PASSWORD + "\n", username="Not Valid")
    assert code == 2 and "username must be" in output
    bad_role = ["create", "--username", "judy", "--role", "root", "--password-stdin"]
    result = CliRunner().invoke(app, [*bad_role, "--database-url", _url(engine)], input=PASSWORD)
    assert result.exit_code == 2


def test_disable(engine: Engine) -> None:
    assert _create(engine, PASSWORD + "\n")[0] == 0
    with Session(engine) as session:
        user_id = session.scalar(select(User.id).where(User.username == "ivan"))
    result = CliRunner().invoke(app, ["disable", str(user_id), "--database-url", _url(engine)])
    assert result.exit_code == 0 and "disabled" in result.output
    with pytest.raises(LoginFailed):
        authenticate(engine, "ivan", PASSWORD)
    missing = CliRunner().invoke(app, ["disable", "999999", "--database-url", _url(engine)])
    assert missing.exit_code == 1


def test_registered_as_lantern_users() -> None:
    registered = {ep.name: ep.value for ep in entry_points(group="lantern.commands")}
    assert registered["users"] == "hub.users_cli:app"
