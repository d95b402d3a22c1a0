"""``lantern devices provision`` and ``lantern broker config`` (hub/provision_cli.py).

Registry tests run on SQLite and PostgreSQL (the ``engine`` fixture); the last test
provisions a device, writes the broker files and starts a real Mosquitto with them.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from typer.testing import CliRunner

from devices.catalog import BUILTIN_MODELS
from devices.cli import app
from edge.comms.mqtt import MqttPeer, MqttSettings
from hub.broker import device_acl_rules
from hub.credentials import generate_device_secret, verify_api_secret, verify_mosquitto_hash
from hub.db.models import AuditEntry, Credential, Device, Site
from hub.provision_cli import API_KID, BROKER_KID
from tests.edge.mqtt_helpers import free_port, listening, wait_until
from tests.hub.test_broker_mosquitto import NOT_AUTHORIZED, connack_reason

MODEL = "lantern-ankle-a1"
LABEL = "DEVICE SECRET"

cli = CliRunner()


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _provision(engine: Engine, *args: str) -> tuple[int, str, str]:
    result = cli.invoke(app, ["devices", "provision", "--database-url", _url(engine), *args])
    return result.exit_code, result.stdout, result.stderr


def _secret(stdout: str) -> str:
    lines = stdout.splitlines()
    at = [i for i, line in enumerate(lines) if line.startswith(LABEL)]
    assert len(at) == 1, stdout
    return lines[at[0] + 1].strip()


def _hashes(engine: Engine, device_id: str) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Credential.kid, Credential.secret_hash).where(Credential.device_id == device_id)
        ).all()
    return {kid: str(h) for kid, h in rows}


def test_model_catalog_has_the_test_model() -> None:
    assert MODEL in {m.id for m in BUILTIN_MODELS}


def test_provision_stores_hashes_and_prints_secret_once(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    code, out, err = _provision(
        engine, "--device-id", "ankle-007", "--model", MODEL, "--site", "s1"
    )
    assert code == 0, out + err
    secret = _secret(out)
    assert out.count(secret) == 1 and secret not in err and secret not in caplog.text
    hashes = _hashes(engine, "ankle-007")
    assert set(hashes) == {BROKER_KID, API_KID}
    assert secret not in hashes.values()
    assert verify_api_secret(secret, hashes[API_KID])
    assert verify_mosquitto_hash(secret, hashes[BROKER_KID])
    with engine.connect() as conn:
        device = conn.execute(select(Device.site_id, Device.model)).one()
        site = conn.execute(select(Site.site_id)).scalar_one()
        actions = conn.execute(select(AuditEntry.action, AuditEntry.target)).all()
    assert tuple(device) == ("s1", MODEL) and site == "s1"
    assert [tuple(a) for a in actions] == [("device.provision", "device:ankle-007")]


def test_duplicate_refused_and_rotate_replaces_the_credential(engine: Engine) -> None:
    args = ("--device-id", "ankle-008", "--model", MODEL)
    code, out, _ = _provision(engine, *args)
    assert code == 0
    old = _secret(out)
    code, out, err = _provision(engine, *args)
    assert code == 1 and "already provisioned" in err and LABEL not in out
    assert verify_api_secret(old, _hashes(engine, "ankle-008")[API_KID])
    code, out, err = _provision(engine, *args, "--rotate")
    assert code == 0, out + err
    new = _secret(out)
    assert new != old
    hashes = _hashes(engine, "ankle-008")
    assert len(hashes) == 2
    assert verify_api_secret(new, hashes[API_KID]) and verify_mosquitto_hash(
        new, hashes[BROKER_KID]
    )
    assert not verify_api_secret(old, hashes[API_KID])
    assert not verify_mosquitto_hash(old, hashes[BROKER_KID])


def test_unknown_model_exits_2_listing_models(sqlite_template: Path, tmp_path: Path) -> None:
    shutil.copy(sqlite_template, tmp_path / "lantern.db")
    result = cli.invoke(
        app,
        [
            "devices",
            "provision",
            "--device-id",
            "ankle-009",
            "--model",
            "no-such-model",
            "--data-dir",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 2
    assert "unknown device model 'no-such-model'" in result.stderr
    assert all(m.id in result.stderr for m in BUILTIN_MODELS)
    assert LABEL not in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device-id", "Bad/Id", "--model", MODEL], "device id"),
        (["--device-id", "ankle-010", "--model", MODEL, "--site", "Bad Site"], "site id"),
    ],
)
def test_bad_ids_exit_2(
    sqlite_template: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    shutil.copy(sqlite_template, tmp_path / "lantern.db")
    result = cli.invoke(app, ["devices", "provision", "--data-dir", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in result.stderr


def test_broker_config_lists_devices_with_their_acl(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for device in ("ankle-011", "ankle-012"):
        assert _provision(engine, "--device-id", device, "--model", MODEL)[0] == 0
    monkeypatch.setenv("LANTERN_TEST_HUB_PW", "a hub password")
    out_dir = tmp_path / "broker"
    result = cli.invoke(
        app,
        [
            "broker",
            "config",
            "--out",
            str(out_dir),
            "--hub-user",
            "lantern-hub",
            "--hub-password-env",
            "LANTERN_TEST_HUB_PW",
            "--database-url",
            _url(engine),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "2 device account(s) and hub account lantern-hub" in result.stdout
    assert "SIGHUP" in result.stdout and str(out_dir / "passwords") in result.stdout
    passwords = (out_dir / "passwords").read_text()
    acl = (out_dir / "acl").read_text()
    users = [line.split(":", 1)[0] for line in passwords.splitlines()]
    assert users == ["ankle-011", "ankle-012", "lantern-hub"]
    for device in ("ankle-011", "ankle-012"):
        assert f"user {device}" in acl
        assert all(rule in acl for rule in device_acl_rules(device))
    assert "a hub password" not in passwords


def test_broker_config_needs_the_hub_password(engine: Engine, tmp_path: Path) -> None:
    result = cli.invoke(
        app,
        [
            "broker",
            "config",
            "--out",
            str(tmp_path),
            "--hub-user",
            "lantern-hub",
            "--hub-password-env",
            "LANTERN_TEST_NO_SUCH_VARIABLE",
            "--database-url",
            _url(engine),
        ],
    )
    assert result.exit_code == 2
    assert "LANTERN_TEST_NO_SUCH_VARIABLE" in result.stderr


# -- end to end with Mosquitto ----------------------------------------------------------


@pytest.fixture
def mosquitto_dir(tmp_path: Path) -> Iterator[Path]:
    if shutil.which("mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    yield tmp_path


def test_provisioned_device_publishes_to_the_hub_through_mosquitto(
    sqlite_template: Path, mosquitto_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = mosquitto_dir / "data"
    data.mkdir()
    shutil.copy(sqlite_template, data / "lantern.db")
    provisioned = cli.invoke(
        app,
        [
            "devices",
            "provision",
            "--device-id",
            "ankle-e2e",
            "--model",
            MODEL,
            "--data-dir",
            str(data),
        ],
    )
    assert provisioned.exit_code == 0, provisioned.output
    secret = _secret(provisioned.stdout)
    hub_password = generate_device_secret()
    monkeypatch.setenv("LANTERN_TEST_HUB_PW", hub_password)
    port = free_port()
    out_dir = mosquitto_dir / "generated"
    written = cli.invoke(
        app,
        [
            "broker",
            "config",
            "--out",
            str(out_dir),
            "--hub-user",
            "lantern-hub",
            "--hub-password-env",
            "LANTERN_TEST_HUB_PW",
            "--port",
            str(port),
            "--data-dir",
            str(data),
        ],
    )
    assert written.exit_code == 0, written.output
    log = mosquitto_dir / "mosquitto.log"
    extra = [f"log_dest file {log}", "log_type error", "log_type warning"]
    if os.geteuid() == 0:
        extra.append("user root")
    conf = mosquitto_dir / "test.conf"
    conf.write_text((out_dir / "mosquitto.conf").read_text() + "\n".join(extra) + "\n")
    process = subprocess.Popen(
        ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    peers: list[MqttPeer] = []
    try:
        assert wait_until(lambda: listening(port), 10.0), log.read_text(errors="replace")
        assert connack_reason(port, "ankle-e2e", "not-the-secret") == NOT_AUTHORIZED
        monkeypatch.setenv("LANTERN_TEST_DEVICE_PW", secret)

        def peer(username: str, password_env: str, *subscriptions: str) -> MqttPeer:
            settings = MqttSettings(
                host="127.0.0.1",
                port=port,
                username=username,
                password_env=password_env,
                session_expiry_s=0,
                reconnect_min_s=0.05,
                reconnect_max_s=0.5,
            )
            made = MqttPeer(
                f"{username}-e2e", settings, subscriptions=[(t, 1) for t in subscriptions]
            )
            peers.append(made)
            made.start()
            assert made.wait_connected(5), f"{username} could not connect"
            assert made.wait_subscribed(5)
            return made

        hub = peer("lantern-hub", "LANTERN_TEST_HUB_PW", "lantern/v1/+/evt/#")
        device = peer("ankle-e2e", "LANTERN_TEST_DEVICE_PW")
        device.publish("lantern/v1/ankle-e2e/evt/alarm", b"evt-e2e", qos=1).result(timeout=5)
        message = hub.get_message(5.0)
        assert message is not None
        assert (message.topic, message.payload) == ("lantern/v1/ankle-e2e/evt/alarm", b"evt-e2e")
    finally:
        for made in peers:
            made.close(2)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_devices_group_is_filled_from_plugins() -> None:
    result = cli.invoke(app, ["devices", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "provision" in result.stdout and "simulate" in result.stdout
    assert "ack-all" not in result.stdout  # registered, but hidden as edge declares it
    hidden = cli.invoke(app, ["devices", "ack-all", "--help"])
    assert hidden.exit_code == 0 and "Ack every event" in hidden.stdout


def test_a_broken_plugin_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    from importlib.metadata import EntryPoint

    import typer

    from devices.devices_cli import register_device_commands

    target = typer.Typer()
    eps = [
        EntryPoint("gone", "no_such_module_xyz:thing", "lantern.devices.commands"),
        EntryPoint("nothing", "edge.simulate.cli:app", "lantern.devices.commands"),
        EntryPoint("provision", "hub.provision_cli:provision", "lantern.devices.commands"),
    ]
    assert register_device_commands(target, eps) == ["provision"]
    assert "gone" in caplog.text and "nothing" in caplog.text
