"""People who use the hub's API, and the roles that decide what each may do.

The table lives in its own module (added by migration ``0002``) but on the same
metadata as :mod:`hub.db.models`, so migrations and the drift check see it. Only a
password hash is stored (:func:`hub.credentials.hash_api_secret`), never the password.
A user is never deleted, only disabled, so audit rows naming them stay meaningful.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, CheckConstraint, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from hub.db.models import Base, BigId, utcnow

__all__ = ["ROLE_NAMES", "Role", "User"]


class Role(StrEnum):
    """What a user is allowed to do; each API route names the roles it admits."""

    admin = "admin"
    """Manages users and devices."""
    officer = "officer"
    """Operates a command centre or a site: sees devices and their state."""
    analyst = "analyst"
    """Reads device data for analysis."""
    requester = "requester"
    """Asks for purpose-bound searches."""
    caseworker = "caseworker"
    """Works the cases of supervised persons."""
    auditor = "auditor"
    """Reads and verifies the audit log."""


ROLE_NAMES: tuple[str, ...] = tuple(role.value for role in Role)
"""Every role name, in declaration order."""


class User(Base):
    """An API user: a unique username, one role and a password hash."""

    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("username"),
        CheckConstraint(
            "role IN ('admin', 'officer', 'analyst', 'requester', 'caseworker', 'auditor')",
            name="role",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[datetime | None]
