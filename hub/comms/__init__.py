"""The hub's transport: :mod:`hub.comms.mqtt` is the only hub module importing paho."""

from __future__ import annotations

from hub.comms.mqtt import HubMqttClient, HubMqttSettings, Inbound, parse_mqtt_url

__all__ = ["HubMqttClient", "HubMqttSettings", "Inbound", "parse_mqtt_url"]
