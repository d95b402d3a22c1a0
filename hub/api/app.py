"""The app factory: ``create_app(settings, engine=None)``.

The API lives under ``/api/v1`` with its OpenAPI document at ``/api/v1/openapi.json``
and interactive docs at ``/api/v1/docs``. Only :data:`PUBLIC_ROUTES` may be reached
without a token; the factory refuses to build an app in which any other ``/api``
route lacks a role guard (or, for the hub-to-hub :data:`FEDERATION_ROUTES`, a peer's
signature guard), and writes each route's roles into the OpenAPI document
as ``x-lantern-roles``. ``GET /metrics`` (Prometheus, no token) sits outside ``/api``
and outside the OpenAPI document.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

from fastapi import FastAPI, Request, Response, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub.auth import ACCESS_TOKEN_TTL
from hub.db.engine import make_engine
from hub.federation.server import peer_guarded
from hub.settings import HubSettings

from .deps import API_PREFIX, TOKEN_PATH, declared_roles
from .routes import (
    alarms,
    audit,
    auth,
    devices,
    feed,
    health,
    incidents,
    match_requests,
    metrics,
    persons,
    positions,
    reunion,
    review,
    rules,
    search,
    sightings,
    sites,
    users,
    watchlists,
    web,
    zones,
)

DOMAIN_ROUTERS = (
    health,
    auth,
    users,
    audit,
    sites,
    devices,
    persons,
    watchlists,
    search,
    sightings,
    positions,
    alarms,
    zones,
    rules,
    incidents,
    feed,
    reunion,
    review,
    match_requests,
)
"""Every domain's router module, included under ``/api/v1`` in this order."""

__all__ = [
    "FEDERATION_ROUTES",
    "PUBLIC_ROUTES",
    "UnguardedRouteError",
    "api_routes",
    "check_guards",
    "create_app",
]

logger = logging.getLogger(__name__)

PUBLIC_ROUTES = frozenset({("GET", f"{API_PREFIX}/health"), ("POST", TOKEN_PATH)})
"""``(method, path)`` of the only routes that need no token."""

FEDERATION_ROUTES = frozenset({("POST", f"{API_PREFIX}/federation/search")})
"""``(method, path)`` of the hub-to-hub routes: no user token, but the Ed25519 signature
of a peer hub, checked by :class:`hub.federation.server.PeerGuard` (required here)."""


class UnguardedRouteError(RuntimeError):
    """An ``/api`` route that is not public declares no roles."""


def create_app(
    settings: HubSettings,
    engine: Engine | None = None,
    *,
    token_ttl: timedelta = ACCESS_TOKEN_TTL,
) -> FastAPI:
    """Build the hub's API. Without ``engine`` one is opened on ``settings.database_url``;
    the schema is expected to be migrated already (``lantern hub migrate``)."""
    app = FastAPI(
        title="Lantern hub API",
        version="1",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=f"{API_PREFIX}/docs/oauth2-redirect",
    )
    app.state.settings = settings
    app.state.engine = engine or make_engine(settings.database_url, echo=settings.db_echo)
    app.state.token_ttl = token_ttl
    for module in DOMAIN_ROUTERS:
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(metrics.router)
    app.include_router(web.router)  # /map (the page, no token) and /api/v1/map/config
    app.add_exception_handler(StarletteHTTPException, _unparsable_body_is_422)
    check_guards(app)
    return app


_BODY_PARSE_ERROR = "There was an error parsing the body"
"""FastAPI's 400 detail for a body it cannot decode at all (bad UTF-8, broken form)."""


async def _unparsable_body_is_422(request: Request, exc: Exception) -> Response:
    """Every request-validation failure is a 422 with a field path: a body FastAPI
    cannot even decode (it answers 400) becomes a 422 located at ``body``."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == status.HTTP_400_BAD_REQUEST and exc.detail == _BODY_PARSE_ERROR:
        return JSONResponse(
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
            content={
                "detail": [
                    {
                        "type": "body_unparsable",
                        "loc": ["body"],
                        "msg": "the request body could not be decoded (not UTF-8 JSON or "
                        "well-formed form data)",
                        "input": None,
                    }
                ]
            },
        )
    return await http_exception_handler(request, exc)


def api_routes(app: FastAPI) -> Iterator[tuple[str, str, APIRoute]]:
    """Every ``(method, full path, route)`` of the app under ``/api``.

    FastAPI keeps included routers as nested entries of ``app.routes`` and resolves
    the full paths itself; :func:`fastapi.routing.iter_route_contexts` walks them.
    """
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        path = context.path or ""
        if isinstance(route, APIRoute) and path.startswith(f"{API_PREFIX}/"):
            for method in sorted(context.methods or ()):
                yield method, path, route


def check_guards(app: FastAPI) -> None:
    """Refuse unguarded routes and publish each route's roles in the OpenAPI document."""
    for method, path, route in api_routes(app):
        roles = declared_roles(route)
        if roles is None:
            if (method, path) in FEDERATION_ROUTES and peer_guarded(route):
                continue
            if (method, path) not in PUBLIC_ROUTES:
                raise UnguardedRouteError(
                    f"{method} {path} declares no roles; guard it with Depends(require(...))"
                )
            continue
        extra = dict(route.openapi_extra or {})
        extra["x-lantern-roles"] = sorted(role.value for role in roles)
        route.openapi_extra = extra
