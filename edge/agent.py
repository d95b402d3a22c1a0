"""The runtime every edge agent shares: outbox, link, config, presence, the send loop.

An :class:`EdgeAgent` runs on one thread (:meth:`EdgeAgent.run`); its
:class:`~edge.comms.mqtt.EdgeLink` runs the network on another, and the two meet
only through the link's queues. Subclasses make the data: :meth:`EdgeAgent.tick` is
called on the agent thread and calls :meth:`EdgeAgent.emit_event` and
:meth:`EdgeAgent.emit_telemetry`; :meth:`EdgeAgent.profile_changed` and
:meth:`EdgeAgent.handle_command` react to the hub.

Sending
    Every event is committed to the outbox before it is published. While connected,
    the agent keeps at most ``window`` events in flight (sent, not yet acked by the
    hub), oldest first. An event not acked within ``resend_after_s`` is sent again,
    and after a reconnect everything in flight is sent again; a resend, an event
    captured while the link was down, and an event of an earlier boot go out with
    ``replayed: true`` and a new ``sent_at`` (:func:`edge.outbox.restamp`). The hub's
    ``ack`` deletes rows (``event_ids`` and ``rejected``); PUBACK only frees the
    slot for telemetry, which is QoS 0 and never acked.

Configuration
    The retained ``config`` the hub publishes is applied when its ``sha256`` differs
    from the applied one and its ``version`` is higher: the ``config`` object is
    validated as a firmware profile (:func:`devices.firmware.parse_profile`), must be
    of the agent's family and suit the device model (:func:`devices.firmware.verify_profile`),
    and pass the subclass's own check (:meth:`EdgeAgent.check_profile`, e.g. a camera's
    face model). An invalid one is refused: the old profile stays in force, the retained
    state keeps reporting the old version and sha256 (so the hub sees the device did not
    take the new one), and the reason is logged, kept in :attr:`EdgeAgent.config_error`
    and published in the retained state's ``config_error`` (at most
    :data:`~devices.protocol.bodies.MAX_CONFIG_ERROR_CHARS` characters). That field goes
    away when a pushed config is applied, or when the hub pushes the config already in
    force again (the refused one is then no longer asked for). The applied config is
    stored in the outbox file's ``meta`` and used again after a restart. Outbox limits
    take effect at once; the MQTT keep-alive at the next start.

Events made on other threads
    The outbox belongs to the agent thread. A producer running on a thread of its own
    (the camera's frame loop) hands events over with :meth:`EdgeAgent.post_event`,
    which only queues the event's maker; the agent thread commits queued makers to the
    outbox, in order, on every turn of its loop and once more at shutdown, before the
    outbox closes. An event is therefore in memory only between its making and the
    next turn of the loop (at most ``idle_wait_s``).
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal, TextIO

from pydantic import BaseModel, ConfigDict, Field

from devices.catalog import DeviceModel
from devices.firmware import (
    CameraProfile,
    ConfigError,
    HomeBeaconProfile,
    WearableProfile,
    parse_profile,
    verify_profile,
)
from devices.protocol import (
    DELIVERY,
    Ack,
    AlarmBody,
    AlarmEvent,
    CheckinBody,
    CheckinEvent,
    Command,
    ConfigMessage,
    DeviceState,
    EventEnvelope,
    PositionBody,
    PositionEvent,
    SightingBody,
    SightingEvent,
    StateBody,
    Telemetry,
    TelemetryBody,
    encode,
    new_event_id,
)
from devices.protocol.bodies import MAX_CONFIG_ERROR_CHARS
from edge.comms.mqtt import (
    Connected,
    Disconnected,
    EdgeLink,
    LinkEvent,
    MqttSettings,
    Received,
)
from edge.outbox import (
    AlarmState,
    Outbox,
    OutboxError,
    OutboxLimits,
    OutboxRow,
    PutResult,
    restamp,
)

__all__ = [
    "AgentCounters",
    "AgentTuning",
    "AppliedConfig",
    "EdgeAgent",
    "EventMaker",
    "Profile",
    "firmware_version",
]

logger = logging.getLogger(__name__)

Profile = WearableProfile | CameraProfile | HomeBeaconProfile
Body = PositionBody | AlarmBody | CheckinBody | SightingBody

EventMaker = Callable[[str, int], EventEnvelope]
"""``make(boot_id, seq) -> event``, as :meth:`edge.outbox.Outbox.put_event` takes it."""

_MAX_POSTED_PER_TURN = 1000
"""Most posted events one turn of the loop commits (the rest wait for the next turn)."""


def firmware_version() -> str:
    """The version reported as ``fw``: the installed Lantern distribution's."""
    try:
        return version("lantern-platform")
    except PackageNotFoundError:
        return "0.0.0"


class AgentTuning(BaseModel):
    """How the send loop behaves; the defaults suit a device, tests shorten them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: int = Field(64, ge=1, le=10_000, description="Events in flight (unacked) at once.")
    resend_after_s: float = Field(
        15.0, gt=0, le=3_600, description="Resend an event not acked after this long."
    )
    close_timeout_s: float = Field(
        5.0, gt=0, le=120, description="Time allowed to publish offline and disconnect."
    )
    idle_wait_s: float = Field(
        0.25, gt=0, le=5, description="Longest the loop sleeps with nothing due."
    )


@dataclass(frozen=True)
class AppliedConfig:
    """The hub configuration in force: its version, hash and the config object."""

    version: int
    sha256: str
    config: dict[str, Any]


@dataclass
class _InFlight:
    row: OutboxRow
    sent_at: float
    future: concurrent.futures.Future[None]


@dataclass
class AgentCounters:
    """What the agent did, for logs and tests."""

    produced: int = 0
    sent: int = 0
    resent: int = 0
    acked: int = 0
    rejected: int = 0
    telemetry_sent: int = 0
    telemetry_refused: int = 0
    telemetry_dropped: int = 0
    configs_applied: int = 0
    configs_refused: int = 0
    commands: int = 0
    event_ids: list[str] = field(default_factory=list)


class EdgeAgent:
    """One device's agent (see the module docstring).

    ``profile`` is the configuration until the hub's applies (or the one stored from
    an earlier run); ``event_log``, when given, gets each event id on its own line
    once the event is committed (a witness for tests and audits).
    """

    profile_type: type[Profile] = WearableProfile

    def __init__(
        self,
        *,
        device_id: str,
        model: DeviceModel,
        profile: Profile,
        mqtt: MqttSettings,
        outbox_path: Path,
        tuning: AgentTuning | None = None,
        event_log: Path | None = None,
    ) -> None:
        if not isinstance(profile, self.profile_type):
            raise ValueError(
                f"{type(self).__name__} needs a {self.profile_type.__name__}, "
                f"not {type(profile).__name__}"
            )
        problems = verify_profile(profile, model)
        if problems:
            raise ConfigError(problems)
        self.device_id = device_id
        self.model = model
        self.profile: Profile = profile
        self.tuning = tuning or AgentTuning()
        self.fw = firmware_version()
        self.counters = AgentCounters()
        self.config_error: str | None = None
        self.applied: AppliedConfig | None = None
        self._stop = threading.Event()
        self._in_flight: dict[int, _InFlight] = {}
        self._row_of_event: dict[str, int] = {}
        self._link_up_since: float | None = None
        self._last_expiry = 0.0
        self._event_log: TextIO | None = None
        self._posted: queue.SimpleQueue[EventMaker] = queue.SimpleQueue()
        self.outbox = Outbox(
            outbox_path,
            OutboxLimits.from_settings(profile.outbox),
            alarm=self._outbox_alarm,
        )
        try:
            self._load_stored_config()
            self._presence = self._presence_tuple()
            self.link = EdgeLink(device_id, mqtt, presence=self._compose_state)
            if event_log is not None:
                self._event_log = event_log.open("a", encoding="utf-8")
        except BaseException:
            self.outbox.close()
            raise

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to finish (from any thread or a signal handler)."""
        self._stop.set()

    def run(self, *, duration_s: float | None = None) -> None:
        """Run until :meth:`stop` (or for ``duration_s``), then shut down cleanly:
        offline published, connection closed, outbox closed."""
        deadline = None if duration_s is None else time.monotonic() + duration_s
        self.link.start()
        next_tick = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                if now >= next_tick:
                    try:
                        next_tick = now + max(0.001, self.tick(now))
                    except OutboxError as exc:
                        # The disk is full or failing: what was being made is lost (it
                        # never had a seq). Say so loudly and keep delivering the rest.
                        logger.critical("%s: cannot store: %s", self.device_id, exc)
                        next_tick = now + 1.0
                self._commit_posted()
                self._pump(now)
                wait = min(next_tick - time.monotonic(), self.tuning.idle_wait_s)
                self._drain_link(max(0.0, wait))
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Close the link (publishing offline) and the outbox. Safe to call twice."""
        if not self.link.close(self.tuning.close_timeout_s):
            logger.warning("%s: the link did not close in time", self.device_id)
        if self._event_log is not None:
            self._event_log.close()
            self._event_log = None
        if self.outbox.closed:
            return
        self._commit_posted(limit=None)
        logger.info(
            "%s: stopped; %d events produced, %d acked, %d still in the outbox",
            self.device_id,
            self.counters.produced,
            self.counters.acked,
            self.outbox.events,
        )
        self.outbox.close()

    # -- for subclasses --------------------------------------------------------------------

    def tick(self, now: float) -> float:
        """Make whatever is due at monotonic time ``now``; return the seconds until the
        next call is wanted."""
        return 1.0

    def profile_changed(self, profile: Profile) -> None:
        """A new profile was applied (intervals, thresholds ...)."""

    def check_profile(self, profile: Profile) -> None:
        """Refuse (raise ``ValueError`` saying why) a profile this agent cannot run,
        beyond what the profile schema and the device model check; called for every
        pushed or stored config before it is applied, on the agent thread."""

    def handle_command(self, command: Command) -> None:
        """A command from the hub that has not expired."""
        logger.info("%s: command %s ignored", self.device_id, command.NAME)

    def emit_event(
        self,
        kind: Literal["position", "alarm", "checkin", "sighting"],
        body: Body,
        *,
        captured_at: datetime | None = None,
    ) -> str:
        """Make an event of ``kind`` with ``body``, commit it to the outbox, and
        return its event id. It is published by the send loop."""
        event_id = new_event_id()
        stamp = captured_at or datetime.now(UTC)

        def make(boot_id: str, seq: int) -> EventEnvelope:
            common: dict[str, Any] = {
                "device_id": self.device_id,
                "event_id": event_id,
                "boot_id": boot_id,
                "seq": seq,
                "captured_at": stamp,
                "sent_at": stamp,
            }
            if kind == "position" and isinstance(body, PositionBody):
                return PositionEvent(**common, body=body)
            if kind == "alarm" and isinstance(body, AlarmBody):
                return AlarmEvent(**common, body=body)
            if kind == "checkin" and isinstance(body, CheckinBody):
                return CheckinEvent(**common, body=body)
            if kind == "sighting" and isinstance(body, SightingBody):
                return SightingEvent(**common, body=body)
            raise TypeError(f"a {type(body).__name__} is not the body of a {kind} event")

        result = self.outbox.put_event(make)
        self._after_put(result)
        return event_id

    def post_event(self, make: EventMaker) -> None:
        """Hand over an event from any thread: ``make(boot_id, seq)`` is queued and
        called on the agent thread, which commits the event to the outbox (see the
        module docstring). Events posted are committed in the order posted."""
        self._posted.put(make)

    def emit_telemetry(self, body: TelemetryBody) -> bool:
        """Store telemetry for sending; False if the outbox refused it (full)."""
        message = Telemetry(
            device_id=self.device_id,
            boot_id=self.outbox.boot_id,
            sent_at=datetime.now(UTC),
            body=body,
        )
        result = self.outbox.put_telemetry(message)
        self.counters.telemetry_dropped += result.dropped_telemetry
        if result.row is None:
            self.counters.telemetry_refused += 1
            return False
        return True

    # -- internals: presence and config ---------------------------------------------------

    def _presence_tuple(self) -> tuple[str, int | None, str | None, str | None]:
        applied = self.applied
        if applied is None:
            return (self.outbox.boot_id, None, None, self.config_error)
        return (self.outbox.boot_id, applied.version, applied.sha256, self.config_error)

    def _compose_state(self, status: Literal["online", "offline"]) -> bytes:
        boot_id, config_version, config_sha, config_error = self._presence
        state = DeviceState(
            device_id=self.device_id,
            boot_id=boot_id,
            sent_at=datetime.now(UTC),
            body=StateBody(
                status=status,
                fw=self.fw,
                hw_model=self.model.id,
                config_version=config_version,
                config_sha256=config_sha,
                config_error=config_error,
            ),
        )
        return encode(state)

    def _load_stored_config(self) -> None:
        stored = self.outbox.get_meta("config")
        if stored is None:
            return
        try:
            data = json.loads(stored)
            applied = AppliedConfig(int(data["version"]), str(data["sha256"]), data["config"])
            profile = self._validate_profile(applied.config)
        except (ValueError, KeyError, TypeError, ConfigError) as exc:
            logger.error("%s: stored config unusable, ignored: %s", self.device_id, exc)
            return
        self.applied = applied
        self.profile = profile
        self.outbox.limits = OutboxLimits.from_settings(profile.outbox)
        logger.info("%s: config version %d from the last run", self.device_id, applied.version)

    def _validate_profile(self, config: dict[str, Any]) -> Profile:
        profile = parse_profile(config, source="config")
        if not isinstance(profile, self.profile_type):
            raise ValueError(
                f"a {profile.type!r} profile cannot run on {self.model.id} "
                f"(a {self.model.kind.value})"
            )
        problems = verify_profile(profile, self.model)
        if problems:
            raise ConfigError(problems)
        self.check_profile(profile)
        return profile

    def _apply_config(self, message: ConfigMessage) -> None:
        body = message.body
        current = self.applied
        if current is not None and body.sha256 == current.sha256:
            if self.config_error is not None:
                logger.info(
                    "%s: the hub asks for version %d again, the one in force",
                    self.device_id,
                    current.version,
                )
                self._set_config_error(None)
            return
        if current is not None and body.version <= current.version:
            self._refuse_config(
                body.version,
                f"version {body.version} is not newer than the applied {current.version}",
            )
            return
        try:
            profile = self._validate_profile(dict(body.config))
        except (ConfigError, ValueError) as exc:
            self._refuse_config(body.version, str(exc).replace("\n", "; "))
            return
        self.applied = AppliedConfig(body.version, body.sha256, dict(body.config))
        self.profile = profile
        self.config_error = None
        self.outbox.limits = OutboxLimits.from_settings(profile.outbox)
        self.outbox.set_meta(
            "config",
            json.dumps({"version": body.version, "sha256": body.sha256, "config": body.config}),
        )
        self._presence = self._presence_tuple()
        self.counters.configs_applied += 1
        logger.info(
            "%s: applied config version %d (%s)", self.device_id, body.version, body.sha256[:12]
        )
        self.profile_changed(profile)
        self.link.update_presence()

    def _refuse_config(self, config_version: int, reason: str) -> None:
        error = f"config version {config_version} refused: {reason}"
        kept = "none" if self.applied is None else f"version {self.applied.version}"
        logger.error("%s: %s; keeping %s", self.device_id, error, kept)
        if len(error) > MAX_CONFIG_ERROR_CHARS:
            error = error[: MAX_CONFIG_ERROR_CHARS - 1] + "\u2026"
        self._set_config_error(error)
        self.counters.configs_refused += 1  # last: a watcher of the counter sees the error

    def _set_config_error(self, error: str | None) -> None:
        """Keep ``error`` and republish the retained state when it changed."""
        if error == self.config_error:
            return
        self.config_error = error
        self._presence = self._presence_tuple()
        self.link.update_presence()

    def _outbox_alarm(
        self, state: AlarmState, alarm_id: str, boot_id: str, seq: int
    ) -> EventEnvelope:
        now = datetime.now(UTC)
        return AlarmEvent(
            device_id=self.device_id,
            event_id=new_event_id(),
            boot_id=boot_id,
            seq=seq,
            captured_at=now,
            sent_at=now,
            body=AlarmBody(
                type="outbox.full",
                state=state,
                alarm_id=alarm_id,
                detail="events kept beyond the outbox limit; telemetry refused"
                if state == "active"
                else None,
            ),
        )

    def _commit_posted(self, limit: int | None = _MAX_POSTED_PER_TURN) -> None:
        """Commit events handed over by :meth:`post_event` (at most ``limit``)."""
        done = 0
        while limit is None or done < limit:
            try:
                make = self._posted.get_nowait()
            except queue.Empty:
                return
            done += 1
            try:
                result = self.outbox.put_event(make)
            except OutboxError as exc:
                logger.critical("%s: cannot store a posted event: %s", self.device_id, exc)
                continue
            except Exception:
                logger.exception("%s: a posted event could not be made", self.device_id)
                continue
            self._after_put(result)

    def _after_put(self, result: PutResult) -> None:
        self.counters.produced += 1
        self.counters.telemetry_dropped += result.dropped_telemetry
        if result.row is not None and result.row.event_id is not None:
            self.counters.event_ids.append(result.row.event_id)
            if self._event_log is not None:
                self._event_log.write(result.row.event_id + "\n")
                self._event_log.flush()

    # -- internals: link events and the send loop ------------------------------------------

    def _drain_link(self, wait: float) -> None:
        event = self.link.get_event(wait)
        handled = 0
        while event is not None:
            self._handle(event)
            handled += 1
            if handled >= 1000:
                break
            event = self.link.get_event(0.0)

    def _handle(self, event: LinkEvent) -> None:
        if isinstance(event, Connected):
            self._link_up_since = time.time()
            self._forget_in_flight()
        elif isinstance(event, Disconnected):
            self._link_up_since = None
            self._forget_in_flight()
        elif isinstance(event, Received):
            message = event.message.message
            if isinstance(message, Ack):
                self._handle_ack(message)
            elif isinstance(message, ConfigMessage):
                self._apply_config(message)
            elif isinstance(message, Command):
                self.counters.commands += 1
                if message.expired(datetime.now(UTC)):
                    logger.info("%s: expired command %s ignored", self.device_id, message.cmd_id)
                else:
                    self.handle_command(message)

    def _handle_ack(self, ack: Ack) -> None:
        stored = list(ack.body.event_ids)
        rejected = [(r.event_id, r.code) for r in ack.body.rejected]
        deleted, cleared = self.outbox.ack(stored, rejected)
        self.counters.acked += deleted
        self.counters.rejected += len(rejected)
        for event_id in [*stored, *(e for e, _ in rejected)]:
            row_id = self._row_of_event.pop(event_id, None)
            if row_id is not None:
                self._in_flight.pop(row_id, None)
        if cleared:
            logger.info("%s: outbox.full cleared", self.device_id)

    def _forget_in_flight(self) -> None:
        self._in_flight.clear()
        self._row_of_event.clear()

    def _is_replay(self, row: OutboxRow) -> bool:
        up = self._link_up_since
        return (
            row.attempts > 0
            or row.boot_id != self.outbox.boot_id
            or up is None
            or row.created_at < up
        )

    def _pump(self, now: float) -> None:
        wall = time.time()
        if wall - self._last_expiry > 30.0:
            self._last_expiry = wall
            expired = self.outbox.expire_telemetry()
            if expired:
                logger.info("%s: %d stale telemetry rows expired", self.device_id, expired)
        done_tele: list[int] = []
        for row_id, flight in list(self._in_flight.items()):
            future = flight.future
            if flight.row.kind == "tele":
                if future.done():
                    del self._in_flight[row_id]
                    if future.exception() is None:
                        done_tele.append(row_id)
                        self.counters.telemetry_sent += 1
            elif future.done() and future.exception() is not None:
                self._drop_flight(row_id)
            elif now - flight.sent_at > self.tuning.resend_after_s:
                self._drop_flight(row_id)
        if done_tele:
            self.outbox.delete(done_tele)
        # Send only once this thread has seen Connected: in-flight bookkeeping is reset
        # there, and a row sent before it would be sent twice.
        if self._link_up_since is None or not self.link.connected:
            return
        room = self.tuning.window - len(self._in_flight)
        if room <= 0:
            return
        rows = self.outbox.pending(room, exclude=self._in_flight.keys())
        sent_events: list[int] = []
        stamp = datetime.now(UTC)
        for row in rows:
            if row.kind == "tele":
                delivery = DELIVERY["tele"]
                future = self.link.publish(
                    row.topic, row.payload, qos=delivery.qos, expiry_s=delivery.expiry_s
                )
            else:
                replay = self._is_replay(row)
                payload = restamp(row.payload, sent_at=stamp, replayed=replay)
                future = self.link.publish(row.topic, payload, qos=DELIVERY["evt"].qos)
                sent_events.append(row.id)
                assert row.event_id is not None
                self._row_of_event[row.event_id] = row.id
                self.counters.sent += 1
                if row.attempts > 0:
                    self.counters.resent += 1
            self._in_flight[row.id] = _InFlight(row, now, future)
        if sent_events:
            self.outbox.mark_sent(sent_events)

    def _drop_flight(self, row_id: int) -> None:
        flight = self._in_flight.pop(row_id, None)
        if flight is not None and flight.row.event_id is not None:
            self._row_of_event.pop(flight.row.event_id, None)
