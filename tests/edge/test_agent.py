"""The wearable agent with the hub: retained config applied or refused, presence,
commands, and the outbox-full policy end to end."""

from __future__ import annotations

import copy
import json
import statistics
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devices.catalog import BUILTIN_CATALOG
from devices.firmware import default_config_dir, load_profiles
from devices.protocol import (
    AlarmEvent,
    ConfigBody,
    ConfigMessage,
    LocateBody,
    LocateCommand,
    config_sha256,
    encode,
    new_event_id,
    topic_for,
)
from edge.agent import AgentTuning
from edge.wearable import WearableAgent, load_track
from tests.edge.mqtt_helpers import HubSim, PrivateBroker, unique_id, wait_until, write_track

RATE = 600.0  # the ankle tag's 60 s interval becomes 0.1 s


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    with PrivateBroker(tmp_path) as running:
        yield running


def ankle_config() -> dict[str, Any]:
    return load_profiles(default_config_dir() / "profiles")["ankle_tag"].profile.model_dump(
        mode="json"
    )


def config_message(device_id: str, version: int, config: dict[str, Any]) -> ConfigMessage:
    return ConfigMessage(
        device_id=device_id,
        sent_at=datetime.now(UTC),
        body=ConfigBody(version=version, sha256=config_sha256(config), config=config),
    )


def start_agent(
    broker: PrivateBroker, folder: Path, device_id: str, **kwargs: Any
) -> tuple[WearableAgent, threading.Thread]:
    from devices.firmware import WearableProfile

    profile = WearableProfile.model_validate(ankle_config())
    agent = WearableAgent(
        device_id=device_id,
        model=BUILTIN_CATALOG.get_model("lantern-ankle-a1"),
        profile=profile,
        mqtt=broker.settings(),
        outbox_path=folder / f"{device_id}.db",
        track=load_track(write_track(folder)),
        rate=kwargs.pop("rate", RATE),
        seed=2,
        tuning=AgentTuning(resend_after_s=1.0, close_timeout_s=3.0, idle_wait_s=0.05),
        **kwargs,
    )
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    assert agent.link.wait_subscribed(5)
    return agent, thread


def stop(agent: WearableAgent, thread: threading.Thread) -> None:
    agent.stop()
    thread.join(10)
    assert not thread.is_alive()


def _median_gap(hub: HubSim, device_id: str, after: datetime | None = None) -> float:
    stamps = [
        r.message.captured_at
        for r in hub.records("position")
        if r.message.device_id == device_id and (after is None or r.message.captured_at > after)
    ]
    gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:], strict=False)]
    return statistics.median(gaps)


def test_config_applies_reports_and_survives_restart(broker: PrivateBroker, tmp_path: Path) -> None:
    device_id = unique_id("cfg")
    with HubSim(broker.settings()) as hub:
        agent, thread = start_agent(broker, tmp_path, device_id)
        try:
            assert wait_until(lambda: len(hub.records("position")) >= 8, 5)
            before = _median_gap(hub, device_id)
            assert 0.06 < before < 0.2  # 60 s / 600
            state = hub.last_state(device_id)
            assert state is not None and "config_version" not in state["body"]

            faster = ankle_config()
            faster["report_interval_s"] = {"normal": 15, "in_violation": 10}
            faster["positioning"]["gnss_fix_timeout_s"] = 15
            message = config_message(device_id, 2, faster)
            hub.peer.publish(topic_for(message), encode(message), retain=True).result(5)
            assert wait_until(lambda: agent.applied is not None, 5)
            applied_at = datetime.now(UTC)
            assert wait_until(
                lambda: (
                    (hub.last_state(device_id) or {}).get("body", {}).get("config_version") == 2
                ),
                5,
            )
            state = hub.last_state(device_id)
            assert state is not None
            assert state["body"]["config_sha256"] == message.body.sha256
            assert state["body"]["status"] == "online"
            # The new interval (15 s / 600 = 25 ms) is in force.
            assert wait_until(
                lambda: (
                    len([r for r in hub.records("position") if r.message.captured_at > applied_at])
                    >= 12
                ),
                5,
            )
            assert _median_gap(hub, device_id, applied_at) < before / 2.5  # 15 s / 600

            # cmd/locate gives a position at once.
            produced = agent.counters.produced
            locate = LocateCommand(
                device_id=device_id,
                cmd_id=new_event_id(),
                sent_at=datetime.now(UTC),
                expires_at=datetime.now(UTC) + timedelta(minutes=1),
                body=LocateBody(),
            )
            hub.peer.publish(topic_for(locate), encode(locate)).result(5)
            assert wait_until(lambda: agent.counters.commands == 1, 5)
            assert agent.counters.produced > produced
        finally:
            stop(agent, thread)
        # Without the hub's retained config, the stored one is used again.
        hub.peer.publish(topic_for(message), b"", retain=True).result(5)
        again, thread = start_agent(broker, tmp_path, device_id)
        try:
            assert again.applied is not None and again.applied.version == 2
            assert again.wearable_profile.report_interval_s.normal == 15
            assert wait_until(
                lambda: (
                    (hub.last_state(device_id) or {}).get("body", {}).get("config_version") == 2
                    and hub.last_state(device_id, boot=again.outbox.boot_id) is not None
                ),
                5,
            )
        finally:
            stop(again, thread)


def _bad_configs(device_id: str, good: dict[str, Any]) -> list[tuple[str, bytes, str]]:
    """(name, payload, what the refusal says) for configs the agent must not apply."""
    unknown_key = copy.deepcopy(good)
    unknown_key["report_interval_s"]["sometimes"] = 5
    wrong_type = copy.deepcopy(good)
    wrong_type["heartbeat_s"] = "300"
    too_slow = copy.deepcopy(good)
    too_slow["report_interval_s"] = {"normal": 60, "in_violation": 120}
    camera = load_profiles(default_config_dir() / "profiles")["fixed_camera"].profile.model_dump(
        mode="json"
    )
    no_button = copy.deepcopy(good)
    no_button["alarms"]["sos"] = True  # the ankle tag has no SOS button
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("unknown-key", unknown_key, 3, "sometimes"),
        ("string-number", wrong_type, 4, "heartbeat_s"),
        ("cross-field", too_slow, 5, "in_violation"),
        ("camera-profile", camera, 6, "camera"),
        ("capability", no_button, 7, "sos_button"),
        ("stale-version", {**good, "heartbeat_s": 999}, 1, "not newer"),
    ]
    found = [
        (name, encode(config_message(device_id, version, config)), reason)
        for name, config, version, reason in cases
    ]
    tampered = json.loads(encode(config_message(device_id, 9, good)))
    tampered["body"]["config"]["heartbeat_s"] = 201  # the sha256 no longer matches
    found += [
        ("not-json", b"{config", ""),
        ("sha-mismatch", json.dumps(tampered).encode(), ""),
        ("other-device", encode(config_message("someone-else", 10, good)), ""),
    ]
    return found


def test_malformed_configs_are_refused_and_the_old_one_kept(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    device_id = unique_id("badcfg")
    good = ankle_config()
    good["heartbeat_s"] = 200
    with HubSim(broker.settings()) as hub:
        agent, thread = start_agent(broker, tmp_path, device_id)
        try:
            first = config_message(device_id, 2, good)
            hub.peer.publish(topic_for(first), encode(first), retain=True).result(5)
            assert wait_until(lambda: agent.applied is not None, 5)
            for name, payload, reason in _bad_configs(device_id, good):
                refused = agent.counters.configs_refused
                invalid = agent.link.stats.invalid_incoming
                hub.peer.publish(topic_for(first), payload, retain=True).result(5)
                assert wait_until(
                    lambda r=refused, i=invalid: (
                        agent.counters.configs_refused > r  # type: ignore[misc]
                        or agent.link.stats.invalid_incoming > i
                    ),
                    5,
                ), name
                assert agent.applied is not None and agent.applied.version == 2, name
                assert agent.wearable_profile.heartbeat_s == 200, name
                if reason:
                    assert agent.config_error is not None and reason in agent.config_error, (
                        name,
                        agent.config_error,
                    )
            produced = agent.counters.produced
            assert wait_until(lambda: agent.counters.produced > produced + 5, 5)  # still running
            state = hub.last_state(device_id)
            assert state is not None and state["body"]["config_version"] == 2
        finally:
            stop(agent, thread)
        hub.peer.publish(topic_for(first), b"", retain=True).result(5)


def test_outbox_full_raises_the_alarm_keeps_events_and_clears(
    broker: PrivateBroker, tmp_path: Path
) -> None:
    device_id = unique_id("full")
    small = ankle_config()
    small["outbox"] = {"max_bytes": 4_000_000, "max_events": 40, "telemetry_drop_policy": "oldest"}
    with HubSim(broker.settings()) as hub:
        agent, thread = start_agent(broker, tmp_path, device_id, rate=3000.0)
        try:
            message = config_message(device_id, 2, small)
            hub.peer.publish(topic_for(message), encode(message), retain=True).result(5)
            assert wait_until(lambda: agent.applied is not None, 5)
            hub.hold_acks.set()  # the hub stops acking: the outbox fills with events
            assert wait_until(lambda: agent.outbox.full, 10)
            assert wait_until(lambda: agent.outbox.events > 60, 5)  # kept past the limit
            refused = agent.counters.telemetry_refused
            assert wait_until(lambda: agent.counters.telemetry_refused > refused, 5)
            hub.hold_acks.clear()
            assert wait_until(lambda: not agent.outbox.full, 10)
            produced = set(agent.counters.event_ids)
            assert wait_until(lambda: produced <= hub.event_ids(), 10)

            def outbox_alarms() -> list[AlarmEvent]:
                return [
                    r.message
                    for r in hub.records("alarm")
                    if isinstance(r.message, AlarmEvent) and r.message.body.type == "outbox.full"
                ]

            # The cleared alarm is made when acks drain the outbox, so it may still be on
            # its way when every event seen above has arrived.
            wait_until(lambda: len(outbox_alarms()) >= 2, 10)
            alarms = outbox_alarms()
            states = [a.body.state for a in alarms]
            assert states[:2] == ["active", "cleared"], states
            assert alarms[0].body.alarm_id == alarms[1].body.alarm_id
        finally:
            stop(agent, thread)
        hub.peer.publish(topic_for(message), b"", retain=True).result(5)
