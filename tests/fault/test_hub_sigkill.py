"""hub_sigkill (acceptance): 10,000 events through a real broker into a hub that is
SIGKILLed and restarted midway; exactly 10,000 rows, every event acked, on SQLite and
on PostgreSQL.

The hub runs as a real process (``python -m devices.cli hub serve``). The devices
(100, on 10 connections) publish as fast as the broker takes it; once 3,000 events
are acked the hub is killed with SIGKILL and started again a second later. Events
published while it is down wait in its persistent session; events it had received
but not PUBACKed are delivered again; acks lost with the process are made up for
by the devices resending what is still unacked (as their outbox would), which the
hub stores once and acks again. An in-test device raises an SOS just before the kill
and resends it until acked: it must become exactly one alert.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.edge.mqtt_helpers import PrivateBroker, unique_id, wait_until
from tests.fault.harness import (
    AlarmDevice,
    Figures,
    HubProcess,
    WireObserver,
    assert_clean,
    expected_alerts,
    quarantined_by_code,
    raised_alerts,
    stored_event_ids,
    wait_stored,
    write_result,
)
from tests.hub.test_ingest import FakeDevices, register

pytestmark = pytest.mark.fault

logger = logging.getLogger(__name__)

DEVICES = 100
EVENTS_PER_DEVICE = 100
GROUPS = 10
KILL_AFTER_ACKED = 3000
RESEND_AFTER_QUIET_S = 3.0


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


def _sent(groups: Sequence[FakeDevices]) -> set[str]:
    found: set[str] = set()
    for group in groups:
        with group.lock:
            found |= set(group.payloads)
    return found


def test_hub_sigkill(tmp_path: Path, engine: Engine) -> None:
    """On each backend (the ``engine`` fixture: SQLite and PostgreSQL)."""
    backend = engine.dialect.name
    database_url = engine.url.render_as_string(hide_password=False)
    device_ids = [f"wb-acc-{i:04d}" for i in range(DEVICES)]
    sos_id = unique_id("sigkil-sos")
    register(engine, [*device_ids, sos_id])
    all_ids = [*device_ids, sos_id]

    with PrivateBroker(tmp_path / "broker") as broker:
        hub = HubProcess(
            tmp_path / "data", database_url, broker.port, tmp_path / "hub.log", workers=4
        )
        hub.start()
        size = DEVICES // GROUPS
        groups = [
            FakeDevices(broker.settings(), device_ids[i : i + size])
            for i in range(0, DEVICES, size)
        ]
        wire = WireObserver(broker.settings(), set(all_ids))
        sos = AlarmDevice(broker.settings(), sos_id)
        for group in groups:
            group.__enter__()
        try:
            with wire, sos:
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

                assert wait_until(lambda: acked() >= KILL_AFTER_ACKED, 60), hub.tail()
                sos.raise_sos()
                assert hub.kill(signal.SIGKILL) == -signal.SIGKILL
                acked_at_kill = acked()
                killed_at = time.monotonic() - started
                time.sleep(1.0)
                hub.start()
                fault_end = time.monotonic()
                snapshot = _sent(groups) | sos.sent()
                assert wait_stored(engine, all_ids, snapshot, 120), hub.tail()
                recover_s = time.monotonic() - fault_end
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
                outstanding = _outstanding(groups)
                assert not outstanding, f"{len(outstanding)} never acked\n{hub.tail()}"
                assert wait_until(sos.acked, 60), "the SOS alarm was never acked"
                assert hub.stop() == 0, hub.tail()
                total_s = time.monotonic() - started
        finally:
            for group in groups:
                group.__exit__(None, None, None)
            hub.ensure_dead()

    sent = _sent(groups) | sos.sent()
    ack_counts = [n for g in groups for n in g.acked.values()]
    figures = Figures(
        scenario="hub_sigkill",
        backend=backend,
        fault=f"hub SIGKILLed after {acked_at_kill} events were acked, restarted 1 s later",
        sent=sent,
        rows=stored_event_ids(engine, all_ids),
        duplicates_on_wire=wire.duplicates,
        alerts_expected=expected_alerts(engine, all_ids, wire.alarms),
        alerts_raised=raised_alerts(engine, all_ids),
        recover_s=recover_s,
        duration_s=total_s,
        extra={
            "duplicates_received_by_hub": hub.duplicates_seen,
            "quarantined": quarantined_by_code(engine, all_ids),
            "acked": len(ack_counts),
            "acked_more_than_once": sum(1 for n in ack_counts if n > 1),
            "acked_at_kill": acked_at_kill,
            "killed_at_s": round(killed_at, 2),
            "published_s": round(published_s, 2),
            "resent_by_devices": resent,
        },
    )
    write_result(figures, f"hub_sigkill-{backend}")
    assert_clean(figures)
    assert len(sent) == DEVICES * EVENTS_PER_DEVICE + 1
    assert len(figures.rows) == len(sent)
    assert len(ack_counts) == DEVICES * EVENTS_PER_DEVICE
