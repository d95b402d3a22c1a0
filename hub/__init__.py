"""The hub: ingest, supervision, matching services, API and federation.

Shared-subscription consumers validate, deduplicate, store and acknowledge device
events; the position pipeline evaluates geofences and curfew rules into alerts and
incidents; the sighting pipeline searches watchlist galleries and routes candidates
to alerts or human review. The API serves devices, persons, enrolments, zones,
rules, alerts, sightings, case-bound cross-region match requests, reunion cases and
the audit log, and federation exchanges match requests with other regions' hubs.
The hub imports ``devices``, ``models`` and ``matching``, never ``edge``.
"""
