"""End to end through one ``lantern hub serve --http`` process: zones and rules made
through the API are evaluated on positions arriving over MQTT; the exclusion breach
reaches a live-feed client as an alert, opens an incident an officer acknowledges, and
a device alarm (strap tamper) joins the same incident.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from devices.protocol import (
    AlarmBody,
    AlarmEvent,
    PositionBody,
    PositionEvent,
    encode,
    evt_topic,
    new_boot_id,
    new_event_id,
)
from tests.edge.mqtt_helpers import PrivateBroker, unique_id
from tests.hub.served import ServedHub
from tests.hub.test_ingest import FakeDevices

CENTRE = (51.5, -0.12)  # lat, lon of the protected address
RADIUS_M = 200.0
METRES_PER_DEG_LON = 111_320.0 * math.cos(math.radians(CENTRE[0]))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    with PrivateBroker(tmp_path / "broker") as running:
        yield running


def _next_alert(feed: ClientConnection, timeout: float = 20.0) -> dict[str, Any]:
    while True:
        message = json.loads(feed.recv(timeout=timeout))
        if message.get("type") == "alert":
            return message


def test_an_exclusion_breach_is_an_alert_on_the_feed_and_an_incident(
    tmp_path: Path, broker: PrivateBroker
) -> None:
    with ServedHub(tmp_path, broker.port) as hub:
        http = hub.http
        assert http.post("/api/v1/sites", json={"site_id": "town", "name": "T"}).status_code == 201
        tag = unique_id("ankle")
        registered = http.post(
            "/api/v1/devices",
            json={"device_id": tag, "model": "lantern-ankle-a1", "site_id": "town"},
        )
        assert registered.status_code == 201, registered.text
        subject = http.post(
            "/api/v1/persons",
            json={"category": "supervised", "display_name": "Subject 17", "case_id": "P-17"},
        )
        assert subject.status_code == 201, subject.text
        zone = {
            "type": "Feature",
            "id": "victim-home",
            "geometry": {"type": "Point", "coordinates": [CENTRE[1], CENTRE[0]]},
            "properties": {"name": "Protected address", "kind": "victim", "radius_m": RADIUS_M},
        }
        assert http.post("/api/v1/zones", json=zone).status_code == 201
        start = datetime.now(UTC) - timedelta(minutes=5)
        rule = {
            "id": "r-excl",
            "person_id": subject.json()["id"],
            "device_id": tag,
            "params": {"kind": "exclusion", "zone_ids": ["victim-home"]},
            "severity": "critical",
            "valid_from": (start - timedelta(hours=1)).isoformat(),
            "dwell_s": 0,
        }
        made = http.post("/api/v1/rules", json=rule)
        assert made.status_code == 201, made.text

        boot = new_boot_id()
        with connect(hub.feed_url("&types=alert"), open_timeout=10) as feed:
            assert json.loads(feed.recv(timeout=10))["type"] == "snapshot"
            with FakeDevices(broker.settings(), [tag]) as devices:
                # Walking west towards the address, a fix every 20 s: 300 m ... 100 m away.
                for seq, metres in enumerate((300, 260, 220, 180, 140, 100)):
                    at = start + timedelta(seconds=20 * seq)
                    fix = PositionEvent(
                        event_id=new_event_id(),
                        device_id=tag,
                        boot_id=boot,
                        seq=seq,
                        captured_at=at,
                        sent_at=at,
                        body=PositionBody(
                            lat=CENTRE[0],
                            lon=CENTRE[1] + metres / METRES_PER_DEG_LON,
                            acc=8.0,
                            src="gnss",
                        ),
                    )
                    devices.send_raw(evt_topic(tag, "position"), encode(fix))
                alert = _next_alert(feed)
                tamper_at = start + timedelta(seconds=130)
                tamper = AlarmEvent(
                    event_id=new_event_id(),
                    device_id=tag,
                    boot_id=boot,
                    seq=6,
                    captured_at=tamper_at,
                    sent_at=tamper_at,
                    body=AlarmBody(type="strap.tamper", state="active", alarm_id="t-1"),
                )
                devices.send_raw(evt_topic(tag, "alarm"), encode(tamper))
                tamper_alert = _next_alert(feed)

        data = alert["data"]
        assert alert["device_id"] == tag and alert["site_id"] == "town"
        assert data["type"] == "exclusion.entered" and data["rule_id"] == "r-excl", data
        assert data["severity"] == "critical" and data["cleared_at"] is None
        assert data["evidence"], data
        assert tamper_alert["data"]["type"] == "strap.tamper", tamper_alert

        incidents = http.get("/api/v1/incidents", params={"status": "open"}).json()
        assert incidents["total"] == 1, incidents
        incident = incidents["items"][0]
        assert incident["id"] == data["incident_id"] == tamper_alert["data"]["incident_id"]
        url = f"/api/v1/incidents/{incident['id']}"
        acked = http.post(f"{url}/acknowledge", json={"note": "on it"})
        assert acked.status_code == 200, acked.text
        assert http.get(url).json()["status"] == "acknowledged"
        assert hub.stop() == 0, hub.output()
