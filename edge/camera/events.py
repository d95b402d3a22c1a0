"""Where the camera's events go and who stamps their envelopes.

The pipeline makes event *bodies* (a :class:`~devices.protocol.SightingBody`, an
:class:`~devices.protocol.AlarmBody`); the envelope around each (``event_id``,
``boot_id``, ``seq``, ``sent_at``) belongs to whoever owns the device's sequence
numbers, the edge agent and its outbox. So the pipeline takes two collaborators:

* an :class:`EventFactory`, ``make_event(event_type, body, captured_at)``, that
  wraps a body in an envelope (the agent's persists ``seq`` per boot);
* a :class:`SightingSink`, ``put(message)``, that takes the finished event (the
  durable outbox, which holds it until the hub acks it, link or no link).

For running without a hub (``--dry-run``, tests) :class:`LocalEventFactory` numbers
events in memory, :class:`ListSink` collects them and :class:`JsonLinesSink` writes
each as one line of canonical JSON, exactly the bytes that would be published.

:class:`OutboxPublisher` fits the two roles to an outbox that hands out ``boot_id``
and ``seq`` itself, inside the transaction that stores the event
(``put_event(make)`` with ``make(boot_id, seq) -> EventEnvelope``): the envelope is
made at capture with its final ``event_id`` and ``captured_at`` (so an alarm can
name its sighting) and a provisional boot and ``seq``, which ``put`` replaces with
the outbox's. Given ``Outbox.put_event`` itself, call it from the thread that owns the
outbox; given :meth:`edge.agent.EdgeAgent.post_event`, from any thread (the camera
agent's frame thread does): the agent thread then stamps and commits the events, in
the order they were put.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal, Protocol

from devices.protocol import (
    AlarmBody,
    AlarmEvent,
    EventEnvelope,
    SightingBody,
    SightingEvent,
    encode,
    message_class,
    new_boot_id,
    new_event_id,
    validate_device_id,
)

__all__ = [
    "CameraEventType",
    "EventFactory",
    "JsonLinesSink",
    "ListSink",
    "LocalEventFactory",
    "OutboxPublisher",
    "SightingSink",
]

CameraEventType = Literal["sighting", "alarm"]


class EventFactory(Protocol):
    """Wraps an event body in its envelope (event id, boot id, sequence number)."""

    def __call__(
        self,
        event_type: CameraEventType,
        body: SightingBody | AlarmBody,
        captured_at: datetime,
    ) -> EventEnvelope: ...


class SightingSink(Protocol):
    """Takes finished events; the outbox implements it (``put`` before publishing)."""

    def put(self, message: EventEnvelope) -> object: ...


class LocalEventFactory:
    """Envelopes numbered in memory: a fresh ``boot_id`` (unless given) and ``seq``
    from 0. For dry runs and tests; a device's agent persists its sequence instead."""

    def __init__(self, device_id: str, *, boot_id: str | None = None) -> None:
        self.device_id = validate_device_id(device_id)
        self.boot_id = boot_id or new_boot_id()
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def __call__(
        self,
        event_type: CameraEventType,
        body: SightingBody | AlarmBody,
        captured_at: datetime,
    ) -> EventEnvelope:
        with self._lock:
            seq = next(self._seq)
        cls = message_class("evt", event_type)
        message = cls.model_validate(
            {
                "device_id": self.device_id,
                "event_id": new_event_id(),
                "boot_id": self.boot_id,
                "seq": seq,
                "captured_at": captured_at,
                "sent_at": datetime.now(UTC),
                "body": body,
            }
        )
        if not isinstance(message, EventEnvelope):  # pragma: no cover - evt classes are
            raise TypeError(f"{cls.__name__} is not an event")
        return message


class ListSink:
    """Keeps every event in :attr:`messages` (tests, dry runs)."""

    def __init__(self) -> None:
        self.messages: list[EventEnvelope] = []

    def put(self, message: EventEnvelope) -> None:
        self.messages.append(message)


class JsonLinesSink:
    """Writes each event as one line of its canonical wire JSON through ``write``."""

    def __init__(self, write: Callable[[str], object]) -> None:
        self._write = write
        self.count = 0

    def put(self, message: EventEnvelope) -> None:
        if not isinstance(message, SightingEvent | AlarmEvent):
            raise TypeError(f"not a camera event: {type(message).__name__}")
        self._write(encode(message).decode("utf-8"))
        self.count += 1


PROVISIONAL_BOOT_ID = "00000000-0000-0000-0000-000000000000"
"""The boot id an :class:`OutboxPublisher` envelope carries until the outbox stores it."""


class OutboxPublisher:
    """Both :class:`EventFactory` and :class:`SightingSink` over an outbox's
    ``put_event(make)`` (see the module notes)."""

    def __init__(
        self,
        device_id: str,
        put_event: Callable[[Callable[[str, int], EventEnvelope]], object],
    ) -> None:
        self.device_id = validate_device_id(device_id)
        self._put_event = put_event
        self._provisional = LocalEventFactory(device_id, boot_id=PROVISIONAL_BOOT_ID)

    def __call__(
        self,
        event_type: CameraEventType,
        body: SightingBody | AlarmBody,
        captured_at: datetime,
    ) -> EventEnvelope:
        return self._provisional(event_type, body, captured_at)

    def put(self, message: EventEnvelope) -> object:
        def stamp(boot_id: str, seq: int) -> EventEnvelope:
            data = message.model_dump(by_alias=True)
            data.update(boot_id=boot_id, seq=seq, sent_at=datetime.now(UTC))
            stamped = type(message).model_validate(data)
            return stamped

        return self._put_event(stamp)
