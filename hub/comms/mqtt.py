"""MQTT for the hub: the one hub module that imports paho-mqtt.

:class:`HubMqttClient` is a single MQTT 5 connection (paho 2.x, ``VERSION2``
callbacks) owned by one thread. That thread runs paho's network loop and makes every
paho call; other threads (the ingest workers) hand it work through a queue:
:meth:`~HubMqttClient.ack` (a PUBACK for a message received earlier) and
:meth:`~HubMqttClient.publish` (an ``ack`` to a device). Received messages are given
to ``on_message`` on the owner thread as :class:`Inbound` records, undecoded.

Acknowledgement after commit
    The client is made with paho's ``manual_ack``: a QoS 1 message is not PUBACKed
    when it arrives but when ingest calls :meth:`~HubMqttClient.ack`, after the
    database commit. If the hub dies first the broker still holds the message as
    in flight and sends it again when the session resumes. Every message is tagged
    with the *generation* (a count of connections) it arrived on; a PUBACK for an
    older connection is dropped, because packet ids are only meaningful on the
    connection that carried them (the broker resends those messages anyway).

Persistent session
    ``clean_start=False`` with a Session Expiry Interval: while the hub is down the
    broker keeps its subscriptions and queues the QoS 1 events it is missing. With a
    ``$share`` subscription Mosquitto keeps queueing to a disconnected member whose
    session is alive, so a hub worker process that is gone for good holds its share
    of the events until its session expires. The default deployment is therefore one
    hub process (with several worker threads); several processes each need a stable,
    distinct client id and must be restarted, not retired, or use a short expiry.

Login and TLS
    The hub logs in with ``username`` and ``password`` (a :class:`~pydantic.SecretStr`,
    taken from the environment, never from the command line or the broker URL) and,
    for ``mqtts://``, over TLS 1.2+ with the broker's certificate and host name
    checked against ``ca_file`` or the system's trust store. A refused login is
    logged and retried with the same backoff as a lost connection, so a hub started
    before its account exists on the broker connects once it does.

Reconnection is done by the owner with exponential backoff; every wait is bounded
(TCP connect and CONNACK by ``connect_timeout_s``, the loop's select by 50 ms, the
shutdown by the ``timeout`` given to :meth:`~HubMqttClient.close`).
"""

from __future__ import annotations

import logging
import queue
import random
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

__all__ = [
    "MQTTS_PORT",
    "MQTT_PORT",
    "BrokerUrl",
    "HubMqttClient",
    "HubMqttSettings",
    "Inbound",
    "parse_broker_url",
    "parse_mqtt_url",
]

logger = logging.getLogger(__name__)

_LOOP_TIMEOUT_S = 0.005
"""How long paho's loop waits on the socket per turn; bounds the PUBACK latency."""


MQTT_PORT = 1883
"""Default port of ``mqtt://`` (plain TCP)."""
MQTTS_PORT = 8883
"""Default port of ``mqtts://`` (TLS)."""


@dataclass(frozen=True)
class BrokerUrl:
    """A parsed broker URL: where the broker is, whether to use TLS, who logs in."""

    host: str
    port: int
    tls: bool
    username: str | None


def parse_broker_url(url: str) -> BrokerUrl:
    """``mqtt[s]://[USER@]HOST[:PORT]`` to a :class:`BrokerUrl`; ``ValueError`` for
    anything else.

    ``mqtts://`` means TLS, port 8883 by default; ``mqtt://`` plain TCP, port 1883. A
    password in the URL is refused: it would show in the process list and in shell
    history, so it comes from the environment variable ``LANTERN_MQTT_PASSWORD``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"broker URL {url!r} is not mqtt[s]://[USER@]HOST[:PORT]")
    if parts.password is not None:
        raise ValueError(
            "the broker URL must not hold a password (it would be visible in the process "
            "list); give only the user (mqtt://USER@HOST) and set the password in the "
            "environment variable LANTERN_MQTT_PASSWORD"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"broker URL {url!r} has a path or query")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"broker URL {url!r} has a bad port") from None
    tls = parts.scheme == "mqtts"
    username = unquote(parts.username) if parts.username else None
    return BrokerUrl(parts.hostname, port or (MQTTS_PORT if tls else MQTT_PORT), tls, username)


def parse_mqtt_url(url: str) -> tuple[str, int]:
    """``mqtt[s]://[USER@]host[:port]`` to ``(host, port)``; ``ValueError`` for anything
    else (see :func:`parse_broker_url`, which also gives the scheme and user)."""
    parsed = parse_broker_url(url)
    return parsed.host, parsed.port


class HubMqttSettings(BaseModel):
    """How the hub connects to the broker."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", min_length=1, description="Broker host.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port.")
    client_id: str = Field(
        "lantern-hub",
        min_length=1,
        max_length=128,
        description="MQTT client id; stable across restarts so the session resumes.",
    )
    keepalive_s: int = Field(30, ge=5, le=65535, description="MQTT keep-alive, seconds.")
    session_expiry_s: int = Field(
        86_400,
        ge=0,
        le=0xFFFFFFFF,
        description="How long the broker keeps the hub's session and queues events for "
        "it while it is down, seconds.",
    )
    receive_maximum: int = Field(
        2000,
        ge=1,
        le=65535,
        description="QoS 1 messages the broker may send before our PUBACKs (covers a "
        "batch per worker).",
    )
    username: str | None = Field(
        None, min_length=1, description="Broker username (the hub's account); None: anonymous."
    )
    password: SecretStr | None = Field(
        None, description="Broker password of ``username``; from LANTERN_MQTT_PASSWORD."
    )
    tls: bool = Field(False, description="Connect with TLS (mqtts://), the broker verified.")
    ca_file: Path | None = Field(
        None, description="PEM bundle of the CA(s) of the broker's certificate; None: system."
    )
    connect_timeout_s: float = Field(5.0, gt=0, le=120, description="TCP connect / CONNACK.")
    reconnect_min_s: float = Field(0.2, gt=0, description="First reconnect delay ceiling.")
    reconnect_max_s: float = Field(10.0, gt=0, description="Largest reconnect delay ceiling.")

    @model_validator(mode="after")
    def _login(self) -> HubMqttSettings:
        if self.password is not None and self.username is None:
            raise ValueError("a broker password needs a username")
        if self.ca_file is not None and not self.tls:
            raise ValueError("ca_file is for TLS connections (mqtts://)")
        return self

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context (TLS 1.2 or later, certificate and host name checked), or
        None for plain TCP. ``ValueError`` if the CA file cannot be used."""
        if not self.tls:
            return None
        try:
            ctx = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH,
                cafile=str(self.ca_file) if self.ca_file is not None else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"CA file {self.ca_file} unusable: {exc}") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx


@dataclass(frozen=True)
class Inbound:
    """A message as received, before any validation."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    generation: int
    """Which connection carried it (see the module docstring)."""
    received_at: datetime
    """The hub's clock when the message arrived."""


@dataclass(frozen=True)
class _Ack:
    generation: int
    mid: int
    qos: int


@dataclass(frozen=True)
class _Publish:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class HubMqttClient:
    """One MQTT 5 connection owned by one thread (see the module docstring).

    ``subscriptions`` are made on every connect. ``on_message`` runs on the owner
    thread and must not block (ingest puts the message on a worker queue).
    """

    def __init__(
        self,
        settings: HubMqttSettings,
        subscriptions: Sequence[tuple[str, int]],
        on_message: Callable[[Inbound], None],
    ) -> None:
        self.settings = settings
        self._subscriptions = list(subscriptions)
        self._on_message_cb = on_message
        self._requests: queue.SimpleQueue[_Ack | _Publish] = queue.SimpleQueue()
        self._pending: deque[_Publish] = deque()
        self._stop = threading.Event()
        self._consuming = threading.Event()
        self._consuming.set()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._sub_mids: set[int] = set()
        self._generation = 0
        self._rng = random.Random()
        self._failures = 0
        self._next_attempt = 0.0
        self._connecting = False
        self._thread = threading.Thread(target=self._run, name="hub-mqtt", daemon=True)
        self._client = self._new_client()
        self.received = 0
        self.acked = 0
        self.published = 0

    # -- any thread

    def start(self) -> None:
        """Start the owner thread; it connects, and reconnects until :meth:`close`."""
        self._thread.start()

    def wait_subscribed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until the subscriptions are granted."""
        return self._subscribed.wait(timeout)

    @property
    def connected(self) -> bool:
        """Whether the connection is up now."""
        return self._connected.is_set()

    def ack(self, generation: int, mid: int, qos: int) -> None:
        """PUBACK a message received earlier (a no-op for QoS 0)."""
        if qos > 0:
            self._requests.put(_Ack(generation, mid, qos))

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish; held while disconnected and sent once connected again."""
        self._requests.put(_Publish(topic, payload, qos, retain))

    def stop_consuming(self) -> None:
        """Hand no more messages to ``on_message``. Messages that still arrive are not
        PUBACKed, so the broker keeps them for the next session."""
        self._consuming.clear()

    def close(self, timeout: float = 5.0) -> bool:
        """Send queued PUBACKs and publishes, disconnect (the session is kept) and stop
        the owner thread; False if it did not stop within ``timeout`` seconds."""
        self._consuming.clear()
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- owner thread

    def _new_client(self) -> paho.Client:
        s = self.settings
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=s.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            reconnect_on_failure=False,
            manual_ack=True,
        )
        client.connect_timeout = s.connect_timeout_s
        if s.username is not None:
            password = s.password.get_secret_value() if s.password is not None else None
            client.username_pw_set(s.username, password)
        context = s.ssl_context()
        if context is not None:
            client.tls_set_context(context)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = s.session_expiry_s
        properties.ReceiveMaximum = s.receive_maximum
        client.connect_async(
            s.host, s.port, keepalive=s.keepalive_s, clean_start=False, properties=properties
        )
        return client

    def _run(self) -> None:
        client = self._client
        try:
            while True:
                if self._stop.is_set():
                    self._drain(client)
                    break
                now = time.monotonic()
                if client.socket() is None:
                    self._connected.clear()
                    if now >= self._next_attempt:
                        self._attempt(client, now)
                    else:
                        time.sleep(min(0.05, self._next_attempt - now))
                    continue
                self._drain(client)
                rc = client.loop(timeout=_LOOP_TIMEOUT_S)
                if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
                    self._lost(f"loop: {paho.error_string(rc)}")
                    self._fail(time.monotonic())
                elif self._connecting and now >= self._next_attempt:
                    logger.warning("no CONNACK within %.1f s", self.settings.connect_timeout_s)
                    client.disconnect()
                    self._fail(now)
        except Exception:
            logger.exception("MQTT owner loop failed")
        finally:
            self._shutdown(client)

    def _attempt(self, client: paho.Client, now: float) -> None:
        try:
            rc = client.reconnect()
        except OSError as exc:
            logger.warning(
                "cannot reach broker %s:%d: %s", self.settings.host, self.settings.port, exc
            )
            self._fail(now)
            return
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            logger.warning("connect failed: %s", paho.error_string(rc))
            self._fail(now)
            return
        self._connecting = True
        self._next_attempt = now + self.settings.connect_timeout_s

    def _fail(self, now: float) -> None:
        self._connecting = False
        low, high = self.settings.reconnect_min_s, self.settings.reconnect_max_s
        ceiling = min(high, low * 2 ** min(self._failures, 16))
        self._failures += 1
        self._next_attempt = now + max(low / 10, self._rng.uniform(0, ceiling))
        sock = self._client.socket()
        if sock is not None:
            self._client._sock_close()  # noqa: SLF001 - paho has no public "drop socket"

    def _lost(self, why: str) -> None:
        if self._connected.is_set():
            logger.warning("connection to the broker lost: %s", why)
        self._connected.clear()
        self._subscribed.clear()

    def _drain(self, client: paho.Client) -> None:
        """Make the queued PUBACKs and publishes (publishes only while connected)."""
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                break
            if isinstance(request, _Ack):
                if request.generation == self._generation and self._connected.is_set():
                    client.ack(request.mid, request.qos)
                    self.acked += 1
                else:
                    logger.debug("PUBACK of mid %d from an old connection dropped", request.mid)
            else:
                self._pending.append(request)
        while self._pending and self._connected.is_set():
            message = self._pending[0]
            info = client.publish(message.topic, message.payload, message.qos, message.retain)
            if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
                break
            self._pending.popleft()
            self.published += 1

    def _shutdown(self, client: paho.Client) -> None:
        if client.socket() is not None:
            deadline = time.monotonic() + 2.0
            # Let the last PUBACKs and publishes leave before DISCONNECT.
            while client.want_write() and time.monotonic() < deadline:
                client.loop_write()
            client.disconnect()
            client.loop(timeout=0.05)
        self._connected.clear()
        if self._pending:
            logger.warning("%d publishes not sent before shutdown", len(self._pending))
        logger.info("MQTT client stopped")

    # -- paho callbacks (owner thread)

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connecting = False
        if reason_code.is_failure:
            logger.warning(
                "broker %s:%d refused the connection (user %s): %s; retrying",
                self.settings.host,
                self.settings.port,
                self.settings.username or "anonymous",
                reason_code,
            )
            self._fail(time.monotonic())
            return
        self._generation += 1
        self._failures = 0
        self._connected.set()
        logger.info(
            "connected to %s:%d (session present: %s)",
            self.settings.host,
            self.settings.port,
            flags.session_present,
        )
        result, mid = client.subscribe(list(self._subscriptions))
        if result == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
            self._sub_mids.add(mid)

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self._sub_mids.discard(mid)
        refused = [str(code) for code in reason_codes if code.is_failure]
        if refused:
            logger.error("subscriptions refused: %s", ", ".join(refused))
            return
        self._subscribed.set()

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._lost(str(reason_code))
        if not self._stop.is_set():
            self._fail(time.monotonic())

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        if not self._consuming.is_set():
            return  # not PUBACKed: the broker keeps it for the next session
        self.received += 1
        self._on_message_cb(
            Inbound(
                topic=message.topic,
                payload=bytes(message.payload),
                qos=message.qos,
                retain=bool(message.retain),
                mid=message.mid,
                generation=self._generation,
                received_at=datetime.now(UTC),
            )
        )
