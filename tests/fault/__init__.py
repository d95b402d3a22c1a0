"""Fault suite: real broker, hub, database and edge processes under faults (``-m fault``)."""
