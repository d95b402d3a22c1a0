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
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from pydantic import SecretStr, ValidationError
from sqlalchemy import Engine, inspect, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from hub.audit import KeptHead, check_kept_head, verify
from hub.cli_options import DatabaseUrl, DataDir, resolve_database_url
from hub.db.engine import make_engine, normalise_url
from hub.db.migrate import current_revision, head_revision, upgrade
from hub.db.models import AuditEntry
from hub.gallery_cli import rebuild_galleries
from hub.retention_cli import purge_expired
from hub.settings import MQTT_PASSWORD_ENV, HubSettings

if TYPE_CHECKING:
    from hub.comms.mqtt import HubMqttClient, HubMqttSettings
    from hub.configpush import ConfigPublisher
    from hub.runtime import HubRuntime

__all__ = ["app", "audit_app"]

logger = logging.getLogger(__name__)

app = typer.Typer(
    help="The hub: run it (serve), upgrade its database (migrate), rebuild its face "
    "galleries (rebuild-galleries).",
    no_args_is_help=True,
)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)


@app.callback()
def _hub() -> None:
    """The hub: ``serve`` runs ingest (and the API with ``--http``), ``migrate`` upgrades
    the database, ``rebuild-galleries`` rebuilds the face galleries from it."""


@audit_app.callback()
def _audit() -> None:
    """The audit log (a group, even while it has one command)."""


@app.command()
def migrate(
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    revision: Annotated[str, typer.Option(help="Target revision.")] = "head",
) -> None:
    """Upgrade the database schema (to the newest revision by default)."""
    engine = make_engine(resolve_database_url(database_url, data_dir))
    try:
        before = current_revision(engine)
        upgrade(engine, revision)
        after = current_revision(engine)
    finally:
        engine.dispose()
    typer.echo(f"database at revision {after} (was {before}; newest {head_revision()})")


app.command("rebuild-galleries")(rebuild_galleries)
app.command("purge-expired")(purge_expired)


def _kept_head(value: str | None) -> KeptHead | None:
    if value is None:
        return None
    try:
        return KeptHead.parse(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--expect-head") from None


def _no_sqlite_file(url: str) -> bool:
    """Whether ``url`` is an SQLite database whose file does not exist (connecting
    would create an empty one) or one in memory (empty by definition)."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() != "sqlite":
        return False
    database = parsed.database or ""
    if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
        return True
    if database.startswith("file:"):
        database = database.removeprefix("file:").partition("?")[0]
    return not Path(database).is_file()


@audit_app.command("verify")
def verify_command(
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    expect_head: Annotated[
        str | None,
        typer.Option(
            "--expect-head",
            metavar="SEQ:HASH",
            help="A head kept elsewhere (the seq and hash an earlier run printed): fail "
            "unless that row is still in the chain with that hash, which catches removed "
            "newest rows and rows re-hashed after an edit.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Recompute the audit hash chain; exit 1 naming the first bad row if broken (or
    if the kept head of ``--expect-head`` is missing or differs), exit 2 if the
    database holds no audit log."""
    kept = _kept_head(expect_head)
    url = resolve_database_url(database_url, data_dir)
    shown = make_url(url).render_as_string(hide_password=True)
    no_log = f"no audit log at {shown} (not a Lantern database, or not migrated)"
    if _no_sqlite_file(url):
        typer.echo(no_log, err=True)
        raise typer.Exit(code=2)
    engine = make_engine(url)
    kept_problem: str | None = None
    try:
        if not inspect(engine).has_table(AuditEntry.__tablename__):
            typer.echo(no_log, err=True)
            raise typer.Exit(code=2)
        with Session(engine) as session:
            result = verify(session)
            if result.ok and kept is not None:
                kept_problem = check_kept_head(session, kept)
    except SQLAlchemyError as exc:
        logger.debug("audit verify failed", exc_info=True)
        reason = str(exc.orig if isinstance(exc, DBAPIError) else exc).splitlines()[0]
        typer.echo(f"cannot read the audit log at {shown}: {reason}", err=True)
        raise typer.Exit(code=2) from None
    finally:
        engine.dispose()
    if not result.ok:
        typer.echo(f"audit chain BROKEN at row seq={result.bad_seq}: {result.reason}", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"audit chain intact: {result.rows} rows, head {result.head_hash}")
    if kept is None:
        return
    if kept_problem is not None:
        typer.echo(f"audit chain does NOT hold the kept head: {kept_problem}", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"kept head seq={kept.seq} found unchanged")


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
        str,
        typer.Option(
            "--mqtt",
            help="Broker URL, mqtt[s]://[USER@]HOST[:PORT] (mqtts: TLS, port 8883 by "
            f"default). The password of USER comes from {MQTT_PASSWORD_ENV}, never the URL.",
        ),
    ] = "mqtt://127.0.0.1:1883",
    mqtt_ca: Annotated[
        Path | None,
        typer.Option(
            "--mqtt-ca",
            exists=True,
            dir_okay=False,
            readable=True,
            help="PEM file of the CA(s) that signed the broker's certificate (mqtts:// "
            "only); default: the system's trust store.",
            show_default=False,
        ),
    ] = None,
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
    ingest finishes the batches it holds, and the command exits 0.

    The hub logs in to the broker as the user of the URL with the password in
    ``LANTERN_MQTT_PASSWORD``; a refused login is logged and retried until it works or
    the hub is stopped. Every stored desired device configuration is published again
    (retained) once connected, and the API publishes the ones it renders."""
    # Imported here so `lantern hub migrate` does not need the MQTT stack.
    from hub.configpush import republish_all
    from hub.ingest import Ingest, IngestSettings
    from hub.runtime import HubRuntime

    mqtt_settings = _mqtt_settings(mqtt, mqtt_ca, client_id, session_expiry_s)
    if database_url is None:
        data_dir.mkdir(parents=True, exist_ok=True)
        database_url = f"sqlite:///{data_dir / 'lantern.db'}"
    host, port = mqtt_settings.host, mqtt_settings.port
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
        runtime = HubRuntime.build(engine, data_dir)
        ingest = Ingest(
            engine,
            mqtt_settings,
            IngestSettings(workers=workers),
            positions=runtime.supervision,
            sightings=runtime.sightings,
            alarms=runtime.supervision,
            observer=runtime.observer,
        )
        try:
            runtime.start()
            ingest.start(timeout=0.0)
            if not _wait_subscribed(ingest.client, stop, 15.0):
                logger.warning("not subscribed yet after 15 s; still trying")
            # Queued by the client until it is connected; retained, so harmless twice.
            republish_all(engine, ingest.client)
            logger.info(
                "hub serving: broker %s:%d%s, %d workers",
                host,
                port,
                " (TLS)" if mqtt_settings.tls else "",
                workers,
            )
            if settings is not None and http_address is not None and not stop.is_set():
                _serve_http(settings, engine, *http_address, runtime, publisher=ingest.client)
            else:
                while not stop.wait(1.0):
                    pass
        finally:
            ingest.stop(timeout=15.0)
            runtime.close()
        logger.info("hub stopped")
    finally:
        engine.dispose()


def _mqtt_settings(
    url: str, ca_file: Path | None, client_id: str, session_expiry_s: int
) -> HubMqttSettings:
    """The broker connection of ``serve`` from its options and ``LANTERN_MQTT_PASSWORD``;
    a bad combination ends the command with code 2 before anything starts."""
    from hub.comms.mqtt import HubMqttSettings, parse_broker_url

    try:
        parsed = parse_broker_url(url)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--mqtt") from None
    if ca_file is not None and not parsed.tls:
        raise typer.BadParameter("a CA file is for mqtts:// URLs", param_hint="--mqtt-ca")
    password = os.environ.get(MQTT_PASSWORD_ENV) or None
    if parsed.username is not None and password is None:
        typer.echo(
            f"error: the broker URL names user {parsed.username!r} but {MQTT_PASSWORD_ENV} "
            "is not set; put the hub's broker password there",
            err=True,
        )
        raise typer.Exit(code=2)
    if parsed.username is None and password is not None:
        typer.echo(
            f"error: {MQTT_PASSWORD_ENV} is set but the broker URL names no user; "
            "use mqtt://USER@HOST",
            err=True,
        )
        raise typer.Exit(code=2)
    return HubMqttSettings(
        host=parsed.host,
        port=parsed.port,
        tls=parsed.tls,
        ca_file=ca_file,
        username=parsed.username,
        password=SecretStr(password) if password is not None else None,
        client_id=client_id,
        session_expiry_s=session_expiry_s,
    )


def _wait_subscribed(client: HubMqttClient, stop: threading.Event, timeout: float) -> bool:
    """Wait until the client's subscriptions are granted, a signal arrives or
    ``timeout`` seconds pass; whether it is subscribed."""
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if client.wait_subscribed(min(0.1, left)):
            return True
    return client.wait_subscribed(0)


def _serve_http(
    settings: HubSettings,
    engine: Engine,
    host: str,
    port: int,
    runtime: HubRuntime,
    *,
    publisher: ConfigPublisher | None = None,
) -> None:
    """Serve the API with uvicorn in this (the main) thread until a signal stops it.
    The API shares ``runtime`` (galleries, feed) with ingest; configurations it
    renders are published through ``publisher``."""
    import uvicorn

    from hub.api import create_app

    app = create_app(settings, engine)
    runtime.install(app, publisher)
    config = uvicorn.Config(
        app,
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
