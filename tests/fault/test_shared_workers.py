"""shared_workers: two hub processes (client ids ``hub-a`` and ``hub-b``) consume the
shared subscription ``$share/hub/lantern/v1/+/evt/#`` on one PostgreSQL database while
three wearable agents stream; ``hub-a`` is SIGKILLed mid-stream and NOT restarted.

Decision: the dead worker stays dead, the harder case. Its session keeps what
Mosquitto had handed it and not had PUBACKed, so those events reach the database only
through the devices' outbox resends (``--resend-after``), which the broker hands to
``hub-b``. Both hubs run with a short session expiry (5 s), as the members of a
worker pool should: while a dead member's session lives, Mosquitto 2.0 keeps routing
its share of every new message (and of every resend) into it. With the default
expiry of a day, one run of this scenario took 99 s to recover and put 2,005 extra
copies on the wire, each resend losing half of itself to the dead session again.
"""

from __future__ import annotations

import logging
import signal
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.edge.mqtt_helpers import PrivateBroker
from tests.fault.harness import HubProcess, Rig, assert_clean, fast_folder, write_result

pytestmark = pytest.mark.fault

logger = logging.getLogger(__name__)

KILL_AFTER_STORED = 700
SESSION_EXPIRY_S = 5


def test_shared_workers(tmp_path: Path, pg_engine: Engine) -> None:
    url = pg_engine.url.render_as_string(hide_password=False)
    with (
        fast_folder("lantern-fault-") as fast,
        PrivateBroker(tmp_path / "broker") as broker,
    ):
        hubs = [
            HubProcess(
                tmp_path / f"data-{name}",
                url,
                broker.port,
                tmp_path / f"hub-{name}.log",
                client_id=f"hub-{name}",
                workers=2,
                extra=("--session-expiry", str(SESSION_EXPIRY_S)),
            )
            for name in ("a", "b")
        ]
        doomed, survivor = hubs
        rig = Rig(
            scenario="shared_workers",
            backend="postgresql",
            engine=pg_engine,
            tmp_path=tmp_path,
            fast=fast,
            broker=broker,
        )
        try:
            for hub in hubs:
                hub.start()
            with rig:
                stored_at_fault = rig.stream_until(KILL_AFTER_STORED, doomed.tail)
                stored_by_doomed = int(doomed.metric("lantern_events_stored_total"))
                assert doomed.kill(signal.SIGKILL) == -signal.SIGKILL
                fault_end = time.monotonic()
                recover_s = rig.recover(fault_end)
                rig.finish()
                assert survivor.stop() == 0, survivor.tail()
                figures = rig.figures(
                    fault=f"hub-a of two shared-subscription hubs SIGKILLed with "
                    f"{stored_at_fault} events stored, not restarted",
                    recover_s=recover_s,
                    hub_duplicates=doomed.duplicates_seen + survivor.duplicates_seen,
                    stored_at_fault=stored_at_fault,
                    stored_by_killed_hub=stored_by_doomed,
                )
        finally:
            for hub in hubs:
                hub.ensure_dead()
    write_result(figures, "shared_workers-postgresql")
    assert_clean(figures, allow_quarantine=True)
    assert stored_at_fault < figures.as_dict()["sent"]  # the kill landed mid-stream
    assert stored_by_doomed > 0, "hub-a never took a share of the stream"
    # Deadlocks and lost connections retry the batch; bulk writes go in key order, so
    # the two hubs do not deadlock on the same device's rows (hub/db/repositories.py).
    assert not figures.extra["quarantined"], figures.extra["quarantined"]
