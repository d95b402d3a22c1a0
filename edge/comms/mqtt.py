"""MQTT for the edge: the one module on the edge side that imports paho-mqtt.

Three clients live here, all MQTT 5 with paho's ``CallbackAPIVersion.VERSION2``:

:class:`EdgeLink`
    An agent's connection to the broker. One *owner thread* runs the network loop
    and makes every paho call; other threads hand it work through a queue
    (:meth:`~EdgeLink.publish` returns a :class:`concurrent.futures.Future` that
    settles on PUBACK) and read what arrives from :meth:`~EdgeLink.get_event`:
    :class:`Connected`, :class:`Disconnected` and :class:`Received` (a hub-to-device
    message that passed :func:`devices.protocol.decode`; invalid ones are logged,
    counted in :attr:`LinkStats.invalid_incoming` and dropped, never delivered).

:class:`MqttPeer`
    A generic client with the same owner-thread design for tests and tools that
    play the hub (subscribe to ``lantern/v1/+/evt/#``, publish acks and configs).
    It hands over raw topics and payloads, undecoded.

:class:`ClientPool`
    Many paho clients on one asyncio loop, for a simulator of a thousand devices in
    one process without a thread per device. The loop watches each client's socket
    (``add_reader``/``add_writer`` driven by paho's socket callbacks, then
    ``loop_read``/``loop_write``) and one task calls ``loop_misc`` for keep-alives.

Sessions, presence, reconnection
    Every client connects with ``clean_start=False`` and a Session Expiry Interval
    (:attr:`MqttSettings.session_expiry_s`), so the broker keeps the subscriptions
    and the QoS 1 messages queued for a device (its acks, a new config) while it is
    away, across the device's own restarts too (the client id is the device id).
    An :class:`EdgeLink` sets as Last Will its retained ``state`` ``offline``
    (composed again before every connect, so it carries the config applied then),
    publishes the retained ``online`` birth on every connect, and on a clean
    :meth:`~EdgeLink.close` publishes ``offline`` itself before DISCONNECT (the
    broker does not send the will after a clean disconnect).

    Reconnection is ours, not paho's: exponential backoff with full jitter
    (:class:`Backoff`: a delay drawn uniformly from ``[0, min(max, min * 2**n)]``),
    so a fleet that lost its broker together does not come back in lock-step.

    When a connection drops, paho's own queue of unacknowledged QoS 1 messages is
    dropped (``drop_out_messages``) and their futures fail with :class:`LinkDown`.
    The outbox, not paho, is what resends: it knows which events the hub has not
    acked, marks resends ``replayed`` and survives a restart; two resend mechanisms
    would only double the duplicates.

Incoming QoS 1 messages are acknowledged by paho as soon as they are handed over
(no ``manual_ack``): what arrives is either an ack (idempotent: a lost one makes the
device resend, and the hub, which deduplicates, acks again), a retained config
(sent again on every subscribe) or a command with its own expiry.

Every blocking wait has a timeout: TCP and TLS connects (``connect_timeout_s``),
CONNACK (the same), the owner loop's select (at most one second), shutdown.

Limits for a thousand clients in one process (:class:`ClientPool`): each client is
one file descriptor here and one in the broker. Raise ``ulimit -n`` of the simulator
above the client count (asyncio's epoll loop has no 1024 ceiling, but the soft limit
is often 1024) and check the broker process's own limit (``/proc/<pid>/limits``;
20000 on these machines): Mosquitto's ``max_connections`` is unlimited (-1) by
default, so the descriptor limit is what refuses connections. Mosquitto's
``max_queued_messages`` (1000 per client by default) caps what a persistent session
holds for a device that is away, and ``max_inflight_messages`` (20) how many QoS 1
messages it sends a client before PUBACKs; the tests' private brokers raise both.
Connects are spread out by ``connect_concurrency`` (32 at once).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import queue
import random
import re
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ConfigDict, Field, model_validator

from devices.protocol import (
    DELIVERY,
    DecodedMessage,
    ProtocolError,
    decode,
    device_subscriptions,
    state_topic,
    validate_device_id,
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

logger = logging.getLogger(__name__)
_paho_logger = logging.getLogger(__name__ + ".paho")

_ENV_NAME = r"^[A-Z_][A-Z0-9_]{0,127}$"
_MAX_SELECT_S = 1.0
"""Longest the owner loop sleeps in select, so keep-alives and deadlines are checked."""


# -- settings -----------------------------------------------------------------------------


class MqttConfigError(ValueError):
    """Settings that cannot work: a missing password variable, an unreadable TLS file."""


class TlsSettings(BaseModel):
    """TLS to the broker. With no ``ca_file`` the system's trust store is used."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = Field(
        None, description="PEM bundle of the CA(s) that signed the broker's certificate."
    )
    cert_file: Path | None = Field(
        None, description="Client certificate (PEM) for mutual TLS; with key_file."
    )
    key_file: Path | None = Field(None, description="Private key (PEM) of cert_file.")
    check_hostname: bool = Field(
        True, description="Check the broker certificate names the host connected to."
    )

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self

    def context(self) -> ssl.SSLContext:
        """A client SSL context: TLS 1.2 or later, the broker verified against
        ``ca_file`` (or the system store), the client certificate loaded if given."""
        try:
            ctx = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH,
                cafile=str(self.ca_file) if self.ca_file is not None else None,
            )
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.check_hostname = self.check_hostname
            if self.cert_file is not None and self.key_file is not None:
                ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise MqttConfigError(f"TLS files unusable: {exc}") from None
        return ctx


class MqttSettings(BaseModel):
    """Where the broker is and how to hold a session with it.

    The password never sits in a configuration file: ``password_env`` names the
    environment variable that holds it, read when a client is made.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", min_length=1, description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual for TLS).")
    client_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="MQTT client id; an edge agent uses its device id (the default).",
    )
    username: str | None = Field(
        None, description="Broker username; for a device, its device id (the ACL key)."
    )
    password_env: str | None = Field(
        None,
        pattern=_ENV_NAME,
        description="Name of the environment variable holding the broker password.",
    )
    tls: TlsSettings | None = Field(None, description="TLS settings; None for plain TCP.")
    keepalive_s: int = Field(
        60,
        ge=5,
        le=65535,
        description="MQTT keep-alive, seconds; the broker sends the will after 1.5x this "
        "without a packet.",
    )
    session_expiry_s: int = Field(
        7 * 86_400,
        ge=0,
        le=0xFFFFFFFF,
        description="How long the broker keeps the session (subscriptions, queued QoS 1 "
        "messages) after the connection ends, seconds.",
    )
    connect_timeout_s: float = Field(
        5.0, gt=0, le=120, description="Limit on the TCP/TLS connect and on waiting for CONNACK."
    )
    reconnect_min_s: float = Field(
        0.5, gt=0, le=3_600, description="First reconnect backoff ceiling, seconds."
    )
    reconnect_max_s: float = Field(
        60.0, gt=0, le=86_400, description="Largest reconnect backoff ceiling, seconds."
    )
    max_inflight: int = Field(
        100, ge=1, le=65_535, description="QoS 1 publishes awaiting PUBACK at once."
    )

    @model_validator(mode="after")
    def _backoff_order(self) -> Self:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError("reconnect_min_s must be <= reconnect_max_s")
        return self

    def password(self) -> str | None:
        """The password from ``password_env``; :class:`MqttConfigError` if that
        variable is named but not set (a required secret has no default)."""
        if self.password_env is None:
            return None
        value = os.environ.get(self.password_env)
        if value is None:
            raise MqttConfigError(
                f"environment variable {self.password_env} (the broker password) is not set"
            )
        return value


_BROKER_RE = re.compile(
    r"^(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[^:\[\]\s]+))(?::(?P<port>\d+))?$"
)


def parse_broker(text: str, default_port: int = 1883) -> tuple[str, int]:
    """``"host:port"``, ``"host"`` or ``"[::1]:1883"`` to ``(host, port)``;
    ``ValueError`` for anything else."""
    match = _BROKER_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"broker {text!r} is not HOST[:PORT]")
    host = match.group("v6") or match.group("host")
    port = int(match.group("port")) if match.group("port") else default_port
    if not 1 <= port <= 65535:
        raise ValueError(f"broker port {port} is out of range")
    return host, port


class Backoff:
    """Exponential backoff with full jitter.

    The n-th delay after a failure is uniform in ``[0, min(max_s, min_s * 2**n)]``,
    with a floor of a tenth of ``min_s`` so a client never spins. :meth:`reset` after
    a successful connect.
    """

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        if not 0 < min_s <= max_s:
            raise ValueError("need 0 < min_s <= max_s")
        self.min_s = min_s
        self.max_s = max_s
        self._rng = rng or random.Random()
        self.failures = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; counts one more failure."""
        ceiling = min(self.max_s, self.min_s * (2 ** min(self.failures, 32)))
        self.failures += 1
        return max(self.min_s / 10, self._rng.uniform(0.0, ceiling))

    def reset(self) -> None:
        """Start again from the smallest ceiling."""
        self.failures = 0


# -- what clients hand over ----------------------------------------------------------------


class LinkError(Exception):
    """A publish or subscribe that did not complete."""


class LinkDown(LinkError):
    """Not connected, or the connection was lost before the broker acknowledged."""


class PublishRefused(LinkError):
    """The broker answered with a failure reason code (e.g. not authorised)."""


@dataclass(frozen=True)
class Connected:
    """The broker accepted the connection; ``session_present`` says it resumed ours."""

    session_present: bool


@dataclass(frozen=True)
class Disconnected:
    """The connection ended; the client reconnects by itself unless closing."""

    reason: str


@dataclass(frozen=True)
class Received:
    """A hub-to-device message for this device that passed protocol validation."""

    message: DecodedMessage
    retained: bool


LinkEvent = Connected | Disconnected | Received
"""What :meth:`EdgeLink.get_event` returns."""


@dataclass(frozen=True)
class RawMessage:
    """A message as received by :class:`MqttPeer` or a pooled client, undecoded."""

    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True)
class OutgoingMessage:
    """A message to publish: a will, a birth, a farewell."""

    topic: str
    payload: bytes
    qos: Literal[0, 1] = 1
    retain: bool = False
    expiry_s: int | None = None


@dataclass
class LinkStats:
    """Counters of one client, updated by its owner; read them from anywhere."""

    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    published: int = 0
    publish_failures: int = 0
    received: int = 0
    invalid_incoming: int = 0
    events_dropped: int = 0


# -- helpers shared by the clients ----------------------------------------------------------


def _new_paho(client_id: str, settings: MqttSettings) -> paho.Client:
    """A paho client for MQTT 5 with the VERSION2 callbacks, credentials and TLS set."""
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        reconnect_on_failure=False,
    )
    client.on_log = _paho_log
    client.connect_timeout = settings.connect_timeout_s
    client.max_inflight_messages_set(settings.max_inflight)
    client.max_queued_messages_set(0)
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password())
    if settings.tls is not None:
        client.tls_set_context(settings.tls.context())
    properties = _properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = settings.session_expiry_s
    # Sets host, port, keep-alive, clean start and properties without connecting; every
    # attempt, the first included, is then a reconnect() made by the owner.
    client.connect_async(
        settings.host,
        settings.port,
        keepalive=settings.keepalive_s,
        clean_start=False,
        properties=properties,
    )
    return client


def _paho_log(client: paho.Client, userdata: Any, level: int, text: str) -> None:
    """paho's own log lines, at DEBUG: its errors ("connection reset") are expected
    events here, and this module logs what they mean at the right level."""
    _paho_logger.debug("%s", text)


def _properties(packet_type: int) -> Properties:
    """An empty MQTT 5 property set for a packet type (paho's constructor is untyped)."""
    return Properties(packet_type)  # type: ignore[no-untyped-call]


def _publish_properties(expiry_s: int | None) -> Properties | None:
    if expiry_s is None:
        return None
    properties = _properties(PacketTypes.PUBLISH)
    properties.MessageExpiryInterval = expiry_s
    return properties


def _will_properties(expiry_s: int | None) -> Properties | None:
    if expiry_s is None:
        return None
    properties = _properties(PacketTypes.WILLMESSAGE)
    properties.MessageExpiryInterval = expiry_s
    return properties


def _reason_text(reason: ReasonCode | int | None) -> str:
    if isinstance(reason, ReasonCode):
        return f"{reason.getName()} ({reason.value:#04x})"
    return str(reason)


_AnyFuture = concurrent.futures.Future[None] | asyncio.Future[None]


def _settle(future: _AnyFuture, exc: BaseException | None = None) -> None:
    """Complete a future once, whoever else may have cancelled it."""
    if future.done():
        return
    with contextlib.suppress(concurrent.futures.InvalidStateError, asyncio.InvalidStateError):
        if exc is None:
            future.set_result(None)
        else:
            future.set_exception(exc)


class _Pubacks:
    """QoS 1 publishes waiting for their PUBACK, by message id, each with the future
    its caller holds. paho can run the PUBACK callback before ``publish()`` has
    returned the message id (a quick broker on loopback), so an outcome that comes
    first is kept until its publish is registered. Both clients (the agent's
    thread-owned link and the simulator's event-loop pool) settle publishes here."""

    def __init__(self, stats: LinkStats) -> None:
        self._stats = stats
        self._pending: dict[int, _AnyFuture] = {}
        self._early: dict[int, ReasonCode | None] = {}

    def sent(self, mid: int, future: _AnyFuture) -> None:
        """The publish with message id ``mid`` is out; settle ``future`` on its PUBACK."""
        if mid in self._early:
            self._finish(future, self._early.pop(mid))
        else:
            self._pending[mid] = future

    def acked(self, mid: int, reason: ReasonCode | None) -> None:
        """The broker answered the publish ``mid`` (a failure reason code: refused)."""
        future = self._pending.pop(mid, None)
        if future is None:
            self._early[mid] = reason
        else:
            self._finish(future, reason)

    def fail_all(self, exc: LinkError) -> None:
        """The connection is gone: every unanswered publish fails with ``exc``."""
        pending = list(self._pending.values())
        self._pending.clear()
        self._early.clear()
        for future in pending:
            _settle(future, exc)

    def _finish(self, future: _AnyFuture, reason: ReasonCode | None) -> None:
        if reason is not None and reason.is_failure:
            self._stats.publish_failures += 1
            _settle(future, PublishRefused(f"broker refused: {_reason_text(reason)}"))
        else:
            self._stats.published += 1
            _settle(future)


def _message_topic(message: paho.MQTTMessage) -> str | None:
    try:
        return message.topic
    except UnicodeDecodeError:
        return None


@dataclass
class _Request:
    kind: Literal["publish", "subscribe", "call"]
    future: concurrent.futures.Future[None]
    message: OutgoingMessage | None = None
    topic_filter: str = ""
    qos: int = 1
    call: Callable[[], None] | None = None


# -- one client, one owner thread ----------------------------------------------------------


class _OwnedClient:
    """A paho client owned by one thread that runs its network loop.

    Subclasses say what to do on connect, on a message and when the connection
    drops; this class does the loop, the request queue, the futures, reconnection and
    a clean close. The constructor builds and configures the paho client before the
    thread exists; from :meth:`start` on, no paho call is made on any other thread.
    """

    def __init__(
        self,
        client_id: str,
        settings: MqttSettings,
        *,
        name: str,
        rng: random.Random | None = None,
    ) -> None:
        self.client_id = client_id
        self.settings = settings
        self.stats = LinkStats()
        self._name = name
        self._backoff = Backoff(settings.reconnect_min_s, settings.reconnect_max_s, rng)
        self._requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread: threading.Thread | None = None
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._subs_waiting = 0
        self._finished = threading.Event()
        self._close_requested = threading.Event()
        self._close_timeout = 5.0
        # Owner-thread state below.
        self._client: paho.Client | None = None
        self._pubacks = _Pubacks(self.stats)
        self._pending_subs: dict[int, concurrent.futures.Future[None]] = {}
        self._next_attempt = 0.0
        self._connack_deadline: float | None = None
        self._closing_deadline: float | None = None
        self._farewell_future: concurrent.futures.Future[None] | None = None
        self._selector: selectors.BaseSelector | None = None
        self._sock: Any = None
        self._sock_events = 0
        # A paho client is made here so bad settings (a missing password variable,
        # an unreadable TLS file) fail in the constructor, not later in the thread;
        # it is handed to the owner thread before any paho call.
        self._client = _new_paho(client_id, settings)

    # -- public, any thread ------------------------------------------------------------

    def start(self) -> None:
        """Start the owner thread; it connects, and reconnects until :meth:`close`."""
        if self._thread is not None:
            raise RuntimeError(f"{self._name} already started")
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    @property
    def connected(self) -> bool:
        """True between CONNACK and the loss of the connection."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a connection; True if connected."""
        return self._connected.wait(timeout)

    def wait_subscribed(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until the subscriptions made on connect are
        acknowledged (SUBACK); True if they are."""
        return self._subscribed.wait(timeout)

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: Literal[0, 1] = 1,
        retain: bool = False,
        expiry_s: int | None = None,
    ) -> concurrent.futures.Future[None]:
        """Queue a publish; the future settles when the broker acknowledges (QoS 1) or
        the packet is written (QoS 0), and fails with :class:`LinkDown` when not
        connected or the connection is lost first, :class:`PublishRefused` on a failure
        reason code."""
        message = OutgoingMessage(topic, bytes(payload), qos, retain, expiry_s)
        return self._submit(_Request("publish", concurrent.futures.Future(), message=message))

    def subscribe(self, topic_filter: str, qos: int = 1) -> concurrent.futures.Future[None]:
        """Subscribe now (when connected); the future settles on SUBACK."""
        return self._submit(
            _Request("subscribe", concurrent.futures.Future(), topic_filter=topic_filter, qos=qos)
        )

    def close(self, timeout: float = 5.0) -> bool:
        """Shut down cleanly within ``timeout`` seconds: the subclass's farewell is
        published (and its PUBACK awaited), then DISCONNECT. True if the owner thread
        ended in time."""
        self._close_timeout = timeout
        self._close_requested.set()
        self._wake()
        if self._thread is None:
            if not self._finished.is_set():
                self._finished.set()
                self._wake_r.close()
                self._wake_w.close()
            return True
        self._thread.join(timeout + 1.0)
        return not self._thread.is_alive()

    # -- for subclasses (owner thread) ----------------------------------------------------

    def _will(self) -> OutgoingMessage | None:
        return None

    def _farewell(self) -> OutgoingMessage | None:
        return None

    def _subscriptions(self) -> Sequence[tuple[str, int]]:
        return ()

    def _after_connect(self, session_present: bool) -> None:
        """Called on the owner thread once subscriptions and birth are queued."""

    def _after_disconnect(self, reason: str) -> None:
        """Called on the owner thread when the connection is gone."""

    def _handle_message(self, message: RawMessage) -> None:
        """Called on the owner thread for every message received."""

    def _publish_now(self, message: OutgoingMessage) -> concurrent.futures.Future[None]:
        """Publish from the owner thread (e.g. inside a callback)."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._do_publish(message, future)
        return future

    # -- owner thread ---------------------------------------------------------------------

    def _submit(self, request: _Request) -> concurrent.futures.Future[None]:
        if self._finished.is_set():
            _settle(request.future, LinkDown(f"{self._name} is closed"))
            return request.future
        self._requests.put(request)
        self._wake()
        return request.future

    def _call_on_owner(self, call: Callable[[], None]) -> concurrent.futures.Future[None]:
        return self._submit(_Request("call", concurrent.futures.Future(), call=call))

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _run(self) -> None:
        client = self._client
        assert client is not None  # made in __init__
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._step(client):
                pass
        except Exception:
            logger.exception("%s: owner loop failed", self._name)
        finally:
            self._shutdown(client)

    def _step(self, client: paho.Client) -> bool:
        """One turn of the owner loop; True when the loop should end."""
        now = time.monotonic()
        if self._close_requested.is_set() and self._closing_deadline is None:
            self._begin_close(client, now)
        if self._closing_deadline is not None and (
            now >= self._closing_deadline or client.socket() is None
        ):
            return True
        self._track_socket(client)
        if client.socket() is None:
            if now >= self._next_attempt:
                self._attempt_connect(client, now)
                self._track_socket(client)
                return False
            self._serve_requests(client)
            self._select(min(self._next_attempt - now, _MAX_SELECT_S), client)
            return False
        if (
            self._connack_deadline is not None
            and not self.connected
            and now >= self._connack_deadline
        ):
            logger.warning(
                "%s: no CONNACK within %.1f s", self._name, self.settings.connect_timeout_s
            )
            self._connack_deadline = None
            client.disconnect()
        if self._farewell_future is not None and self._farewell_future.done():
            self._farewell_future = None
            client.disconnect()
        self._select(_MAX_SELECT_S, client)
        self._serve_requests(client)
        if client.socket() is not None:
            client.loop_misc()
        return False

    def _select(self, timeout: float, client: paho.Client) -> None:
        assert self._selector is not None
        sock = self._sock
        if sock is not None and hasattr(sock, "pending") and sock.pending() > 0:
            timeout = 0.0  # TLS holds decrypted bytes the kernel does not know about
        if sock is not None:
            wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.want_write() else 0)
            if wanted != self._sock_events:
                self._selector.modify(sock, wanted)
                self._sock_events = wanted
        ready = self._selector.select(max(0.0, timeout))
        readable = writable = False
        for key, events in ready:
            if key.fileobj is self._wake_r:
                with contextlib.suppress(BlockingIOError, OSError):
                    while self._wake_r.recv(4096):
                        pass
            elif key.fileobj is sock:
                readable = readable or bool(events & selectors.EVENT_READ)
                writable = writable or bool(events & selectors.EVENT_WRITE)
        if sock is not None and hasattr(sock, "pending") and sock.pending() > 0:
            readable = True
        if readable and client.socket() is sock:
            client.loop_read()
        if writable and client.socket() is sock:
            client.loop_write()
        self._track_socket(client)

    def _track_socket(self, client: paho.Client) -> None:
        """Keep the selector registered on the client's current socket."""
        assert self._selector is not None
        sock = client.socket()
        if sock is self._sock:
            return
        if self._sock is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(self._sock)
        self._sock = sock
        self._sock_events = 0
        if sock is not None:
            self._selector.register(sock, selectors.EVENT_READ)
            self._sock_events = selectors.EVENT_READ

    def _attempt_connect(self, client: paho.Client, now: float) -> None:
        will = self._will()
        if will is not None:
            client.will_set(
                will.topic,
                will.payload,
                qos=will.qos,
                retain=will.retain,
                properties=_will_properties(will.expiry_s),
            )
        try:
            rc = client.reconnect()
        except (OSError, ValueError) as exc:
            self._connect_failed(f"{type(exc).__name__}: {exc}", now)
            return
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._connect_failed(paho.error_string(rc), now)
            return
        self._connack_deadline = now + self.settings.connect_timeout_s

    def _connect_failed(self, why: str, now: float) -> None:
        self.stats.connect_failures += 1
        delay = self._backoff.next_delay()
        self._next_attempt = now + delay
        log = logger.info if self._backoff.failures <= 1 else logger.debug
        log(
            "%s: cannot connect to %s:%d (%s); retrying in %.2f s",
            self._name,
            self.settings.host,
            self.settings.port,
            why,
            delay,
        )

    def _serve_requests(self, client: paho.Client) -> None:
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            if request.kind == "call":
                assert request.call is not None
                try:
                    request.call()
                except Exception as exc:
                    logger.exception("%s: queued call failed", self._name)
                    _settle(request.future, exc)
                else:
                    _settle(request.future)
            elif request.kind == "publish":
                assert request.message is not None
                self._do_publish(request.message, request.future)
            else:
                self._do_subscribe(request.topic_filter, request.qos, request.future)

    def _do_publish(
        self, message: OutgoingMessage, future: concurrent.futures.Future[None]
    ) -> None:
        client = self._client
        assert client is not None
        if not self.connected:
            self.stats.publish_failures += 1
            _settle(future, LinkDown(f"{self._name} is not connected"))
            return
        try:
            info = client.publish(
                message.topic,
                message.payload,
                qos=message.qos,
                retain=message.retain,
                properties=_publish_properties(message.expiry_s),
            )
        except ValueError as exc:
            self.stats.publish_failures += 1
            _settle(future, LinkError(f"cannot publish on {message.topic!r}: {exc}"))
            return
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.stats.publish_failures += 1
            _settle(future, LinkDown(f"publish failed: {paho.error_string(info.rc)}"))
            return
        self._pubacks.sent(info.mid, future)

    def _do_subscribe(
        self, topic_filter: str, qos: int, future: concurrent.futures.Future[None]
    ) -> None:
        client = self._client
        assert client is not None
        if not self.connected:
            _settle(future, LinkDown(f"{self._name} is not connected"))
            return
        try:
            rc, mid = client.subscribe(topic_filter, qos)
        except ValueError as exc:
            _settle(future, LinkError(f"cannot subscribe to {topic_filter!r}: {exc}"))
            return
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            _settle(future, LinkDown(f"subscribe failed: {paho.error_string(rc)}"))
            return
        self._pending_subs[mid] = future

    def _begin_close(self, client: paho.Client, now: float) -> None:
        self._closing_deadline = now + self._close_timeout
        if not self.connected:
            if client.socket() is not None:
                client.disconnect()
            return
        farewell = self._farewell()
        if farewell is None:
            client.disconnect()
            return
        # DISCONNECT goes once the farewell is acknowledged (or failed); see _step.
        self._farewell_future = self._publish_now(farewell)

    def _shutdown(self, client: paho.Client) -> None:
        self._connected.clear()
        self._finished.set()
        if client.socket() is not None:
            with contextlib.suppress(Exception):
                client.disconnect()
                client.loop_write()
        self._fail_pending(LinkDown(f"{self._name} closed"))
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                break
            _settle(request.future, LinkDown(f"{self._name} closed"))
        if self._selector is not None:
            self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
        logger.debug("%s: owner thread ended", self._name)

    def _fail_pending(self, exc: LinkError) -> None:
        self._pubacks.fail_all(exc)
        subscriptions = list(self._pending_subs.values())
        self._pending_subs.clear()
        for future in subscriptions:
            _settle(future, exc)

    # -- paho callbacks (owner thread, inside paho's calls) -------------------------------

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connack_deadline = None
        if reason.is_failure:
            logger.warning(
                "%s: broker refused the connection: %s", self._name, _reason_text(reason)
            )
            return
        self._backoff.reset()
        self.stats.connects += 1
        self._connected.set()
        logger.info(
            "%s: connected to %s:%d (session present: %s)",
            self._name,
            self.settings.host,
            self.settings.port,
            flags.session_present,
        )
        subscriptions = list(self._subscriptions())
        self._subs_waiting = len(subscriptions)
        if not subscriptions:
            self._subscribed.set()
        for topic_filter, qos in subscriptions:
            future: concurrent.futures.Future[None] = concurrent.futures.Future()
            future.add_done_callback(self._subscription_done)
            self._do_subscribe(topic_filter, qos, future)
        self._after_connect(flags.session_present)

    def _subscription_done(self, future: concurrent.futures.Future[None]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        self._subs_waiting -= 1
        if self._subs_waiting == 0:
            self._subscribed.set()

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected = self.connected
        self._connected.clear()
        self._subscribed.clear()
        self._connack_deadline = None
        dropped = client.drop_out_messages()
        self._fail_pending(LinkDown(f"connection lost: {_reason_text(reason)}"))
        why = _reason_text(reason)
        if self._closing_deadline is None:
            delay = self._backoff.next_delay()
            self._next_attempt = time.monotonic() + delay
            logger.info(
                "%s: disconnected (%s, %d unacknowledged dropped); reconnecting in %.2f s",
                self._name,
                why,
                len(dropped),
                delay,
            )
        if was_connected:
            self.stats.disconnects += 1
            self._after_disconnect(why)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._pubacks.acked(mid, reason)

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        future = self._pending_subs.pop(mid, None)
        failed = [r for r in reasons if r.is_failure]
        if failed:
            logger.warning("%s: subscription refused: %s", self._name, _reason_text(failed[0]))
            if future is not None:
                _settle(future, PublishRefused(f"subscription refused: {_reason_text(failed[0])}"))
        elif future is not None:
            _settle(future)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self.stats.received += 1
        topic = _message_topic(message)
        if topic is None:
            self.stats.invalid_incoming += 1
            logger.warning("%s: dropped a message whose topic is not UTF-8", self._name)
            return
        try:
            self._handle_message(
                RawMessage(topic, bytes(message.payload), message.qos, bool(message.retain))
            )
        except Exception:
            logger.exception("%s: handling a message on %s failed", self._name, topic)


# -- the agent's link ---------------------------------------------------------------------

Presence = Callable[[Literal["online", "offline"]], bytes]
"""Makes the encoded retained ``state`` payload for a status (a ``DeviceState``)."""


class EdgeLink(_OwnedClient):
    """An edge agent's connection to the broker (see the module docstring).

    ``presence`` composes the encoded ``DeviceState`` for ``online``/``offline``; it is
    called on the owner thread before each connect (the will) and after each
    CONNACK (the birth), so it should read an immutable snapshot of the agent's
    state. Incoming messages on the device's ``ack``, ``config`` and ``cmd/+`` topics
    are decoded; events for the agent queue up to ``inbox_size`` and past that are
    dropped with an error log (an ack dropped costs a resend, which the hub acks again).
    """

    def __init__(
        self,
        device_id: str,
        settings: MqttSettings,
        *,
        presence: Presence,
        rng: random.Random | None = None,
        inbox_size: int = 10_000,
    ) -> None:
        validate_device_id(device_id)
        self.device_id = device_id
        self._presence = presence
        self._events: queue.Queue[LinkEvent] = queue.Queue(maxsize=inbox_size)
        self._state_topic = state_topic(device_id)
        super().__init__(
            settings.client_id or device_id, settings, name=f"link-{device_id}", rng=rng
        )

    def get_event(self, timeout: float) -> LinkEvent | None:
        """The next event for the agent, waiting at most ``timeout`` seconds."""
        try:
            return self._events.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def update_presence(self) -> concurrent.futures.Future[None]:
        """Publish the retained ``online`` state again (after the applied config
        changed); a no-op when not connected (the next birth carries it)."""
        return self._call_on_owner(self._publish_birth)

    def _emit(self, event: LinkEvent) -> None:
        try:
            self._events.put_nowait(event)
        except queue.Full:
            self.stats.events_dropped += 1
            logger.error("%s: agent inbox full; dropped %s", self._name, type(event).__name__)

    def _state(self, status: Literal["online", "offline"]) -> OutgoingMessage | None:
        try:
            payload = self._presence(status)
        except Exception:
            logger.exception("%s: composing the %s state failed", self._name, status)
            return None
        delivery = DELIVERY["state"]
        return OutgoingMessage(self._state_topic, payload, delivery.qos, delivery.retain)

    def _publish_birth(self) -> None:
        if not self.connected:
            return
        birth = self._state("online")
        if birth is not None:
            self._publish_now(birth)

    def _will(self) -> OutgoingMessage | None:
        return self._state("offline")

    def _farewell(self) -> OutgoingMessage | None:
        return self._state("offline")

    def _subscriptions(self) -> Sequence[tuple[str, int]]:
        return [(topic, DELIVERY["ack"].qos) for topic in device_subscriptions(self.device_id)]

    def _after_connect(self, session_present: bool) -> None:
        self._publish_birth()
        self._emit(Connected(session_present))

    def _after_disconnect(self, reason: str) -> None:
        self._emit(Disconnected(reason))

    def _handle_message(self, message: RawMessage) -> None:
        try:
            decoded = decode(message.topic, message.payload)
        except ProtocolError as exc:
            self.stats.invalid_incoming += 1
            logger.warning(
                "%s: dropped invalid message on %s (%d bytes): %s",
                self._name,
                message.topic[:120],
                len(message.payload),
                exc,
            )
            return
        info = decoded.topic
        if info.device_id != self.device_id or DELIVERY[info.kind].direction != "hub_to_device":
            self.stats.invalid_incoming += 1
            logger.warning("%s: dropped a message on %s not meant for it", self._name, info.topic)
            return
        self._emit(Received(decoded, message.retain))


# -- a generic peer (tests, tools that play the hub) -----------------------------------------


class MqttPeer(_OwnedClient):
    """A plain MQTT 5 client with the owner-thread design, for tests and tools.

    It subscribes to ``subscriptions`` on every connect and hands each message, raw,
    to ``on_message`` (called on the owner thread: keep it short and non-blocking;
    :meth:`publish` from inside it is fine) or, without one, to a queue read with
    :meth:`get_message`. ``will`` and ``farewell`` work as for :class:`EdgeLink`.
    """

    def __init__(
        self,
        client_id: str,
        settings: MqttSettings,
        *,
        subscriptions: Iterable[tuple[str, int]] = (),
        on_message: Callable[[RawMessage], None] | None = None,
        will: OutgoingMessage | None = None,
        farewell: OutgoingMessage | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._subs = list(subscriptions)
        self._callback = on_message
        self._will_message = will
        self._farewell_message = farewell
        self._messages: queue.Queue[RawMessage] = queue.Queue()
        super().__init__(client_id, settings, name=f"peer-{client_id}", rng=rng)

    def get_message(self, timeout: float) -> RawMessage | None:
        """The next message received (when no ``on_message`` was given)."""
        try:
            return self._messages.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def _will(self) -> OutgoingMessage | None:
        return self._will_message

    def _farewell(self) -> OutgoingMessage | None:
        return self._farewell_message

    def _subscriptions(self) -> Sequence[tuple[str, int]]:
        return self._subs

    def _handle_message(self, message: RawMessage) -> None:
        if self._callback is not None:
            self._callback(message)
        else:
            self._messages.put(message)


# -- many clients on one asyncio loop -------------------------------------------------------

MessageFactory = Callable[[], OutgoingMessage | None]


class PooledClient:
    """One connection of a :class:`ClientPool`. Use it only from the pool's loop.

    ``birth`` is published after every CONNACK, ``will`` is composed before every
    connect, ``farewell`` is published by a clean :meth:`ClientPool.close`.
    ``username``, when given, replaces the pool settings' username for this client
    (a device logs in as its device id, the key of the broker ACL).
    """

    def __init__(
        self,
        pool: ClientPool,
        client_id: str,
        *,
        will: MessageFactory | None,
        birth: MessageFactory | None,
        farewell: MessageFactory | None,
        subscriptions: Sequence[tuple[str, int]],
        on_message: Callable[[PooledClient, RawMessage], None] | None,
        username: str | None = None,
    ) -> None:
        self.client_id = client_id
        self.stats = LinkStats()
        self._pool = pool
        self._loop = pool.loop
        self._will = will
        self._birth = birth
        self._farewell = farewell
        self._subs = list(subscriptions)
        self._on_message_cb = on_message
        settings = pool.settings
        if username is not None:
            settings = settings.model_copy(update={"username": username})
        self._client = _new_paho(client_id, settings)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._client.on_socket_close = self._on_socket_close
        self._client.on_socket_register_write = self._on_register_write
        self._client.on_socket_unregister_write = self._on_unregister_write
        self._backoff = Backoff(
            pool.settings.reconnect_min_s, pool.settings.reconnect_max_s, pool.rng
        )
        self._state: Literal["idle", "connecting", "open", "closed"] = "idle"
        self._fd: int | None = None
        self._connected = asyncio.Event()
        self._pubacks = _Pubacks(self.stats)
        self._reconnect_task: asyncio.Task[None] | None = None
        self._connack_deadline: float | None = None

    @property
    def connected(self) -> bool:
        """True between CONNACK and the loss of the connection."""
        return self._connected.is_set()

    async def wait_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a connection."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def publish_nowait(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: Literal[0, 1] = 1,
        retain: bool = False,
        expiry_s: int | None = None,
    ) -> asyncio.Future[None]:
        """Publish now; the future settles as :meth:`EdgeLink.publish`'s does."""
        future: asyncio.Future[None] = self._loop.create_future()
        if not self.connected or self._state != "open":
            self.stats.publish_failures += 1
            future.set_exception(LinkDown(f"{self.client_id} is not connected"))
            return future
        try:
            info = self._client.publish(
                topic,
                payload,
                qos=qos,
                retain=retain,
                properties=_publish_properties(expiry_s),
            )
        except ValueError as exc:
            future.set_exception(LinkError(f"cannot publish on {topic!r}: {exc}"))
            return future
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.stats.publish_failures += 1
            future.set_exception(LinkDown(f"publish failed: {paho.error_string(info.rc)}"))
        else:
            self._pubacks.sent(info.mid, future)
        return future

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: Literal[0, 1] = 1,
        retain: bool = False,
        expiry_s: int | None = None,
        timeout: float = 10.0,
    ) -> None:
        """Publish and wait (at most ``timeout`` seconds) for the acknowledgement."""
        future = self.publish_nowait(topic, payload, qos=qos, retain=retain, expiry_s=expiry_s)
        await asyncio.wait_for(future, timeout)

    def abort(self) -> None:
        """Drop the connection without DISCONNECT and stay down, as a device that loses
        power does: the broker publishes the will. The client is finished after this."""
        self._state = "closed"
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._fd = None
        sock = self._client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        self._connected.clear()

    # -- pool internals (loop thread) ---------------------------------------------------

    def _start(self) -> None:
        if self._state == "idle":
            self._schedule_connect(0.0)

    def _schedule_connect(self, delay: float) -> None:
        if self._state == "closed" or self._pool.closing:
            return
        if self._reconnect_task is not None and not self._reconnect_task.done():
            return
        self._reconnect_task = self._loop.create_task(self._connect_after(delay))

    async def _connect_after(self, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        if self._state == "closed" or self._pool.closing:
            return
        will = self._will() if self._will is not None else None
        if will is not None:
            self._client.will_set(
                will.topic,
                will.payload,
                qos=will.qos,
                retain=will.retain,
                properties=_will_properties(will.expiry_s),
            )
        async with self._pool.connect_slots:
            if self._gone():
                return
            self._state = "connecting"
            try:
                # The blocking TCP/TLS connect runs in a worker thread; until it
                # returns, nothing on the loop touches this client (state "connecting").
                rc = await self._loop.run_in_executor(self._pool.executor, self._client.reconnect)
            except (OSError, ValueError) as exc:
                self._state = "idle"
                self.stats.connect_failures += 1
                self._schedule_connect(self._backoff.next_delay())
                logger.debug("%s: connect failed: %s", self.client_id, exc)
                return
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._state = "idle"
            self.stats.connect_failures += 1
            self._schedule_connect(self._backoff.next_delay())
            return
        sock = self._client.socket()
        if sock is None:
            self._state = "idle"
            self._schedule_connect(self._backoff.next_delay())
            return
        self._state = "open"
        self._fd = sock.fileno()
        self._connack_deadline = self._loop.time() + self._pool.settings.connect_timeout_s
        self._loop.add_reader(self._fd, self._readable)
        if self._client.want_write():
            self._loop.add_writer(self._fd, self._writable)

    def _gone(self) -> bool:
        return self._state == "closed" or self._pool.closing

    def _readable(self) -> None:
        if self._state == "open":
            self._client.loop_read()

    def _writable(self) -> None:
        if self._state == "open":
            self._client.loop_write()

    def _misc(self, now: float) -> None:
        if self._state != "open":
            return
        if (
            self._connack_deadline is not None
            and not self.connected
            and now >= self._connack_deadline
        ):
            self._connack_deadline = None
            logger.debug("%s: no CONNACK in time", self.client_id)
            self._client.disconnect()
            return
        self._client.loop_misc()

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # During reconnect() this runs in the executor thread, before the socket is
        # watched at all; _connect_after adds the writer itself afterwards.
        if self._state == "open" and self._fd is not None:
            self._loop.add_writer(self._fd, self._writable)

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if self._state == "open" and self._fd is not None:
            self._loop.remove_writer(self._fd)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if self._fd is not None and self._state in ("open", "closed"):
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        self._fd = None

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connack_deadline = None
        if reason.is_failure:
            logger.warning("%s: connection refused: %s", self.client_id, _reason_text(reason))
            return
        self._backoff.reset()
        self.stats.connects += 1
        self._connected.set()
        for topic_filter, qos in self._subs:
            client.subscribe(topic_filter, qos)
        birth = self._birth() if self._birth is not None else None
        if birth is not None:
            self.publish_nowait(
                birth.topic,
                birth.payload,
                qos=birth.qos,
                retain=birth.retain,
                expiry_s=birth.expiry_s,
            ).add_done_callback(_ignore_result)

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if self._connected.is_set():
            self.stats.disconnects += 1
        self._connected.clear()
        self._connack_deadline = None
        client.drop_out_messages()
        self._pubacks.fail_all(LinkDown(f"connection lost: {_reason_text(reason)}"))
        if self._state == "open":
            self._state = "idle"
            self._schedule_connect(self._backoff.next_delay())

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._pubacks.acked(mid, reason)

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self.stats.received += 1
        topic = _message_topic(message)
        if topic is None or self._on_message_cb is None:
            return
        try:
            self._on_message_cb(
                self, RawMessage(topic, bytes(message.payload), message.qos, bool(message.retain))
            )
        except Exception:
            logger.exception("%s: message handler failed", self.client_id)

    async def _close(self, timeout: float) -> None:
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        if self._state == "open" and self.connected:
            farewell = self._farewell() if self._farewell is not None else None
            if farewell is not None:
                with contextlib.suppress(LinkError, TimeoutError):
                    await self.publish(
                        farewell.topic,
                        farewell.payload,
                        qos=farewell.qos,
                        retain=farewell.retain,
                        timeout=timeout,
                    )
        if self._state == "open":
            self._client.disconnect()
            self._client.loop_write()
        self._state = "closed"
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._fd = None
        if self._client.socket() is not None:
            # DISCONNECT could not be written: close the socket ourselves.
            with contextlib.suppress(OSError):
                self._client.socket().close()  # type: ignore[union-attr]
        self._connected.clear()


def _ignore_result(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.debug("birth not delivered: %s", future.exception())


class ClientPool:
    """Many MQTT clients driven by one asyncio loop (see the module docstring).

    Create it inside a running loop. :meth:`add` starts a client connecting and
    returns at once; at most ``connect_concurrency`` TCP/TLS connects run at a time
    (in a small thread pool, the only blocking part of paho), so a thousand clients
    starting together do not overflow the broker's listen backlog.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        connect_concurrency: int = 32,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.loop = asyncio.get_running_loop()
        self.rng = rng or random.Random()
        self.connect_slots = asyncio.Semaphore(connect_concurrency)
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, min(connect_concurrency, 32)), thread_name_prefix="pool-connect"
        )
        self.closing = False
        self._clients: dict[str, PooledClient] = {}
        self._misc_task = self.loop.create_task(self._misc_loop())

    @property
    def clients(self) -> dict[str, PooledClient]:
        """The clients by client id."""
        return dict(self._clients)

    def add(
        self,
        client_id: str,
        *,
        will: MessageFactory | None = None,
        birth: MessageFactory | None = None,
        farewell: MessageFactory | None = None,
        subscriptions: Sequence[tuple[str, int]] = (),
        on_message: Callable[[PooledClient, RawMessage], None] | None = None,
        username: str | None = None,
    ) -> PooledClient:
        """Add a client and start connecting it; ``username`` overrides the pool
        settings' one for this client."""
        if self.closing:
            raise RuntimeError("pool is closing")
        if client_id in self._clients:
            raise ValueError(f"client {client_id!r} is already in the pool")
        pooled = PooledClient(
            self,
            client_id,
            will=will,
            birth=birth,
            farewell=farewell,
            subscriptions=subscriptions,
            on_message=on_message,
            username=username,
        )
        self._clients[client_id] = pooled
        pooled._start()
        return pooled

    async def wait_all_connected(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every client to be connected."""
        deadline = self.loop.time() + timeout
        for pooled in list(self._clients.values()):
            remaining = deadline - self.loop.time()
            if remaining <= 0 or not await pooled.wait_connected(remaining):
                return False
        return True

    async def close(self, timeout: float = 5.0) -> None:
        """Publish every client's farewell, disconnect them all, stop the pool."""
        self.closing = True
        self._misc_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._misc_task
        clients = list(self._clients.values())
        if clients:
            await asyncio.wait_for(
                asyncio.gather(*(c._close(timeout) for c in clients), return_exceptions=True),
                timeout + 1.0,
            )
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> ClientPool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _misc_loop(self) -> None:
        period = min(1.0, self.settings.keepalive_s / 4)
        while True:
            await asyncio.sleep(period)
            now = self.loop.time()
            for pooled in list(self._clients.values()):
                try:
                    pooled._misc(now)
                except Exception:
                    logger.exception("%s: keep-alive check failed", pooled.client_id)
