"""Fixtures of the access tests: the hub's database fixtures (SQLite and PostgreSQL),
and the hook that writes the access evidence artifact at the end of the run."""

from __future__ import annotations

import pytest

from tests.access import evidence
from tests.hub.conftest import (  # noqa: F401 - fixtures used by this package's tests
    _fast_password_hashing,
    engine,
    pg_engine,
    pg_url,
    sqlite_template,
)
from tests.hub.test_broker_mosquitto import (  # noqa: F401 - fixtures of test_broker_denials
    broker,
    connect,
)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    evidence.write()
