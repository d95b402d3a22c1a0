"""What the hub's administration commands share: how they find the database and who
they act as in the audit log."""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Annotated

import typer

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL; default LANTERN_DATABASE_URL, else the SQLite file in "
        "LANTERN_DATA_DIR (./data).",
        show_default=False,
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Use the SQLite registry DIR/lantern.db (instead of --database-url).",
        show_default=False,
    ),
]


def resolve_database_url(url: str | None, data_dir: Path | None = None) -> str:
    """``--database-url``, else ``--data-dir``'s SQLite file, else
    ``LANTERN_DATABASE_URL``, else ``lantern.db`` in ``LANTERN_DATA_DIR`` (./data),
    whose folder is created."""
    if url and data_dir is not None:
        raise typer.BadParameter("give --database-url or --data-dir, not both")
    if url:
        return url
    if data_dir is None:
        env = os.environ.get("LANTERN_DATABASE_URL")
        if env:
            return env
        data_dir = Path(os.environ.get("LANTERN_DATA_DIR", "./data"))
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{data_dir / 'lantern.db'}"


def cli_actor() -> str:
    """The audit log's actor for a command run by a person at this machine."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"
