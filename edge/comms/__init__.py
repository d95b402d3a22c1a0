"""How the edge talks to the broker.

:mod:`edge.comms.mqtt` is the only module on the edge that imports paho-mqtt; the
agent, the outbox and the simulators see its small interface (:class:`EdgeLink`,
:class:`MqttPeer`, :class:`ClientPool`, :class:`MqttSettings`) and nothing of paho.
"""

from __future__ import annotations

from edge.comms.mqtt import (
    Backoff,
    ClientPool,
    Connected,
    Disconnected,
    EdgeLink,
    LinkDown,
    LinkError,
    LinkEvent,
    LinkStats,
    MqttConfigError,
    MqttPeer,
    MqttSettings,
    OutgoingMessage,
    PooledClient,
    PublishRefused,
    RawMessage,
    Received,
    TlsSettings,
    parse_broker,
)

__all__ = [
    "Backoff",
    "ClientPool",
    "Connected",
    "Disconnected",
    "EdgeLink",
    "LinkDown",
    "LinkError",
    "LinkEvent",
    "LinkStats",
    "MqttConfigError",
    "MqttPeer",
    "MqttSettings",
    "OutgoingMessage",
    "PooledClient",
    "PublishRefused",
    "RawMessage",
    "Received",
    "TlsSettings",
    "parse_broker",
]
