"""broker_restart: three wearable agents stream into the hub (SQLite) through a private
Mosquitto, which is stopped (SIGTERM, so it saves its sessions) and started again on the
same port mid-stream, two seconds later.

Everyone reconnects to the same persistent sessions: the hub's shared subscription
gets what the devices published before the stop and had not been delivered, the
devices resend what the hub had not acked. Every committed event is stored once and
the SOS raised just before the stop becomes one alert.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from tests.edge.mqtt_helpers import PrivateBroker
from tests.fault.harness import (
    HubProcess,
    Rig,
    assert_clean,
    fast_folder,
    sqlite_database,
    write_result,
)

pytestmark = pytest.mark.fault

logger = logging.getLogger(__name__)

RESTART_AFTER_STORED = 700
DOWN_S = 2.0


def test_broker_restart(tmp_path: Path, sqlite_template: Path) -> None:
    engine, url = sqlite_database(sqlite_template, tmp_path)
    with (
        fast_folder("lantern-fault-") as fast,
        PrivateBroker(tmp_path / "broker") as broker,
    ):
        hub = HubProcess(tmp_path / "data", url, broker.port, tmp_path / "hub.log")
        rig = Rig(
            scenario="broker_restart",
            backend="sqlite",
            engine=engine,
            tmp_path=tmp_path,
            fast=fast,
            broker=broker,
        )
        try:
            hub.start()
            with rig:
                stored_at_fault = rig.stream_until(RESTART_AFTER_STORED, hub.tail)
                broker.restart(down_s=DOWN_S)
                fault_end = time.monotonic()
                recover_s = rig.recover(fault_end)
                rig.finish()
                assert hub.stop() == 0, hub.tail()
                figures = rig.figures(
                    fault=f"private Mosquitto stopped (SIGTERM) with {stored_at_fault} events "
                    f"stored and started again on the same port {DOWN_S:g} s later",
                    recover_s=recover_s,
                    hub_duplicates=hub.duplicates_seen,
                    stored_at_fault=stored_at_fault,
                )
        finally:
            hub.ensure_dead()
            engine.dispose()
    write_result(figures, "broker_restart-sqlite")
    assert_clean(figures)
    assert stored_at_fault < figures.as_dict()["sent"]  # the fault landed mid-stream
