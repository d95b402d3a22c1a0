"""Positions: latest per device and tracks as GeoJSON."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/positions", tags=["positions"])
