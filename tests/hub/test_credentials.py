"""Device secrets and their hashes (hub.credentials), including agreement with the real
``mosquitto_passwd`` of Mosquitto 2.x."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from devices.protocol import ProtocolError
from hub.credentials import (
    DEVICE_SECRET_BYTES,
    generate_device_secret,
    hash_api_secret,
    hash_for_mosquitto,
    issue_device_credential,
    verify_api_secret,
    verify_mosquitto_hash,
)


def test_secrets_are_long_urlsafe_and_distinct() -> None:
    made = {generate_device_secret() for _ in range(50)}
    assert len(made) == 50
    for secret in made:
        # 32 random bytes in unpadded URL-safe base64.
        assert len(secret) == 43
        assert set(secret) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )
    assert len(generate_device_secret(48)) == 64
    with pytest.raises(ValueError):
        generate_device_secret(DEVICE_SECRET_BYTES - 1)


def test_mosquitto_hash_layout_matches_pbkdf2_sha512() -> None:
    salt = bytes(range(12))
    line = hash_for_mosquitto("s3cret", salt=salt)
    tag, empty, rest = line.partition("$7$")
    assert (tag, empty) == ("", "$7$")
    iterations, salt_b64, hash_b64 = rest.split("$")
    assert iterations == "101"
    assert base64.b64decode(salt_b64) == salt
    expected = hashlib.pbkdf2_hmac("sha512", b"s3cret", salt, 101, 64)
    assert base64.b64decode(hash_b64) == expected
    # Standard alphabet, padded: 12 bytes -> 16 chars, 64 bytes -> 88 chars.
    assert len(salt_b64) == 16 and len(hash_b64) == 88 and hash_b64.endswith("==")


def test_mosquitto_hash_random_salt_and_iterations() -> None:
    first, second = hash_for_mosquitto("pw"), hash_for_mosquitto("pw")
    assert first != second
    assert verify_mosquitto_hash("pw", first) and verify_mosquitto_hash("pw", second)
    assert not verify_mosquitto_hash("pW", first)
    custom = hash_for_mosquitto("pw", iterations=1000)
    assert custom.startswith("$7$1000$") and verify_mosquitto_hash("pw", custom)


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "$6$abc$def",
        "$7$0$AAAA$AAAA",
        "$7$101$!!!!$AAAA",
        "$7$101$AAAAAAAAAAAAAAAA$AAAA",  # digest of the wrong length
        "$7$101$AAAAAAAAAAAAAAAA$" + "A" * 88 + "\n",
    ],
)
def test_verify_rejects_malformed_hashes(encoded: str) -> None:
    assert not verify_mosquitto_hash("pw", encoded)


@pytest.mark.parametrize("password", ["", "a\x00b"])
def test_unusable_passwords_are_refused(password: str) -> None:
    with pytest.raises(ValueError):
        hash_for_mosquitto(password)
    with pytest.raises(ValueError):
        hash_api_secret(password)
    assert not verify_mosquitto_hash(password, hash_for_mosquitto("x"))


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        hash_for_mosquitto("pw", salt=b"")
    with pytest.raises(ValueError):
        hash_for_mosquitto("pw", iterations=0)
    with pytest.raises(ValueError):
        hash_api_secret("pw", iterations=0)


def test_api_hash_round_trip_and_form() -> None:
    stored = hash_api_secret("device-secret", iterations=1000)
    assert stored.startswith("pbkdf2-sha512$1000$")
    assert verify_api_secret("device-secret", stored)
    assert not verify_api_secret("device-secreT", stored)
    # The two hash forms are not interchangeable.
    assert not verify_mosquitto_hash("device-secret", stored)
    assert not verify_api_secret("device-secret", hash_for_mosquitto("device-secret"))


@pytest.mark.real_hash_cost
def test_default_api_hash_is_strong() -> None:
    assert hash_api_secret("x").startswith("pbkdf2-sha512$210000$")


def test_issue_device_credential() -> None:
    issued = issue_device_credential("ankle-007", api_iterations=1000)
    assert issued.device_id == "ankle-007"
    assert verify_mosquitto_hash(issued.secret, issued.mosquitto_hash)
    assert verify_api_secret(issued.secret, issued.api_hash)
    assert issued.secret not in repr(issued)
    with pytest.raises(ProtocolError):
        issue_device_credential("Bad/Id")


def test_hash_of_the_real_mosquitto_passwd_verifies(tmp_path: Path) -> None:
    """``mosquitto_passwd`` (2.x, default sha512-pbkdf2) writes lines this module reads."""
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed")
    path = tmp_path / "pw"
    subprocess.run([tool, "-c", "-b", str(path), "dev-a", "s3cret-Ä"], check=True, timeout=10)
    username, _, encoded = path.read_text(encoding="utf-8").strip().partition(":")
    assert username == "dev-a"
    assert encoded.startswith("$7$101$")
    assert verify_mosquitto_hash("s3cret-Ä", encoded)
    assert not verify_mosquitto_hash("s3cret-A", encoded)
