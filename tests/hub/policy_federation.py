"""Access policy of the federation routes, merged into ``tests.hub.test_api.POLICY``.

Match requests are made by requesters, and by caseworkers for the missing-person and
found-person purposes (checked inside the route). ``POST /api/v1/federation/search``
is for peer hubs: no user token opens it, whatever the role; it needs the signature
headers of a known peer (``hub.federation.server.PeerGuard``). The matrix treats it
like a public route: without those headers every caller gets 422 (missing headers),
never 401/403 for its role; signature failures are 401 (tests/hub/federation).
"""

from __future__ import annotations

from hub.db.users import Role

ASKERS = frozenset({Role.requester, Role.caseworker})

POLICY: dict[tuple[str, str], frozenset[Role] | None] = {
    ("POST", "/api/v1/match-requests"): ASKERS,
    ("GET", "/api/v1/match-requests"): ASKERS,
    ("GET", "/api/v1/match-requests/{request_id}"): ASKERS,
    ("POST", "/api/v1/match-requests/{request_id}/retry"): ASKERS,
    ("POST", "/api/v1/federation/search"): None,
}
"""``(method, path)`` -> the roles admitted (None: no user token; peer-signed)."""

PATH_VALUES: dict[str, str] = {
    "request_id": "00000000-0000-4000-8000-000000000000",
}
"""Path parameter -> a value naming nothing that exists (the matrix expects 404)."""
