"""The hub's HTTP API: ``create_app(settings, engine=None)`` builds it.

One router per domain under ``/api/v1`` (health, auth, users, audit, devices); every
route except health and the token endpoint is guarded by
:func:`hub.api.deps.require` with the roles it admits.
"""

from __future__ import annotations

from hub.api.app import PUBLIC_ROUTES, UnguardedRouteError, api_routes, check_guards, create_app

__all__ = [
    "PUBLIC_ROUTES",
    "UnguardedRouteError",
    "api_routes",
    "check_guards",
    "create_app",
]
