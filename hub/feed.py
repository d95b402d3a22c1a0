"""The live situation feed: ingest publishes deltas, WebSocket clients subscribe.

Flow
    Ingest workers call :class:`FeedObserver` after each commit (see
    :class:`hub.ingest.EventObserver`); it turns newly stored events and applied
    device states into :class:`FeedDelta` objects and hands them to
    :meth:`FeedBroker.publish`. The broker copies each delta into the bounded buffer
    of every :class:`Subscription` whose site and type filters admit it, and wakes
    the subscription's event loop with ``loop.call_soon_threadsafe`` (at most one
    wake-up pending per subscription, so the loop's own queue stays bounded too).
    The WebSocket route (:mod:`hub.api.routes.feed`) awaits :meth:`Subscription.get`
    and sends each delta as JSON.

Never blocking ingest
    :meth:`FeedBroker.publish` takes only short locks and never waits for a client.
    A subscription whose buffer is full (its client reads slower than the hub
    writes) is dropped on the spot: its buffer is discarded, it is removed from the
    broker, ``lantern_feed_dropped_total`` goes up, and its next ``get()`` raises
    :class:`SubscriberDropped`, on which the route closes the WebSocket with code
    :data:`TOO_SLOW_CLOSE_CODE` and reason ``"too slow"``. The client reconnects and
    gets a fresh snapshot.

Metrics (process-wide default registry)
    ``lantern_feed_subscribers`` (gauge): subscriptions open now, over all brokers.
    ``lantern_feed_dropped_total`` (counter): subscriptions dropped for being too slow.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal, get_args

from prometheus_client import Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from devices.protocol import (
    AlarmEvent,
    DeviceState,
    EventEnvelope,
    PositionEvent,
    SightingEvent,
)
from hub.db.models import Device, Person, Sighting, SightingCandidate

__all__ = [
    "DEFAULT_QUEUE_SIZE",
    "DELTA_TYPES",
    "FEED_DROPPED",
    "FEED_SUBSCRIBERS",
    "TOO_SLOW_CLOSE_CODE",
    "DeltaType",
    "FeedBroker",
    "FeedDelta",
    "FeedObserver",
    "SubscriberDropped",
    "Subscription",
    "delta_for_event",
    "delta_for_state",
]

logger = logging.getLogger(__name__)

DeltaType = Literal["position", "alarm", "sighting", "device_state", "alert"]
DELTA_TYPES: tuple[DeltaType, ...] = get_args(DeltaType)

DEFAULT_QUEUE_SIZE = 1000
"""Deltas a subscription may have waiting before it is dropped as too slow."""

TOO_SLOW_CLOSE_CODE = 4008
"""WebSocket close code for a client dropped for reading too slowly."""

FEED_SUBSCRIBERS = Gauge(
    "lantern_feed_subscribers",
    "Live feed subscriptions open now.",
)
FEED_DROPPED = Counter(
    "lantern_feed_dropped",
    "Live feed subscriptions dropped because their client read too slowly.",
)


class FeedDelta(BaseModel):
    """One change of the situation, as sent to feed clients."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: DeltaType = Field(description="What changed.")
    site_id: str = Field(description="Site of the device.")
    device_id: str = Field(description="Device the change is about.")
    time: datetime = Field(
        description="When it happened by the device clock: capture time of an event, "
        "send time of a device state (UTC)."
    )
    data: dict[str, Any] = Field(description="The change itself; its keys depend on type.")


class SubscriberDropped(Exception):
    """The subscription was dropped because its buffer overflowed."""


class Subscription:
    """One subscriber's filters and bounded buffer, bound to the event loop that
    created it. :meth:`get` is awaited on that loop; :meth:`_offer` is called by
    :meth:`FeedBroker.publish` from any thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        sites: frozenset[str] | None,
        types: frozenset[str] | None,
        maxsize: int,
    ) -> None:
        self.sites = sites
        """Sites admitted; None: every site."""
        self.types = types
        """Delta types admitted; None: every type."""
        self.maxsize = maxsize
        self.dropped = False
        self._loop = loop
        self._lock = threading.Lock()
        self._buffer: deque[FeedDelta] = deque()
        self._ready = asyncio.Event()
        self._wake_pending = False
        self._closed = False

    def wants(self, delta: FeedDelta) -> bool:
        """Whether the filters admit ``delta``."""
        return (self.sites is None or delta.site_id in self.sites) and (
            self.types is None or delta.type in self.types
        )

    def pending(self) -> int:
        """Deltas waiting in the buffer."""
        with self._lock:
            return len(self._buffer)

    async def get(self) -> FeedDelta:
        """The next delta; raises :class:`SubscriberDropped` once dropped."""
        while True:
            with self._lock:
                if self.dropped:
                    raise SubscriberDropped("subscriber dropped: too slow")
                if self._buffer:
                    return self._buffer.popleft()
                self._ready.clear()
            await self._ready.wait()

    def _offer(self, delta: FeedDelta) -> bool:
        """Buffer ``delta`` (any thread); False if the buffer is full, in which case
        the subscription is now dropped."""
        with self._lock:
            if self._closed:
                return True
            if len(self._buffer) >= self.maxsize:
                self.dropped = True
                self._closed = True
                self._buffer.clear()
                overflow = True
            else:
                self._buffer.append(delta)
                overflow = False
                if self._wake_pending:
                    return True
                self._wake_pending = True
        self._wake()
        return not overflow

    def _close(self) -> None:
        with self._lock:
            self._closed = True
            self._buffer.clear()

    def _wake(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._set_ready)
        except RuntimeError:
            # The loop is closed: its client is gone; unsubscribe will follow or the
            # subscription is garbage already.
            logger.debug("feed subscriber's loop is closed")

    def _set_ready(self) -> None:
        with self._lock:
            self._wake_pending = False
        self._ready.set()


class FeedBroker:
    """Fans deltas out to subscriptions; :meth:`publish` is thread-safe and never
    blocks (see the module docstring)."""

    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.queue_size = queue_size
        self._lock = threading.Lock()
        self._subscriptions: tuple[Subscription, ...] = ()

    @property
    def subscriber_count(self) -> int:
        """Subscriptions open now."""
        return len(self._subscriptions)

    def subscribe(
        self,
        *,
        sites: Iterable[str] | None = None,
        types: Iterable[str] | None = None,
    ) -> Subscription:
        """A new subscription bound to the running event loop (call it from a
        coroutine). ``sites``/``types``: None admits everything."""
        unknown = set(types or ()) - set(DELTA_TYPES)
        if unknown:
            raise ValueError(f"unknown delta types: {sorted(unknown)}")
        subscription = Subscription(
            asyncio.get_running_loop(),
            sites=frozenset(sites) if sites is not None else None,
            types=frozenset(types) if types is not None else None,
            maxsize=self.queue_size,
        )
        with self._lock:
            self._subscriptions = (*self._subscriptions, subscription)
        FEED_SUBSCRIBERS.inc()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Remove ``subscription`` (idempotent; a dropped one is already removed)."""
        subscription._close()
        self._remove(subscription)

    def publish(self, delta: FeedDelta) -> None:
        """Offer ``delta`` to every subscription that wants it; drop the ones whose
        buffer is full. Callable from any thread; never waits for a client."""
        for subscription in self._subscriptions:  # an immutable snapshot
            if subscription.wants(delta) and not subscription._offer(delta):
                if self._remove(subscription):
                    FEED_DROPPED.inc()
                    logger.warning(
                        "feed subscriber dropped: %d deltas waiting", subscription.maxsize
                    )

    def _remove(self, subscription: Subscription) -> bool:
        with self._lock:
            if subscription not in self._subscriptions:
                return False
            self._subscriptions = tuple(s for s in self._subscriptions if s is not subscription)
        FEED_SUBSCRIBERS.dec()
        return True


# -- from ingest to deltas -----------------------------------------------------------------


def delta_for_event(site_id: str, event: EventEnvelope, received_at: datetime) -> FeedDelta | None:
    """The delta of a newly stored event, or None for kinds the feed does not carry
    (check-ins). Sightings travel without their embedding and crop."""
    common: dict[str, Any] = {
        "event_id": event.event_id,
        "received_at": received_at.isoformat(),
        "replayed": event.replayed,
    }
    if isinstance(event, PositionEvent):
        kind: DeltaType = "position"
        data = common | event.body.model_dump(mode="json", exclude_none=True)
    elif isinstance(event, AlarmEvent):
        kind = "alarm"
        data = common | event.body.model_dump(mode="json", exclude_none=True)
    elif isinstance(event, SightingEvent):
        kind = "sighting"
        body = event.body
        data = common | {
            "model_id": body.model_id,
            "quality": body.quality.model_dump(mode="json", exclude_none=True),
            "bbox": list(body.bbox),
            "track_id": body.track_id,
            "frames_fused": body.frames_fused,
            "has_crop": body.crop_jpeg is not None,
        }
    else:
        return None
    return FeedDelta(
        type=kind,
        site_id=site_id,
        device_id=event.device_id,
        time=event.captured_at,
        data=data,
    )


def delta_for_state(site_id: str, device_id: str, state: DeviceState) -> FeedDelta:
    """The delta of an applied device state (online/offline, firmware, config)."""
    body = state.body
    return FeedDelta(
        type="device_state",
        site_id=site_id,
        device_id=device_id,
        time=state.sent_at,
        data={
            "status": body.status,
            "boot_id": state.boot_id,
            "fw": body.fw,
            "config_version": body.config_version,
            "config_error": body.config_error,
        },
    )


class FeedObserver:
    """The ingest observer (:class:`hub.ingest.EventObserver`) feeding a broker.

    Deltas carry the device's site so subscribers can filter by it; the site is
    looked up in the database on the first event of a device and kept for
    ``site_ttl_s`` seconds (a device moved to another site shows up there after at
    most that long; :meth:`forget` does it at once). Runs on ingest worker threads.
    """

    def __init__(self, engine: Engine, broker: FeedBroker, *, site_ttl_s: float = 300.0) -> None:
        self.engine = engine
        self.broker = broker
        self.site_ttl_s = site_ttl_s
        self._lock = threading.Lock()
        self._sites: dict[str, tuple[str, float]] = {}

    def site_of(self, device_id: str) -> str | None:
        """The site of a device (cached), None if it is not registered."""
        now = time.monotonic()
        with self._lock:
            cached = self._sites.get(device_id)
        if cached is not None and now - cached[1] < self.site_ttl_s:
            return cached[0]
        with Session(self.engine) as session:
            site_id = session.scalar(select(Device.site_id).where(Device.device_id == device_id))
        if site_id is None:
            return None
        with self._lock:
            self._sites[device_id] = (site_id, now)
        return site_id

    def forget(self, device_id: str | None = None) -> None:
        """Drop the cached site of one device, or of all with None."""
        with self._lock:
            if device_id is None:
                self._sites.clear()
            else:
                self._sites.pop(device_id, None)

    def on_event(self, message: EventEnvelope, received_at: datetime) -> None:
        """Publish a newly stored event; a sighting carries its candidates (ingest
        matches it before the observer runs). Nothing is built while nobody watches."""
        if not self.broker.subscriber_count:
            return
        site_id = self.site_of(message.device_id)
        if site_id is None:
            logger.debug("no site for %s; event not fed", message.device_id)
            return
        delta = delta_for_event(site_id, message, received_at)
        if delta is None:
            return
        if isinstance(message, SightingEvent):
            delta = delta.model_copy(
                update={"data": delta.data | self._sighting_candidates(message)}
            )
        self.broker.publish(delta)

    def _sighting_candidates(self, message: SightingEvent) -> dict[str, Any]:
        """The stored sighting's id and its candidates, best first."""
        with Session(self.engine) as session:
            sighting_id = session.scalar(
                select(Sighting.id).where(
                    Sighting.device_id == message.device_id,
                    Sighting.event_id == message.event_id,
                )
            )
            rows = session.execute(
                select(SightingCandidate, Person.display_name, Person.category)
                .join(Person, Person.id == SightingCandidate.person_id)
                .where(SightingCandidate.sighting_id == sighting_id)
                .order_by(SightingCandidate.rank)
            ).all()
        return {
            "sighting_id": sighting_id,
            "candidates": [
                {
                    "person_id": candidate.person_id,
                    "display_name": name,
                    "category": category,
                    "gallery": candidate.gallery,
                    "score": round(candidate.score, 4),
                    "rank": candidate.rank,
                }
                for candidate, name, category in rows
            ],
        }

    def on_alert(self, alert: dict[str, Any]) -> None:
        """Publish an alert the supervision engine raised or cleared (its public JSON
        form, :class:`hub.alerts.AlertPublic`)."""
        device_id = str(alert["device_id"])
        site_id = self.site_of(device_id)
        if site_id is None:
            logger.debug("no site for %s; alert not fed", device_id)
            return
        at = alert.get("cleared_at") or alert["raised_at"]
        self.broker.publish(
            FeedDelta(
                type="alert",
                site_id=site_id,
                device_id=device_id,
                time=datetime.fromisoformat(at) if isinstance(at, str) else at,
                data=alert,
            )
        )

    def on_device_state(self, device_id: str, state: DeviceState) -> None:
        """Publish an applied device state (nothing while nobody watches)."""
        if not self.broker.subscriber_count:
            return
        site_id = self.site_of(device_id)
        if site_id is None:
            logger.debug("no site for %s; state not fed", device_id)
            return
        self.broker.publish(delta_for_state(site_id, device_id, state))
