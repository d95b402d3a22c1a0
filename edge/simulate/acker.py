"""A stand-in for the hub's ack path: ``lantern devices ack-all`` and the tests' acker.

:class:`AckAll` subscribes to every device's events (by default as a member of the
hub's shared subscription group, ``$share/hub/lantern/v1/+/evt/#``, so a real hub
running beside it splits the work instead of doubling it), decodes each event as the
hub would, and acks it on the device's ``ack`` topic: valid events in ``event_ids``,
events that fail validation in ``rejected`` with the protocol error code. It stores
nothing; acks are batched per device every ``flush_every_s``, at most
:data:`~devices.protocol.MAX_ACK_IDS` ids to a message, as the hub's ingest does.

It runs on :class:`~edge.comms.mqtt.MqttPeer` (the MQTT network on the peer's owner
thread) plus one flusher thread; :meth:`AckAll.close` stops both within its timeout.
Its MQTT session ends with its connection (expiry 0), whatever the settings say: a
session the broker kept after a disconnect would stay in the shared group and take
its share of the events, unacked, for as long as the session lived.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from devices.protocol import (
    HUB_EVENTS_SUBSCRIPTION,
    MAX_ACK_IDS,
    TOPIC_PREFIX,
    Ack,
    AckBody,
    EventEnvelope,
    ProtocolError,
    Rejection,
    ack_topic,
    decode,
    encode,
    loads_object,
    parse_topic,
)
from edge.comms.mqtt import MqttPeer, MqttSettings, RawMessage

__all__ = ["AckAll", "AckerStats", "EVENTS_SUBSCRIPTION"]

logger = logging.getLogger(__name__)

EVENTS_SUBSCRIPTION = f"{TOPIC_PREFIX}/+/evt/#"
"""Every device's events, unshared."""


@dataclass
class AckerStats:
    """What an :class:`AckAll` did."""

    received: int = 0
    """Event messages received."""
    acked: int = 0
    """Event ids put in ``event_ids``."""
    rejected: int = 0
    """Event ids put in ``rejected``."""
    unreadable: int = 0
    """Messages without a usable topic or event id: nothing to ack."""
    acks_sent: int = 0
    """Ack messages the broker accepted."""
    acks_failed: int = 0
    """Ack messages that could not be published (link down)."""
    answered: int = 0
    """Event messages whose answer (ack, rejection, or nothing for an unreadable one)
    has been handed to the network."""
    acks_queued: int = 0
    """Ack messages handed to the network, accepted or not yet."""

    @property
    def settled(self) -> bool:
        """Every message received is answered and the broker has settled every ack.

        One ack message may carry many event ids, so ``acks_sent`` is no measure of how
        many events were answered; this is.
        """
        return (
            self.received > 0
            and self.answered >= self.received
            and self.acks_sent + self.acks_failed >= self.acks_queued
        )


class AckAll:
    """Acks every event it receives (see the module docstring)."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        client_id: str = "lantern-ack-all",
        shared: bool = True,
        flush_every_s: float = 0.05,
    ) -> None:
        if flush_every_s <= 0:
            raise ValueError("flush_every_s must be positive")
        self.flush_every_s = flush_every_s
        self.subscription = HUB_EVENTS_SUBSCRIPTION if shared else EVENTS_SUBSCRIPTION
        self.stats = AckerStats()
        self._lock = threading.Lock()
        self._to_ack: defaultdict[str, list[str]] = defaultdict(list)
        self._to_reject: defaultdict[str, list[Rejection]] = defaultdict(list)
        self._stop = threading.Event()
        # The session ends with the connection: a session kept after a disconnect
        # stays a member of the shared group and receives its share of the events,
        # which nobody then acks.
        self.peer = MqttPeer(
            client_id,
            settings.model_copy(update={"session_expiry_s": 0}),
            subscriptions=[(self.subscription, 1)],
            on_message=self._on_message,
        )
        self._flusher = threading.Thread(target=self._flush_loop, name="ack-all", daemon=True)

    def start(self, timeout: float = 10.0) -> bool:
        """Connect and subscribe; False if the subscription was not acknowledged within
        ``timeout`` seconds (the peer keeps trying)."""
        self.peer.start()
        self._flusher.start()
        return self.peer.wait_subscribed(timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is batched, stop the flusher and disconnect."""
        self._stop.set()
        if self._flusher.is_alive():
            self._flusher.join(timeout)
        self._flush()
        self.peer.close(timeout)

    def __enter__(self) -> AckAll:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- owner thread

    def _on_message(self, message: RawMessage) -> None:
        with self._lock:
            self.stats.received += 1
        try:
            device_id = parse_topic(message.topic).device_id
        except ProtocolError:
            device_id = message.topic.split("/")[2] if message.topic.count("/") >= 3 else ""
        try:
            decoded = decode(message.topic, message.payload)
        except ProtocolError as exc:
            self._reject(device_id, message, exc)
            return
        event = decoded.message
        if not isinstance(event, EventEnvelope):
            with self._lock:
                self.stats.unreadable += 1
                self.stats.answered += 1
            return
        with self._lock:
            self._to_ack[event.device_id].append(event.event_id)

    def _reject(self, device_id: str, message: RawMessage, error: ProtocolError) -> None:
        """Ack an invalid event as rejected if it carries a usable event id."""
        try:
            event_id = loads_object(message.payload).get("event_id")
            if not isinstance(event_id, str):
                raise ValueError("no event id")
            ack_topic(device_id)
            rejection = Rejection(event_id=event_id, code=error.code)
        except (ProtocolError, ValueError):
            with self._lock:
                self.stats.unreadable += 1
                self.stats.answered += 1
            logger.debug("cannot ack a message on %s: %s", message.topic, error)
            return
        with self._lock:
            self._to_reject[device_id].append(rejection)

    # -- flusher thread

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_every_s):
            try:
                self._flush()
            except Exception:
                logger.exception("ack flush failed")

    def _flush(self) -> None:
        with self._lock:
            batches, self._to_ack = self._to_ack, defaultdict(list)
            rejects, self._to_reject = self._to_reject, defaultdict(list)
        messages = sum(map(len, batches.values())) + sum(map(len, rejects.values()))
        now = datetime.now(UTC)
        for device_id in batches.keys() | rejects.keys():
            ids = list(dict.fromkeys(batches.get(device_id, ())))
            bad = rejects.get(device_id, [])
            while ids or bad:
                chunk_bad, bad = bad[:MAX_ACK_IDS], bad[MAX_ACK_IDS:]
                room = MAX_ACK_IDS - len(chunk_bad)
                chunk_ids, ids = ids[:room], ids[room:]
                ack = Ack(
                    device_id=device_id,
                    sent_at=now,
                    body=AckBody(event_ids=chunk_ids, rejected=chunk_bad),
                )
                with self._lock:
                    self.stats.acks_queued += 1
                future = self.peer.publish(ack_topic(device_id), encode(ack), qos=1)
                future.add_done_callback(self._ack_done)
                with self._lock:
                    self.stats.acked += len(chunk_ids)
                    self.stats.rejected += len(chunk_bad)
        with self._lock:
            self.stats.answered += messages

    def _ack_done(self, future: concurrent.futures.Future[None]) -> None:
        failed = future.cancelled() or future.exception() is not None
        with self._lock:
            if failed:
                self.stats.acks_failed += 1
            else:
                self.stats.acks_sent += 1
