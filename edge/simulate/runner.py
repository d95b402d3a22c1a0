"""A fleet of simulated wearables on real MQTT connections, all on one asyncio loop.

:func:`plan_fleet` turns the options of ``lantern devices simulate`` into a
:class:`FleetPlan` (site, profile with the reporting interval the rate asks for,
scenario mix, device ids) and checks it by building the fleet once, so a bad mix or
a site that cannot play a scenario is refused before any connection is made.

:class:`FleetRunner` then runs the plan: one :class:`~edge.comms.mqtt.ClientPool`
client per device (client id and username = device id, retained ``online`` birth and
``offline`` will, subscribed to the device's own ``ack`` topic), connected at a
bounded rate; a :class:`~devices.simulation.Scheduler` on a real-time clock steps the
:class:`~devices.simulation.WearableSimulator` of every device; each emission is
wrapped by the device's :class:`~devices.simulation.EnvelopeFactory` (its boot id and
``seq``) and published with the QoS of :data:`devices.protocol.DELIVERY`.

What is counted (:class:`Tally`)
    ``sent``: events (``evt``, QoS 1) the broker acknowledged with PUBACK.
    ``acked``: those of them named by the hub in an ``ack`` of the device
    (``event_ids`` or ``rejected``). ``outstanding`` = ``sent`` - ``acked``: the ids
    are held in memory per device. A simulated device has no outbox: an event that
    could not be published (not connected, connection lost before PUBACK, refused)
    is counted as ``unsent`` and never retried, and the hub sees a ``seq`` gap.
    Telemetry (QoS 0, never acked) is counted apart.

The rate
    ``rate`` is events per second across the fleet. Every device reports a position
    every ``devices / rate`` seconds instead of its profile's interval; the clock is
    the wall clock, so walking speeds, timestamps and scenario timings stay real (a
    sped-up clock would put ``captured_at`` ahead of the hub's clock, refused as
    ``bad_clock``, and make every wearer look like a car). Positions are most of the
    events; alarms add a few, silent and flat-battery devices remove a few once
    their scenario gets there (minutes to an hour in). Without a rate, devices
    report at their profile's interval (the fleet's natural rate).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import resource
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from devices.firmware import WearableProfile
from devices.protocol import (
    DELIVERY,
    Ack,
    DeviceState,
    ProtocolError,
    StateBody,
    Telemetry,
    ack_topic,
    decode,
    encode,
    state_topic,
    topic_for,
)
from devices.simulation import (
    Emission,
    EnvelopeFactory,
    RealClock,
    Scheduler,
    SiteMap,
    WearableSimulator,
    build_fleet,
    site_profile,
)
from edge.agent import firmware_version
from edge.comms.mqtt import (
    ClientPool,
    LinkError,
    MqttSettings,
    OutgoingMessage,
    PooledClient,
    RawMessage,
)

__all__ = [
    "FD_HEADROOM",
    "FdLimitError",
    "FleetPlan",
    "FleetRunner",
    "PlanError",
    "Progress",
    "RatePlan",
    "RunResult",
    "Tally",
    "ensure_fd_limit",
    "parse_mix",
    "plan_fleet",
    "plan_rate",
]

logger = logging.getLogger(__name__)

FD_HEADROOM = 128
"""File descriptors kept free beside one per client (stdio, the event loop, the
connect threads, logs)."""

_FOREVER = timedelta(days=365 * 100)
_RATE_WINDOW_S = 5.0


class PlanError(ValueError):
    """Options that cannot make a fleet: a bad mix, a rate below the heartbeat floor."""


class FdLimitError(RuntimeError):
    """The process may not open enough file descriptors for its clients."""


# -- planning ----------------------------------------------------------------------------


def parse_mix(text: str) -> dict[str, float]:
    """``"walk=0.7,sos=0.1"`` to ``{"walk": 0.7, "sos": 0.1}``; a bare name weighs 1.
    Names are checked later, against the presets (:func:`plan_fleet`)."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        item = part.strip()
        if not item:
            continue
        name, sep, weight_text = item.partition("=")
        name = name.strip()
        if not name:
            raise PlanError(f"mix entry {item!r} has no scenario name")
        try:
            weight = float(weight_text) if sep else 1.0
        except ValueError:
            raise PlanError(f"mix entry {item!r}: weight is not a number") from None
        if name in mix:
            raise PlanError(f"scenario {name!r} appears twice in the mix")
        mix[name] = weight
    if not mix:
        raise PlanError("the mix is empty; give NAME=WEIGHT pairs separated by commas")
    return mix


@dataclass(frozen=True)
class RatePlan:
    """How often each device reports a position, and what that makes for the fleet."""

    devices: int
    profile_interval_s: float
    """The profile's ``report_interval_s.normal``."""
    interval_s: float
    """The interval the devices use."""
    heartbeat_s: float

    @property
    def natural_rate(self) -> float:
        """Positions per second of the fleet at the profile's interval."""
        return self.devices / self.profile_interval_s

    @property
    def rate(self) -> float:
        """Positions per second of the fleet as planned."""
        return self.devices / self.interval_s

    @property
    def scaled(self) -> bool:
        """Whether the interval differs from the profile's."""
        return self.interval_s != self.profile_interval_s

    def apply(self, profile: WearableProfile) -> WearableProfile:
        """``profile`` with the planned interval (the in-violation one scaled alike).

        The copy is not validated again: profiles count whole seconds from 1 up,
        while a load run may need a device to report every 0.2 s; the simulator reads
        the intervals as float seconds."""
        if not self.scaled:
            return profile
        intervals = profile.report_interval_s
        factor = self.interval_s / self.profile_interval_s
        scaled = intervals.model_copy(
            update={"normal": self.interval_s, "in_violation": intervals.in_violation * factor}
        )
        return profile.model_copy(update={"report_interval_s": scaled})


def plan_rate(devices: int, profile: WearableProfile, rate: float | None) -> RatePlan:
    """The reporting interval for ``rate`` events/s across ``devices`` (the profile's
    own interval when ``rate`` is None); :class:`PlanError` when the rate is so low
    that the devices' check-ins, due after ``heartbeat_s`` of silence, would exceed
    it, or so high that a device would report more than 1000 times a second."""
    normal = float(profile.report_interval_s.normal)
    heartbeat = float(profile.heartbeat_s)
    if rate is None:
        return RatePlan(devices, normal, normal, heartbeat)
    if not rate > 0:
        raise PlanError(f"--rate must be positive, not {rate:g}")
    interval = devices / rate
    if interval >= heartbeat:
        raise PlanError(
            f"--rate {rate:g} is too low for {devices} devices: each would report every "
            f"{interval:g} s, and a device sends a check-in after {heartbeat:g} s without "
            f"an event; the lowest rate is above {devices / heartbeat:.4g} events/s"
        )
    if interval < 0.001:
        raise PlanError(
            f"--rate {rate:g} would have each of {devices} devices report every "
            f"{interval * 1000:.3g} ms; use more devices (at most 1000 events/s each)"
        )
    return RatePlan(devices, normal, interval, heartbeat)


@dataclass(frozen=True)
class FleetPlan:
    """A checked fleet: build it with :meth:`build` when the clock starts."""

    site: SiteMap
    profile: WearableProfile
    """The site's profile with the planned interval (:meth:`RatePlan.apply`)."""
    rate: RatePlan
    count: int
    mix: Mapping[str, float] | None
    seed: int
    id_prefix: str | None
    device_ids: tuple[str, ...]
    scenarios: Mapping[str, int]
    """How many devices play each scenario."""

    def build(self, start: datetime) -> list[WearableSimulator]:
        """The fleet, starting at ``start`` (same ids and scenarios every time)."""
        return build_fleet(
            self.site,
            self.count,
            start=start,
            mix=self.mix,
            seed=self.seed,
            profile=self.profile,
            id_prefix=self.id_prefix,
        )


def plan_fleet(
    site: SiteMap,
    count: int,
    *,
    mix: Mapping[str, float] | None = None,
    seed: int = 0,
    id_prefix: str | None = None,
    rate: float | None = None,
    profile: WearableProfile | None = None,
) -> FleetPlan:
    """Check the options by building the fleet once; :class:`PlanError` says what is
    wrong (unknown scenario, one the site or profile cannot play, bad rate or ids)."""
    if count < 1:
        raise PlanError("--count must be at least 1")
    try:
        base = profile if profile is not None else site_profile(site)
    except (OSError, ValueError) as exc:
        raise PlanError(f"no wearable profile for site {site.id!r}: {exc}") from None
    rates = plan_rate(count, base, rate)
    scaled = rates.apply(base)
    try:
        fleet = build_fleet(
            site,
            count,
            start=datetime.now(UTC),
            mix=mix,
            seed=seed,
            profile=scaled,
            id_prefix=id_prefix,
        )
    except ValueError as exc:  # unknown scenario, ScenarioError, ProtocolError (ids)
        raise PlanError(str(exc)) from None
    return FleetPlan(
        site=site,
        profile=scaled,
        rate=rates,
        count=count,
        mix=dict(mix) if mix is not None else None,
        seed=seed,
        id_prefix=id_prefix,
        device_ids=tuple(d.device_id for d in fleet),
        scenarios=dict(Counter(d.scenario.name for d in fleet)),
    )


def ensure_fd_limit(clients: int) -> tuple[int, int]:
    """Make sure this process may open a descriptor per client plus
    :data:`FD_HEADROOM`: raise the soft ``RLIMIT_NOFILE`` towards the hard limit if
    needed; :class:`FdLimitError` when even the hard limit is too low. Returns the
    (soft, hard) limits in force."""
    needed = clients + FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinite = resource.RLIM_INFINITY
    if soft != infinite and soft < needed:
        target = needed if hard == infinite else min(hard, needed)
        if target > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            logger.info("raised the open-file limit from %d to %d", soft, target)
            soft = target
    if soft != infinite and soft < needed:
        raise FdLimitError(
            f"{clients} clients need {needed} open files but the hard limit is {hard}; "
            f"raise it (ulimit -Hn, or LimitNOFILE= for a service) or use fewer devices"
        )
    return soft, hard


# -- counting ----------------------------------------------------------------------------


@dataclass
class Tally:
    """What the fleet did so far (see the module docstring for the meanings)."""

    produced: int = 0
    """Events the simulators emitted and the runner tried to publish."""
    sent: int = 0
    acked: int = 0
    rejected: int = 0
    """Of ``acked``, those the hub listed as ``rejected``."""
    unsent: int = 0
    telemetry: int = 0
    telemetry_unsent: int = 0
    acks: int = 0
    """Ack messages received."""
    acks_invalid: int = 0
    """Messages on an ack topic that did not decode as an ack."""
    ack_unknown: int = 0
    """Ids in acks that named no event awaiting one (duplicates, an earlier run)."""

    @property
    def outstanding(self) -> int:
        """Events sent and not yet acked."""
        return self.sent - self.acked


@dataclass
class _Device:
    """One simulated device's connection and its events in flight."""

    device_id: str
    factory: EnvelopeFactory
    client: PooledClient | None = None
    publishing: set[str] = field(default_factory=set)
    """Event ids published, PUBACK not yet in."""
    unacked: set[str] = field(default_factory=set)
    """Event ids PUBACKed, not yet acked by the hub."""
    early: set[str] = field(default_factory=set)
    """Event ids the hub acked before their PUBACK was seen."""


Phase = Literal["connecting", "running", "draining", "closing", "done"]


@dataclass(frozen=True)
class Progress:
    """A snapshot for the progress display."""

    phase: Phase
    elapsed_s: float
    """Seconds since the devices started reporting (0 while connecting)."""
    devices: int
    connected: int
    sent: int
    acked: int
    outstanding: int
    unsent: int
    rate: float
    """Events sent per second over the last few seconds; over the whole run once
    reporting has stopped."""
    target_rate: float
    lag_s: float
    """How late the latest step ran behind its due time."""


@dataclass(frozen=True)
class RunResult:
    """The outcome of a run."""

    devices: int
    connected: int
    """Devices connected when the run ended (before closing)."""
    connected_max: int
    run_s: float
    """Seconds the devices were reporting (drain not included)."""
    target_rate: float
    achieved_rate: float
    """``sent`` / ``run_s``."""
    produced: int
    sent: int
    acked: int
    outstanding: int
    rejected: int
    unsent: int
    telemetry: int
    ack_unknown: int
    max_lag_s: float
    interrupted: bool
    """Stopped by a signal before the planned duration."""

    def final_line(self) -> str:
        """``sent=<n> acked=<n> outstanding=<n>``."""
        return f"sent={self.sent} acked={self.acked} outstanding={self.outstanding}"

    def as_dict(self) -> dict[str, Any]:
        """The result as plain JSON data."""
        return asdict(self)


# -- the runner --------------------------------------------------------------------------


class FleetRunner:
    """Runs a :class:`FleetPlan` against a broker (see the module docstring).

    Use from one asyncio loop: ``await runner.run(...)``; :meth:`request_stop` (a
    signal handler on the loop) ends the reporting early, a second call also skips
    waiting for acks. Each device logs in as ``username_prefix`` + its device id
    (None: the username of ``settings``, for all); ``connect_timeout_s`` bounds the
    wait for connections before reporting starts (default 15 s plus twice the time
    ``connect_rate`` needs).
    """

    def __init__(
        self,
        plan: FleetPlan,
        settings: MqttSettings,
        *,
        duration_s: float | None = None,
        drain_s: float = 5.0,
        connect_rate: float = 200.0,
        connect_timeout_s: float | None = None,
        close_timeout_s: float = 5.0,
        username_prefix: str | None = "",
        hw_model: str | None = None,
    ) -> None:
        if connect_rate <= 0:
            raise ValueError("connect_rate must be positive")
        self.plan = plan
        self.settings = settings
        self.duration_s = duration_s
        self.drain_s = drain_s
        self.connect_rate = connect_rate
        self.connect_timeout_s = (
            connect_timeout_s
            if connect_timeout_s is not None
            else 15.0 + 2.0 * plan.count / connect_rate
        )
        self.close_timeout_s = close_timeout_s
        self.username_prefix = username_prefix
        self.hw_model = hw_model if hw_model is not None else plan.site.wearable_model
        self.fw = firmware_version()
        self.tally = Tally()
        self.phase: Phase = "connecting"
        self._devices = {
            device_id: _Device(device_id, EnvelopeFactory(device_id))
            for device_id in plan.device_ids
        }
        self._stop = asyncio.Event()
        self._stop_requests = 0
        self._scheduler: Scheduler[Emission] | None = None
        self._run_started: float | None = None
        self._run_ended: float | None = None
        self._recent: deque[tuple[float, int]] = deque()
        self._lag_s = 0.0
        self._max_lag_s = 0.0
        self._connected_max = 0

    # -- control

    def request_stop(self) -> None:
        """Stop reporting (then drain, say offline, disconnect); called twice, skip the
        drain as well."""
        self._stop_requests += 1
        self._stop.set()
        if self._scheduler is not None:
            self._scheduler.stop()
        logger.info("stop requested (%d)", self._stop_requests)

    def connected(self) -> int:
        """Devices connected now."""
        return sum(1 for d in self._devices.values() if d.client is not None and d.client.connected)

    def progress(self) -> Progress:
        """A snapshot of the run."""
        now = time.monotonic()
        tally = self.tally
        self._recent.append((now, tally.sent))
        while len(self._recent) > 2 and now - self._recent[0][0] > _RATE_WINDOW_S:
            self._recent.popleft()
        first_t, first_sent = self._recent[0]
        span = now - first_t
        rate = (tally.sent - first_sent) / span if span > 0 else 0.0
        started = self._run_started
        elapsed = 0.0 if started is None else (self._run_ended or now) - started
        if self.phase not in ("connecting", "running"):
            rate = tally.sent / elapsed if elapsed > 0 else 0.0  # the run's, once it is over
        return Progress(
            phase=self.phase,
            elapsed_s=elapsed,
            devices=len(self._devices),
            connected=self.connected(),
            sent=tally.sent,
            acked=tally.acked,
            outstanding=tally.outstanding,
            unsent=tally.unsent,
            rate=rate,
            target_rate=self.plan.rate.rate,
            lag_s=self._lag_s,
        )

    async def run(
        self,
        on_progress: Callable[[Progress], None] | None = None,
        *,
        progress_every_s: float = 1.0,
    ) -> RunResult:
        """Connect, report for ``duration_s`` (or until stopped), drain, close."""
        pool = ClientPool(self.settings, connect_concurrency=32)
        reporter: asyncio.Task[None] | None = None
        if on_progress is not None:
            reporter = asyncio.create_task(self._report(on_progress, progress_every_s))
        connected_at_end = 0
        try:
            await self._connect_all(pool)
            if not self._stop.is_set() and self.connected() > 0:
                await self._report_events()
            self._connected_max = max(self._connected_max, self.connected())
            await self._drain()
            connected_at_end = self.connected()
            self.phase = "closing"
        finally:
            try:
                await pool.close(self.close_timeout_s)
            finally:
                self.phase = "done"
                if reporter is not None:
                    reporter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await reporter
                if on_progress is not None:
                    on_progress(self.progress())
        return self._result(connected_at_end)

    # -- phases

    async def _connect_all(self, pool: ClientPool) -> None:
        """Add the clients at ``connect_rate`` per second, then wait (bounded) until
        all are connected."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        gap = 1.0 / self.connect_rate
        for index, device in enumerate(self._devices.values()):
            if self._stop.is_set():
                return
            due = started + index * gap
            delay = due - loop.time()
            if delay > 0.005:
                await asyncio.sleep(delay)
            device.client = pool.add(
                device.device_id,
                will=functools.partial(self._state_message, device, "offline"),
                birth=functools.partial(self._state_message, device, "online"),
                farewell=functools.partial(self._state_message, device, "offline"),
                subscriptions=[(ack_topic(device.device_id), DELIVERY["ack"].qos)],
                on_message=self._on_message,
                username=None
                if self.username_prefix is None
                else self.username_prefix + device.device_id,
            )
        deadline = started + self.connect_timeout_s
        total = len(self._devices)
        while not self._stop.is_set():
            connected = self.connected()
            if connected >= total:
                break
            if loop.time() >= deadline:
                logger.warning(
                    "%d of %d devices connected after %.0f s; going on without the others "
                    "(they keep trying)",
                    connected,
                    total,
                    self.connect_timeout_s,
                )
                break
            await asyncio.sleep(0.05)
        self._connected_max = self.connected()
        logger.info(
            "%d of %d devices connected in %.2f s",
            self._connected_max,
            total,
            loop.time() - started,
        )

    async def _report_events(self) -> None:
        """Step the fleet on a real-time clock until the duration ends or a stop."""
        self.phase = "running"
        clock = RealClock()
        # The fleet starts at the clock's start; building it takes a moment of real
        # time, so the clock is made first and simulated time never trails the wall.
        fleet = self.plan.build(clock.now())
        scheduler: Scheduler[Emission] = Scheduler(fleet, clock=clock)
        self._scheduler = scheduler
        until = timedelta(seconds=self.duration_s) if self.duration_s is not None else _FOREVER
        self._run_started = time.monotonic()
        try:
            stats = await scheduler.run(until, self._sink, contain_errors=True)
        finally:
            self._run_ended = time.monotonic()
            self._scheduler = None
        self._max_lag_s = max(self._max_lag_s, stats.max_lag_s)

    async def _drain(self) -> None:
        """Wait up to ``drain_s`` for the acks of what is outstanding."""
        self.phase = "draining"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_s
        while loop.time() < deadline and self._stop_requests < 2:
            if self.tally.outstanding == 0 and not any(
                d.publishing for d in self._devices.values()
            ):
                return
            await asyncio.sleep(0.05)
        if self.tally.outstanding:
            logger.info("%d events still not acked after the drain", self.tally.outstanding)

    async def _report(self, on_progress: Callable[[Progress], None], every_s: float) -> None:
        while True:
            try:
                on_progress(self.progress())
            except Exception:
                logger.exception("progress display failed")
            await asyncio.sleep(every_s)

    def _result(self, connected: int) -> RunResult:
        tally = self.tally
        started = self._run_started
        run_s = 0.0 if started is None else (self._run_ended or time.monotonic()) - started
        planned = self.duration_s
        interrupted = self._stop_requests > 0 and (planned is None or run_s < planned - 0.5)
        return RunResult(
            devices=len(self._devices),
            connected=connected,
            connected_max=self._connected_max,
            run_s=round(run_s, 3),
            target_rate=round(self.plan.rate.rate, 3),
            achieved_rate=round(tally.sent / run_s, 3) if run_s > 0 else 0.0,
            produced=tally.produced,
            sent=tally.sent,
            acked=tally.acked,
            outstanding=tally.outstanding,
            rejected=tally.rejected,
            unsent=tally.unsent,
            telemetry=tally.telemetry,
            ack_unknown=tally.ack_unknown,
            max_lag_s=round(self._max_lag_s, 3),
            interrupted=interrupted,
        )

    # -- messages

    def _state_message(
        self, device: _Device, status: Literal["online", "offline"]
    ) -> OutgoingMessage:
        state = DeviceState(
            device_id=device.device_id,
            boot_id=device.factory.boot_id,
            sent_at=datetime.now(UTC),
            body=StateBody(status=status, fw=self.fw, hw_model=self.hw_model),
        )
        delivery = DELIVERY["state"]
        return OutgoingMessage(
            state_topic(device.device_id),
            encode(state),
            qos=delivery.qos,
            retain=delivery.retain,
            expiry_s=delivery.expiry_s,
        )

    def _sink(self, device_id: str, emission: Emission) -> None:
        """Wrap an emission in its device's envelope and publish it (no waiting)."""
        device = self._devices[device_id]
        now = datetime.now(UTC)
        lag = (now - emission.captured_at).total_seconds()
        self._lag_s = lag
        self._max_lag_s = max(self._max_lag_s, lag)
        message = device.factory.wrap(emission, sent_at=now)
        payload = encode(message)
        topic = topic_for(message)
        client = device.client
        if isinstance(message, Telemetry):
            delivery = DELIVERY["tele"]
            if client is None:
                self.tally.telemetry_unsent += 1
                return
            client.publish_nowait(
                topic, payload, qos=delivery.qos, expiry_s=delivery.expiry_s
            ).add_done_callback(self._telemetry_done)
            return
        self.tally.produced += 1
        if client is None:
            self.tally.unsent += 1
            return
        event_id = message.event_id
        device.publishing.add(event_id)
        future = client.publish_nowait(topic, payload, qos=DELIVERY["evt"].qos)
        future.add_done_callback(functools.partial(self._puback, device, event_id))

    def _telemetry_done(self, future: asyncio.Future[None]) -> None:
        if future.cancelled() or future.exception() is not None:
            self.tally.telemetry_unsent += 1
        else:
            self.tally.telemetry += 1

    def _puback(self, device: _Device, event_id: str, future: asyncio.Future[None]) -> None:
        device.publishing.discard(event_id)
        if future.cancelled() or future.exception() is not None:
            device.early.discard(event_id)
            self.tally.unsent += 1
            if not future.cancelled():
                error = future.exception()
                if not isinstance(error, LinkError):
                    logger.warning("%s: publish failed: %s", device.device_id, error)
            return
        self.tally.sent += 1
        if event_id in device.early:
            device.early.discard(event_id)
            self.tally.acked += 1
        else:
            device.unacked.add(event_id)

    def _on_message(self, client: PooledClient, raw: RawMessage) -> None:
        """An ack for one of our devices: settle the events it names."""
        device = self._devices.get(client.client_id)
        if device is None:
            return
        try:
            decoded = decode(raw.topic, raw.payload)
        except ProtocolError as exc:
            self.tally.acks_invalid += 1
            logger.debug("%s: unreadable message on %s: %s", device.device_id, raw.topic, exc)
            return
        ack = decoded.message
        if not isinstance(ack, Ack) or ack.device_id != device.device_id:
            self.tally.acks_invalid += 1
            return
        self.tally.acks += 1
        body = ack.body
        for event_id, rejected in (
            *((e, False) for e in body.event_ids),
            *((r.event_id, True) for r in body.rejected),
        ):
            if event_id in device.unacked:
                device.unacked.discard(event_id)
                self.tally.acked += 1
                self.tally.rejected += rejected
            elif event_id in device.publishing:
                device.early.add(event_id)
                self.tally.rejected += rejected
            else:
                self.tally.ack_unknown += 1
