"""One asyncio task drives many simulated devices: a heap of next-due times.

Simulated devices are state machines (:class:`SimulatedDevice`): ``next_due()`` says
when one next has work, ``step(now)`` does it and returns what it emitted. The
:class:`Scheduler` keeps one heap entry per device, sleeps until the earliest is due,
steps that device, hands each emission to the sink and pushes the device back with
its new due time. A thousand devices cost a thousand heap entries, not a thousand
threads or tasks; the sink is awaited in turn, so each device's emissions reach it in
order.

The clock is pluggable. :class:`VirtualClock` jumps straight to the next due time
("fast-forward"): an hour of a thousand wearables runs in seconds, and tests replay
exactly. :class:`RealClock` sleeps for real, optionally ``speed`` times faster than
the wall clock, for load runs and the demo. The scheduler knows no transport: the
sink may publish over MQTT, append to a list or drop everything.

Everything here runs on one event loop thread: call :meth:`Scheduler.add`,
:meth:`~Scheduler.refresh` and :meth:`~Scheduler.stop` from that loop (a hub command
handler running on it, for instance).
"""

from __future__ import annotations

import asyncio
import heapq
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Generic, Protocol, TypeVar

__all__ = [
    "Clock",
    "RealClock",
    "RunStats",
    "Scheduler",
    "SimulatedDevice",
    "Sink",
    "VirtualClock",
]

logger = logging.getLogger(__name__)

E = TypeVar("E")
E_co = TypeVar("E_co", covariant=True)


class SimulatedDevice(Protocol[E_co]):
    """What the scheduler drives: a device id, when it is next due, and a step."""

    @property
    def device_id(self) -> str:
        """The device's id (protocol syntax)."""
        ...

    def next_due(self) -> datetime | None:
        """When the device next has work; None when it never will again."""
        ...

    def step(self, now: datetime) -> Sequence[E_co]:
        """Do the work due at or before ``now``; what it emitted, oldest first."""
        ...


Sink = Callable[[str, E], Awaitable[None] | None]
"""Receives (device id, emission); may be a plain function or a coroutine function."""


class Clock(Protocol):
    """Time for a scheduler: read it, and wait for it."""

    def now(self) -> datetime:
        """The current time (timezone-aware)."""
        ...

    async def sleep_until(self, when: datetime) -> None:
        """Return once ``now() >= when``."""
        ...


class VirtualClock:
    """Simulated time that jumps ahead when asked to wait: nothing waits for real."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValueError("start must be timezone-aware")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        """The simulated time."""
        return self._now

    async def sleep_until(self, when: datetime) -> None:
        """Move the time forward to ``when`` (never back)."""
        if when > self._now:
            self._now = when


class RealClock:
    """Wall-clock time, optionally sped up.

    ``now()`` is ``start`` (default: the wall clock when made) plus the monotonic time
    elapsed since, times ``speed``; so a wall-clock step (NTP) does not make the
    simulation jump, and ``speed=60`` runs an hour in a minute.
    """

    def __init__(self, start: datetime | None = None, *, speed: float = 1.0) -> None:
        if not speed > 0:
            raise ValueError("speed must be positive")
        if start is not None and (start.tzinfo is None or start.utcoffset() is None):
            raise ValueError("start must be timezone-aware")
        self.speed = speed
        self._start = (start or datetime.now(UTC)).astimezone(UTC)
        self._mono0 = time.monotonic()

    def now(self) -> datetime:
        """The simulated time now."""
        return self._start + timedelta(seconds=(time.monotonic() - self._mono0) * self.speed)

    async def sleep_until(self, when: datetime) -> None:
        """Sleep (really) until the simulated time reaches ``when``."""
        while True:
            delay = (when - self.now()).total_seconds() / self.speed
            if delay <= 0:
                return
            await asyncio.sleep(delay)


@dataclass
class RunStats:
    """What one :meth:`Scheduler.run` did."""

    started_at: datetime
    """Clock time when the run started."""
    ended_at: datetime | None = None
    """Clock time when it ended."""
    steps: int = 0
    """Device steps taken."""
    emissions: int = 0
    """Emissions handed to the sink."""
    by_device: dict[str, int] = field(default_factory=dict)
    """Emissions per device id."""
    finished_devices: int = 0
    """Devices that said they were done (next_due None) during the run."""
    errors: int = 0
    """Step or sink failures contained (only with ``contain_errors``)."""
    max_lag_s: float = 0.0
    """Largest delay between a step's due time and when it ran, clock seconds (real
    clocks only: a virtual clock never lags)."""
    wall_s: float = 0.0
    """Real seconds the run took."""


class Scheduler(Generic[E]):
    """Drives simulated devices on one asyncio loop (see the module docstring)."""

    def __init__(
        self,
        devices: Iterable[SimulatedDevice[E]] = (),
        *,
        clock: Clock,
        yield_every: int = 200,
    ) -> None:
        self.clock = clock
        self._yield_every = max(1, yield_every)
        self._devices: dict[str, SimulatedDevice[E]] = {}
        self._generation: dict[str, int] = {}
        self._heap: list[tuple[datetime, int, str, int]] = []
        self._order = 0
        self._sleeper: asyncio.Future[None] | None = None
        self._stopping = False
        for device in devices:
            self.add(device)

    def __len__(self) -> int:
        return len(self._devices)

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._devices

    def device(self, device_id: str) -> SimulatedDevice[E]:
        """The device with this id; KeyError if it is not scheduled."""
        return self._devices[device_id]

    def _push(self, device_id: str) -> None:
        device = self._devices[device_id]
        due = device.next_due()
        if due is None:
            return
        self._order += 1
        heapq.heappush(self._heap, (due, self._order, device_id, self._generation[device_id]))

    def _wake(self) -> None:
        if self._sleeper is not None and not self._sleeper.done():
            self._sleeper.cancel()

    def add(self, device: SimulatedDevice[E]) -> None:
        """Schedule a device; ValueError if its id is already scheduled."""
        if device.device_id in self._devices:
            raise ValueError(f"device {device.device_id!r} is already scheduled")
        self._devices[device.device_id] = device
        self._generation[device.device_id] = 0
        self._push(device.device_id)
        self._wake()

    def remove(self, device_id: str) -> None:
        """Stop driving a device (its heap entry is ignored from now on)."""
        self._devices.pop(device_id)
        self._generation.pop(device_id)

    def refresh(self, device_id: str) -> None:
        """Re-read a device's next due time after changing it from outside (e.g.
        ``set_violation``); its old heap entry is dropped lazily."""
        self._generation[device_id] += 1
        self._push(device_id)
        self._wake()

    def stop(self) -> None:
        """Make a running :meth:`run` return soon (after the current step)."""
        self._stopping = True
        self._wake()

    async def _sleep_until(self, when: datetime) -> bool:
        """Wait for the clock; False if woken early by add/refresh/stop."""
        if isinstance(self.clock, VirtualClock):
            # Nothing really waits: jump, without the cost of a task per step.
            await self.clock.sleep_until(when)
            return True
        sleeper = asyncio.ensure_future(self.clock.sleep_until(when))
        self._sleeper = sleeper
        try:
            await sleeper
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            return False
        finally:
            self._sleeper = None
        return True

    async def run(
        self,
        until: datetime | timedelta,
        sink: Sink[E],
        *,
        contain_errors: bool = False,
    ) -> RunStats:
        """Drive the devices until the clock reaches ``until`` (a time, or a duration
        from now), handing every emission to ``sink``.

        Returns at ``until`` even when nothing is due before it (a real clock sleeps
        until then), or early after :meth:`stop`. May be called again to continue.
        With ``contain_errors`` a device whose step raises is logged and dropped and a
        sink failure is logged, both counted in :attr:`RunStats.errors`; without it
        they propagate.
        """
        clock = self.clock
        started = clock.now()
        end = started + until if isinstance(until, timedelta) else until
        stats = RunStats(started_at=started)
        wall0 = time.perf_counter()
        self._stopping = False
        since_yield = 0
        while not self._stopping:
            if not self._heap or self._heap[0][0] > end:
                if await self._sleep_until(end):
                    break
                continue
            due = self._heap[0][0]
            if due > clock.now() and not await self._sleep_until(due):
                continue
            due, _, device_id, generation = heapq.heappop(self._heap)
            if self._generation.get(device_id) != generation:
                continue
            device = self._devices[device_id]
            now = clock.now()
            stats.max_lag_s = max(stats.max_lag_s, (now - due).total_seconds())
            try:
                emissions = device.step(min(now, end))
            except Exception:
                if not contain_errors:
                    raise
                logger.exception("simulated device %s failed; dropping it", device_id)
                stats.errors += 1
                self.remove(device_id)
                continue
            stats.steps += 1
            self._push(device_id)
            if device.next_due() is None:
                stats.finished_devices += 1
            for emission in emissions:
                try:
                    result = sink(device_id, emission)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    if not contain_errors:
                        raise
                    logger.exception("sink failed for an emission of %s", device_id)
                    stats.errors += 1
                    continue
                stats.emissions += 1
                stats.by_device[device_id] = stats.by_device.get(device_id, 0) + 1
            since_yield += 1
            if since_yield >= self._yield_every:
                since_yield = 0
                await asyncio.sleep(0)
        stats.ended_at = clock.now()
        stats.wall_s = time.perf_counter() - wall0
        logger.info(
            "simulation ran %s to %s: %d steps, %d emissions from %d devices in %.2f s "
            "(max lag %.3f s, %d errors)",
            stats.started_at.isoformat(),
            stats.ended_at.isoformat(),
            stats.steps,
            stats.emissions,
            len(stats.by_device),
            stats.wall_s,
            stats.max_lag_s,
            stats.errors,
        )
        return stats
