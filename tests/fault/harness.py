"""The parts every fault scenario is built from: real processes and what counts them.

* :class:`HubProcess`: ``lantern hub serve`` as a child process, with ``--http`` so its
  Prometheus counters can be read at ``/metrics`` before it is killed or stopped.
* :class:`WearableProcess`: ``python -m edge.cli wearable`` with its outbox and event
  log (the ids of the events it committed: what it *sent*).
* :class:`WireObserver`: a passive, non-shared QoS 0 subscriber on every device's
  events and acks. It defines ``duplicates_on_wire``: event PUBLISHes of the run's
  devices the broker routed, minus the distinct event ids among them, i.e. the copies
  the devices put on the wire again (outbox resends after an outage or a missing
  ack, MQTT retransmissions). Redeliveries from the broker to a hub worker after the
  worker died are not seen here; they are counted by the hub's
  ``lantern_events_duplicate_total`` (see :class:`HubProcess`).
* :class:`AlarmDevice`: an in-test device that raises one SOS alarm and resends it
  until the hub acks it, so every run has an alarm that must become one alert.
* :class:`PrivatePostgres`: a PostgreSQL cluster of the test's own, to restart.
* :class:`Rig`, :class:`Figures`, :func:`write_result`, :func:`assert_clean`: the
  devices of a run, its figures (from the agents' event logs, the database and the
  observer) and the result file ``tests/artifacts/reliability/<scenario>[-<backend>].json``.

The figures: ``sent`` is the events the devices committed (event logs, the in-test
devices' payloads); ``stored`` the rows of the run's devices in every event table;
``lost`` = sent minus the distinct stored ids; ``duplicates_stored`` = rows minus
distinct ids (by query); ``recover_s`` the seconds from the end of the fault (broker,
database or hub back, link restored) until every event committed by then is stored;
``alerts_expected`` the distinct raised alarms of the run (wire or database) whose type
maps to an alert, ``alerts_raised`` the rows of ``alerts`` for the run's devices.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import pwd
import secrets
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from benchmarks.services import serve_command
from devices.protocol import AlarmBody, AlarmEvent, PositionBody, encode, evt_topic, new_event_id
from edge.comms.mqtt import MqttPeer, MqttSettings, RawMessage
from hub.alerts import ALARM_SEVERITY
from hub.db.engine import make_engine
from hub.db.models import Alarm, Alert, Checkin, Position, Quarantine, Sighting
from tests.edge.mqtt_helpers import (
    REPO,
    PrivateBroker,
    edge_command,
    free_port,
    listening,
    run_env,
    unique_id,
    wait_until,
    write_track,
)
from tests.hub.test_ingest import FakeDevices, register

logger = logging.getLogger(__name__)

RESULTS = REPO / "tests" / "artifacts" / "reliability"
EVENT_MODELS = (Position, Alarm, Checkin, Sighting)
RESULT_KEYS = (
    "scenario",
    "backend",
    "sent",
    "stored",
    "lost",
    "duplicates_on_wire",
    "duplicates_stored",
    "alerts_expected",
    "alerts_raised",
    "recover_s",
    "duration_s",
    "fault",
)


def hub_env() -> dict[str, str]:
    """The environment of a hub process: the repository importable and an API key, since
    ``--http`` (for ``/metrics``) signs tokens with it."""
    env = run_env()
    env["LANTERN_JWT_SECRET"] = secrets.token_urlsafe(48)
    return env


@contextlib.contextmanager
def fast_folder(prefix: str) -> Iterator[Path]:
    """A folder for the agents' outboxes, on tmpfs where there is one. The outbox
    commits every event with ``synchronous=FULL``; on this machine's disk that is
    about 75 events a second per agent, which would make buffering 10,000 events take
    minutes. The suite tests the link, the broker, the hub and the database, not the
    edge's disk; the outbox's own durability is covered by tests/edge."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- the hub -------------------------------------------------------------------------------


class HubProcess:
    """``lantern hub serve`` as a child process (logs in a file), serving ``/metrics``.

    ``duplicates_seen`` adds up ``lantern_events_duplicate_total`` over the process's
    lives: it is read just before every kill or stop (a kill loses what the dying
    process counted after the last read)."""

    def __init__(
        self,
        data_dir: Path,
        database_url: str,
        broker_port: int,
        log: Path,
        *,
        client_id: str = "hub-fault",
        workers: int = 4,
        extra: Sequence[str] = (),
    ) -> None:
        self.http_port = free_port()
        self.command = serve_command(
            data_dir,
            database_url,
            broker_port,
            workers=workers,
            client_id=client_id,
            extra=("--http", f"127.0.0.1:{self.http_port}", *extra),
        )
        self.log = log
        self.env = hub_env()
        self.process: subprocess.Popen[bytes] | None = None
        self.duplicates_seen = 0
        self.lives = 0

    def start(self) -> None:
        data_dir = Path(self.command[self.command.index("--data-dir") + 1])
        data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as sink:
            sink.write(b"\n--- start\n")
            sink.flush()
            start = self.log.stat().st_size
            self.process = subprocess.Popen(
                self.command, stdout=sink, stderr=sink, cwd=REPO, env=self.env
            )
        self.lives += 1
        started = wait_until(
            lambda: b"hub API on" in self.log.read_bytes()[start:] and listening(self.http_port),
            60,
            0.1,
        )
        assert started, self.tail()

    def metric(self, name: str) -> float:
        """A counter at ``/metrics``, summed over its labels (0 when it has no sample
        yet: a labelled counter appears with its first increment)."""
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith((name + " ", name + "{")):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def scrape(self) -> None:
        """Add this life's duplicate count to ``duplicates_seen`` (before it ends)."""
        self.duplicates_seen += int(self.metric("lantern_events_duplicate_total"))

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Read the counters, then send ``sig``; the exit status."""
        assert self.process is not None
        with contextlib.suppress(OSError):
            self.scrape()
        self.process.send_signal(sig)
        return self.process.wait(timeout=30)

    def stop(self) -> int:
        """SIGTERM (after reading the counters); the exit status, 0 when clean."""
        if self.process is None or self.process.poll() is not None:
            return 0 if self.process is None else self.process.returncode
        return self.kill(signal.SIGTERM)

    def ensure_dead(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


# -- the edge ------------------------------------------------------------------------------


def event_log_ids(path: Path) -> set[str]:
    """The event ids of an agent's event log (a torn last line is ignored)."""
    if not path.exists():
        return set()
    return {line for line in path.read_text(encoding="utf-8").splitlines() if len(line) == 36}


class WearableProcess:
    """``python -m edge.cli wearable`` on a track, its outbox and event log in
    ``folder``; its log (stderr) in ``log_dir``.

    The simulated battery starts full and drains 2% per simulated hour, and an ankle
    tag reports every 60 simulated seconds, so an agent makes about 3,000 positions
    before its battery is empty (whatever ``rate``), raising ``battery.low`` after
    about 2,400: keep ``max_events`` under 2,800."""

    def __init__(
        self,
        device_id: str,
        *,
        track: Path,
        broker_port: int,
        folder: Path,
        log_dir: Path,
        rate: float,
        max_events: int,
        window: int = 64,
        resend_after: float = 5.0,
    ) -> None:
        self.device_id = device_id
        self.max_events = max_events
        self.outbox = folder / f"{device_id}.db"
        self.event_log = folder / f"{device_id}.events"
        self.stderr = log_dir / f"{device_id}.log"
        self.command = edge_command(
            "wearable",
            "--device-id",
            device_id,
            "--sim",
            str(track),
            "--broker",
            f"127.0.0.1:{broker_port}",
            "--outbox",
            str(self.outbox),
            "--event-log",
            str(self.event_log),
            "--rate-multiplier",
            str(rate),
            "--max-events",
            str(max_events),
            "--window",
            str(window),
            "--resend-after",
            str(resend_after),
            "--reconnect-max",
            "0.5",
            "--seed",
            "7",
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WearableProcess:
        with self.stderr.open("ab") as sink:
            self.process = subprocess.Popen(
                self.command, stdout=subprocess.DEVNULL, stderr=sink, cwd=REPO, env=run_env()
            )
        return self

    def event_ids(self) -> set[str]:
        return event_log_ids(self.event_log)

    def done(self) -> bool:
        """Made all its events (its process is still delivering them)."""
        return len(self.event_ids()) >= self.max_events

    def outbox_events(self) -> int:
        """Events waiting in its outbox (read-only, alongside the agent)."""
        if not self.outbox.exists():
            return 0
        db = sqlite3.connect(f"file:{self.outbox}?mode=ro", uri=True, timeout=5)
        try:
            (count,) = db.execute("SELECT COUNT(*) FROM outbox WHERE kind = 'event'").fetchone()
        except sqlite3.OperationalError:  # not created yet
            return 0
        finally:
            db.close()
        return int(count)

    def stop(self) -> int:
        """SIGTERM and wait; the exit status (0 after a clean stop)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def tail(self) -> str:
        return self.stderr.read_text(errors="replace")[-1500:] if self.stderr.exists() else ""


# -- on the wire ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AlarmSeen:
    device_id: str
    alarm_id: str
    type: str
    state: str


@dataclass
class WireObserver:
    """Counts what crosses the broker for the run's devices (see the module docstring):
    every event PUBLISH (QoS 0, so the observer's own session never adds copies), the
    alarms among them and when the hub's acks went out."""

    settings: MqttSettings
    devices: set[str]
    lock: threading.Lock = field(default_factory=threading.Lock)
    copies: Counter[str] = field(default_factory=Counter)
    alarms: set[AlarmSeen] = field(default_factory=set)
    ack_times: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.peer = MqttPeer(
            unique_id("wire"),
            self.settings.model_copy(update={"session_expiry_s": 0}),
            subscriptions=[("lantern/v1/+/evt/#", 0), ("lantern/v1/+/ack", 0)],
            on_message=self._on_message,
        )

    def __enter__(self) -> WireObserver:
        self.peer.start()
        assert self.peer.wait_subscribed(10), "wire observer could not subscribe"
        return self

    def __exit__(self, *exc: object) -> None:
        self.peer.close(5)

    def _on_message(self, message: RawMessage) -> None:
        parts = message.topic.split("/")
        if len(parts) < 4 or parts[2] not in self.devices:
            return
        if parts[3] == "ack":
            with self.lock:
                self.ack_times.append(time.monotonic())
            return
        try:
            envelope = json.loads(message.payload)
            event_id = str(envelope["event_id"])
        except (ValueError, KeyError, TypeError):
            return
        with self.lock:
            self.copies[event_id] += 1
            if parts[-1] == "alarm":
                body = envelope.get("body", {})
                self.alarms.add(
                    AlarmSeen(parts[2], str(body.get("alarm_id")), body.get("type"), body["state"])
                )

    @property
    def duplicates(self) -> int:
        with self.lock:
            return sum(self.copies.values()) - len(self.copies)

    def acks_between(self, start: float, end: float) -> int:
        with self.lock:
            return sum(1 for t in self.ack_times if start <= t <= end)


class AlarmDevice:
    """One in-test device raising an SOS alarm: published once, then resent every
    ``resend_s`` until the hub acks it, as a device's outbox would (across the fault)."""

    def __init__(self, settings: MqttSettings, device_id: str, resend_s: float = 2.0) -> None:
        self.device_id = device_id
        self.devices = FakeDevices(settings, [device_id])
        self.resend_s = resend_s
        self.event_id: str | None = None
        self.alarm_id = "sos-1"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._resend, name="sos-resend", daemon=True)
        self.sends = 0

    def __enter__(self) -> AlarmDevice:
        self.devices.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        self.devices.__exit__(*exc)

    def raise_sos(self) -> str:
        """Publish the alarm (not waiting for the broker) and start resending it."""
        devices = self.devices
        seq = devices.seqs[self.device_id]
        devices.seqs[self.device_id] = seq + 1
        now = datetime.now(UTC)
        event = AlarmEvent(
            event_id=new_event_id(),
            device_id=self.device_id,
            boot_id=devices.boots[self.device_id],
            seq=seq,
            captured_at=now,
            sent_at=now,
            body=AlarmBody(
                type="sos",
                state="active",
                alarm_id=self.alarm_id,
                position=PositionBody(lat=51.5072, lon=-0.1275, acc=6.0, src="gnss"),
            ),
        )
        topic, payload = evt_topic(self.device_id, "alarm"), encode(event)
        with devices.lock:
            devices.payloads[event.event_id] = (topic, payload)
        self.event_id = event.event_id
        self._publish(topic, payload)
        self._thread.start()
        return event.event_id

    def _publish(self, topic: str, payload: bytes) -> None:
        self.sends += 1
        future = self.devices.peer.publish(topic, payload, qos=1)
        future.add_done_callback(lambda f: f.exception())  # a link down is retried later

    def _resend(self) -> None:
        while not self._stop.wait(self.resend_s):
            if self.event_id is None or not self.devices.outstanding():
                return
            topic, payload = self.devices.payloads[self.event_id]
            self._publish(topic, payload)

    def acked(self) -> bool:
        return self.event_id is not None and self.event_id in self.devices.acked

    def sent(self) -> set[str]:
        return set(self.devices.payloads)


# -- a PostgreSQL cluster of our own ---------------------------------------------------------


class PrivatePostgres:
    """``initdb`` into a temporary folder and ``pg_ctl`` start/stop on a free port, so
    a test can restart the database under a running hub without touching the system
    server. As root, the cluster runs as the ``postgres`` user (``runuser``)."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        initdb = found[-1] if found else shutil.which("initdb")
        if initdb is None:
            pytest.skip("PostgreSQL server binaries (initdb) are not installed")
        self.bin = Path(initdb).parent
        self.as_user: list[str] = []
        owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                pytest.skip("running as root without runuser: cannot start PostgreSQL")
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no postgres user to run initdb")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.root = Path(tempfile.mkdtemp(prefix="lantern-pg-"))
        if owner is not None:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.data = self.root / "data"
        self.port = free_port()
        self.log = self.root / "server.log"
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/lantern"

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run(
            [*self.as_user, str(self.bin / tool), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, f"{tool} failed: {result.stdout}\n{result.stderr}"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def create_database(self) -> None:
        import psycopg

        admin = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
            conn.execute("CREATE DATABASE lantern")

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""


# -- figures -------------------------------------------------------------------------------


def stored_event_ids(engine: Engine, devices: Iterable[str]) -> list[str]:
    """Every stored event id of ``devices``, one entry per row (all event tables)."""
    ids = list(devices)
    found: list[str] = []
    with Session(engine) as session:
        for model in EVENT_MODELS:
            found.extend(session.scalars(select(model.event_id).where(model.device_id.in_(ids))))
    return found


def wait_stored(engine: Engine, devices: Iterable[str], wanted: set[str], timeout: float) -> bool:
    """Wait until every id of ``wanted`` is stored (polling the database)."""
    ids = list(devices)

    def check() -> bool:
        try:
            return wanted <= set(stored_event_ids(engine, ids))
        except Exception:  # the database may be down during the fault
            return False

    return wait_until(check, timeout, 0.25)


@dataclass
class Figures:
    """What a run measured (the body of its result file)."""

    scenario: str
    backend: str
    fault: str
    sent: set[str]
    rows: list[str]
    duplicates_on_wire: int
    alerts_expected: set[str]
    alerts_raised: list[str]
    recover_s: float
    duration_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def lost(self) -> set[str]:
        return self.sent - set(self.rows)

    @property
    def duplicates_stored(self) -> int:
        return len(self.rows) - len(set(self.rows))

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "backend": self.backend,
            "sent": len(self.sent),
            "stored": len(self.rows),
            "lost": len(self.lost),
            "duplicates_on_wire": self.duplicates_on_wire,
            "duplicates_stored": self.duplicates_stored,
            "alerts_expected": len(self.alerts_expected),
            "alerts_raised": len(self.alerts_raised),
            "recover_s": round(self.recover_s, 2),
            "duration_s": round(self.duration_s, 2),
            "fault": self.fault,
            **self.extra,
        }


def expected_alerts(
    engine: Engine, devices: Iterable[str], seen: Iterable[AlarmSeen] = ()
) -> set[str]:
    """The alert keys the run must have: one per distinct raised alarm (a type that
    maps to an alert, state active) of the run's devices, as seen on the wire or
    stored (``hub.alerts.alert_from_device_alarm`` keys them by device and alarm id)."""
    ids = list(devices)
    keys = {
        f"alarm:{a.device_id}:{a.alarm_id}"
        for a in seen
        if a.state == "active" and a.type in ALARM_SEVERITY
    }
    with Session(engine) as session:
        rows = session.execute(
            select(Alarm.device_id, Alarm.alarm_id, Alarm.type).where(
                Alarm.device_id.in_(ids), Alarm.state == "active"
            )
        ).all()
    keys |= {f"alarm:{d}:{a}" for d, a, t in rows if t in ALARM_SEVERITY}
    return keys


def raised_alerts(engine: Engine, devices: Iterable[str]) -> list[str]:
    """The keys of the alerts stored for the run's devices, one entry per row."""
    with Session(engine) as session:
        return list(session.scalars(select(Alert.key).where(Alert.device_id.in_(list(devices)))))


def alert_count(engine: Engine, key: str) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).where(Alert.key == key)) or 0)


def write_result(figures: Figures, name: str | None = None) -> dict[str, Any]:
    """Write ``<scenario>[-<backend>].json`` under :data:`RESULTS`, log it, return it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = figures.as_dict()
    path = RESULTS / f"{name or figures.scenario}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    logger.info("fault result %s: %s", path.name, json.dumps(result))
    return result


def assert_clean(figures: Figures, *, allow_quarantine: bool = False) -> None:
    """The verdict every scenario shares: nothing lost, nothing stored twice, one alert
    per raised alarm (and none that was not raised), no good event quarantined."""
    lost = figures.lost
    assert not lost, f"{len(lost)} of {len(figures.sent)} events lost, e.g. {sorted(lost)[:3]}"
    assert figures.duplicates_stored == 0, f"{figures.duplicates_stored} events stored twice"
    stray = set(figures.rows) - figures.sent
    assert not stray, f"{len(stray)} stored events no device committed, e.g. {sorted(stray)[:3]}"
    assert figures.alerts_expected, "the run raised no alarm"
    assert sorted(figures.alerts_raised) == sorted(figures.alerts_expected), (
        f"alerts {sorted(figures.alerts_raised)} for alarms {sorted(figures.alerts_expected)}"
    )
    if not allow_quarantine:
        assert not figures.extra.get("quarantined"), figures.extra.get("quarantined")


# -- a run ---------------------------------------------------------------------------------


def sqlite_database(template: Path, folder: Path) -> tuple[Engine, str]:
    """A migrated SQLite database of its own (a copy of the session's template)."""
    path = folder / "lantern.db"
    shutil.copy(template, path)
    url = f"sqlite:///{path}"
    return make_engine(url), url


STREAM_AGENTS = 3
STREAM_EVENTS_PER_AGENT = 900
STREAM_RATE = 9000.0
"""The standard stream of a fault scenario: three agents, 900 positions each, the ankle
tag's 60 s interval sped up to about 150 positions a second per agent."""


class Rig:
    """The devices of one run and the figures they add up to.

    ``agents`` wearable processes (ids ``<prefix>-<n>-<random>``) through
    ``agent_port`` (default: the broker's; or a proxy in front of it), one :class:`AlarmDevice`,
    and a :class:`WireObserver`; all registered in the database first."""

    def __init__(
        self,
        *,
        scenario: str,
        backend: str,
        engine: Engine,
        tmp_path: Path,
        fast: Path,
        broker: PrivateBroker,
        agent_port: int | None = None,
        agents: int = STREAM_AGENTS,
        rate: float = STREAM_RATE,
        max_events: int = STREAM_EVENTS_PER_AGENT,
        window: int = 64,
    ) -> None:
        broker_settings = broker.settings()
        agent_port = broker.port if agent_port is None else agent_port
        self.scenario = scenario
        self.backend = backend
        self.engine = engine
        self.started = time.monotonic()
        track = write_track(tmp_path)
        self.agents = [
            WearableProcess(
                unique_id(f"{scenario[:6]}-{n}"),
                track=track,
                broker_port=agent_port,
                folder=fast,
                log_dir=tmp_path,
                rate=rate,
                max_events=max_events,
                window=window,
            )
            for n in range(agents)
        ]
        self.sos = AlarmDevice(broker_settings, unique_id(f"{scenario[:6]}-sos"))
        self.device_ids = [a.device_id for a in self.agents] + [self.sos.device_id]
        register(engine, self.device_ids)
        self.wire = WireObserver(broker_settings, set(self.device_ids))
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Rig:
        self._stack.enter_context(self.wire)
        self._stack.enter_context(self.sos)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            for agent in self.agents:
                agent.stop()
        finally:
            self._stack.close()

    def start_agents(self) -> None:
        for agent in self.agents:
            agent.start()

    def sent(self) -> set[str]:
        return set().union(*(a.event_ids() for a in self.agents)) | self.sos.sent()

    def stream_until(self, stored: int, log_tail: Callable[[], str]) -> int:
        """Start the agents, wait until ``stored`` of their events are in the database,
        raise the SOS (so an alarm is in flight when the fault comes) and return how many
        were stored then."""
        self.start_agents()
        assert wait_until(lambda: self.stored_count() >= stored, 60, 0.1), log_tail()
        self.sos.raise_sos()
        return self.stored_count()

    def stored_count(self) -> int:
        try:
            return len(stored_event_ids(self.engine, self.device_ids))
        except Exception:
            return 0

    def wait_stored(self, wanted: set[str], timeout: float) -> bool:
        return wait_stored(self.engine, self.device_ids, wanted, timeout)

    def recover(self, fault_end: float, timeout: float = 120.0) -> float:
        """Wait until every event committed by the end of the fault is stored; the
        seconds from the end of the fault."""
        snapshot = self.sent()
        assert self.wait_stored(snapshot, timeout), self.progress(snapshot)
        return time.monotonic() - fault_end

    def finish(self, timeout: float = 120.0) -> None:
        """Wait until the agents made all their events, the hub stored every event,
        acked them all (outboxes empty) and acked the alarm."""
        assert wait_until(lambda: all(a.done() for a in self.agents), timeout, 0.2), [
            (a.device_id, len(a.event_ids()), a.tail()) for a in self.agents
        ]
        sent = self.sent()
        assert self.wait_stored(sent, timeout), self.progress(sent)
        assert wait_until(lambda: all(a.outbox_events() == 0 for a in self.agents), timeout, 0.2), [
            (a.device_id, a.outbox_events()) for a in self.agents
        ]
        assert wait_until(self.sos.acked, timeout, 0.2), "the SOS alarm was never acked"

    def progress(self, wanted: set[str]) -> str:
        stored = set(stored_event_ids(self.engine, self.device_ids))
        return f"{len(wanted - stored)} of {len(wanted)} not stored"

    def figures(
        self, *, fault: str, recover_s: float, hub_duplicates: int, **extra: Any
    ) -> Figures:
        return Figures(
            scenario=self.scenario,
            backend=self.backend,
            fault=fault,
            sent=self.sent(),
            rows=stored_event_ids(self.engine, self.device_ids),
            duplicates_on_wire=self.wire.duplicates,
            alerts_expected=expected_alerts(self.engine, self.device_ids, self.wire.alarms),
            alerts_raised=raised_alerts(self.engine, self.device_ids),
            recover_s=recover_s,
            duration_s=time.monotonic() - self.started,
            extra={
                "duplicates_received_by_hub": hub_duplicates,
                "quarantined": quarantined_by_code(self.engine, self.device_ids),
                **extra,
            },
        )


def quarantined_by_code(engine: Engine, devices: Iterable[str]) -> dict[str, int]:
    """Quarantine rows of the run's devices by error code (a good run has none)."""
    with Session(engine) as session:
        rows = session.execute(
            select(Quarantine.error_code, func.count())
            .where(Quarantine.device_id.in_(list(devices)))
            .group_by(Quarantine.error_code)
        ).all()
    return {str(code): int(n) for code, n in rows}
