"""Access policy of one domain's routes, merged into ``tests.hub.test_api.POLICY``."""

from __future__ import annotations

from hub.db.users import Role

READERS = frozenset({Role.admin, Role.officer, Role.analyst})

POLICY: dict[tuple[str, str], frozenset[Role] | None] = {
    ("GET", "/api/v1/devices"): READERS,
    ("GET", "/api/v1/devices/{device_id}"): READERS,
}
"""``(method, path)`` -> the roles admitted."""

PATH_VALUES: dict[str, str] = {}
"""Path parameter -> a value naming nothing that exists (the matrix expects 404)."""
