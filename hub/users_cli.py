"""``lantern users``: create and disable API users from the hub's shell.

The password is read from standard input with ``--password-stdin`` (one line, the
trailing newline dropped), or asked for twice without echo on a terminal; it is never
taken from the command line, where other local users could read it in the process
list and it would land in shell history. Only the database URL is needed, so the JWT
key need not be set to run these commands. Each change is written to the audit log
with the operating-system user as the actor.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from hub.auth import UserExists, UserNotFound, check_password, create_user, disable_user
from hub.cli_options import DatabaseUrl, DataDir, cli_actor, resolve_database_url
from hub.db.engine import make_engine
from hub.db.users import Role, User

__all__ = ["app"]

logger = logging.getLogger(__name__)

app = typer.Typer(help="API users of the hub.", no_args_is_help=True)

def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    first: str = typer.prompt("Password", hide_input=True)
    second: str = typer.prompt("Repeat password", hide_input=True)
    if first != second:
        raise typer.BadParameter("the two passwords differ")
    return first


@app.callback()
def _users() -> None:
    """API users (a group of commands)."""


@app.command()
def create(
    username: Annotated[str, typer.Option(help="Login name (a-z, 0-9, '.', '_', '-').")],
    role: Annotated[Role, typer.Option(help="What the user may do.", case_sensitive=False)],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Create a user; the password comes from stdin or a no-echo prompt, never argv."""
    password = _read_password(password_stdin)
    try:
        check_password(password)
    except ValueError as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(2) from exc
    engine = make_engine(resolve_database_url(database_url, data_dir))
    try:
        user: User = create_user(
            engine,
            username=username,
            role=role,
            password=password,
            actor=cli_actor(),
            actor_role="cli",
        )
    except UserExists as exc:
        typer.echo(f"refused: user {username!r} already exists", err=True)
        raise typer.Exit(1) from exc
    except ValueError as exc:
        typer.echo(f"refused: {exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        engine.dispose()
    typer.echo(f"created user {user.username} (id {user.id}, role {user.role})")


@app.command()
def disable(
    user_id: Annotated[int, typer.Argument(help="Id of the user to disable.")],
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Disable a user: they can no longer log in, and their tokens stop working."""
    engine = make_engine(resolve_database_url(database_url, data_dir))
    try:
        user = disable_user(engine, user_id, actor=cli_actor(), actor_role="cli")
    except UserNotFound as exc:
        typer.echo(f"no user with id {user_id}", err=True)
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()
    typer.echo(f"user {user.username} (id {user.id}) disabled")
