"""Device credentials: the secret a device logs in to the broker with, and its hashes.

When the hub provisions a device it makes a random secret, shows it once (it goes
into the device's configuration as the broker password) and keeps only two hashes:

* the **Mosquitto hash**, a line of the broker's password file. Mosquitto 2.x
  (``mosquitto_passwd``'s default ``sha512-pbkdf2``) writes
  ``$7$<iterations>$<base64 salt>$<base64 hash>``: PBKDF2-HMAC-SHA512 over the UTF-8
  password with the raw salt bytes (12 of them by default), 64 bytes of output,
  standard base64 with padding, 101 iterations by default. Checked against
  Mosquitto 2.0.11: its ``mosquitto_passwd`` output verifies with
  :func:`verify_mosquitto_hash`, and its broker accepts hashes made here.
* the **API hash**, kept in the hub's registry to check a secret presented to the
  hub's own API. It is PBKDF2-HMAC-SHA512 as well (``hashlib``; no extra
  dependency), with many more iterations, in the form
  ``pbkdf2-sha512$<iterations>$<base64 salt>$<base64 hash>``.

The Mosquitto hash's 101 iterations are cheap on purpose: the broker computes one
per CONNECT, and a fleet reconnecting at once must not stall it. That is safe only
because the secrets are 256-bit random values (:func:`generate_device_secret`), which
no amount of offline guessing recovers whatever the iteration count; do not put a
human-chosen password through it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

from devices.protocol import validate_device_id

__all__ = [
    "API_HASH_ITERATIONS",
    "DEVICE_SECRET_BYTES",
    "MOSQUITTO_DEFAULT_ITERATIONS",
    "MOSQUITTO_SALT_BYTES",
    "IssuedCredential",
    "generate_device_secret",
    "hash_api_secret",
    "hash_for_mosquitto",
    "issue_device_credential",
    "verify_api_secret",
    "verify_mosquitto_hash",
]

DEVICE_SECRET_BYTES = 32
"""Random bytes in a device secret (256 bits); its text form has 43 characters."""

MOSQUITTO_DEFAULT_ITERATIONS = 101
"""PBKDF2 iterations ``mosquitto_passwd`` 2.x uses, and the default here."""

MOSQUITTO_SALT_BYTES = 12
"""Salt length ``mosquitto_passwd`` 2.x uses."""

API_HASH_ITERATIONS = 210_000
"""PBKDF2-HMAC-SHA512 iterations of the API hash (OWASP's 2023 figure for SHA-512)."""

_DIGEST_BYTES = 64
_B64 = r"[A-Za-z0-9+/]+={0,2}"
_MOSQUITTO_RE = re.compile(rf"\$7\$(?P<it>[1-9][0-9]{{0,8}})\$(?P<salt>{_B64})\$(?P<hash>{_B64})")
_API_RE = re.compile(
    rf"pbkdf2-sha512\$(?P<it>[1-9][0-9]{{0,8}})\$(?P<salt>{_B64})\$(?P<hash>{_B64})"
)


def generate_device_secret(nbytes: int = DEVICE_SECRET_BYTES) -> str:
    """A new random device secret, URL-safe text of ``nbytes`` (at least 32) bytes."""
    if nbytes < DEVICE_SECRET_BYTES:
        raise ValueError(f"a device secret needs at least {DEVICE_SECRET_BYTES} random bytes")
    return secrets.token_urlsafe(nbytes)


def _check_password(password: str) -> bytes:
    if not isinstance(password, str) or not password:
        raise ValueError("password must be a non-empty string")
    if "\x00" in password:
        raise ValueError("password must not contain NUL")
    return password.encode("utf-8")


def _pbkdf2(password: bytes, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha512", password, salt, iterations, _DIGEST_BYTES)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _salt(salt: bytes | None, default_len: int) -> bytes:
    if salt is None:
        return secrets.token_bytes(default_len)
    if not salt:
        raise ValueError("salt must not be empty")
    return salt


def hash_for_mosquitto(
    password: str, salt: bytes | None = None, iterations: int = MOSQUITTO_DEFAULT_ITERATIONS
) -> str:
    """The Mosquitto 2.x ``$7$`` hash of ``password`` (the part after ``user:`` in a
    password file). A random 12-byte salt is drawn unless ``salt`` is given."""
    raw = _check_password(password)
    if not 1 <= iterations <= 999_999_999:
        raise ValueError("iterations must be between 1 and 999999999")
    salt = _salt(salt, MOSQUITTO_SALT_BYTES)
    return f"$7${iterations}${_b64(salt)}${_b64(_pbkdf2(raw, salt, iterations))}"


def verify_mosquitto_hash(password: str, encoded: str) -> bool:
    """True if ``password`` matches a ``$7$`` hash; False for a mismatch or a hash
    that is not in that form."""
    match = _MOSQUITTO_RE.fullmatch(encoded)
    return match is not None and _verify(password, match)


def hash_api_secret(secret: str, salt: bytes | None = None, iterations: int | None = None) -> str:
    """The hash of a secret (a device's, or a user's password) kept in the hub's registry
    for API checks; ``iterations`` defaults to :data:`API_HASH_ITERATIONS`, read at call
    time (tests lower it)."""
    raw = _check_password(secret)
    if iterations is None:
        iterations = API_HASH_ITERATIONS
    if not 1 <= iterations <= 999_999_999:
        raise ValueError("iterations must be between 1 and 999999999")
    salt = _salt(salt, 16)
    return f"pbkdf2-sha512${iterations}${_b64(salt)}${_b64(_pbkdf2(raw, salt, iterations))}"


def verify_api_secret(secret: str, encoded: str) -> bool:
    """True if ``secret`` matches an API hash made by :func:`hash_api_secret`."""
    match = _API_RE.fullmatch(encoded)
    return match is not None and _verify(secret, match)


def _verify(password: str, match: re.Match[str]) -> bool:
    salt = _unb64(match["salt"])
    expected = _unb64(match["hash"])
    if not salt or expected is None or len(expected) != _DIGEST_BYTES:
        return False
    try:
        raw = _check_password(password)
    except ValueError:
        return False
    return hmac.compare_digest(_pbkdf2(raw, salt, int(match["it"])), expected)


@dataclass(frozen=True)
class IssuedCredential:
    """A credential just issued to a device. ``secret`` is to be shown once and then
    forgotten; only the two hashes are stored. The secret stays out of ``repr``."""

    device_id: str
    secret: str = field(repr=False)
    mosquitto_hash: str
    api_hash: str


def issue_device_credential(
    device_id: str,
    *,
    mosquitto_iterations: int = MOSQUITTO_DEFAULT_ITERATIONS,
    api_iterations: int | None = None,
) -> IssuedCredential:
    """A new secret for ``device_id`` (a valid device id, its broker username) and
    its Mosquitto and API hashes."""
    validate_device_id(device_id)
    secret = generate_device_secret()
    return IssuedCredential(
        device_id=device_id,
        secret=secret,
        mosquitto_hash=hash_for_mosquitto(secret, iterations=mosquitto_iterations),
        api_hash=hash_api_secret(secret, iterations=api_iterations),
    )
