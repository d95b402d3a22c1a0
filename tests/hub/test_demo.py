"""``lantern demo`` end to end: a real run as a subprocess, polled through its API.

Each test starts the whole demo (broker, hub, sites, simulated wearables, camera),
reads the admin token it prints, and checks through the API that devices move
(a device's latest fix advances), that at least one alert and one sighting exist,
and that the command exits 0 when ``--duration`` ends. The first test uses the
default broker choice (a private Mosquitto when installed); the second forces the
embedded MQTT 5 broker, so both paths are covered where Mosquitto exists.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.edge.mqtt_helpers import free_port
from tests.hub.test_serve import hub_env, lantern

pytestmark = pytest.mark.slow

TOKEN_LINE = re.compile(r"admin bearer token .*: (\S+)$", re.MULTILINE)


def _output(path: Path) -> str:
    return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def _run_demo(tmp_path: Path, duration: int, *extra: str) -> dict[str, object]:
    """Run the demo, poll it, wait for its exit; what was seen."""
    port = free_port()
    out_path, err_path = tmp_path / "demo.out", tmp_path / "demo.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(
            lantern(
                "demo", "--duration", str(duration), "--http", f"127.0.0.1:{port}",
                "--data-dir", str(tmp_path / "demo"), *extra,
            ),
            env=hub_env(None),
            stdout=out,
            stderr=err,
        )  # fmt: skip
    started = time.monotonic()
    seen: dict[str, object] = {"moved": False, "alerts": 0, "sightings": 0, "matched": 0}
    first_fix: dict[str, str] = {}
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=10.0)
    try:
        token = None
        while token is None and time.monotonic() - started < 60:
            assert process.poll() is None, _output(out_path) + _output(err_path)
            found = TOKEN_LINE.search(out_path.read_text(errors="replace"))
            token = found.group(1) if found else None
            time.sleep(0.2)
        assert token is not None, _output(out_path) + _output(err_path)
        client.headers["Authorization"] = f"Bearer {token}"
        while process.poll() is None:
            try:
                latest = client.get("/positions/latest", params={"limit": 100})
                if latest.status_code == 200:
                    for fix in latest.json()["items"]:
                        device, at = fix["device_id"], fix["captured_at"]
                        if first_fix.setdefault(device, at) != at:
                            seen["moved"] = True
                alerts = client.get("/alerts", params={"limit": 1})
                if alerts.status_code == 200:
                    seen["alerts"] = alerts.json()["total"]
                    if alerts.json()["total"] and "first_alert_s" not in seen:
                        seen["first_alert_s"] = round(time.monotonic() - started, 1)
                sightings = client.get("/sightings", params={"limit": 100})
                if sightings.status_code == 200:
                    items = sightings.json()["items"]
                    seen["sightings"] = sightings.json()["total"]
                    seen["matched"] = sum(1 for s in items if s["candidate_count"] > 0)
            except httpx.TransportError:
                pass  # the hub is stopping at the end of the run
            time.sleep(2.0)
        seen["code"] = process.wait(timeout=60)
    finally:
        client.close()
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    seen["elapsed_s"] = round(time.monotonic() - started, 1)
    seen["output"] = _output(out_path) + _output(err_path)
    return seen


def _check(seen: dict[str, object]) -> None:
    output = seen["output"]
    assert seen["code"] == 0, output
    assert seen["moved"], output
    assert isinstance(seen["alerts"], int) and seen["alerts"] >= 1, output
    assert isinstance(seen["sightings"], int) and seen["sightings"] >= 1, output
    assert isinstance(seen["matched"], int) and seen["matched"] >= 1, output
    assert "map: http://127.0.0.1:" in str(output)


def test_demo_runs_unattended_and_exits_0(tmp_path: Path) -> None:
    seen = _run_demo(tmp_path, 60)
    _check(seen)
    expected = "private Mosquitto" if shutil.which("mosquitto") else "embedded MQTT 5 broker"
    assert expected in str(seen["output"])
    assert "stopped; the data is kept in" in str(seen["output"])


def test_demo_on_the_embedded_broker(tmp_path: Path) -> None:
    seen = _run_demo(tmp_path, 45, "--broker", "embedded", "--site", "kereru-flats")
    _check(seen)
    assert "embedded MQTT 5 broker" in str(seen["output"])


def test_demo_exits_1_when_the_hub_cannot_start(tmp_path: Path) -> None:
    """The HTTP port is taken: the hub cannot serve, and the demo says so and exits 1."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            lantern(
                "demo", "--duration", "5", "--http", f"127.0.0.1:{port}",
                "--data-dir", str(tmp_path / "demo"), "--broker", "embedded",
            ),
            env=hub_env(None),
            capture_output=True,
            timeout=90,
            check=False,
        )  # fmt: skip
    assert result.returncode == 1, result.stdout.decode() + result.stderr.decode()
    assert "error:" in result.stderr.decode()
