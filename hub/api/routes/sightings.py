"""Face sightings from cameras and their candidates."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/sightings", tags=["sightings"])
