"""Fixtures of the fault suite: the hub tests' database fixtures (``engine`` on SQLite
and PostgreSQL, ``pg_engine`` on the session's PostgreSQL database), reused as they are."""

from __future__ import annotations

from tests.hub.conftest import engine, pg_engine, pg_url, sqlite_template

__all__ = ["engine", "pg_engine", "pg_url", "sqlite_template"]
