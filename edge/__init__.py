"""Edge agents that run on devices and publish to the hub over MQTT.

The camera agent turns frames into sightings (detect, quality gate, align, embed,
track and pick a best shot); the wearable agent reports GNSS/LBS fixes, battery,
strap state and SOS as positions and alarms. Every event goes through a durable
SQLite outbox and is deleted only when the hub acknowledges it. Edge code imports
``devices``, ``models`` and ``matching``, never ``hub``: the two sides meet only on
the wire.
"""
