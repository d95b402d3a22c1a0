"""Signatures of hub-to-hub messages: what is refused and why."""

from __future__ import annotations

import pytest

from devices.signing import generate_private_key
from hub.federation.signing import (
    HEADER_HUB,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    MAX_SKEW_S,
    NonceCache,
    SignatureRefused,
    canonical_body,
    sign_message,
    verify_message,
)

NOW = 1_800_000_000
A_KEY = generate_private_key()
B_KEY = generate_private_key()
KEYS = {"region-a": A_KEY.public_key(), "region-b": B_KEY.public_key()}
BODY = canonical_body({"request_id": "r", "purpose": "missing_person", "k": 5})


def _signed(**over: object) -> dict[str, str]:
    args: dict[str, object] = {
        "method": "POST",
        "path": "/api/v1/federation/search",
        "sender": "region-a",
        "audience": "region-c",
        "body": BODY,
        "timestamp": NOW,
    }
    args.update(over)
    key = args.pop("key", A_KEY)
    return sign_message(key, **args)  # type: ignore[arg-type]


def _verify(headers: dict[str, str], body: bytes = BODY, **over: object) -> str:
    args: dict[str, object] = {
        "method": "POST",
        "path": "/api/v1/federation/search",
        "audience": "region-c",
        "body": body,
        "nonces": NonceCache(),
        "now": NOW,
    }
    args.update(over)
    return verify_message(KEYS, headers, **args)  # type: ignore[arg-type]


def test_a_signed_message_verifies_and_names_its_sender() -> None:
    headers = _signed()
    assert set(headers) == {HEADER_HUB, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE}
    assert _verify(headers) == "region-a"
    lower = {k.lower(): v for k, v in headers.items()}
    assert _verify(lower) == "region-a"


def test_canonical_body_ignores_key_order() -> None:
    assert canonical_body({"b": 1, "a": [1, 2]}) == canonical_body({"a": [1, 2], "b": 1})
    assert canonical_body({"a": "é"}) == '{"a":"é"}'.encode()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"body": BODY.replace(b'"k":5', b'"k":50')}, "bad signature"),
        ({"path": "/api/v1/other"}, "bad signature"),
        ({"audience": "region-b"}, "bad signature"),
        ({"method": "PUT"}, "bad signature"),
    ],
)
def test_tampering_breaks_the_signature(change: dict[str, object], reason: str) -> None:
    with pytest.raises(SignatureRefused, match=reason):
        _verify(_signed(), **change)


def test_tampered_headers_are_refused() -> None:
    for name, value in [
        (HEADER_TIMESTAMP, str(NOW + 1)),
        (HEADER_NONCE, "x" * 32),
        (HEADER_HUB, "region-b"),
    ]:
        headers = _signed() | {name: value}
        with pytest.raises(SignatureRefused, match="bad signature"):
            _verify(headers)


def test_wrong_key_and_unknown_hub() -> None:
    # region-a's name, region-b's key
    with pytest.raises(SignatureRefused, match="bad signature from region-a"):
        _verify(_signed(key=B_KEY))
    stranger = generate_private_key()
    with pytest.raises(SignatureRefused, match="unknown hub 'region-x'"):
        _verify(_signed(key=stranger, sender="region-x"))


@pytest.mark.parametrize("offset", [MAX_SKEW_S + 1, -(MAX_SKEW_S + 1)])
def test_clock_skew_beyond_the_window_is_refused(offset: int) -> None:
    headers = _signed(timestamp=NOW + offset)
    with pytest.raises(SignatureRefused, match="from this hub's clock"):
        _verify(headers)


@pytest.mark.parametrize("offset", [MAX_SKEW_S, -MAX_SKEW_S, 0])
def test_skew_within_the_window_is_accepted(offset: int) -> None:
    assert _verify(_signed(timestamp=NOW + offset)) == "region-a"


def test_a_replayed_nonce_is_refused_within_the_window() -> None:
    cache = NonceCache()
    headers = _signed()
    assert _verify(headers, nonces=cache) == "region-a"
    with pytest.raises(SignatureRefused, match="replay"):
        _verify(headers, nonces=cache)
    # the same nonce from another sender is another message
    assert _verify(_signed(key=B_KEY, sender="region-b", nonce=headers[HEADER_NONCE]),
                   nonces=cache) == "region-b"  # fmt: skip


def test_a_forged_message_does_not_burn_the_nonce() -> None:
    cache = NonceCache()
    good = _signed()
    forged = good | {HEADER_SIGNATURE: _signed(key=B_KEY)[HEADER_SIGNATURE]}
    with pytest.raises(SignatureRefused, match="bad signature"):
        _verify(forged, nonces=cache)
    assert _verify(good, nonces=cache) == "region-a"


def test_nonce_cache_forgets_after_the_window() -> None:
    cache = NonceCache(window_s=10)
    assert cache.add("a", "n" * 16, 100, now=100)
    assert not cache.add("a", "n" * 16, 100, now=105)
    assert cache.add("b", "m" * 16, 120, now=120)  # expires the first
    assert len(cache) == 1
    assert cache.add("a", "n" * 16, 100, now=120)


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        (HEADER_TIMESTAMP, "soon", "whole Unix seconds"),
        (HEADER_NONCE, "short", "nonce must be"),
        (HEADER_SIGNATURE, "not base64!", "not base64"),
        (HEADER_HUB, "", "missing header X-Lantern-Hub"),
    ],
)
def test_malformed_headers(name: str, value: str, reason: str) -> None:
    with pytest.raises(SignatureRefused, match=reason):
        _verify(_signed() | {name: value})
