"""The federation file: this hub's id and signing key, its peers and its policy.

``LANTERN_FEDERATION_FILE`` (:attr:`hub.settings.HubSettings.federation_file`) names a
YAML (or JSON) file; without it federation is off and the hub works alone::

    hub_id: region-a                  # this hub, as its peers know it
    private_key_file: keys/hub.key    # from `lantern federation keygen`; relative
                                      # paths are relative to this file
    request_timeout_s: 10             # per peer, for outgoing match requests
    peers:
      - hub_id: region-c
        url: http://10.0.3.1:8080     # the peer's API (its `serve --http` address)
        public_key: 3q2+7w...=        # the peer's hub.pub (base64 Ed25519)
    policy:                           # what each peer may search here
      region-c:                       # (see hub.federation.policy)
        missing_person: [found]
        crops: true

The file is checked as a whole when loaded: unknown keys, duplicate or self-named peers,
bad keys and policies for peers that are not listed are refused with the reason.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from devices.signing import private_key_from_b64, public_key_from_b64
from hub.federation.policy import PeerPolicy
from hub.federation.signing import HUB_ID_RE, NonceCache

__all__ = [
    "FederationConfigError",
    "FederationSettings",
    "PeerConfig",
    "federation_for",
    "load_federation_settings",
    "nonces_for",
]

logger = logging.getLogger(__name__)


class FederationConfigError(ValueError):
    """The federation file cannot be used; the message says why."""


def _hub_id(value: str) -> str:
    if not HUB_ID_RE.fullmatch(value):
        raise ValueError("a hub id is 1-64 characters of [A-Za-z0-9._-], starting alphanumeric")
    return value


class PeerConfig(BaseModel):
    """A peer hub: its id, the base URL of its API and its public key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hub_id: str = Field(description="The peer's hub id (as its own federation file says).")
    url: str = Field(description="Base URL of the peer's API, e.g. http://10.0.3.1:8080.")
    public_key: str = Field(description="The peer's Ed25519 public key, base64 (hub.pub).")

    @field_validator("hub_id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        return _hub_id(value)

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("public_key")
    @classmethod
    def _valid_key(cls, value: str) -> str:
        public_key_from_b64(value)
        return value.strip()

    def key(self) -> Ed25519PublicKey:
        return public_key_from_b64(self.public_key)


class FederationSettings(BaseModel):
    """One hub's federation file (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    hub_id: str = Field(description="This hub's id, as its peers know it.")
    private_key_file: Path = Field(description="This hub's Ed25519 private key (base64).")
    peers: list[PeerConfig] = Field(default_factory=list, description="The peer hubs.")
    policy: dict[str, PeerPolicy] = Field(
        default_factory=dict, description="Per peer id, what it may search here."
    )
    request_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="Per-peer timeout of outgoing requests, s."
    )

    _signing_key: Ed25519PrivateKey | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @field_validator("hub_id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        return _hub_id(value)

    @model_validator(mode="after")
    def _consistent(self) -> FederationSettings:
        ids = [p.hub_id for p in self.peers]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"peer listed twice: {', '.join(duplicates)}")
        if self.hub_id in ids:
            raise ValueError(f"this hub ({self.hub_id}) is listed among its own peers")
        unknown = sorted(set(self.policy) - set(ids))
        if unknown:
            raise ValueError(f"policy names hubs that are not peers: {', '.join(unknown)}")
        return self

    def peer(self, hub_id: str) -> PeerConfig | None:
        return next((p for p in self.peers if p.hub_id == hub_id), None)

    def peer_ids(self) -> list[str]:
        return [p.hub_id for p in self.peers]

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """The peers' public keys by hub id."""
        return {p.hub_id: p.key() for p in self.peers}

    def signing_key(self) -> Ed25519PrivateKey:
        """This hub's private key, read from :attr:`private_key_file` once."""
        with self._lock:
            if self._signing_key is None:
                self._signing_key = _read_private_key(self.private_key_file)
            return self._signing_key


def _read_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise FederationConfigError(f"cannot read the private key {path}: {exc}") from None
    try:
        key = private_key_from_b64(text)
    except ValueError as exc:
        raise FederationConfigError(f"{path}: {exc}") from None
    if path.stat().st_mode & 0o077:
        logger.warning("private key %s is readable by others; chmod 600 it", path)
    return key


def load_federation_settings(path: Path) -> FederationSettings:
    """Read and check a federation file; :class:`FederationConfigError` if unusable.
    The private key is read too, so a bad key fails here and not at the first request."""
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise FederationConfigError(f"cannot read the federation file {path}: {exc}") from None
    except RecursionError:
        # PyYAML recurses once per nesting level.
        raise FederationConfigError(
            f"cannot read the federation file {path}: YAML nested too deeply"
        ) from None
    except ValueError as exc:
        # A few PyYAML constructors let ValueError out (a timestamp like 2025-02-30).
        raise FederationConfigError(
            f"cannot read the federation file {path}: bad YAML value ({exc})"
        ) from None
    if not isinstance(raw, dict):
        raise FederationConfigError(f"{path}: expected a mapping at the top level")
    try:
        settings = FederationSettings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in exc.errors()
        )
        raise FederationConfigError(f"{path}: {problems}") from None
    if not settings.private_key_file.is_absolute():
        settings.private_key_file = (path.parent / settings.private_key_file).resolve()
    settings.signing_key()
    return settings


_STATE_LOCK = threading.Lock()


def federation_for(state: Any) -> FederationSettings | None:
    """The app's federation settings (``state.federation``), loaded on first use from
    ``state.settings.federation_file``; None when federation is off."""
    with _STATE_LOCK:
        if hasattr(state, "federation"):
            loaded: FederationSettings | None = state.federation
            return loaded
        path: Path | None = getattr(getattr(state, "settings", None), "federation_file", None)
        settings = load_federation_settings(path) if path is not None else None
        state.federation = settings
        return settings


def nonces_for(state: Any) -> NonceCache:
    """The app's cache of peers' nonces (``state.federation_nonces``)."""
    with _STATE_LOCK:
        cache: NonceCache | None = getattr(state, "federation_nonces", None)
        if cache is None:
            cache = NonceCache()
            state.federation_nonces = cache
        return cache
