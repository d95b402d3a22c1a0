"""The wire protocol edge and hub share: topics, messages, validation, versions.

Import everything from here (``from devices.protocol import decode, PositionEvent``);
the submodules are an implementation detail. Signatures are in ``devices.signing``,
the JSON Schema export in ``devices.protocol.schemas`` and ``lantern protocol``.

Topics
    ``lantern/v1/{device_id}/evt/{type}`` (position, alarm, sighting, checkin: device
    to hub, QoS 1), ``.../tele`` (QoS 0, expires), ``.../state`` (retained birth and
    Last Will), ``.../ack``, ``.../config`` (retained) and ``.../cmd/{name}`` (hub to
    device). Build them with :func:`evt_topic` and friends, read them with
    :func:`parse_topic`; :data:`DELIVERY` gives QoS/retain/expiry per kind and
    :data:`MOSQUITTO_DEVICE_ACL` the broker ACL lines. A device id is a safe topic
    level and broker username: ``^[a-z0-9][a-z0-9_-]{1,63}$``.

Envelopes
    Every payload is a JSON object with ``schema``, ``device_id`` (equal to the
    topic's, checked), a timestamp and ``body``. Events add ``event_id`` (UUIDv7 made
    at capture, :func:`new_event_id`), ``boot_id`` + ``seq``, ``captured_at``,
    ``sent_at``, ``replayed``, and optional ``kid`` + ``sig``. Timestamps are RFC 3339
    with a timezone, held in UTC; naive times and numbers are refused. A device
    timestamp before 2020 or more than 5 minutes ahead of the receiver's clock is
    ``bad_clock``. Hub-to-device messages have no future bound, so a device whose
    clock is not set yet still takes its configuration.

Decisions, and why
    *The topic chooses the body, not a ``type`` field.* The topic already names the
    event type and must (the broker routes and authorises on it); a second copy in
    the payload could only disagree. Decoding exactly one model gives one clear error
    instead of a union's list of every member's complaints. Stored messages keep
    their topic beside them, and the signature covers the topic
    (:func:`signing_bytes`), so a signed body cannot be moved to another type.
    (The alarm body does have a ``type``: the alarm's kind, a different thing.)

    *Signatures (optional, events only; ``devices.signing``) cover the topic and the
    envelope less ``sig``, ``sent_at`` and ``replayed``*, not just "the envelope
    without sig/kid": the topic because it carries the event type; ``kid`` is signed
    so a signature cannot be relabelled; the two transport fields are not, so the
    outbox can resend a signed event (new ``sent_at``, ``replayed: true``) without
    holding the private key. The signature says what was captured, which is what
    evidence needs. Version 1 events were never signed.

    *``received_at`` is refused, not ignored.* It is the hub's stamp
    (:attr:`DecodedMessage.received_at`); a device sending it is confused or lying,
    and ``extra="forbid"`` says so (``invalid``: "received_at is stamped by the hub").

    *Strict types.* Models are pydantic with ``extra="forbid"`` and ``strict=True``:
    ``"45.1"`` is not a latitude and ``1`` is not ``true``. Integers are accepted for
    floats. Enumerations are ``Literal`` strings.

    *Sizes are capped per kind before parsing* (:data:`MAX_PAYLOAD_BYTES`: 8 KiB for
    positions, alarms and check-ins, 256 KiB for sightings with a crop, 64 KiB for
    config, 128 KiB for acks, 4 KiB for the rest), and JSON is read with
    protections Python's ``json`` lacks by default: duplicate keys, NaN/Infinity,
    ``1e999``, giant integers, lone surrogates and deep nesting are all ``bad_json``.

    *Acks list rejected events too.* The edge outbox deletes a row only on an ack;
    a payload the hub quarantines would otherwise be resent forever. ``AckBody``
    has ``event_ids`` (stored) and ``rejected`` (event id + error code).

    *Quality says ``sharpness``, not ``blur``*: it carries the variance of the
    Laplacian that ``models.quality`` measures, where higher is sharper.

    *Position ``src`` is required* beside ``acc``: a cell fix and a GNSS fix of the
    same stated accuracy deserve different trust in geofence rules.

Versions
    ``schema`` is ``lantern.<kind>/<n>``. Each kind has a current version and at most
    one previous one (:data:`CURRENT_SCHEMAS`, :data:`PREVIOUS_SCHEMAS`); consumers
    accept both and upgrade the previous on decode (:attr:`DecodedMessage.upgraded_from`
    says so). Anything else is refused as ``unknown_schema`` with the accepted list,
    never guessed; a valid schema of another kind is ``schema_mismatch``. Events are
    at ``lantern.evt/2``; ``lantern.evt/1`` (first firmware: no outbox, no signing,
    embeddings as JSON arrays) is upgraded by :func:`upgrade_evt_v1`. States are at
    ``lantern.state/2``, which added ``body.config_error``; ``lantern.state/1`` is
    relabelled by ``upgrade_state_v1`` (hubs are upgraded before devices: consumers
    refuse unknown fields). The other kinds are at version 1. When v3 comes, v1 stops
    being accepted and ``upgrade_evt_v2`` joins; ``upgrade_evt_v1`` is then dropped.

Embeddings
    Base64 of little-endian float32 (:func:`encode_embedding`,
    :func:`decode_embedding`), L2-normalised within 1e-3, of the dimension of
    ``model_id`` from :class:`EmbeddingDims` (``dlib-resnet-v1`` 128,
    ``insightface-*`` 512; extend by passing ``dims=`` to :func:`decode`, from
    configuration). ``devices`` does not import ``models``, so the table lives here.

Errors
    Every refusal is a :class:`ProtocolError` (a ``ValueError``) with a ``code`` from
    :data:`ERROR_CODES`, a ``reason`` for people and the ``field`` when there is one;
    the hub stores them in quarantine.
"""

from __future__ import annotations

from devices.protocol.bodies import (
    ALARM_TYPES,
    MAX_ACK_IDS,
    MAX_CROP_BYTES,
    AckBody,
    AlarmBody,
    AlarmType,
    CheckinBody,
    ConfigBody,
    LocateBody,
    PositionBody,
    RebootBody,
    Rejection,
    SightingBody,
    SightingQuality,
    StateBody,
    SyncWatchlistBody,
    TelemetryBody,
    config_sha256,
)
from devices.protocol.canonical import canonical_json
from devices.protocol.codec import (
    MAX_DEPTH,
    SIGNATURE_CONTEXT,
    UNSIGNED_FIELDS,
    DecodedMessage,
    decode,
    encode,
    loads_object,
    signing_bytes,
    upgrade_evt_v1,
)
from devices.protocol.embedding import (
    DEFAULT_EMBEDDING_DIMS,
    EMBEDDING_DIMS,
    NORM_TOLERANCE,
    EmbeddingDims,
    decode_embedding,
    encode_embedding,
)
from devices.protocol.errors import ERROR_CODES, ErrorCode, ProtocolError
from devices.protocol.fields import (
    EARLIEST_TIMESTAMP,
    MAX_CLOCK_SKEW,
    format_timestamp,
    parse_timestamp,
)
from devices.protocol.ids import new_boot_id, new_event_id, uuid7_time
from devices.protocol.messages import (
    ACK_SCHEMA,
    CMD_SCHEMA,
    CONFIG_SCHEMA,
    CURRENT_SCHEMAS,
    EVT_SCHEMA,
    EVT_SCHEMA_V1,
    MESSAGE_CLASSES,
    PREVIOUS_SCHEMAS,
    STATE_SCHEMA,
    TELE_SCHEMA,
    Ack,
    AlarmEvent,
    CheckinEvent,
    Command,
    ConfigMessage,
    DeviceState,
    Envelope,
    EventEnvelope,
    LocateCommand,
    Message,
    PositionEvent,
    RebootCommand,
    SightingEvent,
    SyncWatchlistCommand,
    Telemetry,
    accepted_schemas,
    message_class,
    topic_for,
)
from devices.protocol.topics import (
    COMMAND_NAMES,
    DELIVERY,
    EVENT_TYPES,
    HUB_EVENTS_SUBSCRIPTION,
    HUB_STATE_SUBSCRIPTION,
    HUB_TELE_SUBSCRIPTION,
    MAX_PAYLOAD_BYTES,
    MOSQUITTO_DEVICE_ACL,
    TOPIC_KINDS,
    TOPIC_PREFIX,
    CommandName,
    Delivery,
    EventType,
    TopicInfo,
    TopicKind,
    ack_topic,
    cmd_topic,
    config_topic,
    device_subscriptions,
    evt_topic,
    max_payload_bytes,
    parse_topic,
    state_topic,
    tele_topic,
    validate_device_id,
)

__all__ = [
    "ACK_SCHEMA",
    "ALARM_TYPES",
    "CMD_SCHEMA",
    "COMMAND_NAMES",
    "CONFIG_SCHEMA",
    "CURRENT_SCHEMAS",
    "DEFAULT_EMBEDDING_DIMS",
    "DELIVERY",
    "EARLIEST_TIMESTAMP",
    "EMBEDDING_DIMS",
    "ERROR_CODES",
    "EVENT_TYPES",
    "EVT_SCHEMA",
    "EVT_SCHEMA_V1",
    "HUB_EVENTS_SUBSCRIPTION",
    "HUB_STATE_SUBSCRIPTION",
    "HUB_TELE_SUBSCRIPTION",
    "MAX_ACK_IDS",
    "MAX_CLOCK_SKEW",
    "MAX_CROP_BYTES",
    "MAX_DEPTH",
    "MAX_PAYLOAD_BYTES",
    "MESSAGE_CLASSES",
    "MOSQUITTO_DEVICE_ACL",
    "NORM_TOLERANCE",
    "PREVIOUS_SCHEMAS",
    "SIGNATURE_CONTEXT",
    "STATE_SCHEMA",
    "TELE_SCHEMA",
    "TOPIC_KINDS",
    "TOPIC_PREFIX",
    "UNSIGNED_FIELDS",
    "Ack",
    "AckBody",
    "AlarmBody",
    "AlarmEvent",
    "AlarmType",
    "CheckinBody",
    "CheckinEvent",
    "Command",
    "CommandName",
    "ConfigBody",
    "ConfigMessage",
    "DecodedMessage",
    "Delivery",
    "DeviceState",
    "EmbeddingDims",
    "Envelope",
    "ErrorCode",
    "EventEnvelope",
    "EventType",
    "LocateBody",
    "LocateCommand",
    "Message",
    "PositionBody",
    "PositionEvent",
    "ProtocolError",
    "RebootBody",
    "RebootCommand",
    "Rejection",
    "SightingBody",
    "SightingEvent",
    "SightingQuality",
    "StateBody",
    "SyncWatchlistBody",
    "SyncWatchlistCommand",
    "Telemetry",
    "TelemetryBody",
    "TopicInfo",
    "TopicKind",
    "accepted_schemas",
    "ack_topic",
    "canonical_json",
    "cmd_topic",
    "config_sha256",
    "config_topic",
    "decode",
    "decode_embedding",
    "device_subscriptions",
    "encode",
    "encode_embedding",
    "evt_topic",
    "format_timestamp",
    "loads_object",
    "max_payload_bytes",
    "message_class",
    "new_boot_id",
    "new_event_id",
    "parse_timestamp",
    "parse_topic",
    "signing_bytes",
    "state_topic",
    "tele_topic",
    "topic_for",
    "upgrade_evt_v1",
    "uuid7_time",
    "validate_device_id",
]
