"""Fixtures of the face-engine tests (``faces_dir`` comes from ``tests/conftest.py``)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def dlib_engine():  # type: ignore[no-untyped-def]
    from models.dlib_backend import DlibEngine

    return DlibEngine()
