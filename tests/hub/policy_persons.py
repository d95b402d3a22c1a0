"""Access policy of one domain's routes, merged into ``tests.hub.test_api.POLICY``.

Persons, enrolment, watchlists, search and sightings. The person routes admit every
role that may act on some category; the category itself is checked inside the route
(see ``hub.enrolment.WRITERS`` / ``READERS`` and ``tests/hub/test_api_persons.py``).
"""

from __future__ import annotations

from hub.db.users import Role

PERSON_WRITERS = frozenset({Role.admin, Role.officer, Role.caseworker})
PERSON_READERS = frozenset({Role.admin, Role.officer, Role.analyst, Role.caseworker})
SIGHTING_READERS = frozenset({Role.admin, Role.officer, Role.analyst})
SEARCHERS = frozenset({Role.analyst, Role.officer, Role.caseworker})

POLICY: dict[tuple[str, str], frozenset[Role] | None] = {
    ("POST", "/api/v1/persons"): PERSON_WRITERS,
    ("GET", "/api/v1/persons"): PERSON_READERS,
    ("GET", "/api/v1/persons/{person_id}"): PERSON_READERS,
    ("DELETE", "/api/v1/persons/{person_id}"): PERSON_WRITERS,
    ("POST", "/api/v1/persons/{person_id}/photos"): PERSON_WRITERS,
    ("GET", "/api/v1/persons/{person_id}/templates"): PERSON_READERS,
    ("GET", "/api/v1/persons/{person_id}/templates/{template_id}/crop"): PERSON_READERS,
    ("GET", "/api/v1/sites/{site_id}/watchlists"): SIGHTING_READERS,
    ("PUT", "/api/v1/sites/{site_id}/watchlists"): frozenset({Role.admin}),
    ("POST", "/api/v1/search"): SEARCHERS,
    ("GET", "/api/v1/sightings"): SIGHTING_READERS,
    ("GET", "/api/v1/sightings/{sighting_id}"): SIGHTING_READERS,
    ("GET", "/api/v1/sightings/{sighting_id}/crop"): SIGHTING_READERS,
}
"""``(method, path)`` -> the roles admitted."""

PATH_VALUES: dict[str, str] = {
    "person_id": "999999",
    "template_id": "999999",
    "sighting_id": "999999",
    "site_id": "no-such-site",
}
"""Path parameter -> a value naming nothing that exists (the matrix expects 404)."""
