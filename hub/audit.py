"""The hash-chained, append-only audit log.

Each row's ``hash`` is ``SHA-256(bytes.fromhex(prev_hash) || canonical_json(content))``
where ``content`` is the row's own fields (sequence number, time, who, role, action,
purpose, case id, target, result summary) and ``prev_hash`` is the previous row's
``hash`` (64 zeros for the first row). Because the sequence number is inside the
hashed content and must run 1, 2, 3, ... without holes, :func:`verify` catches an
edited row (its hash no longer matches), a deleted row (a hole in ``seq``, and the
next row's ``prev_hash`` points at nothing) and reordered rows (``prev_hash`` links
break). What a chain alone cannot show is the loss of the newest rows, or rows
edited and then all re-hashed from there on (the hash has no key): keep a copy of the
head (``seq`` and hash, :func:`head`, printed by ``lantern audit verify``) elsewhere,
and check later that the row of that ``seq`` is still there with that hash
(:func:`check_kept_head`, ``lantern audit verify --expect-head SEQ:HASH``).

Appends are serialised so concurrent writers cannot fork the chain: on PostgreSQL
:func:`append` takes a transaction-scoped advisory lock before reading the head; on
SQLite the caller's transaction must hold the write lock from its start, which
:func:`hub.db.engine.write_session` arranges (``BEGIN IMMEDIATE``). The primary key
on ``seq`` and the unique ``prev_hash`` are the backstop: a forked append fails
instead of being stored. UPDATE and DELETE on ``audit`` are refused by trigger.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from devices.protocol import canonical_json
from hub.db.engine import write_session
from hub.db.models import AuditEntry, utcnow

__all__ = [
    "ADVISORY_LOCK_KEY",
    "GENESIS_HASH",
    "KeptHead",
    "VerifyResult",
    "append",
    "canonical_content",
    "chain_hash",
    "check_kept_head",
    "head",
    "record",
    "verify",
]

logger = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first row."""

ADVISORY_LOCK_KEY = 0x4C414E5445524E  # "LANTERN"
"""PostgreSQL advisory lock key that serialises audit appends."""


def _time_text(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_content(entry: AuditEntry) -> bytes:
    """The canonical bytes of a row's own content (everything but the two hashes)."""
    content: dict[str, Any] = {
        "seq": entry.seq,
        "at": _time_text(entry.at),
        "actor": entry.actor,
        "role": entry.role,
        "action": entry.action,
        "purpose": entry.purpose,
        "case_id": entry.case_id,
        "target": entry.target,
        "result": entry.result,
    }
    return canonical_json(content)


def chain_hash(prev_hash: str, entry: AuditEntry) -> str:
    """The hash a row must carry, given the previous row's hash."""
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical_content(entry)).hexdigest()


def head(session: Session) -> tuple[int, str]:
    """The newest row's ``(seq, hash)``, or ``(0, GENESIS_HASH)`` for an empty log."""
    row = session.execute(
        select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
    ).first()
    return (0, GENESIS_HASH) if row is None else (row[0], row[1])


def append(
    session: Session,
    *,
    actor: str,
    role: str,
    action: str,
    purpose: str | None = None,
    case_id: str | None = None,
    target: str | None = None,
    result: str | None = None,
    at: datetime | None = None,
) -> AuditEntry:
    """Append one row in the caller's transaction and return it (flushed, not committed).

    On SQLite the session must come from :func:`hub.db.engine.write_session`.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(func.pg_advisory_xact_lock(ADVISORY_LOCK_KEY)))
    last_seq, last_hash = head(session)
    when = (at or utcnow()).astimezone(UTC)
    entry = AuditEntry(
        seq=last_seq + 1,
        at=when,
        actor=actor,
        role=role,
        action=action,
        purpose=purpose,
        case_id=case_id,
        target=target,
        result=result,
        prev_hash=last_hash,
    )
    entry.hash = chain_hash(last_hash, entry)
    session.add(entry)
    session.flush()
    logger.debug("audit #%d %s by %s", entry.seq, action, actor)
    return entry


def record(engine: Engine, **fields: Any) -> AuditEntry:
    """Append one row in a transaction of its own and commit it."""
    with write_session(engine) as session:
        return append(session, **fields)


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of :func:`verify`."""

    ok: bool
    rows: int
    """Rows checked (up to and including the first bad one)."""
    bad_seq: int | None = None
    """Sequence number of the first bad row, when not ok."""
    reason: str | None = None
    head_hash: str = GENESIS_HASH
    """Hash of the last good row."""


def verify(session: Session, *, batch: int = 1000) -> VerifyResult:
    """Recompute the whole chain, in order, and report the first row that breaks it."""
    expected_seq = 1
    prev_hash = GENESIS_HASH
    rows = 0
    stmt = select(AuditEntry).order_by(AuditEntry.seq).execution_options(yield_per=batch)
    for entry in session.scalars(stmt):
        rows += 1
        reason: str | None = None
        if entry.seq != expected_seq:
            reason = f"sequence jumps from {expected_seq - 1} to {entry.seq} (rows missing)"
        elif entry.prev_hash != prev_hash:
            reason = "prev_hash does not match the previous row's hash"
        elif entry.hash != chain_hash(prev_hash, entry):
            reason = "hash does not match the row's content"
        if reason is not None:
            logger.warning("audit chain broken at #%d: %s", entry.seq, reason)
            return VerifyResult(False, rows, entry.seq, reason, prev_hash)
        prev_hash = entry.hash
        expected_seq += 1
    return VerifyResult(True, rows, head_hash=prev_hash)


_HASH_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class KeptHead:
    """A head of the log kept outside the database: a row's ``seq`` and ``hash``."""

    seq: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> KeptHead:
        """``SEQ:HASH`` (a sequence number from 1, 64 hex digits); ValueError if not."""
        seq_text, sep, hash_text = text.strip().partition(":")
        hash_text = hash_text.lower()
        if not sep or not seq_text.isdigit() or not _HASH_RE.fullmatch(hash_text):
            raise ValueError(f"expected SEQ:HASH (a number and 64 hex digits), got {text!r}")
        seq = int(seq_text)
        if seq < 1:
            raise ValueError("the kept head's SEQ starts at 1")
        return cls(seq, hash_text)


def check_kept_head(session: Session, kept: KeptHead) -> str | None:
    """None if the row ``kept.seq`` is in the log with the hash ``kept.hash``, else the
    reason. Run it on a chain :func:`verify` found intact: then the row's stored hash
    is the recomputed one, and a match proves every row up to it is unchanged."""
    stored = session.scalar(select(AuditEntry.hash).where(AuditEntry.seq == kept.seq))
    if stored is None:
        last_seq, _ = head(session)
        return (
            f"the kept head row seq={kept.seq} is missing: the log ends at seq={last_seq} "
            "(newest rows removed?)"
        )
    if stored != kept.hash:
        return (
            f"row seq={kept.seq} has hash {stored}, the kept head says {kept.hash} "
            "(rows rewritten and re-hashed?)"
        )
    return None
