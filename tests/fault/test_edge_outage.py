"""edge_outage_10k: five wearable agents reach the broker through one TCP proxy that
is cut once their first events are stored; they keep producing (a position every
3 ms of wall time each) into their outboxes until more than 10,000 events wait there
together, then the link comes back and everything drains into the hub (PostgreSQL).

Each agent makes 2,700 events: its simulated battery (full, 2% per simulated hour,
a position per simulated minute) crosses the low threshold (20%) at about the 2,400th
and would reach the critical one (5%) at about the 2,850th. So the run has the agents'
own ``battery.low`` alarms, raised offline and delivered as replays, besides the SOS
of the in-test device: each must become exactly one alert.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.edge.mqtt_helpers import CutProxy, PrivateBroker, wait_until
from tests.fault.harness import HubProcess, Rig, assert_clean, fast_folder, write_result

pytestmark = pytest.mark.fault

logger = logging.getLogger(__name__)

AGENTS = 5
EVENTS_PER_AGENT = 2700
RATE = 20_000.0  # the ankle tag's 60 s interval becomes 3 ms
BUFFERED = 10_000
WINDOW = 256
CUT_AFTER_STORED = AGENTS  # each agent's first position (its boot locate)


def test_edge_outage_10k(tmp_path: Path, pg_engine: Engine) -> None:
    url = pg_engine.url.render_as_string(hide_password=False)
    with (
        fast_folder("lantern-fault-") as fast,
        PrivateBroker(tmp_path / "broker") as broker,
    ):
        proxy = CutProxy(broker.port)
        hub = HubProcess(tmp_path / "data", url, broker.port, tmp_path / "hub.log")
        rig = Rig(
            scenario="edge_outage_10k",
            backend="postgresql",
            engine=pg_engine,
            tmp_path=tmp_path,
            fast=fast,
            broker=broker,
            agent_port=proxy.port,
            agents=AGENTS,
            rate=RATE,
            max_events=EVENTS_PER_AGENT,
            window=WINDOW,
        )
        try:
            hub.start()
            with rig:
                rig.start_agents()
                assert wait_until(
                    lambda: proxy.connections >= AGENTS and rig.stored_count() >= CUT_AFTER_STORED,
                    60,
                    0.05,
                ), hub.tail()
                rig.sos.raise_sos()
                proxy.cut()
                cut_at = time.monotonic()
                stored_at_fault = rig.stored_count()

                def buffered() -> int:
                    return sum(a.outbox_events() for a in rig.agents)

                assert wait_until(lambda: buffered() >= BUFFERED, 120, 0.2), [
                    (a.device_id, a.outbox_events(), a.tail()) for a in rig.agents
                ]
                peak = buffered()
                stored_during = rig.stored_count() - stored_at_fault
                proxy.restore()
                fault_end = time.monotonic()
                recover_s = rig.recover(fault_end)
                rig.finish()
                assert hub.stop() == 0, hub.tail()
                figures = rig.figures(
                    fault=f"the agents' link to the broker cut for {fault_end - cut_at:.1f} s, "
                    f"until {peak} events waited in their outboxes, then restored",
                    recover_s=recover_s,
                    hub_duplicates=hub.duplicates_seen,
                    stored_at_fault=stored_at_fault,
                    buffered_peak=peak,
                    outage_s=round(fault_end - cut_at, 2),
                    stored_during_outage=stored_during,
                )
        finally:
            proxy.close()
            hub.ensure_dead()
    write_result(figures, "edge_outage_10k-postgresql")
    assert_clean(figures)
    assert peak >= BUFFERED
    # Nothing got past the cut but what was already in flight (the window of each agent) and
    # the SOS, which does not go through the proxy.
    assert stored_during <= AGENTS * WINDOW + 1, stored_during
    # The agents' own alarms (battery.low while offline) and the SOS.
    assert len(figures.alerts_expected) == AGENTS + 1, sorted(figures.alerts_expected)
