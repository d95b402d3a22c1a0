"""``lantern hub`` (database administration) and ``lantern audit`` (the audit log).

Both read :class:`hub.settings.HubSettings` from the environment unless a database
URL is given with ``--database-url``; only the URL is needed, so the JWT key is not
required to run them.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from sqlalchemy.orm import Session

from hub.audit import verify
from hub.db.engine import make_engine
from hub.db.migrate import current_revision, head_revision, upgrade

__all__ = ["app", "audit_app"]

logger = logging.getLogger(__name__)

app = typer.Typer(
    help="The hub: run it (serve) and administer its database (migrate).",
    no_args_is_help=True,
)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)


@app.callback()
def _hub() -> None:
    """The hub: ``serve`` runs ingest, ``migrate`` upgrades the database."""


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


@app.command()
def serve(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Folder of the embedded SQLite database.")
    ] = Path("./data"),
    mqtt: Annotated[
        str, typer.Option("--mqtt", help="Broker URL, mqtt://HOST[:PORT].")
    ] = "mqtt://127.0.0.1:1883",
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="SQLAlchemy URL; default: sqlite:///DATA_DIR/lantern.db.",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, max=64)] = 4,
    client_id: Annotated[
        str, typer.Option("--client-id", help="MQTT client id (stable: the session resumes).")
    ] = "lantern-hub",
    session_expiry_s: Annotated[
        int, typer.Option("--session-expiry", help="Broker keeps our session this long, s.")
    ] = 86_400,
) -> None:
    """Run the hub's ingest until SIGTERM/SIGINT: migrate the database, consume device
    events and states from MQTT, store them, ack them. (The HTTP API is not served
    here yet; it will join this command when it exists.)"""
    # Imported here so `lantern hub migrate` does not need the MQTT stack.
    from hub.comms.mqtt import HubMqttSettings, parse_mqtt_url
    from hub.ingest import Ingest, IngestSettings

    if database_url is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        database_url = f"sqlite:///{data_dir / 'lantern.db'}"
    try:
        host, port = parse_mqtt_url(mqtt)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--mqtt") from None
    engine = make_engine(database_url)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        upgrade(engine)
        ingest = Ingest(
            engine,
            HubMqttSettings(
                host=host, port=port, client_id=client_id, session_expiry_s=session_expiry_s
            ),
            IngestSettings(workers=workers),
        )
        if not ingest.start(timeout=15.0):
            logger.warning("not subscribed yet after 15 s; still trying")
        logger.info("hub serving: broker %s:%d, %d workers", host, port, workers)
        while not stop.wait(1.0):
            pass
        ingest.stop(timeout=15.0)
    finally:
        engine.dispose()
