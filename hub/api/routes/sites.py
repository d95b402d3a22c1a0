"""Sites (admin writes; officers and analysts read)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/sites", tags=["sites"])
