"""Access policy of the supervision routes, merged into ``tests.hub.test_api.POLICY``.

Zones and rules are written by admins and officers and read by analysts too; alerts
and incidents are read by all three and acted on by admins and officers.
"""

from __future__ import annotations

from hub.db.users import Role

READERS = frozenset({Role.admin, Role.officer, Role.analyst})
WRITERS = frozenset({Role.admin, Role.officer})

POLICY: dict[tuple[str, str], frozenset[Role] | None] = {
    ("GET", "/api/v1/zones"): READERS,
    ("GET", "/api/v1/zones/{zone_id}"): READERS,
    ("POST", "/api/v1/zones"): WRITERS,
    ("POST", "/api/v1/zones/import"): WRITERS,
    ("PUT", "/api/v1/zones/{zone_id}"): WRITERS,
    ("DELETE", "/api/v1/zones/{zone_id}"): WRITERS,
    ("GET", "/api/v1/rules"): READERS,
    ("GET", "/api/v1/rules/{rule_id}"): READERS,
    ("POST", "/api/v1/rules"): WRITERS,
    ("PUT", "/api/v1/rules/{rule_id}"): WRITERS,
    ("DELETE", "/api/v1/rules/{rule_id}"): WRITERS,
    ("GET", "/api/v1/alerts"): READERS,
    ("GET", "/api/v1/alerts/{alert_id}"): READERS,
    ("GET", "/api/v1/incidents"): READERS,
    ("GET", "/api/v1/incidents/{incident_id}"): READERS,
    ("POST", "/api/v1/incidents/{incident_id}/acknowledge"): WRITERS,
    ("POST", "/api/v1/incidents/{incident_id}/assign"): WRITERS,
    ("POST", "/api/v1/incidents/{incident_id}/note"): WRITERS,
    ("POST", "/api/v1/incidents/{incident_id}/escalate"): WRITERS,
    ("POST", "/api/v1/incidents/{incident_id}/suspend"): WRITERS,
    ("POST", "/api/v1/incidents/{incident_id}/clear"): WRITERS,
}
"""``(method, path)`` -> the roles admitted."""

PATH_VALUES: dict[str, str] = {
    "zone_id": "no-such-zone",
    "rule_id": "no-such-rule",
    "alert_id": "999999",
    "incident_id": "999999",
}
"""Path parameter -> a value naming nothing that exists (the matrix expects 404/422)."""
