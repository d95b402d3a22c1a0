"""Ed25519 signatures on hub-to-hub requests and answers.

A signed message carries four headers:

``X-Lantern-Hub``
    The sending hub's id (a peer id in the receiver's federation file).
``X-Lantern-Timestamp``
    Unix time in whole seconds when it was signed.
``X-Lantern-Nonce``
    16 to 64 characters of ``[A-Za-z0-9_-]``, fresh for every message.
``X-Lantern-Signature``
    Standard base64 of the 64-byte Ed25519 signature of :func:`signing_bytes`::

        b"lantern-federation/1" \\n METHOD \\n path \\n sender \\n audience \\n
        timestamp \\n nonce \\n hex(SHA-256(body))

The body is the canonical JSON of the message (:func:`canonical_body`: sorted keys, no
spaces, UTF-8) and is hashed as received, so what was signed is exactly what is read.
``audience`` is the id of the hub the message is for: a request signed for one peer is
refused by every other. The receiver refuses an unknown sender, a bad signature, a
timestamp more than :data:`MAX_SKEW_S` away from its own clock, and a nonce it has
already seen from that sender within the window (:class:`NonceCache`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import threading
import time
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from devices.protocol import canonical_json

__all__ = [
    "HEADER_HUB",
    "HEADER_NONCE",
    "HEADER_SIGNATURE",
    "HEADER_TIMESTAMP",
    "HUB_ID_RE",
    "MAX_SKEW_S",
    "NonceCache",
    "SignatureRefused",
    "canonical_body",
    "sign_message",
    "signing_bytes",
    "verify_message",
]

VERSION = b"lantern-federation/1"
HEADER_HUB = "X-Lantern-Hub"
HEADER_TIMESTAMP = "X-Lantern-Timestamp"
HEADER_NONCE = "X-Lantern-Nonce"
HEADER_SIGNATURE = "X-Lantern-Signature"

MAX_SKEW_S = 300
"""Largest difference, in seconds, between a message's timestamp and the receiver's
clock (either way)."""

HUB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""What a hub id may be."""

_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")


class SignatureRefused(Exception):
    """A message whose signature headers do not check out; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def canonical_body(value: Any) -> bytes:
    """The bytes a message body is sent (and signed) as."""
    return canonical_json(value)


def signing_bytes(
    *,
    method: str,
    path: str,
    sender: str,
    audience: str,
    timestamp: int,
    nonce: str,
    body: bytes,
) -> bytes:
    """What is signed (see the module docstring)."""
    parts = [
        VERSION,
        method.upper().encode("ascii"),
        path.encode("utf-8"),
        sender.encode("utf-8"),
        audience.encode("utf-8"),
        str(timestamp).encode("ascii"),
        nonce.encode("ascii"),
        hashlib.sha256(body).hexdigest().encode("ascii"),
    ]
    return b"\n".join(parts)


def sign_message(
    private_key: Ed25519PrivateKey,
    *,
    method: str,
    path: str,
    sender: str,
    audience: str,
    body: bytes,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The four signature headers of a message from ``sender`` to ``audience``."""
    ts = int(time.time()) if timestamp is None else timestamp
    nonce = nonce or secrets.token_urlsafe(24)
    signature = private_key.sign(
        signing_bytes(
            method=method,
            path=path,
            sender=sender,
            audience=audience,
            timestamp=ts,
            nonce=nonce,
            body=body,
        )
    )
    return {
        HEADER_HUB: sender,
        HEADER_TIMESTAMP: str(ts),
        HEADER_NONCE: nonce,
        HEADER_SIGNATURE: base64.b64encode(signature).decode("ascii"),
    }


class NonceCache:
    """Nonces seen per sender, each kept until its timestamp is out of the skew window
    (after that the timestamp check refuses the message anyway). Thread-safe; held in
    memory, so a restarted hub relies on the stored request ids (which must be new)."""

    def __init__(self, window_s: int = MAX_SKEW_S) -> None:
        self.window_s = window_s
        self._seen: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)

    def add(self, sender: str, nonce: str, timestamp: int, now: int) -> bool:
        """Remember a nonce; False when it was already seen (a replay)."""
        with self._lock:
            expired = [key for key, ts in self._seen.items() if ts + self.window_s < now]
            for key in expired:
                del self._seen[key]
            if (sender, nonce) in self._seen:
                return False
            self._seen[(sender, nonce)] = timestamp
            return True


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name) or headers.get(name.lower())
    if not value:
        raise SignatureRefused(f"missing header {name}")
    return value


def verify_message(
    public_keys: Mapping[str, Ed25519PublicKey],
    headers: Mapping[str, str],
    *,
    method: str,
    path: str,
    audience: str,
    body: bytes,
    nonces: NonceCache | None,
    now: int | None = None,
    max_skew_s: int = MAX_SKEW_S,
) -> str:
    """Check a message's signature headers; returns the sender's hub id or raises
    :class:`SignatureRefused`. ``public_keys`` are the known peers' keys by hub id.
    With ``nonces`` a replayed nonce is refused (and a new one remembered)."""
    sender = _header(headers, HEADER_HUB)
    key = public_keys.get(sender)
    if key is None:
        raise SignatureRefused(f"unknown hub {sender[:64]!r}")
    ts_text = _header(headers, HEADER_TIMESTAMP)
    if not ts_text.isdigit() or len(ts_text) > 12:
        raise SignatureRefused("timestamp is not whole Unix seconds")
    timestamp = int(ts_text)
    nonce = _header(headers, HEADER_NONCE)
    if not _NONCE_RE.fullmatch(nonce):
        raise SignatureRefused("nonce must be 16-64 characters of [A-Za-z0-9_-]")
    try:
        signature = base64.b64decode(_header(headers, HEADER_SIGNATURE), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureRefused("signature is not base64") from None
    message = signing_bytes(
        method=method,
        path=path,
        sender=sender,
        audience=audience,
        timestamp=timestamp,
        nonce=nonce,
        body=body,
    )
    try:
        key.verify(signature, message)
    except InvalidSignature:
        raise SignatureRefused(f"bad signature from {sender}") from None
    clock = int(time.time()) if now is None else now
    if abs(clock - timestamp) > max_skew_s:
        raise SignatureRefused(
            f"timestamp {timestamp} is {clock - timestamp:+d} s from this hub's clock "
            f"(at most {max_skew_s} s allowed)"
        )
    if nonces is not None and not nonces.add(sender, nonce, timestamp, clock):
        raise SignatureRefused(f"nonce already used by {sender} (replay)")
    return sender
