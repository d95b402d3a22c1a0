"""Access policy of the command map's API routes, merged into ``tests.hub.test_api.POLICY``.

Site maps are read by the roles that see the map and written by admins; the map's
settings are for any signed-in user. The page itself (``/map``) is outside ``/api``.
"""

from __future__ import annotations

from hub.db.users import Role

READERS = frozenset({Role.admin, Role.officer, Role.analyst})

POLICY: dict[tuple[str, str], frozenset[Role] | None] = {
    ("GET", "/api/v1/sites/{site_id}/map"): READERS,
    ("PUT", "/api/v1/sites/{site_id}/map"): frozenset({Role.admin}),
    ("GET", "/api/v1/map/config"): frozenset(Role),
}
"""``(method, path)`` -> the roles admitted."""

PATH_VALUES: dict[str, str] = {"site_id": "no-such-site"}
"""Path parameter -> a value naming nothing that exists (the matrix expects 404/422)."""
