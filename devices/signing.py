"""Optional Ed25519 signatures on events, and the key helpers around them.

What is signed (exactly, see :func:`devices.protocol.signing_bytes`)::

    b"lantern-sig/1\\n"
    + topic (ASCII, "lantern/v1/{device_id}/evt/{type}") + b"\\n"
    + canonical JSON of the envelope without "sig", "sent_at" and "replayed"

Canonical JSON is :func:`devices.protocol.canonical_json` of the envelope as
:func:`devices.protocol.encode` writes it (sorted keys, no spaces, UTF-8, null
fields left out, timestamps as RFC 3339 UTC with ``Z``). ``kid`` is inside the signed
bytes. ``sig`` is the standard base64 of the 64-byte signature.

The verifier re-derives the bytes from the decoded model, not from the wire bytes, so
any payload that decodes to the same message verifies the same (key order or
whitespace on the wire do not matter; a ``+02:00`` timestamp is compared as UTC).

Keys are raw 32-byte Ed25519 keys in standard base64 (RFC 8032 encoding), which is
what a device's secure element or a provisioning file most easily holds. Pass
:func:`verify` only the public keys registered for the message's own device, so no
device can sign for another.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from collections.abc import Mapping
from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from devices.protocol import EventEnvelope, ProtocolError, signing_bytes

__all__ = [
    "KID_RE",
    "generate_private_key",
    "is_signed",
    "load_public_keys",
    "private_key_from_b64",
    "private_key_to_b64",
    "public_key_from_b64",
    "public_key_of",
    "public_key_to_b64",
    "sign",
    "verify",
]

logger = logging.getLogger(__name__)

KID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
"""A key id: what ``kid`` may hold."""

E = TypeVar("E", bound=EventEnvelope)


def generate_private_key() -> Ed25519PrivateKey:
    """A new random Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def _b64_32(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError(f"{what} is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"{what} must be 32 bytes, not {len(raw)}")
    return raw


def private_key_to_b64(key: Ed25519PrivateKey) -> str:
    """The raw 32-byte private key (the RFC 8032 seed) in base64. Keep it secret."""
    raw = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return base64.b64encode(raw).decode("ascii")


def private_key_from_b64(text: str) -> Ed25519PrivateKey:
    """Load a private key written by :func:`private_key_to_b64`; ``ValueError`` if bad."""
    return Ed25519PrivateKey.from_private_bytes(_b64_32(text, "private key"))


def public_key_of(key: Ed25519PrivateKey) -> Ed25519PublicKey:
    """The public half of a private key."""
    return key.public_key()


def public_key_to_b64(key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key in base64."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    """Load a public key written by :func:`public_key_to_b64`; ``ValueError`` if bad."""
    return Ed25519PublicKey.from_public_bytes(_b64_32(text, "public key"))


def load_public_keys(keys: Mapping[str, str]) -> dict[str, Ed25519PublicKey]:
    """``{kid: base64 public key}`` to ``{kid: key}``; ``ValueError`` naming a bad one."""
    loaded: dict[str, Ed25519PublicKey] = {}
    for kid, text in keys.items():
        if not KID_RE.fullmatch(kid):
            raise ValueError(f"bad key id {kid!r}")
        try:
            loaded[kid] = public_key_from_b64(text)
        except ValueError as exc:
            raise ValueError(f"key {kid!r}: {exc}") from None
    return loaded


def is_signed(envelope: EventEnvelope) -> bool:
    """True when the event carries a signature."""
    return envelope.sig is not None


def sign(envelope: E, private_key: Ed25519PrivateKey, kid: str) -> E:
    """A copy of ``envelope`` with ``kid`` set and ``sig`` over its signing bytes.

    Any existing signature is replaced. Sign once, at capture: a resend that changes
    only ``sent_at`` or ``replayed`` keeps the signature valid.
    """
    if not KID_RE.fullmatch(kid):
        raise ValueError(f"bad key id {kid!r}")
    unsigned = envelope.model_copy(update={"kid": kid, "sig": None})
    signature = private_key.sign(signing_bytes(unsigned))
    return unsigned.model_copy(update={"sig": base64.b64encode(signature).decode("ascii")})


def verify(envelope: EventEnvelope, public_keys: Mapping[str, Ed25519PublicKey]) -> None:
    """Check an event's signature against the device's keys ``{kid: public key}``.

    Returns None when it verifies. Raises :class:`ProtocolError` ``unsigned`` (no
    signature), ``unknown_kid`` (``kid`` not among ``public_keys``) or
    ``bad_signature`` (malformed, or not made by that key over these bytes).
    """
    if envelope.sig is None or envelope.kid is None:
        raise ProtocolError("unsigned", "the event is not signed", field="sig")
    key = public_keys.get(envelope.kid)
    if key is None:
        raise ProtocolError(
            "unknown_kid",
            f"key id {envelope.kid!r} is not a key of device {envelope.device_id!r}",
            field="kid",
        )
    try:
        signature = base64.b64decode(envelope.sig.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ProtocolError("bad_signature", "sig is not base64", field="sig") from None
    if len(signature) != 64:
        raise ProtocolError("bad_signature", f"sig has {len(signature)} bytes, not 64", field="sig")
    try:
        key.verify(signature, signing_bytes(envelope))
    except InvalidSignature:
        logger.debug("signature of %s from %s fails", envelope.event_id, envelope.device_id)
        raise ProtocolError(
            "bad_signature",
            f"signature does not verify with key {envelope.kid!r}",
            field="sig",
        ) from None
