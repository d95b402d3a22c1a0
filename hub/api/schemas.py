"""Request and response bodies of the API, split into create / update / public forms.

Public forms carry only what a caller may see (never a password hash). Every list
answers with :class:`Page`: the items, the total matching the filters, and the
``limit``/``offset`` used.
"""

from __future__ import annotations

from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from hub.auth import MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS, USERNAME_PATTERN
from hub.db.users import Role

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "AuditEntryPublic",
    "AuditVerifyPublic",
    "DevicePublic",
    "DeviceStatus",
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
