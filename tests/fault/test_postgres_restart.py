"""postgres_restart: the hub on a PostgreSQL cluster of the test's own, which is stopped
(``pg_ctl stop -m fast``: sessions are cut, the batch in progress fails) and started
again mid-stream while three wearable agents keep publishing.

While the database is down the hub must keep what it received unacknowledged (no
PUBACK, no device ack): its workers retry the failed batch with backoff
(``hub.ingest.IngestWorker.handle``) and catch up once the server is back. The
system PostgreSQL is never touched; without the server binaries the test is skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from hub.db.engine import make_engine
from hub.db.migrate import upgrade
from tests.edge.mqtt_helpers import PrivateBroker
from tests.fault.harness import (
    HubProcess,
    PrivatePostgres,
    Rig,
    assert_clean,
    fast_folder,
    write_result,
)

pytestmark = pytest.mark.fault

logger = logging.getLogger(__name__)

STOP_AFTER_STORED = 700
DOWN_S = 3.0
ACK_GRACE_S = 1.0
"""Acks of batches committed just before the stop may still go out this long after."""


@pytest.fixture
def cluster() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        server.create_database()
        yield server
    finally:
        server.close()


def test_postgres_restart(tmp_path: Path, cluster: PrivatePostgres) -> None:
    engine: Engine = make_engine(cluster.url)
    upgrade(engine)
    with (
        fast_folder("lantern-fault-") as fast,
        PrivateBroker(tmp_path / "broker") as broker,
    ):
        hub = HubProcess(tmp_path / "data", cluster.url, broker.port, tmp_path / "hub.log")
        rig = Rig(
            scenario="postgres_restart",
            backend="postgresql",
            engine=engine,
            tmp_path=tmp_path,
            fast=fast,
            broker=broker,
        )
        try:
            hub.start()
            with rig:
                stored_at_fault = rig.stream_until(STOP_AFTER_STORED, hub.tail)
                engine.dispose()  # our own connections would be cut too
                cluster.stop("fast")
                down_at = time.monotonic()
                time.sleep(DOWN_S)
                up_at = time.monotonic()
                cluster.start()
                fault_end = time.monotonic()
                acks_while_down = rig.wire.acks_between(down_at + ACK_GRACE_S, up_at)
                recover_s = rig.recover(fault_end)
                rig.finish()
                assert hub.stop() == 0, hub.tail()
                figures = rig.figures(
                    fault=f"PostgreSQL stopped (pg_ctl -m fast) with {stored_at_fault} events "
                    f"stored and started again {DOWN_S:g} s later",
                    recover_s=recover_s,
                    hub_duplicates=hub.duplicates_seen,
                    stored_at_fault=stored_at_fault,
                    acks_while_down=acks_while_down,
                )
            log = hub.tail()
        finally:
            hub.ensure_dead()
            engine.dispose()
    write_result(figures, "postgres_restart-postgresql")
    assert_clean(figures, allow_quarantine=True)
    assert stored_at_fault < figures.as_dict()["sent"]  # the fault landed mid-stream
    # Nothing was acked while the database was down: what arrived waited, unacked.
    assert acks_while_down == 0, f"{acks_while_down} acks published with the database down"
    assert "failed; redoing it" in hub.log.read_text(errors="replace"), log  # a batch failed
    # A database that is down is no fault of a message: the batch is retried, never
    # quarantined (hub/ingest.py ``_transient``).
    assert not figures.extra["quarantined"], figures.extra["quarantined"]
