"""Engines and sessions for the two supported backends.

SQLite (the embedded default) is opened in WAL mode with foreign keys enforced and a
busy timeout, and its transactions are begun by us rather than by the driver:
Python's ``sqlite3`` module otherwise defers ``BEGIN`` until the first write, which
breaks SAVEPOINTs and makes ``BEGIN IMMEDIATE`` impossible. :func:`write_session`
asks for ``BEGIN IMMEDIATE`` so a read-then-write transaction (the audit chain head)
holds the write lock from its first statement. SQLite's busy handler polls rather
than queues, so writers of one process take turns on a process-wide lock per engine
(:func:`sqlite_write_lock`) before asking SQLite: ingest, the supervision clock and
the API never sleep in the busy handler against each other. PostgreSQL is reached
through psycopg 3; a bare ``postgresql://`` URL is mapped to that driver.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.orm import Session, sessionmaker

__all__ = [
    "SQLITE_BUSY_TIMEOUT_MS",
    "is_sqlite",
    "make_engine",
    "make_session_factory",
    "normalise_url",
    "sqlite_write_lock",
    "write_session",
]

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 10_000
"""How long an SQLite writer waits for the lock before failing."""

_BEGIN_OPTION = "lantern_sqlite_begin"

_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()
_WRITE_LOCKS_GUARD = threading.Lock()


def sqlite_write_lock(engine: Engine) -> threading.RLock:
    """The lock this process's writers to an SQLite ``engine`` take turns on
    (re-entrant, so a writer may nest :func:`write_session` inside it)."""
    with _WRITE_LOCKS_GUARD:
        lock = _WRITE_LOCKS.get(engine)
        if lock is None:
            lock = _WRITE_LOCKS[engine] = threading.RLock()
        return lock


def normalise_url(url: str | URL) -> URL:
    """Parse ``url``, choosing psycopg 3 for PostgreSQL when no driver is named."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def is_sqlite(engine_or_url: Engine | URL | str) -> bool:
    """Whether an engine (or URL) is SQLite."""
    if isinstance(engine_or_url, Engine):
        return engine_or_url.dialect.name == "sqlite"
    return normalise_url(engine_or_url).get_backend_name() == "sqlite"


def make_engine(url: str | URL, *, echo: bool = False) -> Engine:
    """Create an engine for ``url`` with the settings the hub relies on."""
    parsed = normalise_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            parsed,
            echo=echo,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )
        _configure_sqlite(engine)
    else:
        engine = create_engine(parsed, echo=echo, pool_pre_ping=True)
    logger.debug("engine ready: %s", parsed.render_as_string(hide_password=True))
    return engine


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver (see the module docstring).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory bound to ``engine``; objects stay usable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A session in a transaction that holds the write lock from its start on SQLite.

    Commits when the block ends normally and rolls back on an exception. On
    PostgreSQL it is an ordinary transaction; code that needs serialising there
    takes its own lock (see :mod:`hub.audit`).
    """
    if not is_sqlite(engine):
        with Session(bind=engine, expire_on_commit=False) as session, session.begin():
            yield session
        return
    bind = engine.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
    with (
        sqlite_write_lock(engine),
        Session(bind=bind, expire_on_commit=False) as session,
        session.begin(),
    ):
        yield session
