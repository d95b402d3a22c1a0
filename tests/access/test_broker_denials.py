"""Refused broker logins checked by what subscribers receive, on a real Mosquitto run
from the generated password and ACL files (the ``broker`` fixture of
tests/hub/test_broker_mosquitto.py, which checks the CONNACK codes of the same
logins and what an authenticated device may publish and read).

A client with no credentials, a wrong password, an unknown name or another device's
name with its own secret sends a CONNECT and then, whatever the broker answered, a
PUBLISH spoofing a device event and a SUBSCRIBE to everything. The hub's subscriber
and an admin observer of ``#`` must receive none of it, the refused client must
receive no message, and a real device event sent afterwards must be the next thing
the observers see (so they were listening).
"""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass

import pytest

from devices.protocol import HUB_EVENTS_SUBSCRIPTION
from edge.comms.mqtt import MqttPeer
from tests.access import evidence
from tests.hub.test_broker_mosquitto import (
    ADMIN_USER,
    HUB_USER,
    NOT_AUTHORIZED,
    Broker,
    PeerFactory,
    assert_quiet,
    next_message,
    published,
)

QUIET_S = 0.5
SPOOF_TOPIC = "lantern/v1/dev-a/evt/alarm"
RESULTS: dict[str, dict[str, object]] = {}


def _utf8(text: str) -> bytes:
    raw = text.encode("utf-8")
    return len(raw).to_bytes(2, "big") + raw


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + _remaining_length(len(body)) + body


def _connect(username: str | None, password: str | None) -> bytes:
    flags = 0x02
    payload = _utf8(f"intruder-{secrets.token_hex(4)}")
    if username is not None:
        flags |= 0x80
        payload += _utf8(username)
    if password is not None:
        flags |= 0x40
        payload += _utf8(password)
    body = _utf8("MQTT") + bytes([5, flags]) + (30).to_bytes(2, "big") + b"\x00" + payload
    return _packet(0x10, body)


def _publish(topic: str, payload: bytes) -> bytes:
    # QoS 1, packet id 1, no properties.
    return _packet(0x32, _utf8(topic) + (1).to_bytes(2, "big") + b"\x00" + payload)


def _subscribe(topic: str) -> bytes:
    # Packet id 2, no properties, one filter at QoS 1.
    return _packet(0x82, (2).to_bytes(2, "big") + b"\x00" + _utf8(topic) + b"\x01")


def _packets(data: bytes) -> list[tuple[int, bytes]]:
    """``(packet type, body)`` of each whole packet in ``data``."""
    out = []
    i = 0
    while i < len(data):
        kind = data[i] >> 4
        length, shift, j = 0, 0, i + 1
        while j < len(data):
            byte = data[j]
            length |= (byte & 0x7F) << shift
            shift += 7
            j += 1
            if not byte & 0x80:
                break
        out.append((kind, data[j : j + length]))
        i = j + length
    return out


@dataclass
class Intrusion:
    """What a refused client got back: its CONNACK reason, every packet type, and
    whether the broker closed the connection."""

    connack: int
    kinds: list[int]
    closed: bool


def _intrude(port: int, username: str | None, password: str | None) -> Intrusion:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(_connect(username, password))
        received = b""
        closed = False
        try:
            # Send the rest without waiting: a broker that did not close at once sees it.
            sock.sendall(_publish(SPOOF_TOPIC, b"spoofed") + _subscribe("#"))
        except OSError:
            closed = True
        sock.settimeout(1.0)
        try:
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    closed = True
                    break
                received += chunk
        except TimeoutError:
            pass
        except OSError:
            closed = True
    packets = _packets(received)
    assert packets and packets[0][0] == 2, f"no CONNACK: {received!r}"
    return Intrusion(packets[0][1][1], [kind for kind, _ in packets], closed)


@pytest.mark.parametrize(
    ("username", "password"),
    [
        (None, None),
        ("dev-a", "wrong-password"),
        ("dev-a", None),
        ("dev-c", "anything"),
        ("dev-b", "dev-a-secret"),  # impersonation: another device's name, own secret
        (HUB_USER, "dev-a-secret"),  # impersonation of the hub
    ],
    ids=[
        "anonymous",
        "wrong-password",
        "no-password",
        "unknown-user",
        "device-as-other-device",
        "device-as-hub",
    ],
)
def test_refused_clients_reach_no_subscriber_and_receive_nothing(
    broker: Broker,
    connect: PeerFactory,
    request: pytest.FixtureRequest,
    username: str | None,
    password: str | None,
) -> None:
    if password == "dev-a-secret":
        password = broker.secrets["dev-a"]
    hub = connect(HUB_USER, HUB_EVENTS_SUBSCRIPTION)
    observer = connect(ADMIN_USER, "#")
    intrusion = _intrude(broker.port, username, password)
    assert intrusion.connack == NOT_AUTHORIZED
    assert intrusion.kinds == [2], intrusion  # only the CONNACK: no PUBACK, SUBACK, PUBLISH
    assert intrusion.closed
    assert_quiet(hub)
    assert_quiet(observer)
    # The observers were listening: a real event of dev-a is the next thing they get.
    device: MqttPeer = connect("dev-a")
    published(device.publish(SPOOF_TOPIC, b"genuine", qos=1))
    for peer in (hub, observer):
        message = next_message(peer)
        assert (message.topic, message.payload) == (SPOOF_TOPIC, b"genuine")
    RESULTS[request.node.callspec.id] = {
        "username": username,
        "connack_reason": hex(intrusion.connack),
        "packets_received_by_intruder": ["CONNACK"],
        "connection_closed": intrusion.closed,
        "hub_subscriber_received": 0,
        "admin_observer_received": 0,
        "genuine_event_received_next": True,
    }
    evidence.record("broker", "refused_logins", dict(RESULTS))


def _session(
    port: int, client_id: str, username: str, password: str, *, resume: bool
) -> socket.socket:
    """An MQTT 5 connection over a plain socket; ``resume`` asks for the stored session
    (clean start off, one hour of session expiry)."""
    flags = 0xC0 | (0 if resume else 0x02)
    properties = b"\x11" + (3600).to_bytes(4, "big") if resume else b""
    body = (
        _utf8("MQTT") + bytes([5, flags]) + (30).to_bytes(2, "big")
        + _remaining_length(len(properties)) + properties
        + _utf8(client_id) + _utf8(username) + _utf8(password)
    )  # fmt: skip
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(_packet(0x10, body))
    return sock


def _drain(sock: socket.socket, quiet_s: float) -> tuple[list[int], bool]:
    """Packet types received until ``quiet_s`` of silence, and whether it closed."""
    sock.settimeout(quiet_s)
    data, closed = b"", False
    try:
        while chunk := sock.recv(4096):
            data += chunk
        closed = True
    except TimeoutError:
        pass
    return [kind for kind, _ in _packets(data)], closed


def test_a_device_cannot_take_another_devices_queued_messages(
    broker: Broker, connect: PeerFactory
) -> None:
    """dev-a logs in with its own secret but dev-b's client id (devices use their id as
    client id) and asks for dev-b's stored session: dev-b's queued ack must not reach it,
    while dev-b itself, resuming the same way, does get what was queued for it."""

    def resume(username: str) -> list[int]:
        sock = _session(broker.port, "dev-b", username, broker.secrets[username], resume=True)
        try:
            return _drain(sock, QUIET_S)[0]
        finally:
            sock.close()  # no DISCONNECT: the session is kept for the next one

    victim = _session(broker.port, "dev-b", "dev-b", broker.secrets["dev-b"], resume=True)
    try:
        assert _drain(victim, 0.3)[0] == [2]
        victim.sendall(_subscribe("lantern/v1/dev-b/ack"))
        assert _drain(victim, 0.3)[0] == [9]
    finally:
        victim.close()
    hub = connect(HUB_USER)
    published(hub.publish("lantern/v1/dev-b/ack", b"first", qos=1))
    owner = resume("dev-b")
    assert owner[:1] == [2] and 3 in owner, owner  # queued, delivered to its owner
    published(hub.publish("lantern/v1/dev-b/ack", b"second", qos=1))
    thief = resume("dev-a")
    assert thief[:1] == [2] and 3 not in thief, thief  # a CONNACK, never a PUBLISH
    after = resume("dev-b")
    evidence.record(
        "broker",
        "client_id_session_resume",
        {
            "attacker": "dev-a with client id dev-b, clean start off",
            "owner_publishes_before": owner.count(3),
            "attacker_publishes": thief.count(3),
            "owner_publishes_after_attack": after.count(3),
        },
    )


def test_a_device_cannot_disconnect_another_by_taking_its_client_id(broker: Broker) -> None:
    """The generated listener takes the username as the client id
    (``use_username_as_clientid``): dev-a asking for dev-b's client id gets its own, and
    dev-b stays connected."""
    victim = _session(broker.port, "dev-b", "dev-b", broker.secrets["dev-b"], resume=False)
    attacker: socket.socket | None = None
    try:
        assert _drain(victim, 0.3)[0] == [2]
        attacker = _session(broker.port, "dev-b", "dev-a", broker.secrets["dev-a"], resume=False)
        attacker_kinds, _ = _drain(attacker, 0.3)
        _victim_kinds, victim_closed = _drain(victim, QUIET_S)
        assert not victim_closed, f"dev-b was disconnected; dev-a got {attacker_kinds}"
        assert attacker_kinds[:1] == [2], attacker_kinds  # dev-a was let in, as dev-a
        # dev-b still works on its connection: it subscribes and gets its SUBACK.
        victim.sendall(_subscribe("lantern/v1/dev-b/ack"))
        victim_kinds, victim_closed = _drain(victim, 0.3)
        assert victim_kinds == [9] and not victim_closed, victim_kinds
    finally:
        victim.close()
        if attacker is not None:
            attacker.close()
    evidence.record(
        "broker",
        "client_id_takeover",
        {
            "attacker": "dev-a with client id dev-b, clean start",
            "attacker_connack": "accepted under its own username",
            "victim_disconnected": False,
        },
    )
