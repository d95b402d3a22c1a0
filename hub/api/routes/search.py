"""Purpose-bound 1:N face searches (audited)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/search", tags=["search"])
