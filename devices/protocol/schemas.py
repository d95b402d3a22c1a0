"""JSON Schema (draft 2020-12) of every message, for other languages and tools.

The schemas describe structure: fields, types, ranges, patterns, enumerations. Some
checks are beyond JSON Schema and only :func:`devices.protocol.decode` makes them:
an embedding's length for its ``model_id`` and its norm, a config's SHA-256, a crop
being a JPEG under 64 KiB, box corners in order, paired fields (``sig``/``kid``),
timestamps against the clock, ``device_id`` against the topic, duplicate keys and
the payload size caps. The ``schema`` field is required on the wire although the
Python models fill it in by default.
"""

from __future__ import annotations

from typing import Any

from devices.protocol.messages import (
    CURRENT_SCHEMAS,
    MESSAGE_CLASSES,
    Message,
    accepted_schemas,
)
from devices.protocol.topics import TOPIC_PREFIX, TopicKind, max_payload_bytes

__all__ = ["JSON_SCHEMA_DIALECT", "message_schemas", "schema_filename"]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_NOTE = (
    " Checked further by devices.protocol.decode (embedding length and norm, config "
    "hash, clock bounds, device_id against the topic, duplicate keys, size cap)."
)


def schema_filename(kind: TopicKind, name: str | None = None) -> str:
    """``evt.position.schema.json``, ``tele.schema.json`` ..."""
    return f"{kind}.{name}.schema.json" if name else f"{kind}.schema.json"


def _schema_of(cls: type[Message]) -> dict[str, Any]:
    schema = cls.model_json_schema(by_alias=True, mode="validation")
    required = schema.setdefault("required", [])
    if "schema" not in required:
        required.insert(0, "schema")
    version = CURRENT_SCHEMAS[cls.KIND]
    topic = f"{TOPIC_PREFIX}/{{device_id}}/{cls.KIND}" + (f"/{cls.NAME}" if cls.NAME else "")
    limit = max_payload_bytes(cls.KIND, cls.NAME)
    description = (schema.get("description") or "").strip()
    stem = schema_filename(cls.KIND, cls.NAME).removesuffix(".schema.json")
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:lantern:schema:{stem}:{version.rpartition('/')[2]}",
        **schema,
        "description": (
            f"{description} Topic {topic}; schema {version} (accepted: "
            f"{', '.join(accepted_schemas(cls.KIND))}); at most {limit} bytes.{_NOTE}"
        ).strip(),
    }


def message_schemas() -> dict[str, dict[str, Any]]:
    """``{file name: JSON Schema}`` for every message of the current versions."""
    return {
        schema_filename(kind, name): _schema_of(cls)
        for (kind, name), cls in MESSAGE_CLASSES.items()
    }
