"""The generated password and ACL files in a real Mosquitto on a spare loopback port,
and the hub's own login to it (``HubMqttClient`` and ``lantern hub serve``).

Clients are :class:`edge.comms.mqtt.MqttPeer` (MQTT 5); CONNACK reason codes are
read with a hand-made CONNECT packet over a plain socket, since a refused peer only
keeps retrying.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from devices.protocol import HUB_EVENTS_SUBSCRIPTION
from edge.comms.mqtt import MqttPeer, MqttSettings, PublishRefused, RawMessage
from hub.broker import AccountKind, BrokerAccount, write_broker_config
from hub.comms.mqtt import BrokerUrl, HubMqttClient, HubMqttSettings, parse_broker_url
from hub.credentials import generate_device_secret, hash_for_mosquitto
from hub.db.models import Position
from hub.ingest import Ingest, IngestSettings
from hub.settings import MQTT_PASSWORD_ENV
from tests.edge.mqtt_helpers import free_port, listening, unique_id, wait_until
from tests.hub.test_ingest import FakeDevices, register
from tests.hub.test_serve import hub_env, lantern

HUB_USER = "lantern-hub"
HUB_USER_2 = "lantern-hub-2"
"""A second hub process's account: an account has one connection at a time."""
ADMIN_USER = "ops"
NOT_AUTHORIZED = 0x87
QUIET_S = 0.5
"""How long a test waits to be sure a message it must not get does not arrive."""


class PeerFactory(Protocol):
    """The ``connect`` fixture: a started, connected, subscribed peer of a user."""

    def __call__(self, username: str, *subscriptions: str) -> MqttPeer: ...


@dataclass
class Broker:
    """A running Mosquitto configured from the generated files, and the secrets."""

    port: int
    secrets: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes]

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    if shutil.which("mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    folder = tmp_path_factory.mktemp("broker")
    passwords = {
        name: generate_device_secret()
        for name in ("dev-a", "dev-b", HUB_USER, HUB_USER_2, ADMIN_USER)
    }
    kinds = {HUB_USER: AccountKind.HUB, HUB_USER_2: AccountKind.HUB, ADMIN_USER: AccountKind.ADMIN}
    accounts = [
        BrokerAccount(name, hash_for_mosquitto(secret), kinds.get(name, AccountKind.DEVICE))
        for name, secret in passwords.items()
    ]
    port = free_port()
    files = write_broker_config(folder / "generated", accounts, listener_port=port)
    # The generated snippet as is, plus what only a test needs: a log file, and
    # staying root when run as root so the broker can read the 0600 files.
    log = folder / "mosquitto.log"
    extra = [f"log_dest file {log}", "log_type error", "log_type warning", "log_type notice"]
    if os.geteuid() == 0:
        extra.append("user root")
    conf = folder / "test.conf"
    conf.write_text(files.conf_file.read_text() + "\n".join(extra) + "\n", encoding="utf-8")
    process = subprocess.Popen(
        ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    running = Broker(port, passwords, log, process)
    try:
        if not wait_until(lambda: listening(port), 10.0):
            raise RuntimeError(f"mosquitto did not listen on {port}: {running.logs()}")
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def connect(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> Iterator[PeerFactory]:
    made: list[MqttPeer] = []

    def factory(username: str, *subscriptions: str) -> MqttPeer:
        env = f"LANTERN_TEST_PW_{secrets.token_hex(4).upper()}"
        monkeypatch.setenv(env, broker.secrets[username])
        settings = MqttSettings(
            host="127.0.0.1",
            port=broker.port,
            username=username,
            password_env=env,
            session_expiry_s=0,
            reconnect_min_s=0.05,
            reconnect_max_s=0.5,
        )
        peer = MqttPeer(
            f"{username}-{secrets.token_hex(3)}",
            settings,
            subscriptions=[(topic, 1) for topic in subscriptions],
        )
        made.append(peer)
        peer.start()
        assert peer.wait_connected(5), f"{username} could not connect: {broker.logs()}"
        assert peer.wait_subscribed(5), f"{username} subscriptions not acknowledged"
        return peer

    yield factory
    for peer in made:
        peer.close(2)


def published(future: Future[None]) -> None:
    future.result(timeout=5)


def next_message(peer: MqttPeer, timeout: float = 5.0) -> RawMessage:
    message = peer.get_message(timeout)
    assert message is not None, "nothing arrived in time"
    return message


def assert_quiet(peer: MqttPeer) -> None:
    message = peer.get_message(QUIET_S)
    assert message is None, f"unexpected {message}"


def connack_reason(port: int, username: str | None, password: str | None) -> int:
    """Send an MQTT 5 CONNECT by hand and return the CONNACK reason code."""

    def utf8(text: str) -> bytes:
        raw = text.encode("utf-8")
        return len(raw).to_bytes(2, "big") + raw

    flags = 0x02  # clean start
    payload = utf8(f"probe-{secrets.token_hex(4)}")
    if username is not None:
        flags |= 0x80
        payload += utf8(username)
    if password is not None:
        flags |= 0x40
        payload += utf8(password)
    # Protocol name, level 5, flags, keep-alive 30 s, no properties.
    body = utf8("MQTT") + bytes([5, flags]) + (30).to_bytes(2, "big") + b"\x00" + payload
    assert len(body) < 128  # one-byte remaining length
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(bytes([0x10, len(body)]) + body)
        reply = b""
        while len(reply) < 4:
            chunk = sock.recv(64)
            if not chunk:
                break
            reply += chunk
    assert reply[:1] == b"\x20", f"not a CONNACK: {reply!r}"
    return reply[3]


# -- authentication -----------------------------------------------------------------------


def test_right_password_is_accepted(broker: Broker) -> None:
    assert connack_reason(broker.port, "dev-a", broker.secrets["dev-a"]) == 0
    assert connack_reason(broker.port, HUB_USER, broker.secrets[HUB_USER]) == 0


@pytest.mark.parametrize(
    ("username", "password"),
    [
        ("dev-a", "wrong-password"),
        ("dev-a", None),
        ("dev-b", "use-a-secret"),  # replaced by dev-a's secret in the test
        ("dev-c", "anything"),
        (None, None),
    ],
    ids=["wrong-password", "no-password", "other-device-secret", "unknown-user", "anonymous"],
)
def test_bad_logins_are_refused(broker: Broker, username: str | None, password: str | None) -> None:
    if password == "use-a-secret":
        password = broker.secrets["dev-a"]
    assert connack_reason(broker.port, username, password) == NOT_AUTHORIZED


def test_refused_peer_never_connects(broker: Broker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANTERN_TEST_WRONG_PW", "wrong-password")
    settings = MqttSettings(
        host="127.0.0.1",
        port=broker.port,
        username="dev-a",
        password_env="LANTERN_TEST_WRONG_PW",
        session_expiry_s=0,
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
    )
    peer = MqttPeer("dev-a-wrong", settings)
    peer.start()
    try:
        assert not peer.wait_connected(1.0)
    finally:
        peer.close(2)


# -- authorisation ------------------------------------------------------------------------


def test_device_event_reaches_hub_directly_and_through_shared_subscription(
    connect: PeerFactory,
) -> None:
    direct = connect(HUB_USER, "lantern/v1/+/evt/#", "lantern/v1/+/tele", "lantern/v1/+/state")
    shared = connect(HUB_USER_2, HUB_EVENTS_SUBSCRIPTION)
    device = connect("dev-a")
    published(device.publish("lantern/v1/dev-a/evt/alarm", b"evt-1", qos=1))
    published(device.publish("lantern/v1/dev-a/tele", b"tele-1", qos=1))
    published(device.publish("lantern/v1/dev-a/state", b"", qos=1, retain=True))
    got = [next_message(direct) for _ in range(3)]
    assert [(m.topic, m.payload) for m in got] == [
        ("lantern/v1/dev-a/evt/alarm", b"evt-1"),
        ("lantern/v1/dev-a/tele", b"tele-1"),
        ("lantern/v1/dev-a/state", b""),
    ]
    via_share = next_message(shared)
    assert (via_share.topic, via_share.payload) == ("lantern/v1/dev-a/evt/alarm", b"evt-1")
    assert_quiet(shared)


@pytest.mark.parametrize(
    "topic",
    [
        "lantern/v1/dev-b/evt/alarm",
        "lantern/v1/dev-b/tele",
        "lantern/v1/dev-b/state",
        "lantern/v1/dev-a/ack",
        "lantern/v1/dev-a/cmd/reboot",
        "lantern/v1/dev-b/config",
        "lantern/v1/dev-a",
        "other/topic",
    ],
)
def test_device_cannot_publish_outside_its_own_uplink(connect: PeerFactory, topic: str) -> None:
    # The admin account reads every Lantern topic, so it would see a spoofed message.
    observer = connect(ADMIN_USER, "#")
    device = connect("dev-a")
    with pytest.raises(PublishRefused, match="0x87"):
        device.publish(topic, b"spoof", qos=1).result(timeout=5)
    # The refused message was dropped: the next thing the observer sees is the
    # device's own event, published after it on the same connection.
    published(device.publish("lantern/v1/dev-a/evt/checkin", b"own", qos=1))
    message = next_message(observer)
    assert (message.topic, message.payload) == ("lantern/v1/dev-a/evt/checkin", b"own")
    assert_quiet(observer)


def test_device_reads_only_its_own_downlink(connect: PeerFactory) -> None:
    snoop = connect(
        "dev-a",
        "lantern/v1/dev-b/ack",
        "lantern/v1/dev-b/config",
        "lantern/v1/+/evt/#",
        "#",
    )
    other = connect("dev-b", "lantern/v1/dev-b/ack")
    hub = connect(HUB_USER)
    published(hub.publish("lantern/v1/dev-b/ack", b"for-b", qos=1))
    other_msg = next_message(other)
    assert (other_msg.topic, other_msg.payload) == ("lantern/v1/dev-b/ack", b"for-b")
    published(other.publish("lantern/v1/dev-b/evt/alarm", b"b-event", qos=1))
    published(hub.publish("lantern/v1/dev-a/ack", b"for-a", qos=1))
    published(hub.publish("lantern/v1/dev-a/cmd/locate", b"locate-a", qos=1))
    # The snooping client of dev-a gets its own ack (through "#") and nothing of B's.
    snooped = next_message(snoop)
    assert (snooped.topic, snooped.payload) == ("lantern/v1/dev-a/ack", b"for-a")
    assert next_message(snoop).topic == "lantern/v1/dev-a/cmd/locate"
    assert_quiet(snoop)
    # dev-a again with only its own topics (after the snooping connection: an account
    # has one connection at a time) gets them.
    snoop.close(2)
    own = connect(
        "dev-a", "lantern/v1/dev-a/ack", "lantern/v1/dev-a/config", "lantern/v1/dev-a/cmd/+"
    )
    published(hub.publish("lantern/v1/dev-a/ack", b"for-a", qos=1))
    published(hub.publish("lantern/v1/dev-a/cmd/locate", b"locate-a", qos=1))
    assert [(m.topic, m.payload) for m in (next_message(own), next_message(own))] == [
        ("lantern/v1/dev-a/ack", b"for-a"),
        ("lantern/v1/dev-a/cmd/locate", b"locate-a"),
    ]


def test_an_account_has_one_connection_at_a_time(broker: Broker) -> None:
    """The client id is the username (``use_username_as_clientid``): a second
    connection of an account replaces the first, whatever client id each sent, and a
    connection of another account under the same client id replaces nothing."""
    first = _raw_connect(broker.port, "any-id-1", "dev-a", broker.secrets["dev-a"])
    other = _raw_connect(broker.port, "any-id-1", "dev-b", broker.secrets["dev-b"])
    try:
        assert _read_until_quiet(first)[0][:1] == [2]
        assert _read_until_quiet(other)[0][:1] == [2]
        assert not _read_until_quiet(first)[1], "dev-b's connection dropped dev-a's"
        second = _raw_connect(broker.port, "any-id-2", "dev-a", broker.secrets["dev-a"])
        try:
            assert _read_until_quiet(second)[0][:1] == [2]
            kinds, closed = _read_until_quiet(first)
            assert closed, kinds  # taken over by the same account's new connection
            assert not _read_until_quiet(other)[1]
        finally:
            second.close()
    finally:
        first.close()
        other.close()


def _raw_connect(port: int, client_id: str, username: str, password: str) -> socket.socket:
    """An MQTT 5 CONNECT (clean start, no properties) sent on a new socket."""

    def utf8(text: str) -> bytes:
        raw = text.encode("utf-8")
        return len(raw).to_bytes(2, "big") + raw

    body = (
        utf8("MQTT") + bytes([5, 0xC2]) + (30).to_bytes(2, "big") + b"\x00"
        + utf8(client_id) + utf8(username) + utf8(password)
    )  # fmt: skip
    assert len(body) < 128  # one-byte remaining length
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(bytes([0x10, len(body)]) + body)
    return sock


def _read_until_quiet(sock: socket.socket) -> tuple[list[int], bool]:
    """Packet types of the whole packets received until QUIET_S of silence (first
    bytes only: each packet here is short), and whether the broker closed it."""
    sock.settimeout(QUIET_S)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
        closed = True
    except TimeoutError:
        closed = False
    except OSError:
        closed = True
    kinds, i = [], 0
    while i + 1 < len(data):
        kinds.append(data[i] >> 4)
        i += 2 + data[i + 1]
    return kinds, closed


def test_hub_cannot_publish_device_uplink(connect: PeerFactory) -> None:
    hub = connect(HUB_USER, "lantern/v1/+/evt/#")
    observer = connect(ADMIN_USER, "lantern/v1/#")
    with pytest.raises(PublishRefused, match="0x87"):
        hub.publish("lantern/v1/dev-a/evt/alarm", b"forged", qos=1).result(timeout=5)
    assert_quiet(hub)
    assert_quiet(observer)


def test_retained_config_reaches_its_device_only(connect: PeerFactory) -> None:
    hub = connect(HUB_USER)
    published(hub.publish("lantern/v1/dev-b/config", b"cfg-b", qos=1, retain=True))
    snoop = connect("dev-a", "lantern/v1/dev-b/config")
    device_b = connect("dev-b", "lantern/v1/dev-b/config")
    message = next_message(device_b)
    assert (message.topic, message.payload, message.retain) == (
        "lantern/v1/dev-b/config",
        b"cfg-b",
        True,
    )
    assert_quiet(snoop)
    published(hub.publish("lantern/v1/dev-b/config", b"", qos=1, retain=True))


# -- the hub's own login (HubMqttClient, `lantern hub serve`) -----------------------------


def hub_settings(broker: Broker, password: str | None, **changes: Any) -> HubMqttSettings:
    return HubMqttSettings(
        port=broker.port,
        client_id=unique_id("hub"),
        username=HUB_USER,
        password=SecretStr(password) if password is not None else None,
        session_expiry_s=0,
        reconnect_min_s=0.05,
        reconnect_max_s=0.3,
        **changes,
    )


def device_settings(broker: Broker, username: str, monkeypatch: pytest.MonkeyPatch) -> MqttSettings:
    env = f"LANTERN_TEST_PW_{secrets.token_hex(4).upper()}"
    monkeypatch.setenv(env, broker.secrets[username])
    return MqttSettings(
        host="127.0.0.1",
        port=broker.port,
        username=username,
        password_env=env,
        session_expiry_s=0,
        reconnect_min_s=0.05,
        reconnect_max_s=0.5,
    )


def test_hub_with_its_password_subscribes_and_ingests(
    broker: Broker, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(engine, ["dev-a"])
    ingest = Ingest(engine, hub_settings(broker, broker.secrets[HUB_USER]), IngestSettings(2))
    try:
        assert ingest.start(10), f"hub did not subscribe: {broker.logs()}"
        with FakeDevices(device_settings(broker, "dev-a", monkeypatch), ["dev-a"]) as devices:
            sent = {devices.send(devices.next_event("dev-a")) for _ in range(3)}
            assert wait_until(lambda: not devices.outstanding(), 10.0)
            assert set(devices.acked) == sent and not devices.rejected
        with Session(engine) as session:
            stored = session.scalars(select(Position.event_id).where(Position.device_id == "dev-a"))
            assert set(stored) == sent
    finally:
        ingest.stop(5)


def test_hub_with_a_wrong_password_logs_the_refusal_and_keeps_trying(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    client = HubMqttClient(
        hub_settings(broker, "wrong-password"), [("lantern/v1/+/state", 1)], print
    )
    caplog.set_level(logging.WARNING, logger="hub.comms.mqtt")
    client.start()
    try:

        def refusals() -> int:
            return sum("refused the connection" in r.getMessage() for r in caplog.records)

        assert wait_until(lambda: refusals() >= 2, 5.0), caplog.text
        assert not client.connected and not client.wait_subscribed(0)
        assert "Not authorized" in caplog.text and HUB_USER in caplog.text
        assert "wrong-password" not in caplog.text
    finally:
        assert client.close(5)


@pytest.mark.parametrize("right", [True, False], ids=["right-password", "wrong-password"])
def test_serve_logs_in_with_the_password_from_the_environment(
    broker: Broker, tmp_path: Path, right: bool
) -> None:
    """`serve` with the right password subscribes; with a wrong one it logs the refusal,
    keeps running and retrying, and still stops at once on SIGTERM."""
    password = broker.secrets[HUB_USER] if right else "wrong-password"
    expected = "connected to 127.0.0.1" if right else "refused the connection"
    log_path = tmp_path / "serve.log"

    def output() -> str:
        """The log with its lines joined (the console handler wraps long lines)."""
        return " ".join(log_path.read_text(errors="replace").split())

    with log_path.open("w+b") as log:
        hub = subprocess.Popen(
            lantern(
                "-v",
                "hub",
                "serve",
                "--data-dir",
                str(tmp_path / "data"),
                "--mqtt",
                f"mqtt://{HUB_USER}@127.0.0.1:{broker.port}",
                "--client-id",
                unique_id("hub"),
                "--session-expiry",
                "0",
                "--workers",
                "1",
            ),
            env=hub_env(None) | {MQTT_PASSWORD_ENV: password},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            assert wait_until(lambda: expected in output(), 20.0, step=0.05), output()
            if right:
                time.sleep(0.5)
            else:  # it keeps trying (backoff from 0.2 s): wait for the second refusal
                assert wait_until(
                    lambda: output().count("refused the connection") >= 2, 20.0, step=0.05
                ), output()
            assert hub.poll() is None, output()
            started = time.monotonic()
            hub.send_signal(signal.SIGTERM)
            assert hub.wait(timeout=10) == 0, output()
            assert time.monotonic() - started < 5.0
        finally:
            if hub.poll() is None:
                hub.kill()
                hub.wait(timeout=10)
    text = output()
    assert password not in text
    if not right:
        assert text.count("refused the connection") >= 2, text  # it kept trying
        assert "connected to 127.0.0.1" not in text


@pytest.mark.parametrize(
    ("url", "env_password", "message"),
    [
        ("mqtt://lantern-hub:secret@127.0.0.1:1", None, MQTT_PASSWORD_ENV),
        ("mqtt://lantern-hub@127.0.0.1:1", None, f"{MQTT_PASSWORD_ENV} is not set"),
        ("mqtt://127.0.0.1:1", "pw", "names no user"),
        ("http://127.0.0.1:1", None, "mqtt[s]://"),
    ],
    ids=["password-in-url", "no-password", "password-without-user", "bad-scheme"],
)
def test_serve_refuses_bad_broker_logins_before_starting(
    tmp_path: Path, url: str, env_password: str | None, message: str
) -> None:
    env = hub_env(None)
    if env_password is not None:
        env[MQTT_PASSWORD_ENV] = env_password
    result = subprocess.run(
        lantern("hub", "serve", "--data-dir", str(tmp_path / "data"), "--mqtt", url),
        env=env,
        capture_output=True,
        timeout=20,
        check=False,
    )
    stderr = " ".join(result.stderr.decode().split())
    assert result.returncode == 2, stderr
    assert message in stderr, stderr
    assert ":secret@" not in stderr  # the refusal does not echo a password
    assert not (tmp_path / "data" / "lantern.db").exists()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1", BrokerUrl("127.0.0.1", 1883, False, None)),
        ("mqtts://broker.example", BrokerUrl("broker.example", 8883, True, None)),
        ("mqtts://hub@broker.example:9883", BrokerUrl("broker.example", 9883, True, "hub")),
        ("mqtt://lantern-hub@[::1]:1884", BrokerUrl("::1", 1884, False, "lantern-hub")),
    ],
)
def test_broker_urls(url: str, expected: BrokerUrl) -> None:
    assert parse_broker_url(url) == expected


def test_a_password_in_the_broker_url_is_refused() -> None:
    with pytest.raises(ValueError, match=MQTT_PASSWORD_ENV) as caught:
        parse_broker_url("mqtts://hub:hunter2@broker.example")
    assert "hunter2" not in str(caught.value)


def test_tls_settings_make_a_verifying_context(tmp_path: Path) -> None:
    plain = HubMqttSettings()
    assert plain.ssl_context() is None
    context = HubMqttSettings(tls=True).ssl_context()
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    bad_ca = tmp_path / "ca.pem"
    bad_ca.write_text("not a certificate", encoding="utf-8")
    with pytest.raises(ValueError, match="CA file"):
        HubMqttSettings(tls=True, ca_file=bad_ca).ssl_context()
    with pytest.raises(ValueError, match="TLS"):
        HubMqttSettings(ca_file=bad_ca)
    with pytest.raises(ValueError, match="username"):
        HubMqttSettings(password=SecretStr("x"))
    assert "pw-value" not in repr(HubMqttSettings(username="hub", password=SecretStr("pw-value")))
