"""``lantern devices simulate``: a fleet of simulated wearables on one asyncio loop
against a private Mosquitto, with and without an acking hub stand-in (AckAll), in
process and as the command line; the options it refuses; what ``--rate`` means."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from devices.firmware import WearableProfile, load_profile, packaged_config_dir
from devices.protocol import DeviceState, decode
from devices.simulation import demo_site
from edge.comms.mqtt import MqttPeer, RawMessage
from edge.simulate import (
    AckAll,
    FdLimitError,
    FleetRunner,
    PlanError,
    Progress,
    app,
    ensure_fd_limit,
    parse_mix,
    plan_fleet,
    plan_rate,
)
from edge.simulate import runner as runner_module
from tests.edge.mqtt_helpers import REPO, PrivateBroker, free_port, run_env, unique_id, wait_until

FINAL_LINE = re.compile(r"^sent=(\d+) acked=(\d+) outstanding=(\d+)$")
cli = CliRunner()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateBroker]:
    with PrivateBroker(tmp_path_factory.mktemp("broker")) as running:
        yield running


def _settings(broker: PrivateBroker) -> Any:
    return broker.settings(session_expiry_s=60, keepalive_s=30)


def _run_fleet(runner: FleetRunner) -> tuple[Any, list[Progress]]:
    seen: list[Progress] = []
    result = asyncio.run(runner.run(seen.append, progress_every_s=0.5))
    return result, seen


def _retained_states(broker: PrivateBroker, prefix: str, expected: int) -> dict[str, DeviceState]:
    """The retained ``state`` of every device whose id starts with ``prefix``."""
    states: dict[str, DeviceState] = {}
    lock = threading.Lock()

    def keep(message: RawMessage) -> None:
        if message.retain and message.payload and message.topic.split("/")[2].startswith(prefix):
            state = decode(message.topic, message.payload).message
            assert isinstance(state, DeviceState)
            with lock:
                states[state.device_id] = state

    peer = MqttPeer(
        unique_id("states"),
        broker.settings(session_expiry_s=0),
        subscriptions=[("lantern/v1/+/state", 1)],
        on_message=keep,
    )
    peer.start()
    try:
        wait_until(lambda: len(states) >= expected, 10)
    finally:
        peer.close(2)
    with lock:
        return dict(states)


# -- what --rate means -------------------------------------------------------------------


def _wristband() -> WearableProfile:
    profile = load_profile(packaged_config_dir() / "profiles" / "wristband.yaml")
    assert isinstance(profile, WearableProfile)
    return profile


def test_rate_sets_each_devices_interval() -> None:
    profile = _wristband()  # a position every 30 s, a check-in after 120 s of silence
    natural = plan_rate(1000, profile, None)
    assert natural.interval_s == 30 and not natural.scaled
    assert natural.rate == pytest.approx(1000 / 30) == natural.natural_rate
    fast = plan_rate(1000, profile, 2000.0)
    assert fast.interval_s == pytest.approx(0.5) and fast.rate == pytest.approx(2000)
    scaled = fast.apply(profile)
    assert scaled.report_interval_s.normal == pytest.approx(0.5)
    assert scaled.report_interval_s.in_violation == pytest.approx(0.5 * 10 / 30)
    assert scaled.heartbeat_s == profile.heartbeat_s
    with pytest.raises(PlanError, match="too low"):
        plan_rate(1000, profile, 5.0)  # every 200 s: the 120 s check-ins would dominate
    with pytest.raises(PlanError, match="positive"):
        plan_rate(10, profile, 0.0)


def test_plan_counts_and_ids() -> None:
    plan = plan_fleet(
        demo_site("kereru-flats"), 20, mix={"walk": 3, "sos": 1}, seed=4, id_prefix="plan-a"
    )
    assert plan.device_ids[0] == "plan-a-0001" and len(plan.device_ids) == 20
    assert plan.scenarios == {"walk": 15, "sos": 5}
    assert [d.device_id for d in plan.build(datetime.now(UTC))] == list(plan.device_ids)
    assert parse_mix("walk=0.7, sos=0.3,spoof_jump") == {"walk": 0.7, "sos": 0.3, "spoof_jump": 1}


def test_descriptor_limit_is_raised_or_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = {"soft": 1024, "hard": 4096}
    monkeypatch.setattr(
        runner_module.resource, "getrlimit", lambda _: (limits["soft"], limits["hard"])
    )

    def setrlimit(_: int, value: tuple[int, int]) -> None:
        limits["soft"], limits["hard"] = value

    monkeypatch.setattr(runner_module.resource, "setrlimit", setrlimit)
    assert ensure_fd_limit(500) == (1024, 4096)  # enough already
    assert ensure_fd_limit(2000) == (2000 + runner_module.FD_HEADROOM, 4096)
    with pytest.raises(FdLimitError, match="hard limit is 4096"):
        ensure_fd_limit(5000)


# -- against a broker --------------------------------------------------------------------


def test_two_hundred_devices_all_acked(broker: PrivateBroker) -> None:
    rate, duration = 600.0, 5.0
    prefix = unique_id("fleet")
    plan = plan_fleet(demo_site("kereru-flats"), 200, id_prefix=prefix, rate=rate, seed=1)
    with AckAll(_settings(broker), client_id=unique_id("acker")) as acker:
        runner = FleetRunner(
            plan, _settings(broker), duration_s=duration, drain_s=5.0, connect_rate=400
        )
        result, seen = _run_fleet(runner)
        assert wait_until(lambda: acker.stats.settled, 10)
        assert acker.stats.acks_failed == 0
    match = FINAL_LINE.fullmatch(result.final_line())
    assert match is not None
    sent, acked, outstanding = map(int, match.groups())
    assert sent == acked > 0 and outstanding == 0
    assert sent == pytest.approx(rate * duration, rel=0.1)
    assert result.achieved_rate == pytest.approx(rate, rel=0.1)
    assert result.connected_max == 200 and result.unsent == 0 and result.rejected == 0
    assert acker.stats.received >= sent and acker.stats.rejected == 0  # all valid at the hub
    assert {p.phase for p in seen} >= {"running", "done"}
    assert seen[-1].sent == sent and seen[-1].outstanding == 0
    # Each device left its retained state: offline, its boot, its model.
    states = _retained_states(broker, prefix, 200)
    assert len(states) == 200
    assert {s.body.status for s in states.values()} == {"offline"}
    assert {s.body.hw_model for s in states.values()} == {"lantern-wrist-w1"}
    assert len({s.boot_id for s in states.values()}) == 200


def test_without_a_hub_nothing_is_acked(broker: PrivateBroker) -> None:
    plan = plan_fleet(demo_site("totara-downs"), 40, id_prefix=unique_id("lonely"), rate=200.0)
    runner = FleetRunner(plan, _settings(broker), duration_s=2.0, drain_s=0.5, connect_rate=400)
    result, _ = _run_fleet(runner)
    assert result.sent > 0 and result.acked == 0 and result.outstanding == result.sent
    assert result.final_line() == f"sent={result.sent} acked=0 outstanding={result.sent}"


def _devices_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "devices.cli", "devices", *args]


def _stdout_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_command_line_with_ack_all_processes(broker: PrivateBroker, tmp_path: Path) -> None:
    """The acceptance run in small: ack-all and simulate as separate processes."""
    acker_err = tmp_path / "ack-all.err"
    with acker_err.open("wb") as err:
        acker = subprocess.Popen(
            _devices_command(
                "ack-all", "--broker", f"127.0.0.1:{broker.port}", "--client-id", unique_id("a")
            ),
            env=run_env(),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    try:
        assert wait_until(lambda: b"ack-all: acking" in acker_err.read_bytes(), 15)
        sim = subprocess.run(
            _devices_command(
                "simulate",
                "--count",
                "50",
                "--duration",
                "3",
                "--rate",
                "100",
                "--broker",
                f"127.0.0.1:{broker.port}",
                "--id-prefix",
                unique_id("cli"),
                "--drain",
                "3",
                "--json",
            ),
            env=run_env(),
            cwd=REPO,
            capture_output=True,
            timeout=60,
        )
    finally:
        acker.send_signal(signal.SIGTERM)
        acker_out, _ = acker.communicate(timeout=15)
    stdout = sim.stdout.decode()
    assert sim.returncode == 0, sim.stderr.decode()[-2000:]
    lines = _stdout_lines(stdout)
    match = FINAL_LINE.fullmatch(lines[-1])
    assert match is not None, stdout
    sent, acked, outstanding = map(int, match.groups())
    assert sent == acked and outstanding == 0 and sent == pytest.approx(300, rel=0.15)
    figures = json.loads(lines[-2])
    assert figures["sent"] == sent and figures["devices"] == 50
    stderr = sim.stderr.decode()
    assert "simulating 50 wearables on kereru-flats" in stderr
    assert "each device reports a position every 0.5 s" in stderr
    assert "running" in stderr  # the progress lines (stderr is not a terminal)
    assert acker.returncode == 0
    summary = _stdout_lines(acker_out.decode())[-1]
    assert re.fullmatch(r"received=\d+ acked=\d+ rejected=0 unreadable=0 .*", summary), summary
    assert int(summary.split()[1].split("=")[1]) >= sent


def test_sigterm_stops_reporting_and_drains(broker: PrivateBroker) -> None:
    with AckAll(_settings(broker), client_id=unique_id("acker")):
        sim = subprocess.Popen(
            _devices_command(
                "simulate",
                "--count",
                "20",
                "--rate",
                "100",
                "--broker",
                f"127.0.0.1:{broker.port}",
                "--id-prefix",
                unique_id("term"),
            ),
            env=run_env(),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            threading.Event().wait(4.0)  # no --duration: it runs until told to stop
            sim.send_signal(signal.SIGTERM)
            out, err = sim.communicate(timeout=30)
        finally:
            if sim.poll() is None:
                sim.kill()
    assert sim.returncode == 0, err.decode()[-2000:]
    match = FINAL_LINE.fullmatch(_stdout_lines(out.decode())[-1])
    assert match is not None
    sent, acked, outstanding = map(int, match.groups())
    assert sent > 0 and sent == acked and outstanding == 0


def test_no_broker_exits_1(tmp_path: Path) -> None:
    result = cli.invoke(
        app,
        [
            "simulate",
            "--count",
            "3",
            "--duration",
            "1",
            "--broker",
            f"127.0.0.1:{free_port()}",
            "--connect-timeout",
            "0.5",
            "--drain",
            "0",
        ],
    )
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1] == "sent=0 acked=0 outstanding=0"
    assert "no device could connect" in result.output


# -- refusals ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--site", "/no/such/site.geojson"], "no such site file"),
        (["--site", "bad-json"], "cannot read a site map"),
        (["--site", "not-a-site"], "not a usable site map"),
        (["--mix", "walk=lots"], "weight is not a number"),
        (["--mix", "walk=1,flying=1"], "unknown scenarios ['flying']"),
        (["--mix", "curfew_violation=1"], "has no home for the curfew"),
        (["--mix", "walk=0"], "at least one positive weight"),
        (["--rate", "0.5"], "too low"),
        (["--id-prefix", "Bad/Prefix"], "device id"),
        (["--broker", "127.0.0.1:99999"], "out of range"),
        (["--password-env", "LANTERN_TEST_NO_SUCH_VARIABLE"], "LANTERN_TEST_NO_SUCH_VARIABLE"),
    ],
)
def test_bad_options_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "bad-json").write_text("{nope", encoding="utf-8")
    (tmp_path / "not-a-site").write_text(json.dumps({"type": "FeatureCollection"}))
    args = [str(tmp_path / a) if a in ("bad-json", "not-a-site") else a for a in args]
    result = cli.invoke(app, ["simulate", "--count", "100", "--duration", "1", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "sent=" not in result.output


def test_descriptor_limit_refusal_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module.resource, "getrlimit", lambda _: (256, 256))
    result = cli.invoke(app, ["simulate", "--count", "500", "--duration", "1"])
    assert result.exit_code == 2
    assert "need 628 open files but the hard limit is 256" in result.output


def test_devices_is_a_lantern_command() -> None:
    help_text = subprocess.run(
        _devices_command("simulate", "--help"),
        env={**run_env(), "COLUMNS": "200"},
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )
    assert help_text.returncode == 0
    text = help_text.stdout.decode()
    assert "--rate" in text and "no outbox" in text
