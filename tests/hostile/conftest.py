"""Shared pieces of the hostile-input suite: the database fixtures of ``tests/hub``,
the figures each part writes to ``tests/artifacts/reliability/hostile-<part>.json``,
hypothesis settings that are repeatable and fail slow cases, and a watchdog that turns
a hang into a failure."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings

from tests.hub.conftest import (
    _fast_password_hashing,
    engine,
    pg_engine,
    pg_url,
    sqlite_template,
)
from tests.hub.test_ingest import broker, hub

__all__ = [
    "ARTIFACTS",
    "Figures",
    "_fast_password_hashing",
    "broker",
    "engine",
    "figures",
    "hostile_settings",
    "hub",
    "pg_engine",
    "pg_url",
    "sqlite_template",
    "watchdog",
]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "reliability"
"""Where the figures go (git-ignored)."""

EXAMPLE_DEADLINE = timedelta(seconds=5)
"""Longest one generated example may take (decoders answer in well under a millisecond,
loaders of a 40k-character YAML file in tens of milliseconds; the bound is generous
for a busy 2-core machine and still catches a pathological case)."""

WATCHDOG_S = 150
"""A test of this suite that runs longer than this is stopped as hung."""


def hostile_settings(max_examples: int) -> settings:
    """Repeatable (derandomised, no example database) hypothesis settings that run
    ``max_examples`` examples, each within :data:`EXAMPLE_DEADLINE`."""
    return settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=EXAMPLE_DEADLINE,
        # No "explain" phase: it traces every line of a failing example again, which
        # on a 3000-deep document takes many minutes and only delays the report.
        phases=[Phase.explicit, Phase.generate, Phase.target, Phase.shrink],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


class Figures:
    """Figures of one part, rewritten to its JSON file at every change."""

    def __init__(self) -> None:
        self.parts: dict[str, dict[str, Any]] = {}

    def _write(self, part: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"hostile-{part}.json"
        path.write_text(json.dumps(self.parts[part], indent=2, sort_keys=True) + "\n")

    def record(self, part: str, key: str, value: Any) -> None:
        self.parts.setdefault(part, {})[key] = value
        self._write(part)

    def examples(self, part: str, name: str, count: int, outcomes: dict[str, int]) -> None:
        """Generated examples run by one property, and the total of the part."""
        data = self.parts.setdefault(part, {"examples": {}, "outcomes": {}, "total": 0})
        data["examples"][name] = count
        data["outcomes"][name] = dict(sorted(outcomes.items()))
        data["total"] = sum(data["examples"].values())
        self._write(part)


@pytest.fixture(scope="session")
def figures() -> Figures:
    return Figures()


class Hung(Exception):
    """Raised in the test's thread when the watchdog fires."""


@pytest.fixture
def watchdog() -> Iterator[None]:
    """Fail the test (rather than wait forever) if it runs over :data:`WATCHDOG_S`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(signum: int, frame: FrameType | None) -> None:
        raise Hung(f"test still running after {WATCHDOG_S} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.alarm(WATCHDOG_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
