"""Access policy of one domain's routes, merged into ``tests.hub.test_api.POLICY``."""

from __future__ import annotations

from hub.db.users import Role

POLICY: dict[tuple[str, str], frozenset[Role] | None] = {}
"""``(method, path)`` -> the roles admitted."""

PATH_VALUES: dict[str, str] = {}
"""Path parameter -> a value naming nothing that exists (the matrix expects 404)."""
