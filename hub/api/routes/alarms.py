"""Device alarms."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/alarms", tags=["alarms"])
