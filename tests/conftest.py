"""Shared pytest fixtures for the Lantern test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FACES = Path(
    os.environ.get(
        "LANTERN_FACE_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "faces"
    )
).resolve()
"""The real face images of ``../shared/faces`` (or ``$LANTERN_FACE_DATA``)."""


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    if not FACES.is_dir():
        pytest.skip(f"face data not found at {FACES} (set LANTERN_FACE_DATA)")
    return FACES
