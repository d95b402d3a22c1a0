"""Test helpers for the edge's MQTT tests: a private Mosquitto, a TCP proxy that can
cut the link, a hub that stores and acks events, waiting with a deadline.

Nothing here imports paho: the hub side uses :class:`edge.comms.mqtt.MqttPeer`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from benchmarks.services import listening
from benchmarks.services import wait as wait_until
from devices.protocol import (
    HUB_STATE_SUBSCRIPTION,
    Ack,
    AckBody,
    ProtocolError,
    Rejection,
    ack_topic,
    decode,
    encode,
)
from edge.comms.mqtt import MqttPeer, MqttSettings, RawMessage

REPO = Path(__file__).resolve().parents[2]
SYSTEM_BROKER = ("127.0.0.1", 1883)

TRACK = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "properties": {"name": "yard loop"},
            "geometry": {
                "type": "LineString",
                "coordinates": [
                    [-0.12800, 51.50700],
                    [-0.12700, 51.50750],
                    [-0.12600, 51.50720],
                    [-0.12550, 51.50800],
                ],
            },
        }
    ],
}


def unique_id(prefix: str) -> str:
    """A device id no other test run uses."""
    return f"{prefix}-{secrets.token_hex(4)}"


def write_track(folder: Path) -> Path:
    path = folder / "track.geojson"
    path.write_text(json.dumps(TRACK), encoding="utf-8")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_system_broker() -> None:
    if not listening(SYSTEM_BROKER[1], SYSTEM_BROKER[0]):
        pytest.skip("no Mosquitto on 127.0.0.1:1883")


def system_settings(**changes: Any) -> MqttSettings:
    """Settings for the system broker; short sessions so tests leave little behind."""
    base: dict[str, Any] = {
        "host": SYSTEM_BROKER[0],
        "port": SYSTEM_BROKER[1],
        "session_expiry_s": 60,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.5,
    }
    base.update(changes)
    return MqttSettings(**base)


class PrivateBroker:
    """A Mosquitto of its own on a free port, with persistence in a temporary folder,
    so a test can stop, kill and restart it without disturbing anyone."""

    def __init__(self, folder: Path, listener_options: Sequence[str] = ()) -> None:
        if shutil.which("mosquitto") is None:
            pytest.skip("mosquitto is not installed")
        self.folder = folder
        self.port = free_port()
        self.data = folder / "mosquitto-data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.config = folder / "mosquitto.conf"
        self.log = folder / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            *listener_options,
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.data}/",
            "autosave_interval 1",
            "max_queued_messages 100000",
            "max_inflight_messages 0",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # keep access to the temporary folder
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None

    def settings(self, **changes: Any) -> MqttSettings:
        base: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "session_expiry_s": 600,
            "reconnect_min_s": 0.05,
            "reconnect_max_s": 0.5,
        }
        base.update(changes)
        return MqttSettings(**base)

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if not wait_until(lambda: listening(self.port), 10.0):
            self.stop()
            raise RuntimeError(f"private mosquitto did not listen on {self.port}: {self.logs()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self, down_s: float = 0.5, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        time.sleep(down_s)
        self.start()

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def __enter__(self) -> PrivateBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class CutProxy:
    """A TCP proxy between a client and the broker whose link can be cut: while cut,
    open connections are closed and new ones are accepted and closed at once."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self._cut = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def cut(self) -> None:
        self._cut.set()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
            self._open.clear()

    def restore(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self.listener.close()
        self._thread.join(2)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            if self._cut.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=2)
            except OSError:
                client.close()
                continue
            self.connections += 1
            with self._lock:
                self._open.extend([client, upstream])
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            source.settimeout(None)  # inside the try: a cut may close it before we start
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@dataclass
class HubRecord:
    """One event as the hub saw it."""

    event_id: str
    boot_id: str
    seq: int
    replayed: bool
    kind: str
    message: Any


@dataclass
class HubSim:
    """Plays the hub: stores every event it receives (by event id), counts the copies
    seen on the wire, acks in batches like the real ingest, and watches states."""

    settings: MqttSettings
    client_id: str = field(default_factory=lambda: unique_id("hubsim"))
    ack_every_s: float = 0.02
    reject: Callable[[str], str | None] | None = None

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.events: dict[str, HubRecord] = {}
        self.copies: Counter[str] = Counter()
        self.replayed_copies = 0
        self.invalid: list[str] = []
        self.states: list[tuple[str, dict[str, Any], bool]] = []
        self._to_ack: dict[str, list[str]] = defaultdict(list)
        self._to_reject: dict[str, list[Rejection]] = defaultdict(list)
        self._stop = threading.Event()
        self.hold_acks = threading.Event()
        """While set, events are stored but not acked (acks wait), as a slow hub would."""
        self.lose_events = threading.Event()
        """While set, events received are counted and forgotten, never stored nor acked,
        as a hub that crashes before committing would."""
        self.peer = MqttPeer(
            self.client_id,
            self.settings,
            subscriptions=[("lantern/v1/+/evt/#", 1), (HUB_STATE_SUBSCRIPTION, 1)],
            on_message=self._on_message,
        )
        self._flusher = threading.Thread(target=self._flush_loop, daemon=True)

    def start(self) -> HubSim:
        self.peer.start()
        assert self.peer.wait_connected(10), "hub simulator could not connect"
        self._flusher.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._flusher.join(2)
        self.peer.close(2)

    def __enter__(self) -> HubSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def duplicates(self) -> int:
        return sum(n - 1 for n in self.copies.values())

    def event_ids(self) -> set[str]:
        with self.lock:
            return set(self.events)

    def records(self, kind: str | None = None) -> list[HubRecord]:
        with self.lock:
            found = [r for r in self.events.values() if kind is None or r.kind == kind]
        return sorted(found, key=lambda r: (r.message.captured_at, r.seq))

    def seqs_by_boot(self) -> dict[str, list[int]]:
        with self.lock:
            found: dict[str, list[int]] = defaultdict(list)
            for record in self.events.values():
                found[record.boot_id].append(record.seq)
        return {boot: sorted(seqs) for boot, seqs in found.items()}

    def last_state(self, device_id: str, boot: str | None = None) -> dict[str, Any] | None:
        """The last state the device published (of boot ``boot`` if given)."""
        with self.lock:
            for topic, state, _ in reversed(self.states):
                if topic.split("/")[2] == device_id and boot in (None, state.get("boot_id")):
                    return state
        return None

    def _on_message(self, message: RawMessage) -> None:
        if message.topic.endswith("/state"):
            if message.payload:
                with self.lock:
                    self.states.append((message.topic, json.loads(message.payload), message.retain))
            return
        try:
            decoded = decode(message.topic, message.payload)
        except ProtocolError as exc:
            with self.lock:
                self.invalid.append(str(exc))
            return
        event = decoded.message
        device_id = decoded.topic.device_id
        event_id = getattr(event, "event_id", None)
        if event_id is None:
            return
        with self.lock:
            self.copies[event_id] += 1
            if getattr(event, "replayed", False):
                self.replayed_copies += 1
            if self.lose_events.is_set():
                return
            code = self.reject(event_id) if self.reject is not None else None
            if code is not None:
                self._to_reject[device_id].append(Rejection(event_id=event_id, code=code))
                return
            if event_id not in self.events:
                self.events[event_id] = HubRecord(
                    event_id,
                    event.boot_id,
                    event.seq,
                    bool(event.replayed),
                    decoded.topic.name or "",
                    event,
                )
            self._to_ack[device_id].append(event_id)

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.ack_every_s):
            if self.hold_acks.is_set():
                continue
            with self.lock:
                batches = self._to_ack
                rejects = self._to_reject
                self._to_ack = defaultdict(list)
                self._to_reject = defaultdict(list)
            for device_id in set(batches) | set(rejects):
                ids = list(dict.fromkeys(batches.get(device_id, [])))
                bad = rejects.get(device_id, [])
                for chunk_ids, chunk_bad in _chunks(ids, bad, 900):
                    ack = Ack(
                        device_id=device_id,
                        sent_at=datetime.now(UTC),
                        body=AckBody(event_ids=chunk_ids, rejected=chunk_bad),
                    )
                    self.peer.publish(ack_topic(device_id), encode(ack), qos=1)


def _chunks(
    ids: list[str], bad: list[Rejection], size: int
) -> Iterator[tuple[list[str], list[Rejection]]]:
    rejected_ids = {r.event_id for r in bad}
    ids = [i for i in ids if i not in rejected_ids]
    for start in itertools.count(0, size):
        chunk_ids = ids[start : start + size]
        chunk_bad = bad[start : start + size]
        if not chunk_ids and not chunk_bad:
            return
        yield chunk_ids, chunk_bad


def assert_no_loss(hub: HubSim, produced: set[str]) -> None:
    """Every produced event reached the hub, and the events of each boot are seq 0..n."""
    received = hub.event_ids()
    missing = produced - received
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:3]}"
    for boot, seqs in hub.seqs_by_boot().items():
        assert seqs == list(range(len(seqs))), f"boot {boot}: seq gaps in {seqs[:20]}..."


def edge_command(*args: str) -> list[str]:
    """``python -m edge.cli ...`` with this interpreter."""
    return [sys.executable, "-m", "edge.cli", *args]


def run_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env
