"""MQTT topics of the protocol: builders, the parser, and how each kind is delivered.

Every topic is ``lantern/v1/{device_id}/{kind}[/{name}]``. The device id sits at a
fixed level so a broker ACL can pin a device to its own topics with the broker
username (see :data:`MOSQUITTO_DEVICE_ACL`). The ``v1`` in the topic versions the
topic *layout*; payload versions are the envelope's ``schema`` field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast, get_args

from devices.protocol.errors import ProtocolError

__all__ = [
    "COMMAND_NAMES",
    "DELIVERY",
    "DEVICE_ID_RE",
    "EVENT_TYPES",
    "HUB_EVENTS_SUBSCRIPTION",
    "HUB_STATE_SUBSCRIPTION",
    "HUB_TELE_SUBSCRIPTION",
    "MAX_PAYLOAD_BYTES",
    "MOSQUITTO_DEVICE_ACL",
    "TOPIC_KINDS",
    "TOPIC_PREFIX",
    "CommandName",
    "Delivery",
    "EventType",
    "TopicInfo",
    "TopicKind",
    "ack_topic",
    "cmd_topic",
    "config_topic",
    "device_subscriptions",
    "evt_topic",
    "max_payload_bytes",
    "parse_topic",
    "state_topic",
    "tele_topic",
    "validate_device_id",
]

TOPIC_PREFIX = "lantern/v1"

TopicKind = Literal["evt", "tele", "state", "ack", "config", "cmd"]
TOPIC_KINDS: tuple[TopicKind, ...] = get_args(TopicKind)

EventType = Literal["position", "alarm", "sighting", "checkin"]
"""The ``{type}`` level of ``evt`` topics."""
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)

CommandName = Literal["reboot", "locate", "sync_watchlist"]
"""The ``{name}`` level of ``cmd`` topics."""
COMMAND_NAMES: tuple[CommandName, ...] = get_args(CommandName)

DEVICE_ID_RE = re.compile(r"[a-z0-9][a-z0-9_-]{1,63}")
"""A device id: 2-64 characters of lowercase letters, digits, ``_`` and ``-``, not
starting with ``_`` or ``-``. It is a topic level and the broker username, so it may
hold none of ``+ # / $`` nor uppercase (usernames that differ only by case confuse
people and some brokers' ACL matching)."""

_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")

HUB_EVENTS_SUBSCRIPTION = f"$share/hub/{TOPIC_PREFIX}/+/evt/#"
"""Hub workers share event consumption: the broker hands each message to one worker."""

HUB_TELE_SUBSCRIPTION = f"$share/hub/{TOPIC_PREFIX}/+/tele"
"""Telemetry is shared among hub workers as events are."""

HUB_STATE_SUBSCRIPTION = f"{TOPIC_PREFIX}/+/state"
"""Not shared: MQTT 5.0 (section 4.8.2) has brokers send no retained messages to a
shared subscription, and a hub starting up needs every device's retained birth/will."""

MOSQUITTO_DEVICE_ACL: tuple[str, ...] = (
    f"pattern write {TOPIC_PREFIX}/%u/evt/#",
    f"pattern write {TOPIC_PREFIX}/%u/tele",
    f"pattern write {TOPIC_PREFIX}/%u/state",
    f"pattern read {TOPIC_PREFIX}/%u/ack",
    f"pattern read {TOPIC_PREFIX}/%u/config",
    f"pattern read {TOPIC_PREFIX}/%u/cmd/#",
)
"""Mosquitto ``acl_file`` lines that confine a device (username = device id) to its
own topics."""


@dataclass(frozen=True)
class Delivery:
    """How a kind of message travels: MQTT QoS, retain flag, direction and expiry."""

    qos: Literal[0, 1]
    retain: bool
    direction: Literal["device_to_hub", "hub_to_device"]
    expiry_s: int | None
    """MQTT 5 message expiry interval to set, or None for none."""


DELIVERY: dict[TopicKind, Delivery] = {
    "evt": Delivery(qos=1, retain=False, direction="device_to_hub", expiry_s=None),
    "tele": Delivery(qos=0, retain=False, direction="device_to_hub", expiry_s=600),
    "state": Delivery(qos=1, retain=True, direction="device_to_hub", expiry_s=None),
    "ack": Delivery(qos=1, retain=False, direction="hub_to_device", expiry_s=None),
    "config": Delivery(qos=1, retain=True, direction="hub_to_device", expiry_s=None),
    "cmd": Delivery(qos=1, retain=False, direction="hub_to_device", expiry_s=None),
}
"""Delivery of each kind. Commands carry their own ``expires_at``; the sender sets the
MQTT expiry from it."""

KiB = 1024

MAX_PAYLOAD_BYTES: dict[tuple[TopicKind, str | None], int] = {
    ("evt", "position"): 8 * KiB,
    ("evt", "alarm"): 8 * KiB,
    ("evt", "checkin"): 8 * KiB,
    ("evt", "sighting"): 256 * KiB,
    ("tele", None): 4 * KiB,
    ("state", None): 4 * KiB,
    ("ack", None): 128 * KiB,
    ("config", None): 64 * KiB,
    **{("cmd", name): 4 * KiB for name in COMMAND_NAMES},
}
"""Payload size caps in bytes, checked before any parsing. A sighting holds a 64 KiB
crop (about 87 KiB in base64) and a 512-d embedding (2.7 KiB); an ack holds up to 1000
ids of 36 characters plus the rejected list."""


def max_payload_bytes(kind: TopicKind, name: str | None = None) -> int:
    """The size cap of a kind (and event type or command name)."""
    try:
        return MAX_PAYLOAD_BYTES[(kind, name)]
    except KeyError:
        raise ProtocolError("unknown_type", f"no message {kind}/{name}") from None


@dataclass(frozen=True)
class TopicInfo:
    """What a topic says: whose it is, what kind, and the event type or command name."""

    device_id: str
    kind: TopicKind
    name: str | None = None
    """The event type for ``evt``, the command name for ``cmd``, else None."""

    @property
    def topic(self) -> str:
        """The topic string again."""
        base = f"{TOPIC_PREFIX}/{self.device_id}/{self.kind}"
        return base if self.name is None else f"{base}/{self.name}"


def validate_device_id(device_id: str) -> str:
    """Return ``device_id`` if it is a valid device id, else raise ``bad_topic``."""
    if not isinstance(device_id, str) or not DEVICE_ID_RE.fullmatch(device_id):
        raise ProtocolError(
            "bad_topic",
            f"device id {_short(device_id)} is not 2-64 of [a-z0-9_-] starting with a "
            "letter or digit",
        )
    return device_id


def evt_topic(device_id: str, type: EventType) -> str:
    """``lantern/v1/{device_id}/evt/{type}``: events, device to hub, QoS 1."""
    validate_device_id(device_id)
    if type not in EVENT_TYPES:
        raise ProtocolError("unknown_type", f"unknown event type {_short(type)}")
    return f"{TOPIC_PREFIX}/{device_id}/evt/{type}"


def tele_topic(device_id: str) -> str:
    """``lantern/v1/{device_id}/tele``: telemetry, device to hub, QoS 0."""
    return f"{TOPIC_PREFIX}/{validate_device_id(device_id)}/tele"


def state_topic(device_id: str) -> str:
    """``lantern/v1/{device_id}/state``: retained birth (online) and will (offline)."""
    return f"{TOPIC_PREFIX}/{validate_device_id(device_id)}/state"


def ack_topic(device_id: str) -> str:
    """``lantern/v1/{device_id}/ack``: event ids the hub stored, hub to device."""
    return f"{TOPIC_PREFIX}/{validate_device_id(device_id)}/ack"


def config_topic(device_id: str) -> str:
    """``lantern/v1/{device_id}/config``: retained configuration, hub to device."""
    return f"{TOPIC_PREFIX}/{validate_device_id(device_id)}/config"


def cmd_topic(device_id: str, name: CommandName) -> str:
    """``lantern/v1/{device_id}/cmd/{name}``: a command, hub to device."""
    validate_device_id(device_id)
    if name not in COMMAND_NAMES:
        raise ProtocolError("unknown_type", f"unknown command {_short(name)}")
    return f"{TOPIC_PREFIX}/{device_id}/cmd/{name}"


def device_subscriptions(device_id: str) -> tuple[str, ...]:
    """The topic filters a device subscribes to: its ack, config and commands."""
    validate_device_id(device_id)
    base = f"{TOPIC_PREFIX}/{device_id}"
    return (f"{base}/ack", f"{base}/config", f"{base}/cmd/+")


def parse_topic(topic: str) -> TopicInfo:
    """Split a Lantern topic into :class:`TopicInfo`.

    Raises :class:`ProtocolError` ``bad_topic`` for anything that is not a Lantern
    topic, and ``unknown_type`` for a well-formed ``evt``/``cmd`` topic whose type or
    command this version does not know.
    """
    if not isinstance(topic, str):
        raise ProtocolError("bad_topic", f"topic must be a string, not {type(topic).__name__}")
    if len(topic) > 256:
        raise ProtocolError("bad_topic", f"topic of {len(topic)} characters is too long")
    parts = topic.split("/")
    if len(parts) < 4 or "/".join(parts[:2]) != TOPIC_PREFIX:
        raise ProtocolError("bad_topic", f"{_short(topic)} is not under {TOPIC_PREFIX}/")
    device_id, kind, rest = parts[2], parts[3], parts[4:]
    validate_device_id(device_id)
    if kind in ("evt", "cmd"):
        if len(rest) != 1 or not _NAME_RE.fullmatch(rest[0]):
            raise ProtocolError(
                "bad_topic", f"{_short(topic)}: {kind} needs one name level of [a-z0-9_]"
            )
        name = rest[0]
        known: tuple[str, ...] = EVENT_TYPES if kind == "evt" else COMMAND_NAMES
        if name not in known:
            what = "event type" if kind == "evt" else "command"
            raise ProtocolError(
                "unknown_type", f"unknown {what} {name!r}; known: {', '.join(known)}"
            )
        return TopicInfo(device_id, cast(TopicKind, kind), name)
    if kind in ("tele", "state", "ack", "config"):
        if rest:
            raise ProtocolError("bad_topic", f"{_short(topic)}: {kind} takes no further level")
        return TopicInfo(device_id, cast(TopicKind, kind))
    raise ProtocolError(
        "bad_topic",
        f"{_short(topic)}: unknown kind {_short(kind)}; known: {', '.join(TOPIC_KINDS)}",
    )


def _short(value: object, limit: int = 60) -> str:
    """``repr`` of a value cut to ``limit`` characters, for error reasons."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
