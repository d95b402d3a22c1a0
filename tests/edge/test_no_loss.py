"""No loss, against real brokers: a stream of events while the broker restarts, while
the agent is SIGKILLed and restarted, and while the agent is cut off the broker.

Each test runs a private Mosquitto (``mqtt_helpers.PrivateBroker``) and a hub
simulator that stores and acks like the hub (``HubSim``). The verdict: every event
the agent committed reached the hub (by event id), each boot's ``seq`` runs 0..n
without a hole, the outbox ends empty; copies on the wire are allowed and counted.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

from devices.catalog import BUILTIN_CATALOG
from devices.firmware import WearableProfile, default_config_dir, load_profiles
from devices.protocol import state_topic
from edge.agent import AgentTuning
from edge.comms.mqtt import MqttPeer, MqttSettings
from edge.wearable import WearableAgent, load_track
from tests.edge.mqtt_helpers import (
    CutProxy,
    HubSim,
    PrivateBroker,
    assert_no_loss,
    edge_command,
    run_env,
    unique_id,
    wait_until,
    write_track,
)

logger = logging.getLogger(__name__)

RATE = 3000.0  # the ankle tag's 60 s interval becomes 20 ms: 50 positions a second
FAST = AgentTuning(window=64, resend_after_s=1.0, close_timeout_s=3.0, idle_wait_s=0.05)


def ankle_profile() -> WearableProfile:
    profile = load_profiles(default_config_dir() / "profiles")["ankle_tag"].profile
    assert isinstance(profile, WearableProfile)
    return profile


def make_agent(
    settings: MqttSettings, folder: Path, device_id: str, max_events: int
) -> WearableAgent:
    return WearableAgent(
        device_id=device_id,
        model=BUILTIN_CATALOG.get_model("lantern-ankle-a1"),
        profile=ankle_profile(),
        mqtt=settings,
        outbox_path=folder / f"{device_id}.db",
        track=load_track(write_track(folder)),
        rate=RATE,
        max_events=max_events,
        seed=1,
        tuning=FAST,
    )


def run_in_thread(agent: WearableAgent) -> threading.Thread:
    thread = threading.Thread(target=agent.run, name="agent", daemon=True)
    thread.start()
    return thread


def finish(agent: WearableAgent, thread: threading.Thread, hub: HubSim, total: int) -> set[str]:
    """Wait until everything produced is stored by the hub and acked, then stop."""
    assert wait_until(lambda: agent.counters.produced >= total, 20), agent.counters
    produced = set(agent.counters.event_ids)
    assert wait_until(lambda: produced <= hub.event_ids() and agent.outbox.events == 0, 20), (
        f"hub has {len(hub.event_ids() & produced)}/{len(produced)}, outbox {agent.outbox.events}"
    )
    agent.stop()
    thread.join(10)
    assert not thread.is_alive()
    return produced


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_no_loss_across_broker_restart(tmp_path: Path, how: str) -> None:
    total = 250
    with PrivateBroker(tmp_path) as broker, HubSim(broker.settings()) as hub:
        device_id = unique_id("restart")
        agent = make_agent(broker.settings(), tmp_path, device_id, total)
        thread = run_in_thread(agent)
        assert wait_until(lambda: len(hub.event_ids()) >= 40, 10)
        sig = signal.SIGTERM if how == "sigterm" else signal.SIGKILL
        broker.restart(down_s=1.0, sig=sig)
        produced = finish(agent, thread, hub, total)
    assert_no_loss(hub, produced)
    assert hub.event_ids() == produced
    assert hub.replayed_copies > 0  # what was made during the outage went out as replayed
    assert agent.link.stats.connects >= 2
    logger.info(
        "broker %s: %d events, %d duplicates on the wire, %d replayed copies",
        how,
        len(produced),
        hub.duplicates,
        hub.replayed_copies,
    )


def test_no_loss_when_the_link_is_cut(tmp_path: Path) -> None:
    total = 250
    with PrivateBroker(tmp_path) as broker, HubSim(broker.settings()) as hub:
        proxy = CutProxy(broker.port)
        device_id = unique_id("cut")
        agent = make_agent(broker.settings(port=proxy.port), tmp_path, device_id, total)
        thread = run_in_thread(agent)
        try:
            assert wait_until(lambda: len(hub.event_ids()) >= 40, 10)
            proxy.cut()
            # The broker saw the connection drop: the will says offline.
            assert wait_until(
                lambda: (
                    (hub.last_state(device_id) or {}).get("body", {}).get("status") == "offline"
                ),
                5,
            )
            during = len(hub.event_ids())
            assert wait_until(lambda: agent.outbox.events > 30, 5)  # still producing
            assert len(hub.event_ids()) == during  # nothing gets through the cut
            proxy.restore()
            assert wait_until(
                lambda: (hub.last_state(device_id) or {}).get("body", {}).get("status") == "online",
                5,
            )
            produced = finish(agent, thread, hub, total)
        finally:
            proxy.close()
    assert_no_loss(hub, produced)
    assert hub.event_ids() == produced
    assert hub.replayed_copies > 0
    statuses = [s["body"]["status"] for t, s, _ in hub.states if t == state_topic(device_id)]
    assert statuses[:3] == ["online", "offline", "online"], statuses
    logger.info("cut: %d events, %d duplicates", len(produced), hub.duplicates)


def _event_log(path: Path) -> set[str]:
    if not path.exists():
        return set()
    lines = path.read_text(encoding="utf-8").splitlines()
    return {line for line in lines if len(line) == 36}  # a killed writer may leave half a line


def test_no_loss_when_the_agent_is_killed_and_restarted(tmp_path: Path) -> None:
    track = write_track(tmp_path)
    outbox = tmp_path / "outbox.db"
    log = tmp_path / "events.log"
    device_id = unique_id("killed")
    with PrivateBroker(tmp_path) as broker, HubSim(broker.settings()) as hub:

        def agent(max_events: int) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                edge_command(
                    "wearable",
                    "--device-id",
                    device_id,
                    "--sim",
                    str(track),
                    "--broker",
                    f"127.0.0.1:{broker.port}",
                    "--outbox",
                    str(outbox),
                    "--rate-multiplier",
                    str(RATE),
                    "--max-events",
                    str(max_events),
                    "--resend-after",
                    "1",
                    "--reconnect-max",
                    "0.5",
                    "--event-log",
                    str(log),
                ),
                env=run_env(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )

        first = agent(100_000)
        try:
            assert wait_until(lambda: len(hub.event_ids()) >= 60, 15)
            online = hub.last_state(device_id)
            assert online is not None and online["body"]["status"] == "online"
            first_boot = online["boot_id"]
            hub.lose_events.set()  # events from now on are not stored: they stay unacked
            assert wait_until(lambda: _outbox_events(outbox) >= 20, 5)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        assert first.returncode == -signal.SIGKILL
        left = _outbox_events(outbox)
        assert left >= 20
        # The broker publishes the Last Will: retained offline, seen live and by a
        # subscriber that comes later.
        assert wait_until(
            lambda: (hub.last_state(device_id) or {}).get("body", {}).get("status") == "offline",
            5,
        )
        late = MqttPeer(
            unique_id("late"),
            broker.settings(session_expiry_s=0),
            subscriptions=[(state_topic(device_id), 1)],
        )
        late.start()
        try:
            retained = late.get_message(5)
        finally:
            late.close(2)
        assert retained is not None and retained.retain and b'"offline"' in retained.payload
        assert first_boot.encode() in retained.payload

        witnessed_first = _event_log(log)
        # Restart on the same outbox: a new boot, and the first boot's unacked events
        # go out again.
        hub.lose_events.clear()
        second = agent(100)
        try:
            assert wait_until(
                lambda: (
                    len(_event_log(log) - witnessed_first) >= 100
                    and _event_log(log) <= hub.event_ids()
                ),
                20,
            ), f"{len(_event_log(log) - hub.event_ids())} not at the hub"
            assert wait_until(lambda: _outbox_events(outbox) == 0, 10)
        finally:
            second.send_signal(signal.SIGTERM)
            _, err = second.communicate(timeout=15)
        assert second.returncode == 0, err.decode(errors="replace")[-2000:]
        assert (hub.last_state(device_id) or {}).get("body", {}).get("status") == "offline"
    produced = _event_log(log)
    assert_no_loss(hub, produced)
    boots = hub.seqs_by_boot()
    assert first_boot in boots and len(boots) == 2
    # The first boot's events that were on disk when it died all arrived: its seqs run
    # 0..n with no hole (checked above) and the outbox is empty.
    assert _outbox_events(outbox) == 0
    assert len(boots[first_boot]) >= len(witnessed_first)
    # The dead boot's unacked events reached the hub only by being sent again.
    assert hub.replayed_copies >= left
    logger.info(
        "kill: %d events over 2 boots, %d left unacked at the kill, %d duplicates",
        len(hub.event_ids()),
        left,
        hub.duplicates,
    )


def _outbox_events(path: Path) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        (count,) = db.execute("SELECT COUNT(*) FROM outbox WHERE kind = 'event'").fetchone()
    finally:
        db.close()
    return int(count)
