"""Access policy of the reunion routes (cases and the review queue), merged into
``tests.hub.test_api.POLICY``.

Caseworkers work the cases and review candidates; admins read cases and may erase
one. Nothing else of the reunion workflow is open to other roles.
"""

from __future__ import annotations

from hub.db.users import Role

CASEWORKER = frozenset({Role.caseworker})
CASE_READERS = frozenset({Role.caseworker, Role.admin})

POLICY: dict[tuple[str, str], frozenset[Role] | None] = {
    ("POST", "/api/v1/reunion/cases"): CASEWORKER,
    ("GET", "/api/v1/reunion/cases"): CASE_READERS,
    ("GET", "/api/v1/reunion/cases/{person_id}"): CASE_READERS,
    ("POST", "/api/v1/reunion/cases/{person_id}/search"): CASEWORKER,
    ("POST", "/api/v1/reunion/cases/{person_id}/photos"): CASEWORKER,
    ("POST", "/api/v1/reunion/cases/{person_id}/close"): CASEWORKER,
    ("POST", "/api/v1/reunion/cases/{person_id}/erase"): CASE_READERS,
    ("GET", "/api/v1/review"): CASEWORKER,
    ("GET", "/api/v1/review/{candidate_id}"): CASEWORKER,
    ("GET", "/api/v1/review/{candidate_id}/crop"): CASEWORKER,
    ("POST", "/api/v1/review/{candidate_id}/confirm"): CASEWORKER,
    ("POST", "/api/v1/review/{candidate_id}/reject"): CASEWORKER,
}
"""``(method, path)`` -> the roles admitted."""

PATH_VALUES: dict[str, str] = {
    "person_id": "999999",
    "candidate_id": "999999",
}
"""Path parameter -> a value naming nothing that exists (the matrix expects 404/422)."""
