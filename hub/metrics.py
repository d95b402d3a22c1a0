"""Prometheus counters of the hub's ingest, in the process-wide default registry.

The HTTP API exposes them at ``/metrics`` (``prometheus_client.generate_latest()``);
ingest only increments them. Counters are named without ``_total``: the client
library adds it, so the exposed names are ``lantern_events_stored_total`` and so on.
"""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["ACKS_PUBLISHED", "EVENTS_DUPLICATE", "EVENTS_STORED", "QUARANTINED"]

EVENTS_STORED = Counter(
    "lantern_events_stored",
    "Device events stored for the first time, by event type.",
    ["type"],
)
EVENTS_DUPLICATE = Counter(
    "lantern_events_duplicate",
    "Device events received again after being stored (acked again, not stored).",
)
QUARANTINED = Counter(
    "lantern_quarantined",
    "Payloads refused and kept in the quarantine table, by error code.",
    ["code"],
)
ACKS_PUBLISHED = Counter(
    "lantern_acks_published",
    "Ack messages handed to the MQTT client for publishing to devices.",
)
