"""Hub storage: engines, models, migrations and small repository functions.

``make_engine(url)`` opens SQLite (WAL, foreign keys, busy timeout) or PostgreSQL
(psycopg 3); :func:`hub.db.migrate.upgrade` brings the schema to the newest
revision; :mod:`hub.db.repositories` stores and reads events.
"""

from __future__ import annotations

from hub.db import users as _users  # noqa: F401  (registers the users table on Base)
from hub.db.engine import is_sqlite, make_engine, make_session_factory, write_session
from hub.db.models import Base

__all__ = ["Base", "is_sqlite", "make_engine", "make_session_factory", "write_session"]
