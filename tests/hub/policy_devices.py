"""Access policy of one domain's routes, merged into ``tests.hub.test_api.POLICY``."""

from __future__ import annotations

from hub.db.users import Role

READERS = frozenset({Role.admin, Role.officer, Role.analyst})
ADMIN = frozenset({Role.admin})
CONFIG_READERS = frozenset({Role.admin, Role.officer})

POLICY: dict[tuple[str, str], frozenset[Role] | None] = {
    ("GET", "/api/v1/devices"): READERS,
    ("POST", "/api/v1/devices"): ADMIN,
    ("GET", "/api/v1/devices/{device_id}"): READERS,
    ("POST", "/api/v1/devices/{device_id}/credentials/rotate"): ADMIN,
    ("GET", "/api/v1/devices/{device_id}/config"): CONFIG_READERS,
    ("POST", "/api/v1/devices/{device_id}/config"): ADMIN,
    ("GET", "/api/v1/sites"): READERS,
    ("POST", "/api/v1/sites"): ADMIN,
    ("GET", "/api/v1/sites/{site_id}"): READERS,
}
"""``(method, path)`` -> the roles admitted."""

PATH_VALUES: dict[str, str] = {"device_id": "no-such-device", "site_id": "no-such-site"}
"""Path parameter -> a value naming nothing that exists (the matrix expects 404)."""
