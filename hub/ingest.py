"""Event ingest: device messages from MQTT into the database, then acked.

Flow
    The MQTT client (:class:`hub.comms.mqtt.HubMqttClient`, one owner thread) hands
    every message to :meth:`Ingest.submit`, which puts it on the queue of one of N
    :class:`IngestWorker` threads chosen by a hash of the device id: a device's
    messages are handled in arrival order by one worker, different devices in
    parallel. Subscriptions: the shared ``$share/hub/lantern/v1/+/evt/#`` for events
    and the unshared ``lantern/v1/+/state`` for retained states (brokers send no
    retained messages to shared subscriptions).

Batches
    A worker takes what is queued, up to ``batch_max`` messages or ``batch_wait_s``
    after the first, and runs each through the ordered stages inside ONE database
    transaction. Should the batch fail, it is done again with one savepoint per
    message, so a failing message is quarantined and does not undo the others.
    After the commit it runs the post-commit stages (per-type processing:
    :class:`PositionSink`, :class:`SightingSink`, :class:`AlarmSink`; notifications
    to an optional :class:`EventObserver`), PUBACKs every message of the batch and
    publishes one ``ack`` per device listing the event ids handled. A
    crash before the commit leaves every message of the batch un-PUBACKed, so the
    broker delivers it again; a crash after it causes redeliveries that
    insert-or-ignore turns into duplicates acked again, never stored twice. If the
    commit fails the batch is retried with backoff until it succeeds or the hub
    stops (then it is left to the broker). On SQLite the workers take turns on one
    lock for their transactions (one writer at a time anyway).

Stages (in order; each one method, a False return ends the message's chain)
    :class:`Validate` (``devices.protocol.decode``; refusals go to quarantine) ->
    :class:`Verify` (signatures of devices with registered keys) ->
    :class:`Dedupe` (the same event twice in one batch) -> :class:`Stamp`
    (``received_at`` is the hub's arrival time) -> :class:`Store` (device states
    applied; events queued, then stored together at the end of the transaction:
    one multi-row insert-or-ignore per table, ``device_boots`` for seq gaps, last
    seen — :func:`hub.db.repositories.store_events`) -> after commit
    :class:`Dispatch` (sinks) -> :class:`AckCollector` (the device acks) ->
    :class:`Notify` (the observer, when there is one).

Observer
    An :class:`EventObserver` (e.g. :class:`hub.feed.FeedObserver`, the live feed)
    hears of every newly stored event and every applied device state, after the
    commit, on the device's worker thread, in the device's order. Its errors are
    logged and swallowed: they never cost a message its ack.

Quarantine and acks
    A payload that fails validation is stored in ``quarantine`` with device, topic,
    bytes (capped) and reason, counted in ``lantern_quarantined_total``, and, if its
    event id can be read, acked as ``rejected`` with the error code so the device
    stops resending it. Events of a device that is not registered are quarantined
    as ``unknown_device`` and not acked: they stay in the device's outbox until it
    is registered (the broker's ACL already vouches for the device, so this is a
    provisioning gap, not an attack). An unexpected error in a stage is logged and
    the message quarantined as ``internal``; the device's other messages go on.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from devices.protocol import (
    DELIVERY,
    HUB_EVENTS_SUBSCRIPTION,
    HUB_STATE_SUBSCRIPTION,
    MAX_ACK_IDS,
    Ack,
    AckBody,
    AlarmEvent,
    DecodedMessage,
    DeviceState,
    EventEnvelope,
    PositionEvent,
    ProtocolError,
    Rejection,
    SightingEvent,
    ack_topic,
    decode,
    encode,
    loads_object,
)
from devices.signing import public_key_from_b64, verify
from hub import metrics
from hub.comms.mqtt import HubMqttClient, HubMqttSettings, Inbound
from hub.db.engine import is_sqlite, sqlite_write_lock, write_session
from hub.db.models import Device
from hub.db.repositories import (
    apply_device_state,
    load_devices,
    load_signing_keys,
    quarantine,
    store_events,
)

__all__ = [
    "AckCollector",
    "AlarmSink",
    "Batch",
    "Dedupe",
    "Dispatch",
    "EventObserver",
    "Ingest",
    "IngestSettings",
    "IngestWorker",
    "Item",
    "NullAlarmSink",
    "NullPositionSink",
    "NullSightingSink",
    "Notify",
    "PositionSink",
    "SightingSink",
    "Stage",
    "Stamp",
    "Store",
    "Validate",
    "Verify",
    "partition",
]

logger = logging.getLogger(__name__)


# -- interfaces to the next stages of the hub ----------------------------------------------


class PositionSink(Protocol):
    """Where stored positions go next (the supervision engine: geofences, curfews).

    Called after the commit, once per newly stored position, in the device's order,
    on the worker thread of that device: return quickly, hand heavy work elsewhere."""

    def on_position(self, event: PositionEvent, received_at: datetime) -> None:
        """Take one newly stored position."""


class SightingSink(Protocol):
    """Where stored face sightings go next (matching against the galleries).
    Same calling contract as :class:`PositionSink`."""

    def on_sighting(self, event: SightingEvent, received_at: datetime) -> None:
        """Take one newly stored sighting."""


class EventObserver(Protocol):
    """Hears what ingest changed, for live views (the situation feed).

    Called after the commit on the device's worker thread, in the device's order;
    return quickly and never block (hand over to another thread or loop). Errors are
    logged and ignored."""

    def on_event(self, message: EventEnvelope, received_at: datetime) -> None:
        """Take one newly stored event (never a duplicate)."""

    def on_device_state(self, device_id: str, state: DeviceState) -> None:
        """Take a device state that was applied (a stale one ignored is not passed)."""


class AlarmSink(Protocol):
    """Where stored device alarms go next (the supervision engine's alerts). Same
    calling contract as :class:`PositionSink`."""

    def on_alarm(self, event: AlarmEvent, received_at: datetime) -> None:
        """Take one newly stored alarm (raised or cleared)."""


class NullPositionSink:
    """The default :class:`PositionSink`: does nothing."""

    def on_position(self, event: PositionEvent, received_at: datetime) -> None:
        """Ignore the position."""


class NullAlarmSink:
    """The default :class:`AlarmSink`: does nothing."""

    def on_alarm(self, event: AlarmEvent, received_at: datetime) -> None:
        """Ignore the alarm."""


class NullSightingSink:
    """The default :class:`SightingSink`: does nothing."""

    def on_sighting(self, event: SightingEvent, received_at: datetime) -> None:
        """Ignore the sighting."""


# -- what flows through the stages ---------------------------------------------------------


@dataclass
class Item:
    """One message on its way through the stages."""

    inbound: Inbound
    device_id: str
    decoded: DecodedMessage | None = None
    event_id: str | None = None
    new: bool = False
    """Stored by this batch for the first time."""
    ack: bool = False
    """Name the event in the device's ack (stored now or before)."""
    rejection: Rejection | None = None
    duplicate: bool = False
    """Stored before (in an earlier batch or earlier in this one)."""
    quarantined: str | None = None
    """The error code it was quarantined with."""
    state_applied: bool = False
    """A device state that changed the device's row (not ignored as stale)."""


@dataclass
class Batch:
    """The messages handled in one transaction, and what the stages learned."""

    items: list[Item]
    session: Session | None = None
    devices: dict[str, Device] = field(default_factory=dict)
    """The batch's registered devices, loaded in one query when the transaction begins."""
    keys: dict[str, dict[str, str]] = field(default_factory=dict)
    """Registered Ed25519 keys of the batch's devices that have any (kid -> base64)."""
    pending: list[Item] = field(default_factory=list)
    """Events that passed the stages, stored together by :func:`_store_pending`."""
    seen: set[tuple[str, str]] = field(default_factory=set)
    acks: defaultdict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    rejected: defaultdict[str, list[Rejection]] = field(default_factory=lambda: defaultdict(list))


class Stage(Protocol):
    """One step of the pipeline; False stops the chain for this message."""

    def process(self, item: Item, batch: Batch) -> bool:
        """Handle ``item``; return whether the next stage should see it."""


def _device_from_topic(topic: str) -> str:
    parts = topic.split("/")
    return parts[2] if len(parts) > 2 else ""


def _quarantine(
    batch: Batch, item: Item, code: str, reason: str, field_name: str | None = None
) -> None:
    assert batch.session is not None
    quarantine(
        batch.session,
        topic=item.inbound.topic,
        payload=item.inbound.payload,
        error_code=code,
        reason=reason,
        received_at=item.inbound.received_at,
        device_id=item.device_id[:64] or None,
        field=field_name,
    )
    item.quarantined = code
    logger.info("quarantined %s from %s: %s", code, item.inbound.topic, reason)


class Validate:
    """Decode and validate the payload; refusals go to quarantine (and, with a
    readable event id, to the device's ack as ``rejected``)."""

    def process(self, item: Item, batch: Batch) -> bool:
        inbound = item.inbound
        if not inbound.payload and inbound.retain:
            return False  # a cleared retained state: nothing to record
        try:
            item.decoded = decode(inbound.topic, inbound.payload, now=inbound.received_at)
        except ProtocolError as exc:
            _quarantine(batch, item, exc.code, exc.reason, exc.field)
            event_id = _readable_event_id(inbound.payload)
            if event_id is not None and item.device_id:
                try:
                    item.rejection = Rejection(event_id=event_id, code=exc.code)
                except ValueError:
                    item.rejection = None
            return False
        message = item.decoded.message
        if isinstance(message, EventEnvelope):
            item.event_id = message.event_id
        return True


def _readable_event_id(payload: bytes) -> str | None:
    try:
        value = loads_object(payload).get("event_id")
    except ProtocolError:
        return None
    return value if isinstance(value, str) else None


class Verify:
    """A device with registered signing keys must sign every event with one of them:
    an unsigned event, an unknown ``kid`` or a signature that does not verify goes to
    quarantine and is acked as rejected with that code. Devices without keys are not
    checked (signing is optional per device)."""

    def process(self, item: Item, batch: Batch) -> bool:
        assert item.decoded is not None
        message = item.decoded.message
        if not isinstance(message, EventEnvelope):
            return True
        registered = batch.keys.get(item.device_id)
        if not registered:
            return True
        try:
            keys = {kid: _public_key(b64) for kid, b64 in registered.items()}
            verify(message, keys)
        except (ProtocolError, ValueError) as exc:
            code, reason = (
                (exc.code, exc.reason)
                if isinstance(exc, ProtocolError)
                else ("bad_signature", f"registered key unusable: {exc}")
            )
            _quarantine(batch, item, code, reason, "sig")
            item.rejection = Rejection(event_id=message.event_id, code=code)
            return False
        return True


@lru_cache(maxsize=4096)
def _public_key(b64: str) -> Ed25519PublicKey:
    return public_key_from_b64(b64)


class Dedupe:
    """An event seen earlier in the same batch is acked, not stored again (copies in
    earlier batches are caught by the database's insert-or-ignore)."""

    def process(self, item: Item, batch: Batch) -> bool:
        if item.event_id is None:
            return True
        key = (item.device_id, item.event_id)
        if key in batch.seen:
            item.ack = True
            item.duplicate = True
            return False
        batch.seen.add(key)
        return True


class Stamp:
    """Set ``received_at`` to the hub's clock at arrival (never the device's)."""

    def process(self, item: Item, batch: Batch) -> bool:
        assert item.decoded is not None
        item.decoded = replace(item.decoded, received_at=item.inbound.received_at)
        return True


class Store:
    """Apply device states and queue events for the batch's bulk insert-or-ignore
    (:func:`_store_pending`, in the same transaction); events of unregistered devices
    are quarantined."""

    def process(self, item: Item, batch: Batch) -> bool:
        assert item.decoded is not None and batch.session is not None
        session = batch.session
        message = item.decoded.message
        if isinstance(message, DeviceState):
            device = apply_device_state(session, item.decoded)
            if device is None:
                _quarantine(batch, item, "unknown_device", "device is not registered")
            else:
                # A stale state (an older boot's) leaves the row on the newer boot.
                item.state_applied = device.boot_id == message.boot_id
            return False
        if not isinstance(message, EventEnvelope):
            logger.debug("ignoring %s on %s", type(message).__name__, item.inbound.topic)
            return False
        if item.device_id not in batch.devices:
            _quarantine(batch, item, "unknown_device", "device is not registered")
            return False
        batch.pending.append(item)
        item.ack = True
        return True


def _store_pending(batch: Batch) -> None:
    """Store the events queued by :class:`Store` in bulk; mark which were new."""
    if not batch.pending:
        return
    assert batch.session is not None
    decoded = [item.decoded for item in batch.pending if item.decoded is not None]
    new = store_events(batch.session, decoded)
    for item in batch.pending:
        item.new = (item.device_id, item.event_id or "") in new
        item.duplicate = not item.new
    batch.pending.clear()


class Dispatch:
    """After the commit: newly stored positions, sightings and alarms go to their sinks.
    A sink that fails is logged; the event stays stored and acked (a sink is not a
    reason for the device to send it again) — except an alarm, whose alert must not be
    lost: it is left unacked, so the device resends it and the sink gets it again."""

    def __init__(
        self, positions: PositionSink, sightings: SightingSink, alarms: AlarmSink
    ) -> None:
        self.positions = positions
        self.sightings = sightings
        self.alarms = alarms

    def process(self, item: Item, batch: Batch) -> bool:
        if item.decoded is None:
            return True
        message = item.decoded.message
        received_at = item.decoded.received_at
        # An alarm goes to its sink again when it arrives again: the sink records its
        # alert idempotently (by key), so a hub that died, or a database that failed,
        # between storing the alarm and recording its alert heals on the resend.
        if not item.new and not (item.duplicate and isinstance(message, AlarmEvent)):
            return True
        try:
            if isinstance(message, PositionEvent):
                self.positions.on_position(message, received_at)
            elif isinstance(message, SightingEvent):
                self.sightings.on_sighting(message, received_at)
            elif isinstance(message, AlarmEvent):
                self.alarms.on_alarm(message, received_at)
        except Exception:
            logger.exception("sink failed for %s", item.inbound.topic)
            if isinstance(message, AlarmEvent):
                # Not acked to the device, which sends it again: see above.
                item.ack = False
        return True


class AckCollector:
    """After the commit: gather the event ids (and rejections) to ack per device."""

    def process(self, item: Item, batch: Batch) -> bool:
        if item.ack and item.event_id is not None:
            batch.acks[item.device_id].append(item.event_id)
        elif item.rejection is not None:
            batch.rejected[item.device_id].append(item.rejection)
        return True


class Notify:
    """After the commit: tell the observer of new events and applied states. Its
    errors are logged, never raised, so they cannot cost an ack."""

    def __init__(self, observer: EventObserver) -> None:
        self.observer = observer

    def process(self, item: Item, batch: Batch) -> bool:
        if item.decoded is None:
            return True
        message = item.decoded.message
        try:
            if item.new and isinstance(message, EventEnvelope):
                self.observer.on_event(message, item.decoded.received_at)
            elif item.state_applied and isinstance(message, DeviceState):
                self.observer.on_device_state(message.device_id, message)
        except Exception:
            logger.exception("event observer failed for %s", item.inbound.topic)
        return True


def _run_chain(stages: Sequence[Stage], item: Item, batch: Batch) -> None:
    for stage in stages:
        if not stage.process(item, batch):
            return


# -- workers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestSettings:
    """How ingest batches and parallelises."""

    workers: int = 4
    batch_max: int = 500
    batch_wait_s: float = 0.005
    retry_min_s: float = 0.2
    retry_max_s: float = 5.0


def partition(device_id: str, workers: int) -> int:
    """The worker of a device: a stable hash, so its messages stay in order."""
    return zlib.crc32(device_id.encode()) % workers


class IngestWorker:
    """One thread: batches from its queue, one transaction each, then acks."""

    def __init__(
        self,
        index: int,
        engine: Engine,
        client: HubMqttClient,
        settings: IngestSettings,
        positions: PositionSink,
        sightings: SightingSink,
        write_lock: threading.RLock | None = None,
        observer: EventObserver | None = None,
        alarms: AlarmSink | None = None,
    ) -> None:
        self.index = index
        self.write_lock = write_lock
        self.engine = engine
        self.client = client
        self.settings = settings
        self.queue: queue.Queue[Inbound | None] = queue.Queue()
        self.in_tx: list[Stage] = [Validate(), Verify(), Dedupe(), Stamp(), Store()]
        self.after_commit: list[Stage] = [
            Dispatch(positions, sightings, alarms or NullAlarmSink()),
            AckCollector(),
        ]
        if observer is not None:
            self.after_commit.append(Notify(observer))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"ingest-{index}", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def finish(self) -> None:
        """Ask the thread to end after what is queued now."""
        self.queue.put(None)

    def abandon(self) -> None:
        """Stop retrying a failing batch (at shutdown)."""
        self._stop.set()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the thread; True if it ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        ending = False
        while not ending:
            try:
                first = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            if first is None:
                break
            messages = [first]
            deadline = time.monotonic() + self.settings.batch_wait_s
            while len(messages) < self.settings.batch_max:
                try:
                    more = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if more is None:
                    ending = True
                    break
                messages.append(more)
            self.handle(messages)
        logger.debug("ingest worker %d ended", self.index)

    def handle(self, messages: Sequence[Inbound]) -> None:
        """Store a batch in one transaction (retrying), then PUBACK and ack."""
        delay = self.settings.retry_min_s
        careful = False
        while True:
            try:
                with self.write_lock or contextlib.nullcontext():
                    batch = self._transaction(messages, careful)
                break
            except Exception:
                if not careful:
                    # Again, one savepoint per message, so the culprit is contained.
                    logger.warning(
                        "batch of %d failed; redoing it message by message", len(messages)
                    )
                    careful = True
                    continue
                if self._stop.is_set():
                    logger.error("batch of %d left unacked at shutdown", len(messages))
                    return
                logger.exception("batch of %d failed; retrying in %.1f s", len(messages), delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.settings.retry_max_s)
        for item in batch.items:
            try:
                _run_chain(self.after_commit, item, batch)
            except Exception:
                logger.exception("post-commit processing failed for %s", item.inbound.topic)
        for inbound in messages:
            self.client.ack(inbound.generation, inbound.mid, inbound.qos)
        self._publish_acks(batch)

    def _transaction(self, messages: Sequence[Inbound], careful: bool) -> Batch:
        """Run the in-transaction stages over a batch and commit. Fast path: no
        savepoints, any error aborts the batch. ``careful``: a savepoint per message,
        and a message whose stages raise is quarantined as ``internal``."""
        batch = Batch(items=[Item(m, _device_from_topic(m.topic)) for m in messages])
        with write_session(self.engine) as session:
            batch.session = session
            batch.devices = load_devices(session, (item.device_id for item in batch.items))
            batch.keys = load_signing_keys(session, batch.devices)
            for item in batch.items:
                if not careful:
                    _run_chain(self.in_tx, item, batch)
                    continue
                try:
                    with session.begin_nested():
                        _run_chain(self.in_tx, item, batch)
                        _store_pending(batch)
                except Exception as exc:
                    if _transient(exc):
                        raise  # the database, not the message: the batch is retried
                    logger.exception("ingest failed for a message on %s", item.inbound.topic)
                    item.ack = False
                    item.new = False
                    item.duplicate = False
                    item.state_applied = False
                    batch.pending.clear()
                    with session.begin_nested():
                        _quarantine(batch, item, "internal", f"{type(exc).__name__}: {exc}")
            _store_pending(batch)
        batch.session = None
        for item in batch.items:
            if item.new and item.decoded is not None:
                metrics.EVENTS_STORED.labels(type=item.decoded.topic.name or "").inc()
            if item.duplicate:
                metrics.EVENTS_DUPLICATE.inc()
            if item.quarantined is not None:
                metrics.QUARANTINED.labels(code=item.quarantined).inc()
        return batch

    def _publish_acks(self, batch: Batch) -> None:
        now = datetime.now(UTC)
        qos = DELIVERY["ack"].qos
        for device_id in batch.acks.keys() | batch.rejected.keys():
            ids = list(dict.fromkeys(batch.acks.get(device_id, ())))
            bad = batch.rejected.get(device_id, [])
            while ids or bad:
                chunk_bad, bad = bad[:MAX_ACK_IDS], bad[MAX_ACK_IDS:]
                room = MAX_ACK_IDS - len(chunk_bad)
                chunk_ids, ids = ids[:room], ids[room:]
                ack = Ack(
                    device_id=device_id,
                    sent_at=now,
                    body=AckBody(event_ids=chunk_ids, rejected=chunk_bad),
                )
                self.client.publish(ack_topic(device_id), encode(ack), qos=qos)
                metrics.ACKS_PUBLISHED.inc()


def _transient(exc: BaseException) -> bool:
    """A database failure that says nothing about the message (connection lost,
    server restarting, deadlock, serialisation failure): retry, never quarantine."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, (OperationalError, InterfaceError, DisconnectionError)):
        return True
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return code in ("40001", "40P01")


class Ingest:
    """The ingest service: one MQTT client, N workers (see the module docstring).

    ``positions``/``sightings`` receive newly stored positions and sightings;
    ``observer`` hears of every newly stored event and applied device state."""

    def __init__(
        self,
        engine: Engine,
        mqtt: HubMqttSettings,
        settings: IngestSettings | None = None,
        *,
        positions: PositionSink | None = None,
        sightings: SightingSink | None = None,
        alarms: AlarmSink | None = None,
        observer: EventObserver | None = None,
    ) -> None:
        self.settings = settings or IngestSettings()
        if self.settings.workers < 1:
            raise ValueError("workers must be at least 1")
        self.client = HubMqttClient(
            mqtt,
            [(HUB_EVENTS_SUBSCRIPTION, 1), (HUB_STATE_SUBSCRIPTION, 1)],
            self.submit,
        )
        # SQLite has one writer at a time and its busy handler polls rather than
        # queues, so under steady load a waiting worker can starve past the busy
        # timeout; the workers take turns on the engine's process-wide write lock
        # instead, with every other writer of this process (supervision, the API).
        write_lock = sqlite_write_lock(engine) if is_sqlite(engine) else None
        self.workers = [
            IngestWorker(
                i,
                engine,
                self.client,
                self.settings,
                positions or NullPositionSink(),
                sightings or NullSightingSink(),
                write_lock,
                observer,
                alarms,
            )
            for i in range(self.settings.workers)
        ]

    def submit(self, inbound: Inbound) -> None:
        """Queue a message for its device's worker (called on the MQTT owner thread)."""
        device_id = _device_from_topic(inbound.topic)
        self.workers[partition(device_id, len(self.workers))].queue.put(inbound)

    def start(self, timeout: float = 10.0) -> bool:
        """Start the workers and the client; True once subscribed within ``timeout``."""
        for worker in self.workers:
            worker.start()
        self.client.start()
        return self.client.wait_subscribed(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop consuming, finish the batches already received, send their PUBACKs and
        acks, disconnect. Bounded by ``timeout`` seconds overall (about)."""
        deadline = time.monotonic() + timeout
        self.client.stop_consuming()
        for worker in self.workers:
            worker.finish()
        for worker in self.workers:
            if not worker.join(max(0.1, deadline - time.monotonic())):
                worker.abandon()
                logger.warning("ingest worker %d did not finish in time", worker.index)
        self.client.close(max(1.0, deadline - time.monotonic()))
