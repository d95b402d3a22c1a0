"""``GET /health``: whether the hub answers; no token needed."""

from __future__ import annotations

from fastapi import APIRouter

from hub.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Liveness check (no token needed)")
def health() -> Health:
    """Answer ok while the process serves requests."""
    return Health(status="ok")
