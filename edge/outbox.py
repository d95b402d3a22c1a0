"""The edge outbox: every event on disk before it is published, until the hub acks it.

One SQLite file per device (WAL journal, ``synchronous=FULL``: a committed event
survives a crash and a power cut). One thread at a time uses an :class:`Outbox` (the
agent's); it is not safe to share between threads at once.

Rows
    ``outbox`` holds events (``kind = 'event'``) and telemetry (``kind = 'tele'``),
    each with its topic, the payload exactly as :func:`devices.protocol.encode`
    wrote it, the ``boot_id``/``seq`` it was made with, when it was stored, how many
    times it was sent and when last. Rows are read oldest first (:meth:`Outbox.pending`).

Deletion
    An event row is deleted only when the hub's ``ack`` names its ``event_id``, in
    ``event_ids`` (stored) or ``rejected`` (quarantined for good; logged as a warning,
    since resending cannot help) - :meth:`Outbox.ack`. MQTT PUBACK deletes nothing:
    it says the broker has the message, not that the hub stored it. Telemetry is
    QoS 0 and never acked, so its row goes when it has been written to the
    connection (:meth:`Outbox.delete`) or when it is older than the telemetry
    message expiry (:meth:`Outbox.expire_telemetry`: a stale battery reading is
    worth nothing).

boot_id and seq (what the hub can check)
    Each :class:`Outbox` opened is a new *boot*: a fresh random ``boot_id``
    (:func:`devices.protocol.new_boot_id`) and ``seq`` from 0, as the protocol says
    ("made each time the device starts"). The boot and its next ``seq`` live in the
    ``meta`` table, and ``seq`` is taken in the same transaction that stores the
    event, so a ``seq`` exists if and only if its event is on disk: the events of a
    boot are exactly ``seq`` 0..n with no hole, and a gap the hub sees per
    (device_id, boot_id) is a loss, never a counter that ran ahead. Events kept from an
    earlier boot are resent with their own ``boot_id`` and ``seq``; the hub's
    dedupe key stays (device_id, event_id). Boots are recorded in ``boots``.

Limits (the ``outbox`` section of the wearable profile)
    ``max_bytes`` counts payload and topic bytes of the rows (SQLite's own pages and
    the WAL come on top), ``max_events`` counts rows. When a new row would go past
    either:

    * telemetry goes first. A new event, or new telemetry under the ``oldest``
      policy, drops the oldest telemetry rows until it fits; under ``newest`` new
      telemetry is refused instead. Telemetry that cannot fit because the outbox is
      full of events is refused.
    * events are never dropped and never refused. When events alone fill the
      outbox, it keeps the new event anyway, past the limit (the limit is soft for
      events; the hard limit is the disk), and raises the local alarm
      ``outbox.full``: an :class:`~devices.protocol.AlarmEvent` made by the agent's
      ``alarm`` factory and stored in the same transaction, plus an error in the log.
      When acks bring the outbox below 90% of both limits, the same ``alarm_id`` is
      stored again with ``state: cleared``. The active alarm id is kept in ``meta``,
      so a restart clears the alarm it raised before.

    If the disk itself is full, SQLite fails the insert and :meth:`Outbox.put_event`
    raises :class:`OutboxError`; nothing is stored and the event has no ``seq``.

Corrupt or foreign file
    Opening checks the file is SQLite, passes ``PRAGMA quick_check``, and has this
    module's tables at a known schema version. If not, :class:`OutboxCorrupt` is
    raised and the agent refuses to start: events still in that file may be
    evidence, so nothing deletes it silently. Its message says how to recover:
    start with ``--recover-outbox`` (:meth:`Outbox.move_aside` renames the file and
    its ``-wal``/``-shm`` to ``<name>.corrupt-<UTC time>`` and a new, empty outbox is
    made), and try ``sqlite3 <file> .recover`` on the moved file to salvage rows.

One process at a time
    An exclusive ``flock`` on ``<file>.lock`` is held while the outbox is open; a
    second agent on the same file gets :class:`OutboxLocked`. The lock dies with the
    process, so a killed agent never leaves it behind.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, cast

from devices.firmware import OutboxSettings
from devices.protocol import (
    DELIVERY,
    EventEnvelope,
    Message,
    Telemetry,
    canonical_json,
    encode,
    format_timestamp,
    loads_object,
    new_boot_id,
    new_event_id,
    topic_for,
)

__all__ = [
    "SCHEMA_VERSION",
    "AlarmFactory",
    "Outbox",
    "OutboxCorrupt",
    "OutboxError",
    "OutboxLimits",
    "OutboxLocked",
    "OutboxRow",
    "PutResult",
    "restamp",
]

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""Version of the tables below; a file of another version is refused."""

_LOW_WATER = 0.9

RowKind = Literal["event", "tele"]
AlarmState = Literal["active", "cleared"]

AlarmFactory = Callable[[AlarmState, str, str, int], EventEnvelope]
"""``(state, alarm_id, boot_id, seq) -> AlarmEvent`` of type ``outbox.full``."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS boots (
    boot_id TEXT PRIMARY KEY,
    started_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('event', 'tele')),
    event_id TEXT UNIQUE,
    boot_id TEXT NOT NULL,
    seq INTEGER,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_sent_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_kind ON outbox (kind, id);
"""

_TABLES = {
    "meta": {"key", "value"},
    "boots": {"boot_id", "started_at"},
    "outbox": {
        "id",
        "kind",
        "event_id",
        "boot_id",
        "seq",
        "topic",
        "payload",
        "size",
        "created_at",
        "attempts",
        "last_sent_at",
    },
}


class OutboxError(Exception):
    """The outbox cannot do what was asked (disk full, closed)."""


class OutboxLocked(OutboxError):
    """Another process has this outbox open."""


class OutboxCorrupt(OutboxError):
    """The outbox file is damaged or is not an outbox; the message says how to recover."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(
            f"outbox {path} is unusable: {reason}. It may still hold unsent events, so it "
            "is left as it is. To start anyway, run again with --recover-outbox: the file "
            f"is moved aside to {path.name}.corrupt-<time> and a new, empty outbox is made "
            "(then try `sqlite3 <moved file> .recover` to salvage its rows)."
        )


@dataclass(frozen=True)
class OutboxLimits:
    """Size limits and the telemetry policy, from the profile's ``outbox`` section."""

    max_bytes: int
    max_events: int
    telemetry_drop_policy: Literal["oldest", "newest"] = "oldest"

    @classmethod
    def from_settings(cls, settings: OutboxSettings) -> OutboxLimits:
        """The limits of a firmware profile's ``outbox`` section."""
        return cls(settings.max_bytes, settings.max_events, settings.telemetry_drop_policy)


@dataclass(frozen=True)
class OutboxRow:
    """One stored message."""

    id: int
    kind: RowKind
    event_id: str | None
    boot_id: str
    seq: int | None
    topic: str
    payload: bytes
    created_at: float
    attempts: int
    last_sent_at: float | None


@dataclass(frozen=True)
class PutResult:
    """What a put did: the row stored (None if refused), telemetry rows dropped to
    make room, and the ``outbox.full`` alarm raised or cleared by it."""

    row: OutboxRow | None
    dropped_telemetry: int = 0
    alarm: AlarmState | None = None


def restamp(payload: bytes, *, sent_at: datetime, replayed: bool) -> bytes:
    """An event payload again with a new ``sent_at`` and ``replayed``, canonical.

    These are the two fields signatures leave out (``devices.signing``), so a signed
    event stays valid when resent.
    """
    data = loads_object(payload)
    data["sent_at"] = format_timestamp(sent_at)
    data["replayed"] = replayed
    return canonical_json(data)


class Outbox:
    """The durable queue of one device (see the module docstring).

    ``alarm`` makes the ``outbox.full`` alarm events; without it the outbox only
    logs. ``clock`` gives wall time in seconds (injectable for tests).
    """

    def __init__(
        self,
        path: Path,
        limits: OutboxLimits,
        *,
        alarm: AlarmFactory | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.limits = limits
        self._alarm = alarm
        self._clock = clock
        self._lock_fd = self._take_lock(self.path)
        try:
            self._db = self._open(self.path)
            self.boot_id, self._next_seq = self._new_boot()
            self._bytes, self._events, self._tele = self._totals()
            self._alarm_id: str | None = self.get_meta("full_alarm_id")
        except BaseException:
            os.close(self._lock_fd)
            raise
        logger.info(
            "outbox %s: boot %s, %d events and %d telemetry waiting (%d bytes)",
            self.path,
            self.boot_id,
            self._events,
            self._tele,
            self._bytes,
        )

    # -- opening ---------------------------------------------------------------------------

    @staticmethod
    def _take_lock(path: Path) -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutboxLocked(f"outbox {path} is in use by another process") from None
        return fd

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        existed = path.exists() and path.stat().st_size > 0
        try:
            # Made on one thread and possibly run on another (an agent is built, then
            # run): one thread at a time uses it, which check_same_thread cannot see.
            db = sqlite3.connect(path, isolation_level=None, timeout=5.0, check_same_thread=False)
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open outbox {path}: {exc}") from None
        try:
            db.execute("PRAGMA busy_timeout = 5000")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise OutboxCorrupt(path, f"cannot use the WAL journal (got {mode})")
            db.execute("PRAGMA synchronous = FULL")
            if existed:
                Outbox._check(db, path)
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
                )
        except sqlite3.DatabaseError as exc:
            db.close()
            raise OutboxCorrupt(path, f"SQLite says: {exc}") from None
        except OutboxCorrupt:
            db.close()
            raise
        return db

    @staticmethod
    def _check(db: sqlite3.Connection, path: Path) -> None:
        problems = [str(r[0]) for r in db.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:
            raise OutboxCorrupt(path, "integrity check failed: " + "; ".join(problems[:3]))
        tables = {
            name: {str(c[1]) for c in db.execute(f"PRAGMA table_info({name})")} for name in _TABLES
        }
        if not any(tables.values()):
            raise OutboxCorrupt(path, "it is an SQLite file but not an outbox (no outbox tables)")
        for name, columns in _TABLES.items():
            if tables[name] != columns:
                raise OutboxCorrupt(path, f"table {name} does not have the outbox's columns")
        row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is None or row[0] != str(SCHEMA_VERSION):
            found = "none" if row is None else row[0]
            raise OutboxCorrupt(
                path, f"schema version {found}, this agent reads version {SCHEMA_VERSION}"
            )

    @staticmethod
    def move_aside(path: Path, *, now: datetime | None = None) -> list[Path]:
        """Rename a damaged outbox and its ``-wal``/``-shm`` files out of the way to
        ``<name>.corrupt-<UTC time>[-wal|-shm]``; returns the new paths."""
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        moved: list[Path] = []
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{path}{suffix}")
            if source.exists():
                target = path.with_name(f"{path.name}.corrupt-{stamp}{suffix}")
                source.rename(target)
                moved.append(target)
        if moved:
            logger.warning("outbox %s moved aside to %s", path, moved[0])
        return moved

    def _new_boot(self) -> tuple[str, int]:
        boot_id = new_boot_id()
        with self._transaction():
            self._db.execute(
                "INSERT INTO boots (boot_id, started_at) VALUES (?, ?)", (boot_id, self._clock())
            )
            self._set_meta("boot_id", boot_id)
            self._set_meta("next_seq", "0")
        return boot_id, 0

    def _totals(self) -> tuple[int, int, int]:
        row = self._db.execute(
            "SELECT COALESCE(SUM(size), 0), "
            "COALESCE(SUM(kind = 'event'), 0), COALESCE(SUM(kind = 'tele'), 0) FROM outbox"
        ).fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    # -- meta ------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """A value the agent keeps beside its events (e.g. the applied config)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str | None) -> None:
        """Store (or with None, remove) a value, durably."""
        with self._transaction():
            self._set_meta(key, value)

    def _set_meta(self, key: str, value: str | None) -> None:
        if value is None:
            self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # -- state -----------------------------------------------------------------------------

    @property
    def events(self) -> int:
        """Events waiting."""
        return self._events

    @property
    def telemetry(self) -> int:
        """Telemetry rows waiting."""
        return self._tele

    @property
    def size_bytes(self) -> int:
        """Payload and topic bytes of the rows waiting (what ``max_bytes`` limits)."""
        return self._bytes

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next event of this boot gets."""
        return self._next_seq

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._lock_fd < 0

    @property
    def full(self) -> bool:
        """True while the ``outbox.full`` alarm is active."""
        return self._alarm_id is not None

    @property
    def full_alarm_id(self) -> str | None:
        """The ``alarm_id`` of the active ``outbox.full`` alarm, if any."""
        return self._alarm_id

    # -- writing ---------------------------------------------------------------------------

    def put_event(self, make: Callable[[str, int], EventEnvelope]) -> PutResult:
        """Store a new event, durably, before anything publishes it.

        ``make(boot_id, seq)`` builds the event with this boot's next ``seq``; it is
        encoded and committed in one transaction with the counter. Events are never
        refused for space (see the module docstring); telemetry may be dropped to make
        room, and the ``outbox.full`` alarm may be raised and stored with it.
        """
        try:
            with self._transaction():
                message = make(self.boot_id, self._next_seq)
                row = self._insert_event(message)
                dropped = self._drop_telemetry_until(0, 0) if self._over(0, 0) else 0
                alarm: AlarmState | None = None
                if self._over(0, 0) and self._alarm_id is None:
                    alarm = "active"
                    self._raise_alarm()
        except sqlite3.Error as exc:
            self._reload_totals()
            raise OutboxError(f"cannot store event in {self.path}: {exc}") from exc
        return PutResult(row, dropped, alarm)

    def put_telemetry(self, message: Telemetry) -> PutResult:
        """Store telemetry, subject to the limits and the telemetry policy; the
        result's ``row`` is None when it was refused."""
        payload = encode(message)
        topic = topic_for(message)
        size = len(payload) + len(topic)
        try:
            with self._transaction():
                dropped = 0
                if self._over(size, 1):
                    if self.limits.telemetry_drop_policy == "newest":
                        return PutResult(None)
                    dropped = self._drop_telemetry_until(size, 1)
                    if self._over(size, 1):
                        return PutResult(None, dropped)
                now = self._clock()
                cursor = self._db.execute(
                    "INSERT INTO outbox (kind, event_id, boot_id, seq, topic, payload, size, "
                    "created_at) VALUES ('tele', NULL, ?, NULL, ?, ?, ?, ?)",
                    (message.boot_id, topic, payload, size, now),
                )
                self._bytes += size
                self._tele += 1
                row_id = cursor.lastrowid
                assert row_id is not None
        except sqlite3.Error as exc:
            self._reload_totals()
            raise OutboxError(f"cannot store telemetry in {self.path}: {exc}") from exc
        row = OutboxRow(row_id, "tele", None, message.boot_id, None, topic, payload, now, 0, None)
        return PutResult(row, dropped)

    def _insert_event(self, message: EventEnvelope) -> OutboxRow:
        if message.boot_id != self.boot_id or message.seq != self._next_seq:
            raise ValueError(
                f"event made with boot {message.boot_id} seq {message.seq}, expected "
                f"{self.boot_id} seq {self._next_seq}"
            )
        payload = encode(cast(Message, message))
        topic = topic_for(message)
        size = len(payload) + len(topic)
        now = self._clock()
        cursor = self._db.execute(
            "INSERT INTO outbox (kind, event_id, boot_id, seq, topic, payload, size, created_at) "
            "VALUES ('event', ?, ?, ?, ?, ?, ?, ?)",
            (message.event_id, message.boot_id, message.seq, topic, payload, size, now),
        )
        self._next_seq += 1
        self._set_meta("next_seq", str(self._next_seq))
        self._bytes += size
        self._events += 1
        row_id = cursor.lastrowid
        assert row_id is not None
        return OutboxRow(
            row_id,
            "event",
            message.event_id,
            message.boot_id,
            message.seq,
            topic,
            payload,
            now,
            0,
            None,
        )

    def _over(self, extra_bytes: int, extra_rows: int) -> bool:
        return (
            self._bytes + extra_bytes > self.limits.max_bytes
            or self._events + self._tele + extra_rows > self.limits.max_events
        )

    def _drop_telemetry_until(self, extra_bytes: int, extra_rows: int) -> int:
        dropped = 0
        while self._tele > 0 and self._over(extra_bytes, extra_rows):
            rows = self._db.execute(
                "SELECT id, size FROM outbox WHERE kind = 'tele' ORDER BY id LIMIT 64"
            ).fetchall()
            if not rows:
                break
            for row_id, size in rows:
                if not self._over(extra_bytes, extra_rows):
                    break
                self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
                self._bytes -= int(size)
                self._tele -= 1
                dropped += 1
        if dropped:
            logger.info("outbox: dropped %d oldest telemetry rows to make room", dropped)
        return dropped

    def _raise_alarm(self) -> None:
        alarm_id = new_event_id()
        self._alarm_id = alarm_id
        self._set_meta("full_alarm_id", alarm_id)
        logger.error(
            "LOCAL ALARM outbox.full: %d events, %d bytes (limits %d events, %d bytes); "
            "events are kept beyond the limit, telemetry is refused",
            self._events,
            self._bytes,
            self.limits.max_events,
            self.limits.max_bytes,
        )
        self._store_alarm("active", alarm_id)

    def _store_alarm(self, state: AlarmState, alarm_id: str) -> None:
        if self._alarm is None:
            return
        message = self._alarm(state, alarm_id, self.boot_id, self._next_seq)
        self._insert_event(message)

    def _below_low_water(self) -> bool:
        return (
            self._bytes <= self.limits.max_bytes * _LOW_WATER
            and self._events + self._tele <= self.limits.max_events * _LOW_WATER
        )

    def _maybe_clear_alarm(self) -> AlarmState | None:
        if self._alarm_id is None or not self._below_low_water():
            return None
        alarm_id = self._alarm_id
        self._alarm_id = None
        self._set_meta("full_alarm_id", None)
        logger.warning("outbox.full cleared: %d events, %d bytes", self._events, self._bytes)
        self._store_alarm("cleared", alarm_id)
        return "cleared"

    # -- reading and deleting ----------------------------------------------------------------

    def pending(self, limit: int, exclude: Collection[int] = ()) -> list[OutboxRow]:
        """Up to ``limit`` rows to send, oldest first, leaving out the row ids in
        ``exclude`` (those in flight)."""
        if limit <= 0:
            return []
        rows = self._db.execute(
            "SELECT id, kind, event_id, boot_id, seq, topic, payload, created_at, attempts, "
            "last_sent_at FROM outbox ORDER BY id LIMIT ?",
            (limit + len(exclude),),
        ).fetchall()
        result: list[OutboxRow] = []
        for r in rows:
            if r[0] in exclude:
                continue
            result.append(
                OutboxRow(
                    int(r[0]),
                    r[1],
                    r[2],
                    str(r[3]),
                    r[4],
                    str(r[5]),
                    bytes(r[6]),
                    float(r[7]),
                    int(r[8]),
                    None if r[9] is None else float(r[9]),
                )
            )
            if len(result) >= limit:
                break
        return result

    def mark_sent(self, row_ids: Iterable[int]) -> None:
        """Count one more send of each row and when it was."""
        ids = list(row_ids)
        if not ids:
            return
        with self._transaction():
            self._db.executemany(
                "UPDATE outbox SET attempts = attempts + 1, last_sent_at = ? WHERE id = ?",
                [(self._clock(), row_id) for row_id in ids],
            )

    def ack(
        self,
        event_ids: Sequence[str],
        rejected: Sequence[tuple[str, str]] = (),
    ) -> tuple[int, AlarmState | None]:
        """Delete the events the hub acked: ``event_ids`` it stored and ``rejected``
        ``(event_id, code)`` it refused for good (logged). Unknown ids (already
        deleted, or another boot's duplicate ack) are ignored. Returns the number of
        rows deleted and ``"cleared"`` if that cleared the ``outbox.full`` alarm."""
        for event_id, code in rejected:
            logger.warning(
                "hub rejected event %s (%s); deleting it from the outbox", event_id, code
            )
        ids = [*event_ids, *(event_id for event_id, _ in rejected)]
        if not ids:
            return 0, None
        deleted = 0
        with self._transaction():
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(
                    f"DELETE FROM outbox WHERE kind = 'event' AND event_id IN ({marks}) "
                    "RETURNING size",
                    chunk,
                ).fetchall()
                for (size,) in rows:
                    self._bytes -= int(size)
                    self._events -= 1
                    deleted += 1
            cleared = self._maybe_clear_alarm()
        return deleted, cleared

    def delete(self, row_ids: Iterable[int]) -> int:
        """Delete rows by id (telemetry once written); returns how many went."""
        ids = list(row_ids)
        deleted = 0
        with self._transaction():
            for row_id in ids:
                row = self._db.execute(
                    "DELETE FROM outbox WHERE id = ? RETURNING size, kind", (row_id,)
                ).fetchone()
                if row is None:
                    continue
                self._bytes -= int(row[0])
                if row[1] == "event":
                    self._events -= 1
                else:
                    self._tele -= 1
                deleted += 1
            self._maybe_clear_alarm()
        return deleted

    def expire_telemetry(self, max_age_s: float | None = None) -> int:
        """Delete telemetry older than ``max_age_s`` (default: the protocol's
        telemetry message expiry); returns how many rows went."""
        age = max_age_s if max_age_s is not None else float(DELIVERY["tele"].expiry_s or 600)
        cutoff = self._clock() - age
        with self._transaction():
            rows = self._db.execute(
                "DELETE FROM outbox WHERE kind = 'tele' AND created_at < ? RETURNING size",
                (cutoff,),
            ).fetchall()
            for (size,) in rows:
                self._bytes -= int(size)
                self._tele -= 1
        return len(rows)

    def close(self) -> None:
        """Checkpoint the WAL, close the file and release the lock."""
        if self._lock_fd < 0:
            return
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            logger.warning("outbox %s: checkpoint on close failed: %s", self.path, exc)
        self._db.close()
        os.close(self._lock_fd)
        self._lock_fd = -1

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------

    def _reload_totals(self) -> None:
        self._bytes, self._events, self._tele = self._totals()
        row = self._db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
        if row is not None:
            self._next_seq = int(row[0])
        self._alarm_id = self.get_meta("full_alarm_id")

    def _transaction(self) -> _Transaction:
        if self._lock_fd < 0:
            raise OutboxError(f"outbox {self.path} is closed")
        return _Transaction(self)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` and the in-memory counters
    read again from the file on any exception. Nested use joins the outer one."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self._outer = False

    def __enter__(self) -> None:
        db = self._outbox._db
        if not db.in_transaction:
            db.execute("BEGIN IMMEDIATE")
            self._outer = True

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self._outer:
            return
        db = self._outbox._db
        if exc_type is None:
            db.execute("COMMIT")
            return
        db.execute("ROLLBACK")
        self._outbox._reload_totals()
