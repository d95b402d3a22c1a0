"""Shared fixtures for the face-engine tests: the real images of ../shared/faces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FACES = Path(
    os.environ.get(
        "LANTERN_FACE_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "faces"
    )
).resolve()


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    if not FACES.is_dir():
        pytest.skip(f"face data not found at {FACES} (set LANTERN_FACE_DATA)")
    return FACES


@pytest.fixture(scope="session")
def dlib_engine():  # type: ignore[no-untyped-def]
    from models.dlib_backend import DlibEngine

    return DlibEngine()
