"""What simulated wearables emit, and how it becomes protocol messages.

A simulator emits :class:`Emission`: the message type, its validated body
(:class:`~devices.protocol.PositionBody` and friends) and when it was captured. It
does not make envelopes, because on a real device the edge outbox does: it assigns
``boot_id`` and ``seq`` when it stores an event, and ``sent_at`` when it sends. A
runner built on the edge outbox takes emissions as they are; anything else wraps them
with an :class:`EnvelopeFactory` (one per device: boot id, sequence counter, event
ids) into :class:`~devices.protocol.PositionEvent`, :class:`~devices.protocol.AlarmEvent`,
:class:`~devices.protocol.CheckinEvent` or :class:`~devices.protocol.Telemetry`, which
:func:`devices.protocol.encode` turns into bytes for :func:`devices.protocol.topic_for`.

Event ids are UUIDv7 whose time is the capture time, as the protocol asks ("made at
capture"), also when the simulation runs in virtual time. With a seeded
``random.Random`` the factory's boot id and event ids are reproducible; without one
they come from :mod:`secrets`.
"""

from __future__ import annotations

import random
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeAlias

from devices.protocol import (
    AlarmBody,
    AlarmEvent,
    CheckinBody,
    CheckinEvent,
    PositionBody,
    PositionEvent,
    Telemetry,
    TelemetryBody,
    validate_device_id,
)

__all__ = [
    "Body",
    "Emission",
    "EmissionKind",
    "EnvelopeFactory",
    "EnvelopingSink",
    "SimMessage",
]

EmissionKind = Literal["position", "alarm", "checkin", "telemetry"]
"""``position``, ``alarm`` and ``checkin`` are events (``evt/{type}``); ``telemetry``
goes on ``tele``."""

Body: TypeAlias = PositionBody | AlarmBody | CheckinBody | TelemetryBody
SimMessage: TypeAlias = PositionEvent | AlarmEvent | CheckinEvent | Telemetry
"""The messages an :class:`EnvelopeFactory` makes."""

_BODY_OF_KIND: dict[str, type[Body]] = {
    "position": PositionBody,
    "alarm": AlarmBody,
    "checkin": CheckinBody,
    "telemetry": TelemetryBody,
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class Emission:
    """One message a simulated device produced, before its envelope."""

    kind: EmissionKind
    body: Body
    captured_at: datetime
    """When it was captured, by the device clock (UTC)."""
    sent_at: datetime | None = None
    """When it was sent, if later than captured (held in the outbox while offline)."""
    replayed: bool = False
    """Sent from the outbox after an outage rather than live."""

    def __post_init__(self) -> None:
        expected = _BODY_OF_KIND.get(self.kind)
        if expected is None or not isinstance(self.body, expected):
            raise TypeError(f"a {self.kind} emission needs a {expected}, not {type(self.body)}")
        if self.captured_at.tzinfo is None:
            raise ValueError("captured_at must be timezone-aware")

    @property
    def send_time(self) -> datetime:
        """``sent_at`` if set, else ``captured_at``."""
        return self.sent_at if self.sent_at is not None else self.captured_at


class EnvelopeFactory:
    """Wraps one device's emissions in envelopes: its boot id, a per-boot sequence of
    events starting at ``seq``, and event ids made at capture time.

    Telemetry has no ``seq`` and no event id; it carries the boot id and ``sent_at``.
    """

    def __init__(
        self,
        device_id: str,
        *,
        boot_id: str | None = None,
        seq: int = 0,
        rng: random.Random | None = None,
    ) -> None:
        self.device_id = validate_device_id(device_id)
        self._bits: Callable[[int], int] = rng.getrandbits if rng is not None else secrets.randbits
        if boot_id is None:
            boot_id = str(uuid.UUID(int=self._bits(128), version=4))
        self.boot_id = boot_id
        if seq < 0:
            raise ValueError("seq must be >= 0")
        self.seq = seq
        """The sequence number the next event gets."""
        self._last_ms = -1
        self._counter = 0

    def event_id(self, captured_at: datetime) -> str:
        """A UUIDv7 whose time is ``captured_at`` (to the millisecond), never earlier
        than the previous id of this factory (RFC 9562 method 1 counter)."""
        ms = (captured_at - _EPOCH) // _MS
        if ms > self._last_ms:
            self._last_ms = ms
            self._counter = self._bits(11)
        else:
            self._counter += 1
            if self._counter > 0xFFF:
                self._last_ms += 1
                self._counter = self._bits(11)
        value = (
            (self._last_ms & ((1 << 48) - 1)) << 80
            | 0x7 << 76
            | self._counter << 64
            | 0b10 << 62
            | self._bits(62)
        )
        return str(uuid.UUID(int=value))

    def wrap(self, emission: Emission, *, sent_at: datetime | None = None) -> SimMessage:
        """The protocol message for ``emission``. ``sent_at`` defaults to the emission's
        send time; it is never before the capture time."""
        sent = sent_at if sent_at is not None else emission.send_time
        sent = max(sent, emission.captured_at)
        body = emission.body
        # The envelope's own clock check ("not ahead of the receiver") is against the
        # send time, so a run in virtual time may be set in the future.
        context = {"now": sent}
        if isinstance(body, TelemetryBody):
            return Telemetry.model_validate(
                {
                    "device_id": self.device_id,
                    "boot_id": self.boot_id,
                    "sent_at": sent,
                    "body": body,
                },
                context=context,
            )
        common = {
            "device_id": self.device_id,
            "event_id": self.event_id(emission.captured_at),
            "boot_id": self.boot_id,
            "seq": self.seq,
            "captured_at": emission.captured_at,
            "sent_at": sent,
            "replayed": emission.replayed,
        }
        self.seq += 1
        if isinstance(body, PositionBody):
            return PositionEvent.model_validate({**common, "body": body}, context=context)
        if isinstance(body, AlarmBody):
            return AlarmEvent.model_validate({**common, "body": body}, context=context)
        return CheckinEvent.model_validate({**common, "body": body}, context=context)


MessageSink: TypeAlias = Callable[[SimMessage], Awaitable[None] | None]


class EnvelopingSink:
    """A scheduler sink that wraps each emission with its device's
    :class:`EnvelopeFactory` and hands the message to ``sink``.

    With ``seed`` set, each device's factory draws from ``random.Random(f"{seed}:{id}")``,
    so boot ids and event ids replay exactly; without it they are random.
    """

    def __init__(self, sink: MessageSink, *, seed: int | str | None = None) -> None:
        self._sink = sink
        self._seed = seed
        self.factories: dict[str, EnvelopeFactory] = {}

    def factory(self, device_id: str) -> EnvelopeFactory:
        """The factory of ``device_id``, made on first use."""
        factory = self.factories.get(device_id)
        if factory is None:
            rng = None if self._seed is None else random.Random(f"{self._seed}:{device_id}")
            factory = EnvelopeFactory(device_id, rng=rng)
            self.factories[device_id] = factory
        return factory

    def __call__(self, device_id: str, emission: Emission) -> Awaitable[None] | None:
        return self._sink(self.factory(device_id).wrap(emission))
