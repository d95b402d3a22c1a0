"""Acceptance: 10,000 events through a real broker into a hub that is SIGKILLed and
restarted midway; exactly 10,000 rows, every event acked.

The hub runs as a real process (``python -m devices.cli hub serve``). The devices
(100, on 10 connections) publish as fast as the broker takes it; once 3,000 events
are acked the hub is killed with SIGKILL and started again a second later. Events
published while it is down wait in its persistent session; events it had received
but not PUBACKed are delivered again; acks lost with the process are made up for
by the devices resending what is still unacked (as their outbox would), which the
hub stores once and acks again.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from hub.db.models import Position
from tests.edge.mqtt_helpers import REPO, PrivateBroker, run_env, wait_until
from tests.hub.test_ingest import FakeDevices, register

logger = logging.getLogger(__name__)

DEVICES = 100
EVENTS_PER_DEVICE = 100
GROUPS = 10
KILL_AFTER_ACKED = 3000
RESEND_AFTER_QUIET_S = 3.0


class HubProcess:
    """``lantern hub serve`` as a child process, logs in a file."""

    def __init__(self, data_dir: Path, database_url: str, broker_port: int, log: Path) -> None:
        self.command = [
            sys.executable,
            "-m",
            "devices.cli",
            "-v",
            "hub",
            "serve",
            "--data-dir",
            str(data_dir),
            "--database-url",
            database_url,
            "--mqtt",
            f"mqtt://127.0.0.1:{broker_port}",
            "--workers",
            "4",
            "--client-id",
            "hub-acceptance",
        ]
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as sink:
            sink.write(b"\n--- start\n")
            sink.flush()
            self.process = subprocess.Popen(
                self.command, stdout=sink, stderr=sink, cwd=REPO, env=run_env()
            )
        start = self.log.stat().st_size
        assert wait_until(lambda: b"hub serving" in self.log.read_bytes()[start - 200 :], 30), (
            self.tail()
        )

    def kill(self, sig: int) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(timeout=30)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def _publish_all(devices: FakeDevices, per_device: int, failures: list[BaseException]) -> None:
    futures: list[Future[None]] = []
    try:
        for _ in range(per_device):
            for device_id in devices.device_ids:
                futures.append(devices.send_nowait(devices.next_event(device_id)))
        for future in futures:
            future.result(60)
    except BaseException as exc:  # reported by the test thread
        failures.append(exc)


def _outstanding(groups: Sequence[FakeDevices]) -> set[str]:
    return set().union(*(g.outstanding() for g in groups))


def test_ten_thousand_events_survive_a_hub_sigkill(tmp_path: Path, engine: Engine) -> None:
    """On each backend (the ``engine`` fixture: SQLite and PostgreSQL)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    database_url = engine.url.render_as_string(hide_password=False)
    device_ids = [f"wb-acc-{i:04d}" for i in range(DEVICES)]
    register(engine, device_ids)

    with PrivateBroker(tmp_path / "broker") as broker:
        hub = HubProcess(data_dir, database_url, broker.port, tmp_path / "hub.log")
        hub.start()
        size = DEVICES // GROUPS
        groups = [
            FakeDevices(broker.settings(), device_ids[i : i + size])
            for i in range(0, DEVICES, size)
        ]
        for group in groups:
            group.__enter__()
        try:
            started = time.monotonic()
            failures: list[BaseException] = []
            threads = [
                threading.Thread(target=_publish_all, args=(g, EVENTS_PER_DEVICE, failures))
                for g in groups
            ]
            for thread in threads:
                thread.start()

            def acked() -> int:
                return sum(len(g.acked) for g in groups)

            assert wait_until(lambda: acked() >= KILL_AFTER_ACKED, 30), hub.tail()
            assert hub.kill(signal.SIGKILL) == -signal.SIGKILL
            acked_at_kill = acked()
            killed_at = time.monotonic() - started
            time.sleep(1.0)
            hub.start()
            for thread in threads:
                thread.join(60)
            assert not failures, failures
            published_s = time.monotonic() - started

            # Devices resend what is still unacked once acks stop coming (after a
            # quiet spell, as the outbox does): acks the killed hub never sent.
            resent = 0
            deadline = time.monotonic() + 90
            last = acked()
            while _outstanding(groups) and time.monotonic() < deadline:
                time.sleep(RESEND_AFTER_QUIET_S)
                if acked() > last:
                    last = acked()
                    continue
                for group in groups:
                    for event_id in group.outstanding():
                        topic, payload = group.payloads[event_id]
                        group.send_raw(topic, payload)
                        resent += 1
            total_s = time.monotonic() - started
            outstanding = _outstanding(groups)
            assert not outstanding, f"{len(outstanding)} never acked\n{hub.tail()}"
            assert hub.kill(signal.SIGTERM) == 0, hub.tail()
        finally:
            for group in groups:
                group.__exit__(None, None, None)

    sent = set().union(*(g.payloads for g in groups))
    with Session(engine) as session:
        rows = session.scalar(select(func.count()).select_from(Position))
        stored = set(session.scalars(select(Position.event_id)))
    ack_counts = [n for g in groups for n in g.acked.values()]
    result = {
        "backend": engine.dialect.name,
        "sent": len(sent),
        "rows": rows,
        "unique_stored": len(stored),
        "acked": len(ack_counts),
        "acked_more_than_once": sum(1 for n in ack_counts if n > 1),
        "acked_at_kill": acked_at_kill,
        "killed_at_s": round(killed_at, 2),
        "published_s": round(published_s, 2),
        "resent_by_devices": resent,
        "total_s": round(total_s, 2),
    }
    logger.info("acceptance: %s", json.dumps(result))
    (tmp_path / "result.json").write_text(json.dumps(result), encoding="utf-8")
    if os.environ.get("LANTERN_ACCEPTANCE_RESULT"):
        Path(os.environ["LANTERN_ACCEPTANCE_RESULT"]).write_text(json.dumps(result))
    assert len(sent) == DEVICES * EVENTS_PER_DEVICE
    assert rows == len(sent)
    assert stored == sent
    assert len(ack_counts) == len(sent)
