"""``lantern hub`` (database administration) and ``lantern audit`` (the audit log).

Both read :class:`hub.settings.HubSettings` from the environment unless a database
URL is given with ``--database-url``; only the URL is needed, so the JWT key is not
required to run them.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from hub.audit import verify
from hub.cli_options import DatabaseUrl, resolve_database_url
from hub.db.engine import make_engine
from hub.db.migrate import current_revision, head_revision, upgrade
from hub.settings import HubSettings

__all__ = ["app", "audit_app"]

logger = logging.getLogger(__name__)

app = typer.Typer(
    help="The hub: run it (serve) and administer its database (migrate).",
    no_args_is_help=True,
)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)


@app.callback()
def _hub() -> None:
    """The hub: ``serve`` runs ingest (and the API with ``--http``), ``migrate`` upgrades
    the database."""


@audit_app.callback()
def _audit() -> None:
    """The audit log (a group, even while it has one command)."""


@app.command()
def migrate(
    database_url: DatabaseUrl = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Upgrade the database schema (to the newest revision by default)."""
    engine = make_engine(resolve_database_url(database_url))
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
    engine = make_engine(resolve_database_url(database_url))
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


def _parse_http(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv6 host in brackets) -> ``(host, port)``."""
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise typer.BadParameter(f"expected HOST:PORT, got {value!r}", param_hint="--http")
    return host, int(port_text)


def _api_settings(data_dir: Path, database_url: str, mqtt: str) -> HubSettings:
    """The API's settings; a missing or refused JWT key ends the command with code 2."""
    try:
        return HubSettings(data_dir=data_dir, database_url=database_url, mqtt_url=mqtt)
    except ValidationError as exc:
        problems = [e for e in exc.errors() if e["loc"] and e["loc"][0] == "jwt_secret"]
        if not problems:
            raise
        if problems[0]["type"] == "missing":
            reason = "is not set"
        else:
            reason = f"is refused: {problems[0]['msg'].removeprefix('Value error, ')}"
        typer.echo(
            f"error: LANTERN_JWT_SECRET {reason}. `serve --http` signs API tokens with it; "
            "set a random key of at least 32 characters, e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe(48))'` "
            "(ingest alone, without --http, does not need it).",
            err=True,
        )
        raise typer.Exit(code=2) from None


@app.command()
def serve(
    data_dir: Annotated[
        Path, typer.Option("--data-dir", help="Folder of the embedded SQLite database.")
    ] = Path("./data"),
    mqtt: Annotated[
        str, typer.Option("--mqtt", help="Broker URL, mqtt://HOST[:PORT].")
    ] = "mqtt://127.0.0.1:1883",
    http: Annotated[
        str | None,
        typer.Option(
            "--http",
            help="Serve the HTTP API (and /metrics) on HOST:PORT; needs LANTERN_JWT_SECRET. "
            "Without it only ingest runs.",
            show_default=False,
        ),
    ] = None,
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
    """Run the hub until SIGTERM/SIGINT: migrate the database, consume device events and
    states from MQTT, store them, ack them; with ``--http`` also serve the API on the
    same database, in the same process. On a signal the HTTP server stops first, then
    ingest finishes the batches it holds, and the command exits 0."""
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
    http_address = _parse_http(http) if http is not None else None
    # Checked before anything starts, so a bad key costs nothing.
    settings = _api_settings(data_dir, database_url, mqtt) if http_address else None
    engine = make_engine(database_url)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal %d: stopping", signum)
        stop.set()

    # With --http uvicorn takes these over while it runs, restores them and raises the
    # signal again once it has stopped, so it lands here too.
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
        try:
            if not ingest.start(timeout=15.0):
                logger.warning("not subscribed yet after 15 s; still trying")
            logger.info("hub serving: broker %s:%d, %d workers", host, port, workers)
            if settings is not None and http_address is not None:
                _serve_http(settings, engine, *http_address)
            else:
                while not stop.wait(1.0):
                    pass
        finally:
            ingest.stop(timeout=15.0)
        logger.info("hub stopped")
    finally:
        engine.dispose()


def _serve_http(settings: HubSettings, engine: Engine, host: str, port: int) -> None:
    """Serve the API with uvicorn in this (the main) thread until a signal stops it."""
    import uvicorn

    from hub.api import create_app

    config = uvicorn.Config(
        create_app(settings, engine),
        host=host,
        port=port,
        log_config=None,  # our logging (``lantern -v``), not uvicorn's own handlers
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    logger.info("hub API on http://%s:%d", host, port)
    server.run()
    if not server.started:
        typer.echo(f"error: the HTTP API could not start on {host}:{port}", err=True)
        raise typer.Exit(code=1)
