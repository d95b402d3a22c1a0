"""Access policy of one domain's routes, merged into ``tests.hub.test_api.POLICY``.

Positions, alarms and the live feed. The feed is a WebSocket route, which the route
walk does not see; its roles are :data:`WEBSOCKET_POLICY`, checked by
``tests/hub/test_feed.py``.
"""

from __future__ import annotations

from hub.db.users import Role

READERS = frozenset({Role.admin, Role.officer, Role.analyst})

POLICY: dict[tuple[str, str], frozenset[Role] | None] = {
    ("GET", "/api/v1/positions/latest"): READERS,
    ("GET", "/api/v1/positions/{device_id}/track"): READERS,
    ("GET", "/api/v1/positions/{device_id}"): READERS,
    ("GET", "/api/v1/alarms"): READERS,
    ("GET", "/api/v1/alarms/{alarm_id}"): READERS,
}
"""``(method, path)`` -> the roles admitted."""

WEBSOCKET_POLICY: dict[str, frozenset[Role]] = {
    "/api/v1/feed": READERS,
}
"""WebSocket path -> the roles admitted."""

PATH_VALUES: dict[str, str] = {"alarm_id": "999999"}
"""Path parameter -> a value naming nothing that exists (the matrix expects 404)."""
