"""``lantern hub`` (database administration) and ``lantern audit`` (the audit log).

Both read :class:`hub.settings.HubSettings` from the environment unless a database
URL is given with ``--database-url``; only the URL is needed, so the JWT key is not
required to run them.
"""

from __future__ import annotations

import logging
import os
from typing import Annotated

import typer
from sqlalchemy.orm import Session

from hub.audit import verify
from hub.db.engine import make_engine
from hub.db.migrate import current_revision, head_revision, upgrade

__all__ = ["app", "audit_app"]

logger = logging.getLogger(__name__)

app = typer.Typer(help="Hub administration: database migrations.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)



@app.callback()
def _hub() -> None:
    """Hub administration (a group, even while it has one command)."""


@audit_app.callback()
def _audit() -> None:
    """The audit log (a group, even while it has one command)."""


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL; default LANTERN_DATABASE_URL, else the SQLite file in "
        "LANTERN_DATA_DIR (./data).",
        show_default=False,
    ),
]


def _database_url(url: str | None) -> str:
    if url:
        return url
    env = os.environ.get("LANTERN_DATABASE_URL")
    if env:
        return env
    data_dir = os.environ.get("LANTERN_DATA_DIR", "./data")
    os.makedirs(data_dir, exist_ok=True)
    return f"sqlite:///{os.path.join(data_dir, 'lantern.db')}"


@app.command()
def migrate(
    database_url: DatabaseUrl = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Upgrade the database schema (to the newest revision by default)."""
    engine = make_engine(_database_url(database_url))
    try:
        before = current_revision(engine)
        upgrade(engine, revision)
        after = current_revision(engine)
    finally:
        engine.dispose()
    typer.echo(f"database at revision {after} (was {before}; newest {head_revision()})")


@audit_app.command("verify")
def verify_command(database_url: DatabaseUrl = None) -> None:
    """Recompute the audit hash chain; exit 1 naming the first bad row if broken."""
    engine = make_engine(_database_url(database_url))
    try:
        with Session(engine) as session:
            result = verify(session)
    finally:
        engine.dispose()
    if result.ok:
        typer.echo(f"audit chain intact: {result.rows} rows, head {result.head_hash}")
        return
    typer.echo(f"audit chain BROKEN at row seq={result.bad_seq}: {result.reason}", err=True)
    raise typer.Exit(code=1)
