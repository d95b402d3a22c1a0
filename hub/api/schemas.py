"""Request and response bodies of the API, split into create / update / public forms.

Public forms carry only what a caller may see (never a password hash). Every list
answers with :class:`Page`: the items, the total matching the filters, and the
``limit``/``offset`` used.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from devices.catalog import DEVICE_ID_PATTERN, SITE_ID_PATTERN
from devices.timezones import is_time_zone
from hub.auth import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, USERNAME_PATTERN
from hub.db.users import Role

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "AuditEntryPublic",
    "AuditVerifyPublic",
    "ConfigPushState",
    "DeviceConfigPublic",
    "DeviceCreate",
    "DevicePublic",
    "DeviceRegistered",
    "DeviceStatus",
    "SecretIssued",
    "SiteCreate",
    "SitePublic",
    "Health",
    "Page",
    "Token",
    "UserCreate",
    "UserPublic",
]

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

T = TypeVar("T")

DeviceStatus = Literal["unknown", "online", "offline"]


class _Public(BaseModel):
    model_config = ConfigDict(from_attributes=True, extra="forbid")


class Page(BaseModel, Generic[T]):
    """One page of a list."""

    model_config = ConfigDict(extra="forbid")

    items: list[T] = Field(description="The rows of this page.")
    total: int = Field(ge=0, description="Rows matching the filters, over all pages.")
    limit: int = Field(ge=1, le=MAX_LIMIT, description="Page size asked for.")
    offset: int = Field(ge=0, description="Rows skipped before this page.")


class Health(BaseModel):
    """The hub answers."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["ok"] = Field(description="Always 'ok' when the hub answers.")


class Token(BaseModel):
    """A bearer token for the ``Authorization`` header."""

    model_config = ConfigDict(extra="forbid")

    access_token: str = Field(description="Signed JWT to send as 'Authorization: Bearer ...'.")
    token_type: Literal["bearer"] = Field(default="bearer", description="Always 'bearer'.")
    expires_in: int = Field(ge=1, description="Seconds until the token expires.")


class UserCreate(BaseModel):
    """A new user."""

    model_config = ConfigDict(extra="forbid")

    username: str = Field(pattern=USERNAME_PATTERN, description="Unique login name.")
    role: Role = Field(description="What the user may do.")
    password: str = Field(
        min_length=MIN_PASSWORD_CHARS,
        max_length=MAX_PASSWORD_CHARS,
        description=f"At least {MIN_PASSWORD_CHARS} characters; only its hash is stored.",
    )


class UserPublic(_Public):
    """A user as the API shows it."""

    id: int = Field(description="User id.")
    username: str = Field(description="Login name.")
    role: Role = Field(description="What the user may do.")
    disabled: bool = Field(description="A disabled user can neither log in nor use a token.")
    created_at: datetime = Field(description="When the user was created (UTC).")
    disabled_at: datetime | None = Field(description="When the user was disabled (UTC).")


class DevicePublic(_Public):
    """A registered device and its last known state."""

    device_id: str = Field(description="Device id.")
    site_id: str = Field(description="Site the device belongs to.")
    model: str = Field(description="Hardware model.")
    profile: str | None = Field(description="Firmware profile.")
    status: DeviceStatus = Field(description="Connection status.")
    status_changed_at: datetime | None = Field(description="When the status last changed.")
    last_seen_at: datetime | None = Field(description="Time of the last message received.")
    fw: str | None = Field(description="Firmware version the device reported.")
    applied_config_version: int | None = Field(description="Config version the device runs.")
    desired_config_version: int | None = Field(description="Config version the hub wants.")
    config_error: str | None = Field(description="Why the device refused its config, if so.")
    created_at: datetime = Field(description="When the device was registered.")
    updated_at: datetime = Field(description="When the row last changed.")


class SiteCreate(BaseModel):
    """A new site."""

    model_config = ConfigDict(extra="forbid")

    site_id: str = Field(
        pattern=SITE_ID_PATTERN,
        description="Site id: 2-64 of [a-z0-9_-], starting with a letter or digit.",
    )
    name: str = Field(min_length=1, max_length=200, description="Name people read.")
    timezone: str = Field(
        default="UTC", max_length=64, description="IANA time zone of the site, e.g. Europe/London."
    )

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if not is_time_zone(value):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/London)")
        return value


class SitePublic(_Public):
    """A site as the API shows it."""

    site_id: str = Field(description="Site id.")
    name: str = Field(description="Name people read.")
    timezone: str = Field(description="IANA time zone.")
    created_at: datetime = Field(description="When the site was created (UTC).")


class DeviceCreate(BaseModel):
    """A device to register; the hub issues its broker credential."""

    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(
        pattern=DEVICE_ID_PATTERN,
        description="Device id: its broker username and topic level (2-64 of [a-z0-9_-]).",
    )
    model: str = Field(min_length=1, max_length=64, description="Device model id (catalog).")
    site_id: str = Field(
        pattern=SITE_ID_PATTERN, description="Site the device belongs to; it must exist."
    )
    profile: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="Firmware profile name; the model's default profile when left out.",
    )


ConfigPushState = Literal["none", "pending_push", "published", "error"]


class SecretIssued(BaseModel):
    """A device credential just issued: the secret appears in this answer only."""

    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(description="Device id.")
    broker_username: str = Field(description="The device's broker username (its id).")
    secret: str = Field(
        description="The device's broker password. Shown once: only hashes are stored, "
        "so it cannot be read again (rotate the credential if it is lost)."
    )
    rotated: bool = Field(description="Whether this replaced an earlier credential.")


class DeviceConfigPublic(BaseModel):
    """The configuration the hub wants a device to run and the one it runs."""

    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(description="Device id.")
    desired_version: int | None = Field(description="Version the hub wants; None: none yet.")
    desired_sha256: str | None = Field(description="SHA-256 of the desired config.")
    applied_version: int | None = Field(description="Version the device reports it runs.")
    applied_sha256: str | None = Field(description="SHA-256 the device reports it runs.")
    in_sync: bool = Field(description="Whether the device runs the desired config.")
    config_error: str | None = Field(
        description="Why the device refused the last config pushed, as it reported."
    )
    desired: dict[str, Any] | None = Field(
        description="The desired config message body: version, sha256 and config."
    )
    push: ConfigPushState = Field(
        description="What happened to the desired config in this request: 'published' "
        "(handed to the broker connection), 'pending_push' (stored; published when the "
        "hub's MQTT link is up or at the next start), 'error' (could not be rendered, "
        "see render_error), 'none' (a read, or nothing to push)."
    )
    render_error: list[str] | None = Field(
        default=None,
        description="Why the configuration could not be rendered: one 'file: field: "
        "problem' line per issue.",
    )


class DeviceRegistered(BaseModel):
    """A newly registered device, its credential (shown once) and its configuration."""

    model_config = ConfigDict(extra="forbid")

    device: DevicePublic = Field(description="The device as registered.")
    broker_username: str = Field(description="The device's broker username (its id).")
    secret: str = Field(
        description="The device's broker password. Shown once: only hashes are stored, "
        "so it cannot be read again (rotate the credential if it is lost)."
    )
    config: DeviceConfigPublic = Field(description="Its rendered configuration and push.")


class AuditEntryPublic(_Public):
    """One row of the audit log."""

    seq: int = Field(description="Position in the chain, from 1.")
    at: datetime = Field(description="When it happened (UTC).")
    actor: str = Field(description="Who acted.")
    role: str = Field(description="The actor's role at the time.")
    action: str = Field(description="What was done.")
    purpose: str | None = Field(description="Stated purpose, where one is required.")
    case_id: str | None = Field(description="Case the action belongs to.")
    target: str | None = Field(description="What was acted on.")
    result: str | None = Field(description="Summary of the outcome.")
    prev_hash: str = Field(description="Hash of the previous row.")
    hash: str = Field(description="This row's chain hash.")


class AuditVerifyPublic(BaseModel):
    """The outcome of recomputing the audit chain."""

    model_config = ConfigDict(extra="forbid")

    ok: bool = Field(description="Whether the whole chain verifies.")
    rows: int = Field(description="Rows checked (up to the first bad one).")
    bad_seq: int | None = Field(description="First bad row, when not ok.")
    reason: str | None = Field(description="Why that row is bad.")
    head_hash: str = Field(description="Hash of the last good row.")
