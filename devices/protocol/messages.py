"""Envelopes: the top level of every payload, one class per topic kind and name.

Which class a payload is decoded as is chosen by its topic, not by a field: see the
package docstring for why.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from devices.protocol.bodies import (
    AckBody,
    AlarmBody,
    CheckinBody,
    ConfigBody,
    LocateBody,
    PositionBody,
    RebootBody,
    SightingBody,
    StateBody,
    StrictModel,
    SyncWatchlistBody,
    TelemetryBody,
)
from devices.protocol.errors import ProtocolError
from devices.protocol.fields import (
    MAX_CLOCK_SKEW,
    BootId,
    DeviceIdStr,
    EventId,
    KeyId,
    SignatureB64,
    Timestamp,
    format_timestamp,
)
from devices.protocol.topics import TopicInfo, TopicKind

__all__ = [
    "ACK_SCHEMA",
    "CMD_SCHEMA",
    "CONFIG_SCHEMA",
    "CURRENT_SCHEMAS",
    "EVT_SCHEMA",
    "EVT_SCHEMA_V1",
    "MESSAGE_CLASSES",
    "PREVIOUS_SCHEMAS",
    "STATE_SCHEMA",
    "STATE_SCHEMA_V1",
    "TELE_SCHEMA",
    "Ack",
    "AlarmEvent",
    "CheckinEvent",
    "Command",
    "ConfigMessage",
    "DeviceState",
    "Envelope",
    "EventEnvelope",
    "LocateCommand",
    "Message",
    "PositionEvent",
    "RebootCommand",
    "SightingEvent",
    "SyncWatchlistCommand",
    "Telemetry",
    "accepted_schemas",
    "message_class",
    "topic_for",
    "upgrade_state_v1",
]

EVT_SCHEMA: Final = "lantern.evt/2"
EVT_SCHEMA_V1: Final = "lantern.evt/1"
TELE_SCHEMA: Final = "lantern.tele/1"
STATE_SCHEMA: Final = "lantern.state/2"
STATE_SCHEMA_V1: Final = "lantern.state/1"
ACK_SCHEMA: Final = "lantern.ack/1"
CONFIG_SCHEMA: Final = "lantern.config/1"
CMD_SCHEMA: Final = "lantern.cmd/1"

CURRENT_SCHEMAS: dict[TopicKind, str] = {
    "evt": EVT_SCHEMA,
    "tele": TELE_SCHEMA,
    "state": STATE_SCHEMA,
    "ack": ACK_SCHEMA,
    "config": CONFIG_SCHEMA,
    "cmd": CMD_SCHEMA,
}
"""The version each kind is written in."""

PREVIOUS_SCHEMAS: dict[TopicKind, str | None] = {
    "evt": EVT_SCHEMA_V1,
    "tele": None,
    "state": STATE_SCHEMA_V1,
    "ack": None,
    "config": None,
    "cmd": None,
}
"""The one older version each kind still accepts (upgraded on decode), if any."""


def accepted_schemas(kind: TopicKind) -> tuple[str, ...]:
    """The schema strings a consumer of ``kind`` accepts, current first."""
    previous = PREVIOUS_SCHEMAS[kind]
    current = CURRENT_SCHEMAS[kind]
    return (current,) if previous is None else (current, previous)


class Envelope(StrictModel):
    """Fields every message has."""

    KIND: ClassVar[TopicKind]
    NAME: ClassVar[str | None] = None

    device_id: DeviceIdStr = Field(
        description="The device the message is from or for; must equal the topic's "
        "device level (and so the broker username)."
    )


class _FromDevice(Envelope):
    """Device-to-hub messages: their timestamps may not run ahead of the hub's clock.

    Hub-to-device messages have no such bound: a device whose clock is not yet set
    must still accept its configuration.
    """

    @field_validator("captured_at", "sent_at", check_fields=False)
    @classmethod
    def _not_in_future(cls, value: datetime, info: ValidationInfo) -> datetime:
        context = info.context if isinstance(info.context, dict) else {}
        now = context.get("now")
        if not isinstance(now, datetime):
            now = datetime.now(UTC)
        if value > now + MAX_CLOCK_SKEW:
            raise PydanticCustomError(
                "bad_clock",
                "{value} is {ahead} s ahead of the receiver's clock ({now}); at most {skew} s",
                {
                    "value": format_timestamp(value),
                    "ahead": round((value - now).total_seconds()),
                    "now": format_timestamp(now),
                    "skew": round(MAX_CLOCK_SKEW.total_seconds()),
                },
            )
        return value


class EventEnvelope(_FromDevice):
    """An event: made once on the device at capture, kept in its outbox until the hub
    acks it, deduplicated by the hub on (device_id, event_id)."""

    KIND: ClassVar[TopicKind] = "evt"

    schema_version: Literal["lantern.evt/2"] = Field(
        default=EVT_SCHEMA,
        alias="schema",
        description="Payload version. Consumers accept lantern.evt/2 and lantern.evt/1.",
    )
    event_id: EventId = Field(description="UUIDv7 made at capture; the deduplication key.")
    boot_id: BootId = Field(description="Random UUID made each time the device starts.")
    seq: int = Field(
        ge=0,
        le=2**63 - 1,
        description="Per-boot counter, persisted, increasing by one per event; a gap "
        "means lost events.",
    )
    captured_at: Timestamp = Field(description="When the event happened, by the device clock.")
    sent_at: Timestamp = Field(
        description="When this copy was sent (changes on resend; not signed)."
    )
    replayed: bool = Field(
        default=False,
        description="True when sent from the outbox after an outage rather than live (not signed).",
    )
    kid: KeyId | None = Field(default=None, description="Id of the key that signed, with sig.")
    sig: SignatureB64 | None = Field(
        default=None, description="Base64 Ed25519 signature; see devices.signing."
    )

    @model_validator(mode="after")
    def _sig_pair(self) -> Self:
        if (self.sig is None) != (self.kid is None):
            raise ValueError("sig and kid go together")
        return self


class PositionEvent(EventEnvelope):
    """``evt/position``: a location fix."""

    NAME: ClassVar[str | None] = "position"
    body: PositionBody = Field(description="The fix.")


class AlarmEvent(EventEnvelope):
    """``evt/alarm``: an alarm raised or cleared."""

    NAME: ClassVar[str | None] = "alarm"
    body: AlarmBody = Field(description="The alarm.")


class SightingEvent(EventEnvelope):
    """``evt/sighting``: a face seen by a camera."""

    NAME: ClassVar[str | None] = "sighting"
    body: SightingBody = Field(description="The face.")


class CheckinEvent(EventEnvelope):
    """``evt/checkin``: a periodic heartbeat, stored like any event."""

    NAME: ClassVar[str | None] = "checkin"
    body: CheckinBody = Field(description="The heartbeat.")


class Telemetry(_FromDevice):
    """``tele``: device health, QoS 0, expires; not acked, not stored as evidence."""

    KIND: ClassVar[TopicKind] = "tele"

    schema_version: Literal["lantern.tele/1"] = Field(
        default=TELE_SCHEMA, alias="schema", description="Payload version."
    )
    boot_id: BootId = Field(description="The device's current boot.")
    sent_at: Timestamp = Field(description="When it was sent, by the device clock.")
    body: TelemetryBody = Field(description="The readings.")


class DeviceState(_FromDevice):
    """``state``: retained presence. The offline Last Will is composed at connect, so
    its ``sent_at`` is the connect time; the hub's receive time says when it fired.

    Version 2 added ``body.config_error`` (why a pushed configuration was refused).
    Consumers are strict (unknown fields refused), so an old hub would refuse a
    version 1 label on a payload with the new field; the version is bumped instead,
    and hubs are upgraded before devices: they accept ``lantern.state/2`` and the
    previous ``lantern.state/1`` (:func:`upgrade_state_v1`).
    """

    KIND: ClassVar[TopicKind] = "state"

    schema_version: Literal["lantern.state/2"] = Field(
        default=STATE_SCHEMA,
        alias="schema",
        description="Payload version. Consumers accept lantern.state/2 and lantern.state/1.",
    )
    boot_id: BootId = Field(description="The device's current boot.")
    sent_at: Timestamp = Field(description="When it was composed, by the device clock.")
    body: StateBody = Field(description="Presence and versions.")


def upgrade_state_v1(data: Mapping[str, Any], name: str = "") -> dict[str, Any]:
    """Turn a ``lantern.state/1`` payload into ``lantern.state/2``, as the decoder does:
    version 2 only added the optional ``body.config_error``, so the upgrade relabels
    the payload and refuses a version 1 payload that carries the new field
    (``ProtocolError("invalid")``). ``name`` is unused (states have no sub-type); it
    keeps the signature of the other upgrades."""
    body = data.get("body")
    if isinstance(body, Mapping) and "config_error" in body:
        raise ProtocolError(
            "invalid",
            f"config_error is not a field of {STATE_SCHEMA_V1}",
            field="body.config_error",
        )
    upgraded = dict(data)
    upgraded["schema"] = STATE_SCHEMA
    return upgraded


class Ack(Envelope):
    """``ack``: hub to device, the events the hub has dealt with."""

    KIND: ClassVar[TopicKind] = "ack"

    schema_version: Literal["lantern.ack/1"] = Field(
        default=ACK_SCHEMA, alias="schema", description="Payload version."
    )
    sent_at: Timestamp = Field(description="When the hub sent it.")
    body: AckBody = Field(description="Stored and rejected event ids.")


class ConfigMessage(Envelope):
    """``config``: hub to device, retained, the configuration in force."""

    KIND: ClassVar[TopicKind] = "config"

    schema_version: Literal["lantern.config/1"] = Field(
        default=CONFIG_SCHEMA, alias="schema", description="Payload version."
    )
    sent_at: Timestamp = Field(description="When the hub published it.")
    body: ConfigBody = Field(description="Versioned configuration and its hash.")


class Command(Envelope):
    """``cmd/{name}``: hub to device, a command; the device ignores it once expired
    (a queued QoS 1 command can arrive long after it was sent)."""

    KIND: ClassVar[TopicKind] = "cmd"

    schema_version: Literal["lantern.cmd/1"] = Field(
        default=CMD_SCHEMA, alias="schema", description="Payload version."
    )
    cmd_id: EventId = Field(description="UUIDv7 naming this command, for logs and dedupe.")
    sent_at: Timestamp = Field(description="When the hub sent it.")
    expires_at: Timestamp | None = Field(
        default=None, description="After this the device must not act on it."
    )

    @model_validator(mode="after")
    def _expiry(self) -> Self:
        if self.expires_at is not None and self.expires_at <= self.sent_at:
            raise ValueError("expires_at must be after sent_at")
        return self

    def expired(self, now: datetime) -> bool:
        """True when ``now`` is past ``expires_at``."""
        return self.expires_at is not None and now > self.expires_at


class RebootCommand(Command):
    """``cmd/reboot``."""

    NAME: ClassVar[str | None] = "reboot"
    body: RebootBody = Field(description="Reboot options.")


class LocateCommand(Command):
    """``cmd/locate``."""

    NAME: ClassVar[str | None] = "locate"
    body: LocateBody = Field(description="Locate options.")


class SyncWatchlistCommand(Command):
    """``cmd/sync_watchlist``."""

    NAME: ClassVar[str | None] = "sync_watchlist"
    body: SyncWatchlistBody = Field(description="Which watchlist version to fetch.")


Message = (
    PositionEvent
    | AlarmEvent
    | SightingEvent
    | CheckinEvent
    | Telemetry
    | DeviceState
    | Ack
    | ConfigMessage
    | RebootCommand
    | LocateCommand
    | SyncWatchlistCommand
)
"""Any message of the protocol."""

_CLASSES: tuple[type[Message], ...] = (
    PositionEvent,
    AlarmEvent,
    SightingEvent,
    CheckinEvent,
    Telemetry,
    DeviceState,
    Ack,
    ConfigMessage,
    RebootCommand,
    LocateCommand,
    SyncWatchlistCommand,
)

MESSAGE_CLASSES: dict[tuple[TopicKind, str | None], type[Message]] = {
    (cls.KIND, cls.NAME): cls for cls in _CLASSES
}
"""The model of each (kind, event type or command name)."""


def message_class(kind: TopicKind, name: str | None = None) -> type[Message]:
    """The model for a topic kind and name; ``KeyError`` if there is none."""
    return MESSAGE_CLASSES[(kind, name)]


def topic_for(message: Envelope) -> str:
    """The topic ``message`` is published on."""
    return TopicInfo(message.device_id, message.KIND, message.NAME).topic
