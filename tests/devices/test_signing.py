"""Ed25519 signatures on events: sign, verify, tampering, keys."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from devices.protocol import (
    SIGNATURE_CONTEXT,
    PositionEvent,
    ProtocolError,
    Telemetry,
    TelemetryBody,
    decode,
    encode,
    new_event_id,
    signing_bytes,
    topic_for,
)
from devices.signing import (
    generate_private_key,
    is_signed,
    load_public_keys,
    private_key_from_b64,
    private_key_to_b64,
    public_key_from_b64,
    public_key_of,
    public_key_to_b64,
    sign,
    verify,
)
from tests.devices.protocol_helpers import NOW, position_event, sighting_event

KEY = generate_private_key()
KEYS: dict[str, Ed25519PublicKey] = {"k1": public_key_of(KEY)}


def _tampered(message: PositionEvent, change: dict[str, object]) -> PositionEvent:
    """Decode a copy of ``message``'s payload with ``change`` applied to the body."""
    data = json.loads(encode(message))
    data["body"].update(change)
    decoded = decode(topic_for(message), json.dumps(data).encode(), now=NOW).message
    assert isinstance(decoded, PositionEvent)
    return decoded


def test_sign_then_verify_through_the_wire() -> None:
    signed = sign(position_event(), KEY, "k1")
    assert is_signed(signed) and signed.kid == "k1" and signed.sig is not None
    assert len(base64.b64decode(signed.sig)) == 64
    received = decode(topic_for(signed), encode(signed), now=NOW).message
    assert isinstance(received, PositionEvent)
    verify(received, KEYS)


def test_signature_survives_a_resend_but_not_a_tampered_body() -> None:
    signed = sign(position_event(), KEY, "k1")
    resent = signed.model_copy(update={"sent_at": NOW, "replayed": True})
    verify(resent, KEYS)
    with pytest.raises(ProtocolError) as caught:
        verify(_tampered(signed, {"lat": 1.6}), KEYS)
    assert caught.value.code == "bad_signature"
    for field, value in (("seq", 2), ("captured_at", NOW), ("event_id", new_event_id())):
        assert getattr(signed, field) != value
        with pytest.raises(ProtocolError) as caught:
            verify(signed.model_copy(update={field: value}), KEYS)
        assert caught.value.code == "bad_signature"


def test_signature_binds_the_key_id_and_the_device() -> None:
    signed = sign(position_event(), KEY, "k1")
    relabelled = signed.model_copy(update={"kid": "k2"})
    with pytest.raises(ProtocolError) as caught:
        verify(relabelled, {"k1": public_key_of(KEY), "k2": public_key_of(KEY)})
    assert caught.value.code == "bad_signature"
    other_device = signed.model_copy(update={"device_id": "wb-0002"})
    with pytest.raises(ProtocolError):
        verify(other_device, KEYS)


def test_wrong_key_unknown_kid_and_unsigned() -> None:
    signed = sign(position_event(), KEY, "k1")
    with pytest.raises(ProtocolError) as caught:
        verify(signed, {"k1": public_key_of(generate_private_key())})
    assert caught.value.code == "bad_signature"
    with pytest.raises(ProtocolError) as caught:
        verify(signed, {"k2": public_key_of(KEY)})
    assert caught.value.code == "unknown_kid"
    with pytest.raises(ProtocolError) as caught:
        verify(position_event(), KEYS)
    assert caught.value.code == "unsigned"


def test_signing_bytes_are_documented_exactly() -> None:
    message = sign(sighting_event(), KEY, "k1")
    data = json.loads(encode(message))
    for name in ("sig", "sent_at", "replayed"):
        data.pop(name)
    expected = (
        SIGNATURE_CONTEXT
        + topic_for(message).encode()
        + b"\n"
        + json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert signing_bytes(message) == expected
    public_key_of(KEY).verify(base64.b64decode(message.sig or ""), expected)


def test_resigning_replaces_the_signature() -> None:
    other = generate_private_key()
    signed = sign(sign(position_event(), KEY, "k1"), other, "k2")
    verify(signed, {"k2": public_key_of(other)})


def test_key_round_trips_and_bad_keys() -> None:
    key = generate_private_key()
    again = private_key_from_b64(private_key_to_b64(key))
    assert private_key_to_b64(again) == private_key_to_b64(key)
    public = public_key_to_b64(public_key_of(key))
    assert len(base64.b64decode(public)) == 32
    assert public_key_to_b64(public_key_from_b64(public)) == public
    assert set(load_public_keys({"a": public})) == {"a"}
    for bad in ("", "not base64!", base64.b64encode(b"x" * 31).decode()):
        with pytest.raises(ValueError):
            public_key_from_b64(bad)
        with pytest.raises(ValueError):
            private_key_from_b64(bad)
    with pytest.raises(ValueError):
        load_public_keys({"bad kid": public})
    with pytest.raises(ValueError):
        sign(position_event(), key, "bad kid")


def test_only_events_are_signed() -> None:
    tele = Telemetry(
        device_id="wb-1", boot_id=position_event().boot_id, sent_at=NOW, body=TelemetryBody(batt=5)
    )
    with pytest.raises(TypeError):
        signing_bytes(tele)  # type: ignore[arg-type]
