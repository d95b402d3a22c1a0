"""Which galleries the sightings of a site are matched against."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/sites", tags=["watchlists"])
