"""Persons (supervised, watchlist, missing, found) and their enrolment."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/persons", tags=["persons"])
