"""``lantern hub serve --http``: API and ingest in one process, on one database.

The hub runs as a subprocess (``python -m devices.cli hub serve``) against a private
Mosquitto; the test registers a device, publishes its events, reads ``/metrics``,
logs in a user made with ``lantern users create`` and stops the hub with SIGTERM.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devices.protocol import ConfigMessage, config_topic, decode
from edge.comms.mqtt import MqttPeer
from hub.db.engine import make_engine
from tests.edge.mqtt_helpers import PrivateBroker, free_port, run_env, unique_id, wait_until
from tests.hub.test_ingest import FakeDevices, register

SECRET = "serve-Test_key-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJ-42"
PASSWORD = "correct horse battery staple"


def lantern(*args: str) -> list[str]:
    return [sys.executable, "-m", "devices.cli", *args]


def hub_env(secret: str | None) -> dict[str, str]:
    env = {k: v for k, v in run_env().items() if not k.startswith("LANTERN_")}
    if secret is not None:
        env["LANTERN_JWT_SECRET"] = secret
    return env


def stored(metrics_text: str, event_type: str) -> float:
    pattern = rf'^lantern_events_stored_total\{{type="{event_type}"\}} (\S+)$'
    match = re.search(pattern, metrics_text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    with PrivateBroker(tmp_path / "broker") as running:
        yield running


def test_serve_http_runs_api_and_ingest_on_one_database(
    tmp_path: Path, broker: PrivateBroker
) -> None:
    data_dir = tmp_path / "data"
    db_url = f"sqlite:///{data_dir / 'lantern.db'}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "hub.log").open("w+b")
    hub = subprocess.Popen(
        lantern(
            "-v",
            "hub",
            "serve",
            "--data-dir",
            str(data_dir),
            "--http",
            f"127.0.0.1:{port}",
            "--mqtt",
            f"mqtt://127.0.0.1:{broker.port}",
            "--client-id",
            unique_id("hub"),
            "--workers",
            "2",
        ),
        env=hub_env(SECRET),
        stdout=log,
        stderr=subprocess.STDOUT,
    )

    def output() -> str:
        log.seek(0)
        return log.read().decode(errors="replace")[-3000:]

    try:
        with httpx.Client(base_url=base, timeout=5.0) as http:

            def healthy() -> bool:
                assert hub.poll() is None, f"hub exited {hub.returncode}: {output()}"
                try:
                    return http.get("/api/v1/health").status_code == 200
                except httpx.TransportError:
                    return False

            assert wait_until(healthy, 20.0, step=0.1), output()
            metrics = http.get("/metrics")
            assert metrics.status_code == 200
            assert metrics.headers["content-type"].startswith("text/plain")
            assert "# TYPE lantern_events_stored_total counter" in metrics.text
            assert "# TYPE lantern_quarantined_total counter" in metrics.text
            before = stored(metrics.text, "position")

            # The schema is migrated before the API answers: register a device there.
            engine = make_engine(db_url)
            device_id = unique_id("srv")
            try:
                register(engine, [device_id])
            finally:
                engine.dispose()
            with FakeDevices(broker.settings(), [device_id]) as devices:
                sent = {devices.send(devices.next_event(device_id)) for _ in range(3)}
                assert wait_until(lambda: not devices.outstanding(), 10.0), output()
                assert set(devices.acked) == sent and not devices.rejected

            text = http.get("/metrics").text
            assert stored(text, "position") == before + 3, text

            created = subprocess.run(
                lantern(
                    "users",
                    "create",
                    "--username",
                    "ops",
                    "--role",
                    "admin",
                    "--password-stdin",
                    "--database-url",
                    db_url,
                ),
                input=f"{PASSWORD}\n".encode(),
                env=hub_env(None),
                capture_output=True,
                timeout=20,
                check=False,
            )
            assert created.returncode == 0, created.stderr.decode()
            token = http.post("/api/v1/auth/token", data={"username": "ops", "password": PASSWORD})
            assert token.status_code == 200, token.text
            bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
            devices_page = http.get("/api/v1/devices", headers=bearer)
            assert devices_page.status_code == 200, devices_page.text
            assert device_id in devices_page.text

            # A device registered through the API gets its configuration, retained,
            # through the hub's own broker connection.
            site = http.post(
                "/api/v1/sites", json={"site_id": "serve-site", "name": "S"}, headers=bearer
            )
            assert site.status_code == 201, site.text
            new_device = unique_id("ankle")
            registered = http.post(
                "/api/v1/devices",
                json={
                    "device_id": new_device,
                    "model": "lantern-ankle-a1",
                    "site_id": "serve-site",
                },
                headers=bearer,
            )
            assert registered.status_code == 201, registered.text
            assert registered.json()["config"]["push"] == "published"
            peer = MqttPeer(
                unique_id("cfg"),
                broker.settings(session_expiry_s=0),
                subscriptions=[(config_topic(new_device), 1)],
            )
            peer.start()
            try:
                raw = peer.get_message(10)
            finally:
                peer.close(2)
            assert raw is not None, output()
            config = decode(raw.topic, raw.payload).message
            assert isinstance(config, ConfigMessage) and config.body.version == 1
            assert config.body.sha256 == registered.json()["config"]["desired_sha256"]

        started = time.monotonic()
        hub.send_signal(signal.SIGTERM)
        assert hub.wait(timeout=10) == 0, output()
        assert time.monotonic() - started < 5.0, output()
    finally:
        if hub.poll() is None:
            hub.kill()
            hub.wait(timeout=10)
        log.close()


@pytest.mark.parametrize(
    ("secret", "reason"),
    [(None, "is not set"), ("changeme", "well-known placeholder"), ("short-Key-1234", "32")],
)
def test_serve_http_refuses_a_missing_or_weak_secret(
    tmp_path: Path, secret: str | None, reason: str
) -> None:
    result = subprocess.run(
        lantern(
            "hub",
            "serve",
            "--data-dir",
            str(tmp_path / "data"),
            "--http",
            f"127.0.0.1:{free_port()}",
            "--mqtt",
            "mqtt://127.0.0.1:1",
        ),
        env=hub_env(secret),
        capture_output=True,
        timeout=20,
        check=False,
    )
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert "LANTERN_JWT_SECRET" in stderr and reason in stderr, stderr
    assert not (tmp_path / "data" / "lantern.db").exists()  # refused before migrating
