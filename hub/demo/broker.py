"""The demo's broker: a private Mosquitto when it is installed, else an embedded one.

:class:`MosquittoBroker` runs ``mosquitto`` as a child process on a free loopback port
with a generated configuration (anonymous, no persistence) under the demo's folder.

:class:`EmbeddedBroker` is a small MQTT 5 broker written on asyncio, run in a thread
of the demo process, so the demo needs nothing but Python. The hub and the agents
speak MQTT 5 only (session expiry, shared subscriptions, message expiry), which the
pure-Python brokers on PyPI (amqtt, hbmqtt: MQTT 3.1.1) refuse at CONNECT; this one
does what they use and no more:

* CONNECT with clean start or a resumed session (Session Expiry Interval), the Last
  Will (published when a connection ends without a normal DISCONNECT or is taken over);
* PUBLISH at QoS 0 and 1 (QoS 2 is refused: ``Maximum QoS`` 1 in CONNACK), retained
  messages (an empty payload clears), Message Expiry Interval (counted down while
  queued, expired messages dropped);
* SUBSCRIBE with ``+``/``#`` filters, the options No Local, Retain As Published and
  Retain Handling, Subscription Identifiers, and shared subscriptions
  ``$share/GROUP/FILTER`` (each message to one member, connected ones first);
* flow control: at most the client's Receive Maximum QoS 1 messages in flight, the
  rest queued (also while a persistent session is disconnected, up to
  :data:`MAX_QUEUED` per session); unacknowledged messages are sent again, marked DUP,
  when the session resumes;
* keep-alive (a connection silent for 1.5 keep-alives is closed), PINGREQ, UNSUBSCRIBE.

Not done: authentication (anyone on loopback may connect; the demo binds 127.0.0.1
only), topic aliases, AUTH, will delay, persistence across restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

__all__ = [
    "MAX_QUEUED",
    "BrokerKind",
    "DemoBroker",
    "EmbeddedBroker",
    "MosquittoBroker",
    "free_port",
    "start_broker",
    "topic_matches",
]

logger = logging.getLogger(__name__)

BrokerKind = Literal["auto", "mosquitto", "embedded"]

MAX_QUEUED = 100_000
"""QoS 1 messages queued per session before the oldest are dropped."""

# Packet types.
_CONNECT, _CONNACK, _PUBLISH, _PUBACK = 1, 2, 3, 4
_SUBSCRIBE, _SUBACK, _UNSUBSCRIBE, _UNSUBACK = 8, 9, 10, 11
_PINGREQ, _PINGRESP, _DISCONNECT = 12, 13, 14

# Property ids this broker reads or writes.
_P_MESSAGE_EXPIRY = 0x02
_P_SUBSCRIPTION_ID = 0x0B
_P_SESSION_EXPIRY = 0x11
_P_ASSIGNED_CLIENT_ID = 0x12
_P_REASON_STRING = 0x1F
_P_RECEIVE_MAXIMUM = 0x21
_P_TOPIC_ALIAS = 0x23
_P_MAXIMUM_QOS = 0x24

# Wire type of every MQTT 5 property, by id.
_PROPERTY_TYPES: dict[int, str] = {
    0x01: "byte", 0x02: "u32", 0x03: "str", 0x08: "str", 0x09: "bin", 0x0B: "varint",
    0x11: "u32", 0x12: "str", 0x13: "u16", 0x15: "str", 0x16: "bin", 0x17: "byte",
    0x18: "u32", 0x19: "byte", 0x1A: "str", 0x1C: "str", 0x1F: "str", 0x21: "u16",
    0x22: "u16", 0x23: "u16", 0x24: "byte", 0x25: "byte", 0x26: "pair", 0x27: "u32",
    0x28: "byte", 0x29: "byte", 0x2A: "byte",
}  # fmt: skip


class ProtocolViolation(Exception):
    """A packet this broker cannot accept; the connection is closed."""


class DemoBroker(Protocol):
    """What the demo needs of a broker."""

    kind: str
    host: str
    port: int

    def stop(self) -> None: ...


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (``+`` one level, ``#`` the rest);
    wildcards at the first level do not match topics starting with ``$``."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    parts = topic.split("/")
    filters = topic_filter.split("/")
    for index, level in enumerate(filters):
        if level == "#":
            return True
        if index >= len(parts):
            return False
        if level != "+" and level != parts[index]:
            return False
    return len(parts) == len(filters)


# -- wire encoding ------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("!H", len(data)) + data


def _binary(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([(kind << 4) | flags]) + _varint(len(body)) + body


Property = tuple[int, bytes]
"""A property as its id and its encoded value (without the id)."""


def _encode_properties(properties: list[Property]) -> bytes:
    body = b"".join(bytes([pid]) + value for pid, value in properties)
    return _varint(len(body)) + body


class _Reader:
    """Reads fields from one packet's body."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n > self.left():
            raise ProtocolViolation("packet shorter than its fields")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = struct.unpack("!H", self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = struct.unpack("!I", self.take(4))[0]
        return value

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 21:
                raise ProtocolViolation("malformed variable byte integer")

    def binary(self) -> bytes:
        return self.take(self.u16())

    def string(self) -> str:
        try:
            return self.binary().decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolViolation("a string is not UTF-8") from None

    def properties(self) -> list[Property]:
        end = self.varint() + self.pos
        found: list[Property] = []
        while self.pos < end:
            pid = self.byte()
            kind = _PROPERTY_TYPES.get(pid)
            start = self.pos
            if kind == "byte":
                self.take(1)
            elif kind == "u16":
                self.take(2)
            elif kind == "u32":
                self.take(4)
            elif kind == "varint":
                self.varint()
            elif kind in ("str", "bin"):
                self.binary()
            elif kind == "pair":
                self.binary()
                self.binary()
            else:
                raise ProtocolViolation(f"unknown property 0x{pid:02x}")
            found.append((pid, self.data[start : self.pos]))
        if self.pos != end:
            raise ProtocolViolation("properties overrun their length")
        return found


def _property_int(properties: list[Property], pid: int) -> int | None:
    for key, value in properties:
        if key == pid:
            return _Reader(value).varint() if pid == _P_SUBSCRIPTION_ID else int.from_bytes(value)
    return None


# -- broker state -------------------------------------------------------------------------


@dataclass
class _Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: list[Property]
    """As published, without topic alias, subscription ids and message expiry."""
    expires_at: float | None
    """Monotonic time it expires, from its Message Expiry Interval."""

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def encode(
        self, *, qos: int, retain: bool, packet_id: int | None, sub_ids: list[int], dup: bool
    ) -> bytes:
        properties = list(self.properties)
        if self.expires_at is not None:
            left = max(1, int(self.expires_at - time.monotonic()))
            properties.append((_P_MESSAGE_EXPIRY, struct.pack("!I", left)))
        properties.extend((_P_SUBSCRIPTION_ID, _varint(s)) for s in sub_ids)
        body = _string(self.topic)
        if qos:
            assert packet_id is not None
            body += struct.pack("!H", packet_id)
        body += _encode_properties(properties) + self.payload
        flags = (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
        return _packet(_PUBLISH, flags, body)


@dataclass(frozen=True)
class _Subscription:
    qos: int
    no_local: bool
    retain_as_published: bool
    retain_handling: int
    sub_id: int | None


@dataclass
class _Outgoing:
    message: _Message
    qos: int
    retain: bool
    sub_ids: list[int]


@dataclass
class _Session:
    client_id: str
    expiry_s: int = 0
    subscriptions: dict[str, _Subscription] = field(default_factory=dict)
    """Plain filters, and shared ones as ``$share/GROUP/FILTER``."""
    connection: _Connection | None = None
    receive_maximum: int = 65_535
    queue: deque[_Outgoing] = field(default_factory=deque)
    inflight: dict[int, _Outgoing] = field(default_factory=dict)
    ids: itertools.cycle[int] = field(default_factory=lambda: itertools.cycle(range(1, 65_536)))
    disconnected_at: float | None = None


class _Connection:
    """One client's network connection."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.session: _Session | None = None
        self.will: _Message | None = None
        self.closed = False

    def send(self, data: bytes) -> None:
        if not self.closed and not self.writer.is_closing():
            self.writer.write(data)

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(Exception):
            self.writer.close()


class EmbeddedBroker:
    """The in-process MQTT 5 broker (see the module docstring), on its own thread and
    asyncio loop. ``start()`` returns once it listens on ``host:port``."""

    kind = "embedded"

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self._sessions: dict[str, _Session] = {}
        self._retained: dict[str, _Message] = {}
        self._shared_turn = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.messages_routed = 0

    # -- life cycle

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        self._thread = threading.Thread(target=self._run, name="demo-broker", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the embedded broker did not start")
        if self._error is not None:
            raise RuntimeError(f"the embedded broker could not start: {self._error}")
        logger.info("embedded MQTT 5 broker on %s:%d", self.host, self.port)
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._serve, self.host, self.port)
            )
        except OSError as exc:
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        sweeper = loop.create_task(self._sweep())
        try:
            loop.run_forever()
        finally:
            sweeper.cancel()
            for session in self._sessions.values():
                if session.connection is not None:
                    session.connection.close()
            self._server.close()
            with contextlib.suppress(Exception):
                loop.run_until_complete(self._server.wait_closed())
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    def stop(self) -> None:
        """Close every connection and stop the loop (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10.0)
        logger.info("embedded broker stopped (%d messages routed)", self.messages_routed)

    async def _sweep(self) -> None:
        """Forget disconnected sessions whose expiry has passed."""
        while True:
            await asyncio.sleep(5.0)
            now = time.monotonic()
            for client_id, session in list(self._sessions.items()):
                gone = session.disconnected_at
                if session.connection is None and gone is not None and (
                    now - gone >= session.expiry_s
                ):
                    del self._sessions[client_id]

    # -- one connection

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(writer)
        clean = False
        keepalive = 0
        try:
            kind, flags, body = await asyncio.wait_for(self._read_packet(reader), 10.0)
            if kind != _CONNECT:
                raise ProtocolViolation("the first packet must be CONNECT")
            keepalive = self._connect(connection, body)
            timeout = keepalive * 1.5 if keepalive else None
            while not connection.closed:
                kind, flags, body = await asyncio.wait_for(self._read_packet(reader), timeout)
                if kind == _DISCONNECT:
                    clean = self._disconnect(connection, body)
                    break
                self._handle(connection, kind, flags, body)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        except ProtocolViolation as exc:
            logger.info("closing a client: %s", exc)
        except Exception:  # a bug here must not stop the broker
            logger.exception("embedded broker: error on a connection")
        finally:
            self._closed(connection, clean)
            connection.close()

    @staticmethod
    async def _read_packet(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
        first = (await reader.readexactly(1))[0]
        length, shift = 0, 0
        while True:
            byte = (await reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 21:
                raise ProtocolViolation("malformed remaining length")
        body = await reader.readexactly(length) if length else b""
        return first >> 4, first & 0x0F, body

    def _connect(self, connection: _Connection, body: bytes) -> int:
        r = _Reader(body)
        name, level, flags, keepalive = r.string(), r.byte(), r.byte(), r.u16()
        if name != "MQTT" or level != 5:
            # CONNACK of MQTT 3.1.1: 0x01 "unacceptable protocol version".
            connection.send(_packet(_CONNACK, 0, b"\x00\x01"))
            raise ProtocolViolation(f"protocol {name!r} level {level}: only MQTT 5 is served")
        properties = r.properties()
        client_id = r.string()
        will: _Message | None = None
        if flags & 0x04:
            will_properties = r.properties()
            will_topic = r.string()
            will_payload = r.binary()
            will = self._message(
                will_topic, will_payload, (flags >> 3) & 0x03, bool(flags & 0x20), will_properties
            )
        if flags & 0x80:
            r.string()  # user name: the demo broker is anonymous
        if flags & 0x40:
            r.binary()
        if will is not None and will.qos > 1:
            connection.send(_packet(_CONNACK, 0, b"\x00\x9b\x00"))  # QoS not supported
            raise ProtocolViolation("will QoS 2 is not supported")
        assigned: list[Property] = []
        if not client_id:
            client_id = f"auto-{os.urandom(6).hex()}"
            assigned.append((_P_ASSIGNED_CLIENT_ID, _string(client_id)))
        expiry = _property_int(properties, _P_SESSION_EXPIRY) or 0
        receive_maximum = _property_int(properties, _P_RECEIVE_MAXIMUM) or 65_535

        session = self._sessions.get(client_id)
        if session is not None and session.connection is not None:  # take-over
            old = session.connection
            old.send(_packet(_DISCONNECT, 0, b"\x8e\x00"))
            self._closed(old, clean=False)
            old.close()
        present = session is not None and not flags & 0x02
        if session is None or not present:
            session = _Session(client_id)
            self._sessions[client_id] = session
        session.expiry_s = expiry
        session.receive_maximum = max(1, receive_maximum)
        session.connection = connection
        session.disconnected_at = None
        connection.session = session
        connection.will = will
        connack_properties = [(_P_MAXIMUM_QOS, b"\x01"), *assigned]
        connection.send(
            _packet(
                _CONNACK,
                0,
                bytes([1 if present else 0, 0]) + _encode_properties(connack_properties),
            )
        )
        for packet_id, out in session.inflight.items():  # resend unacknowledged, as DUP
            connection.send(
                out.message.encode(
                    qos=out.qos, retain=out.retain, packet_id=packet_id, sub_ids=out.sub_ids,
                    dup=True,
                )
            )  # fmt: skip
        self._pump(session)
        return keepalive

    def _disconnect(self, connection: _Connection, body: bytes) -> bool:
        """A DISCONNECT: whether it was normal (no will)."""
        reason = body[0] if body else 0
        if len(body) > 1 and connection.session is not None:
            expiry = _property_int(_Reader(body[1:]).properties(), _P_SESSION_EXPIRY)
            if expiry is not None:
                connection.session.expiry_s = expiry
        return reason != 0x04  # 0x04: disconnect with will message

    def _closed(self, connection: _Connection, clean: bool) -> None:
        session = connection.session
        if session is None or session.connection is not connection:
            return
        session.connection = None
        session.disconnected_at = time.monotonic()
        will, connection.will = connection.will, None
        if will is not None and not clean:
            self._route(will, sender=None)
        if session.expiry_s == 0 and self._sessions.get(session.client_id) is session:
            del self._sessions[session.client_id]

    def _handle(self, connection: _Connection, kind: int, flags: int, body: bytes) -> None:
        session = connection.session
        assert session is not None
        if kind == _PUBLISH:
            self._publish(connection, flags, body)
        elif kind == _PUBACK:
            packet_id = struct.unpack("!H", body[:2])[0]
            session.inflight.pop(packet_id, None)
            self._pump(session)
        elif kind == _SUBSCRIBE:
            self._subscribe(connection, session, body)
        elif kind == _UNSUBSCRIBE:
            r = _Reader(body)
            packet_id = r.u16()
            r.properties()
            codes = bytearray()
            while r.left():
                codes.append(0x00 if session.subscriptions.pop(r.string(), None) else 0x11)
            connection.send(
                _packet(_UNSUBACK, 0, struct.pack("!H", packet_id) + b"\x00" + bytes(codes))
            )
        elif kind == _PINGREQ:
            connection.send(_packet(_PINGRESP, 0, b""))
        else:
            raise ProtocolViolation(f"packet type {kind} is not served")

    def _message(
        self, topic: str, payload: bytes, qos: int, retain: bool, properties: list[Property]
    ) -> _Message:
        expiry = _property_int(properties, _P_MESSAGE_EXPIRY)
        kept = [
            p
            for p in properties
            if p[0] not in (_P_TOPIC_ALIAS, _P_SUBSCRIPTION_ID, _P_MESSAGE_EXPIRY)
        ]
        expires_at = time.monotonic() + expiry if expiry is not None else None
        return _Message(topic, payload, qos, retain, kept, expires_at)

    def _publish(self, connection: _Connection, flags: int, body: bytes) -> None:
        qos = (flags >> 1) & 0x03
        if qos > 1:
            connection.send(_packet(_DISCONNECT, 0, b"\x9b\x00"))
            raise ProtocolViolation("QoS 2 is not supported (Maximum QoS 1)")
        r = _Reader(body)
        topic = r.string()
        packet_id = r.u16() if qos else None
        properties = r.properties()
        if not topic or "+" in topic or "#" in topic:
            raise ProtocolViolation(f"bad topic name {topic!r}")
        message = self._message(topic, r.take(r.left()), qos, bool(flags & 0x01), properties)
        if message.retain:
            if message.payload:
                self._retained[topic] = message
            else:
                self._retained.pop(topic, None)
        self._route(message, sender=connection.session)
        if packet_id is not None:
            connection.send(_packet(_PUBACK, 0, struct.pack("!H", packet_id)))

    def _subscribe(self, connection: _Connection, session: _Session, body: bytes) -> None:
        r = _Reader(body)
        packet_id = r.u16()
        sub_id = _property_int(r.properties(), _P_SUBSCRIPTION_ID)
        codes = bytearray()
        retained: list[tuple[str, _Subscription]] = []
        while r.left():
            topic_filter = r.string()
            options = r.byte()
            subscription = _Subscription(
                qos=min(options & 0x03, 1),
                no_local=bool(options & 0x04),
                retain_as_published=bool(options & 0x08),
                retain_handling=(options >> 4) & 0x03,
                sub_id=sub_id,
            )
            existed = topic_filter in session.subscriptions
            session.subscriptions[topic_filter] = subscription
            codes.append(subscription.qos)
            shared = topic_filter.startswith("$share/")
            if not shared and (
                subscription.retain_handling == 0
                or (subscription.retain_handling == 1 and not existed)
            ):
                retained.append((topic_filter, subscription))
        connection.send(
            _packet(_SUBACK, 0, struct.pack("!H", packet_id) + b"\x00" + bytes(codes))
        )
        now = time.monotonic()
        for topic_filter, subscription in retained:
            for topic, message in list(self._retained.items()):
                if message.expired(now):
                    del self._retained[topic]
                elif topic_matches(topic_filter, topic):
                    sub_ids = [subscription.sub_id] if subscription.sub_id else []
                    self._deliver(
                        session, _Outgoing(message, min(message.qos, subscription.qos), True,
                                           sub_ids),
                    )  # fmt: skip

    # -- routing

    def _route(self, message: _Message, sender: _Session | None) -> None:
        self.messages_routed += 1
        groups: dict[str, list[tuple[_Session, _Subscription]]] = {}
        for session in list(self._sessions.values()):
            best: _Subscription | None = None
            sub_ids: list[int] = []
            for topic_filter, subscription in session.subscriptions.items():
                if topic_filter.startswith("$share/"):
                    parts = topic_filter.split("/", 2)
                    group, inner = parts[1], parts[2] if len(parts) > 2 else ""
                    if topic_matches(inner, message.topic):
                        groups.setdefault(f"{group}\x00{inner}", []).append(
                            (session, subscription)
                        )
                    continue
                if not topic_matches(topic_filter, message.topic):
                    continue
                if subscription.no_local and session is sender:
                    continue
                if subscription.sub_id:
                    sub_ids.append(subscription.sub_id)
                if best is None or subscription.qos > best.qos:
                    best = subscription
            if best is not None:
                retain = message.retain and best.retain_as_published
                self._deliver(
                    session, _Outgoing(message, min(message.qos, best.qos), retain, sub_ids)
                )
        for members in groups.values():
            online = [m for m in members if m[0].connection is not None] or members
            session, subscription = online[next(self._shared_turn) % len(online)]
            sub_ids = [subscription.sub_id] if subscription.sub_id else []
            self._deliver(
                session, _Outgoing(message, min(message.qos, subscription.qos), False, sub_ids)
            )

    def _deliver(self, session: _Session, out: _Outgoing) -> None:
        if out.qos == 0:
            if session.connection is not None:
                session.connection.send(
                    out.message.encode(
                        qos=0, retain=out.retain, packet_id=None, sub_ids=out.sub_ids, dup=False
                    )
                )
            return
        session.queue.append(out)
        if len(session.queue) > MAX_QUEUED:
            session.queue.popleft()
            logger.warning("session %s: queue full, oldest message dropped", session.client_id)
        self._pump(session)

    def _pump(self, session: _Session) -> None:
        connection = session.connection
        if connection is None:
            return
        now = time.monotonic()
        while session.queue and len(session.inflight) < session.receive_maximum:
            out = session.queue.popleft()
            if out.message.expired(now):
                continue
            packet_id = next(session.ids)
            while packet_id in session.inflight:
                packet_id = next(session.ids)
            session.inflight[packet_id] = out
            connection.send(
                out.message.encode(
                    qos=out.qos, retain=out.retain, packet_id=packet_id, sub_ids=out.sub_ids,
                    dup=False,
                )
            )  # fmt: skip


# -- Mosquitto ----------------------------------------------------------------------------


class MosquittoBroker:
    """A private ``mosquitto`` on a free loopback port, anonymous and without
    persistence, its configuration and log under ``folder``."""

    kind = "mosquitto"

    def __init__(self, folder: Path, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port(host)
        self.folder = folder
        self.config = folder / "mosquitto.conf"
        self.log = folder / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        self.folder.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence false",
            "max_queued_messages 100000",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # keep access to the demo's folder
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        executable = shutil.which("mosquitto")
        if executable is None:
            raise RuntimeError("mosquitto is not on PATH")
        self.process = subprocess.Popen(
            [executable, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal reaches the demo, not it
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    logger.info("mosquitto on %s:%d (pid %d)", self.host, self.port,
                                self.process.pid)  # fmt: skip
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        log = self.log.read_text(errors="replace")[-1000:] if self.log.exists() else ""
        raise RuntimeError(f"mosquitto did not listen on {self.host}:{self.port}: {log}")

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def start_broker(kind: BrokerKind, folder: Path) -> DemoBroker:
    """Start the broker ``kind`` asks for; ``auto``: Mosquitto when it is on PATH,
    else the embedded one."""
    if kind == "mosquitto" or (kind == "auto" and shutil.which("mosquitto") is not None):
        return MosquittoBroker(folder).start()
    return EmbeddedBroker().start()
