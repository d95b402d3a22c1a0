"""``GET /metrics``: the hub's Prometheus counters in the text exposition format.

Served at the root, outside ``/api``, with no token (as Prometheus scrapes it) and
left out of the OpenAPI document. It exposes the process-wide default registry, in
which :mod:`hub.metrics` declares the ingest counters.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

import hub.metrics  # noqa: F401  (declares the counters in REGISTRY)

__all__ = ["router"]

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    """The counters of this process (ingest and API share it under ``lantern hub serve``)."""
    return Response(content=generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
