"""Configuration push (hub/configpush.py): what is rendered for a device, and the
retained ``config`` message a real Mosquitto delivers after registering through the
API with the hub's own MQTT client as publisher."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from devices import firmware as fw
from devices.protocol import ConfigMessage, config_topic, decode
from edge.comms.mqtt import MqttPeer
from hub.auth import Role
from hub.comms.mqtt import HubMqttClient, HubMqttSettings, Inbound
from hub.configpush import device_spec, render_for, republish_all
from tests.edge.mqtt_helpers import PrivateBroker, unique_id
from tests.hub.test_api import _add_user, _login
from tests.hub.test_api_devices import MODEL, SITE, config_copy, make_app, make_site

# -- what is rendered -------------------------------------------------------------------


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return config_copy(tmp_path / "firmware")


def test_device_file_first_then_site_file_then_registry(config_dir: Path) -> None:
    # ankle-demo-0001 has a device file, ankle-demo-0002 an entry in sites/demo-north.yaml.
    spec = device_spec(config_dir, "ankle-demo-0001", MODEL, "demo-north", None)
    assert spec.source == "devices/ankle-demo-0001.yaml" and spec.site is None
    spec = device_spec(config_dir, "ankle-demo-0002", MODEL, "demo-north", None)
    assert spec.source == "sites/demo-north.yaml" and spec.site is not None
    spec = device_spec(config_dir, "ankle-9999", MODEL, SITE, "ankle_tag")
    assert spec.source == "registry" and spec.device.profile == "ankle_tag"
    from_file = render_for(
        config_dir, device_id="ankle-demo-0001", model=MODEL, site_id="x1", profile=None
    )
    assert from_file.config["report_interval_s"]["in_violation"] == 10
    from_site = render_for(
        config_dir, device_id="ankle-demo-0002", model=MODEL, site_id="x1", profile=None
    )
    assert from_site.config["mqtt_keepalive_s"] == 120  # the site's profile override
    bare = render_for(config_dir, device_id="ankle-9999", model=MODEL, site_id=SITE, profile=None)
    profiles = fw.load_profiles(config_dir / "profiles")
    assert bare.config == profiles["ankle_tag"].profile.model_dump(mode="json")
    assert bare.version == 1 and bare.sha256 == fw.config_sha256(bare.config)


def test_wrong_model_in_a_site_file_is_a_config_error(config_dir: Path) -> None:
    with pytest.raises(fw.ConfigError) as caught:
        device_spec(config_dir, "ankle-demo-0002", "lantern-wrist-w1", "demo-north", None)
    issue = caught.value.issues[0]
    assert (issue.source, issue.path) == ("sites/demo-north.yaml", "devices.0.model")


def test_a_broken_profile_names_its_file(config_dir: Path) -> None:
    (config_dir / "profiles" / "ankle_tag.yaml").write_text(
        "type: wearable\nheartbeat_s: '60'\n", encoding="utf-8"
    )
    with pytest.raises(fw.ConfigError) as caught:
        render_for(config_dir, device_id="ankle-9999", model=MODEL, site_id=SITE, profile=None)
    assert any(i.path == "heartbeat_s" for i in caught.value.issues), caught.value


# -- through a real broker --------------------------------------------------------------


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    with PrivateBroker(tmp_path / "broker") as running:
        yield running


@pytest.fixture
def hub_client(broker: PrivateBroker) -> Iterator[HubMqttClient]:
    def ignore(_inbound: Inbound) -> None:
        pass

    client = HubMqttClient(
        HubMqttSettings(port=broker.port, client_id=unique_id("hub"), session_expiry_s=0),
        [(f"test/{unique_id('quiet')}", 1)],
        ignore,
    )
    client.start()
    assert client.wait_subscribed(10), broker.logs()
    yield client
    assert client.close(5)


def subscribe_config(broker: PrivateBroker, device_id: str) -> MqttPeer:
    """A test-side client subscribed to a device's config topic, as the device is."""
    peer = MqttPeer(
        unique_id("device"),
        broker.settings(session_expiry_s=0),
        subscriptions=[(config_topic(device_id), 1)],
    )
    peer.start()
    assert peer.wait_subscribed(10)
    return peer


def next_config(peer: MqttPeer) -> tuple[ConfigMessage, bool]:
    """The next config message the peer receives, and whether it came as retained."""
    raw = peer.get_message(10)
    assert raw is not None, "no config message"
    message = decode(raw.topic, raw.payload).message
    assert isinstance(message, ConfigMessage)
    return message, raw.retain


def retained_config(broker: PrivateBroker, device_id: str) -> tuple[ConfigMessage, bool]:
    """The config message a device subscribing now receives, and whether retained."""
    peer = subscribe_config(broker, device_id)
    try:
        return next_config(peer)
    finally:
        peer.close(2)


def test_registered_device_receives_its_retained_config(
    engine: Engine, broker: PrivateBroker, hub_client: HubMqttClient, config_dir: Path
) -> None:
    app = make_app(engine, config_dir)
    app.state.config_publisher = hub_client
    device_id = unique_id("ankle")
    with TestClient(app) as client:
        _add_user(engine, "root", Role.admin)
        admin = _login(client, "root")
        make_site(client, admin)
        device = subscribe_config(broker, device_id)  # stays subscribed, as a device does
        try:
            response = client.post(
                "/api/v1/devices",
                json={"device_id": device_id, "model": MODEL, "site_id": SITE},
                headers=admin,
            )
            assert response.status_code == 201, response.text
            assert response.json()["config"]["push"] == "published"
            message, _ = next_config(device)
            assert message.device_id == device_id
            assert message.body.version == 1
            assert message.body.sha256 == fw.config_sha256(message.body.config)
            # Retained: a device connecting later gets it too.
            late, retained = retained_config(broker, device_id)
            assert retained and late.body == message.body
            first: dict[str, Any] = message.body.config

            # Pushing unchanged content again keeps version 1.
            again = client.post(f"/api/v1/devices/{device_id}/config", headers=admin)
            assert again.status_code == 200 and again.json()["desired_version"] == 1
            message, _ = next_config(device)
            assert (message.body.version, message.body.config) == (1, first)

            # A profile override in a device file gives version 2.
            (config_dir / "devices" / f"{device_id}.yaml").write_text(
                json.dumps(
                    {
                        "device_id": device_id,
                        "model": MODEL,
                        "site": SITE,
                        "overrides": {"outbox": {"max_events": 2500}},
                    }
                ),
                encoding="utf-8",
            )
            changed = client.post(f"/api/v1/devices/{device_id}/config", headers=admin)
            assert changed.status_code == 200, changed.text
            message, _ = next_config(device)
            assert message.body.version == 2
            assert message.body.config["outbox"]["max_events"] == 2500
            assert message.body.sha256 == fw.config_sha256(message.body.config)
            assert message.body.sha256 == changed.json()["desired_sha256"]
        finally:
            device.close(2)
        # What the broker now retains is version 2.
        message, retained = retained_config(broker, device_id)
        assert retained and message.body.version == 2


def test_serve_start_publishes_every_stored_config_again(
    engine: Engine, broker: PrivateBroker, config_dir: Path
) -> None:
    """A config stored while no broker link existed (pending) reaches the device once
    the hub republishes the stored configs, as ``serve`` does on start."""
    device_id = unique_id("ankle")
    with TestClient(make_app(engine, config_dir)) as client:  # no publisher
        _add_user(engine, "root", Role.admin)
        admin = _login(client, "root")
        make_site(client, admin)
        response = client.post(
            "/api/v1/devices",
            json={"device_id": device_id, "model": MODEL, "site_id": SITE},
            headers=admin,
        )
        assert response.json()["config"]["push"] == "pending_push"
        desired = response.json()["config"]["desired"]

    def ignore(_inbound: Inbound) -> None:
        pass

    device = subscribe_config(broker, device_id)
    hub = HubMqttClient(
        HubMqttSettings(port=broker.port, client_id=unique_id("hub"), session_expiry_s=0),
        [(f"test/{unique_id('quiet')}", 1)],
        ignore,
    )
    hub.start()  # not connected yet: the publish waits for the connection
    try:
        assert republish_all(engine, hub) == 1
        live, _ = next_config(device)
    finally:
        assert hub.close(5)
        device.close(2)
    assert live.body.model_dump(mode="json") == desired
    retained_message, retained = retained_config(broker, device_id)
    assert retained and retained_message.body.model_dump(mode="json") == desired
