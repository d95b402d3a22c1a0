"""Database fixtures for the hub tests: every DB test runs on SQLite and PostgreSQL.

SQLite: the migrations run once into a template file, copied for each test.
PostgreSQL: a fresh database ``lantern_test_<random>`` is created on the local
server (127.0.0.1:5432, user postgres; override with ``LANTERN_TEST_PG_ADMIN_URL``)
for the test session, migrated once, emptied after each test and dropped at the
end. When the server cannot be reached the PostgreSQL cases are skipped, saying so.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine, text

from hub.db.engine import make_engine
from hub.db.migrate import upgrade
from hub.db.models import Base

PG_ADMIN_URL = os.environ.get(
    "LANTERN_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file migrated to head, copied by each test that needs one."""
    path = tmp_path_factory.mktemp("db") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


@contextlib.contextmanager
def fresh_pg_database(prefix: str = "lantern_test") -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards; skips the test when the
    server cannot be reached. Yields its URL."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}")
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database for this test session."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(scope="session")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    """An engine on the session's PostgreSQL database, migrated to head."""
    engine = make_engine(pg_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def _empty_postgres(engine: Engine) -> None:
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE audit ENABLE TRIGGER ALL"))
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty database on each backend."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "lantern.db"
        shutil.copy(template, path)
        eng = make_engine(f"sqlite:///{path}")
        yield eng
        eng.dispose()
    else:
        pg: Engine = request.getfixturevalue("pg_engine")
        _empty_postgres(pg)
        yield pg
        _empty_postgres(pg)


@pytest.fixture(autouse=True)
def _fast_password_hashing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash API secrets with few PBKDF2 iterations in tests: the production count
    (210,000) costs a fifth of a second per user or device created. The iteration count
    is stored in each hash, so verification is unchanged."""
    import hub.credentials

    if request.node.get_closest_marker("real_hash_cost"):
        return
    monkeypatch.setattr(hub.credentials, "API_HASH_ITERATIONS", 1_000)
