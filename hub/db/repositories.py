"""Small storage functions shared by the tests now and by ingest and the API later.

Events are stored insert-or-ignore on ``(device_id, event_id)``: a redelivered event
(QoS 1 duplicates, outbox replays after a lost ack) returns False and changes
nothing, so the caller can ack it again safely. Each function works inside the
caller's session and transaction; none commits.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Insert, Select, case, select, union_all
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from devices.protocol import (
    AlarmEvent,
    CheckinEvent,
    DecodedMessage,
    DeviceState,
    EventEnvelope,
    PositionEvent,
    SightingEvent,
    decode_embedding,
)
from hub.db.models import (
    EVENT_MODELS,
    QUARANTINE_MAX_BYTES,
    Alarm,
    Checkin,
    Credential,
    Device,
    DeviceBoot,
    Position,
    Quarantine,
    Sighting,
)

__all__ = [
    "apply_device_state",
    "dialect_insert",
    "last_positions",
    "load_devices",
    "load_signing_keys",
    "quarantine",
    "seq_gaps",
    "store_event",
    "store_events",
    "track",
]

logger = logging.getLogger(__name__)

LAST_SEEN_RESOLUTION = timedelta(seconds=5)
"""A device's ``last_seen_at`` moves forward by events at least this much newer than
the stored value: a device reporting every second costs one row update every five
seconds, not one per event (device states still set it exactly)."""


def dialect_insert(session: Session, model: Any) -> Any:
    """A dialect-specific INSERT that supports ``ON CONFLICT DO NOTHING/UPDATE``."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(model)
    if name == "sqlite":
        return sqlite.insert(model)
    raise NotImplementedError(f"no insert-or-ignore for dialect {name}")


def _event_values(event: EventEnvelope, received_at: datetime) -> dict[str, Any]:
    return {
        "device_id": event.device_id,
        "event_id": event.event_id,
        "boot_id": event.boot_id,
        "seq": event.seq,
        "captured_at": event.captured_at,
        "received_at": received_at,
        "replayed": event.replayed,
        "kid": event.kid,
        "sig": event.sig,
    }


def _body_values(event: EventEnvelope) -> dict[str, Any]:
    if isinstance(event, PositionEvent):
        return event.body.model_dump()
    if isinstance(event, AlarmEvent):
        body = event.body
        return {
            "type": body.type,
            "state": body.state,
            "alarm_id": body.alarm_id,
            "position": body.position.model_dump(exclude_none=True) if body.position else None,
            "related_event_id": body.related_event_id,
            "detail": body.detail,
        }
    if isinstance(event, SightingEvent):
        sb = event.body
        vector = decode_embedding(sb.embedding)
        return {
            "model_id": sb.model_id,
            "embedding": vector.astype("<f4").tobytes(),
            "quality": sb.quality.model_dump(exclude_none=True),
            "bbox": list(sb.bbox),
            "frame": list(sb.frame) if sb.frame is not None else None,
            "track_id": sb.track_id,
            "frames_fused": sb.frames_fused,
            "crop_jpeg": _b64(sb.crop_jpeg),
        }
    if isinstance(event, CheckinEvent):
        return {
            "next_checkin_s": event.body.next_checkin_s,
            "body": event.body.model_dump(mode="json", exclude_none=True),
        }
    raise TypeError(f"not a stored event kind: {type(event).__name__}")


def _b64(text: str | None) -> bytes | None:
    return base64.b64decode(text) if text is not None else None


def store_event(session: Session, decoded: DecodedMessage) -> bool:
    """Store one decoded device event unless it is already stored; True when new
    (:func:`store_events` for one event)."""
    event = decoded.message
    if not isinstance(event, EventEnvelope):
        raise TypeError(f"not a stored event: {type(event).__name__}")
    return (event.device_id, event.event_id) in store_events(session, [decoded])


def store_events(session: Session, decoded: Sequence[DecodedMessage]) -> set[tuple[str, str]]:
    """Store decoded device events insert-or-ignore, in bulk; the ``(device_id,
    event_id)`` keys that were new (the rest were stored before).

    One multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING per event table and
    column set; then, for the new events only, ``device_boots`` (seq ranges per boot,
    one upsert per boot) and each device's ``last_seen_at``. The events must be
    distinct by key (ingest drops copies within a batch first) and their devices
    registered (foreign key).
    """
    groups: dict[tuple[type[Any], tuple[str, ...]], list[dict[str, Any]]] = {}
    received: dict[tuple[str, str], tuple[EventEnvelope, datetime]] = {}
    for item in decoded:
        event = item.message
        if not isinstance(event, EventEnvelope) or event.NAME not in EVENT_MODELS:
            raise TypeError(f"not a stored event: {type(event).__name__}")
        values = _event_values(event, item.received_at) | _body_values(event)
        groups.setdefault((EVENT_MODELS[event.NAME], tuple(values)), []).append(values)
        received[(event.device_id, event.event_id)] = (event, item.received_at)
    if not received:
        return set()
    session.flush()  # ORM changes of the same transaction (device states) go first
    new: set[tuple[str, str]] = set()
    for (model, _), rows in groups.items():
        # Rows, boots and devices go in key order, so two hubs writing the same keys
        # (a shared subscription delivering one device's copies to both) take their
        # locks in the same order and cannot deadlock.
        rows.sort(key=lambda row: (row["device_id"], row["event_id"]))
        table = model.__table__
        stmt = (
            dialect_insert(session, table)
            .on_conflict_do_nothing(index_elements=["device_id", "event_id"])
            .returning(table.c.device_id, table.c.event_id)
        )
        # RETURNING yields a row only for a row inserted (rowcount is not reliable
        # across drivers for ON CONFLICT DO NOTHING); SQLAlchemy sends the rows as
        # multi-row VALUES ("insertmanyvalues").
        result = session.execute(stmt, rows)
        new.update((device_id, event_id) for device_id, event_id in result)
    for key in received.keys() - new:
        logger.debug("duplicate event %s from %s ignored", key[1], key[0])
    _record_seqs(session, [received[key] for key in new])
    return new


def _record_seqs(session: Session, events: Sequence[tuple[EventEnvelope, datetime]]) -> None:
    """Fold new events into ``device_boots`` and the devices' ``last_seen_at``."""
    if not events:
        return
    boots: dict[tuple[str, str], dict[str, Any]] = {}
    last_seen: dict[str, datetime] = {}
    for event, received_at in events:
        key = (event.device_id, event.boot_id)
        row = boots.get(key)
        if row is None:
            boots[key] = {
                "device_id": event.device_id,
                "boot_id": event.boot_id,
                "min_seq": event.seq,
                "max_seq": event.seq,
                "events": 1,
                "first_seen_at": received_at,
                "last_seen_at": received_at,
            }
        else:
            row["min_seq"] = min(row["min_seq"], event.seq)
            row["max_seq"] = max(row["max_seq"], event.seq)
            row["events"] += 1
            row["last_seen_at"] = max(row["last_seen_at"], received_at)
        if event.device_id not in last_seen or last_seen[event.device_id] < received_at:
            last_seen[event.device_id] = received_at
    table = DeviceBoot.__table__
    stmt: Insert = dialect_insert(session, table)
    excluded = stmt.excluded  # type: ignore[attr-defined]
    stmt = stmt.on_conflict_do_update(  # type: ignore[attr-defined]
        index_elements=["device_id", "boot_id"],
        set_={
            "min_seq": case(
                (excluded.min_seq < table.c.min_seq, excluded.min_seq), else_=table.c.min_seq
            ),
            "max_seq": case(
                (excluded.max_seq > table.c.max_seq, excluded.max_seq), else_=table.c.max_seq
            ),
            "events": table.c.events + excluded.events,
            "last_seen_at": case(
                (excluded.last_seen_at > table.c.last_seen_at, excluded.last_seen_at),
                else_=table.c.last_seen_at,
            ),
        },
    )
    session.execute(stmt, [boots[key] for key in sorted(boots)])
    devices = load_devices(session, sorted(last_seen))
    for device in sorted(devices.values(), key=lambda d: d.device_id):
        seen = last_seen[device.device_id]
        if device.last_seen_at is None or seen - device.last_seen_at >= LAST_SEEN_RESOLUTION:
            device.last_seen_at = seen


def load_signing_keys(session: Session, device_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """The registered, unrevoked Ed25519 public keys (base64) of the devices that have
    any: ``{device_id: {kid: public_key}}``, one query per 500 devices."""
    keys: dict[str, dict[str, str]] = {}
    ids = list(dict.fromkeys(device_ids))
    for start in range(0, len(ids), 500):
        stmt = select(Credential.device_id, Credential.kid, Credential.public_key).where(
            Credential.device_id.in_(ids[start : start + 500]),
            Credential.kind == "ed25519",
            Credential.revoked_at.is_(None),
            Credential.public_key.is_not(None),
        )
        for device_id, kid, public_key in session.execute(stmt):
            if public_key is not None:
                keys.setdefault(device_id, {})[kid] = public_key
    return keys


def load_devices(session: Session, device_ids: Iterable[str]) -> dict[str, Device]:
    """The registered devices among ``device_ids``, by id, in one query per 500 ids
    (those already in the session's identity map cost no query)."""
    found: dict[str, Device] = {}
    missing: list[str] = []
    for device_id in dict.fromkeys(device_ids):
        device = session.identity_map.get(session.identity_key(Device, device_id))
        if isinstance(device, Device):
            found[device_id] = device
        else:
            missing.append(device_id)
    for start in range(0, len(missing), 500):
        chunk = missing[start : start + 500]
        for device in session.scalars(select(Device).where(Device.device_id.in_(chunk))):
            found[device.device_id] = device
    return found


def seq_gaps(session: Session, device_id: str, boot_id: str) -> list[tuple[int, int]]:
    """Missing sequence numbers of one boot, as inclusive ``(first, last)`` ranges.

    Only the range between the lowest and highest received seq is considered; what
    came before the first or after the last received event is unknowable here.
    """
    parts: list[Select[int]] = [
        select(m.seq).where(m.device_id == device_id, m.boot_id == boot_id)
        for m in (Position, Alarm, Sighting, Checkin)
    ]
    seqs: list[int] = sorted(set(session.scalars(union_all(*parts))))
    gaps: list[tuple[int, int]] = []
    for before, after in zip(seqs, seqs[1:], strict=False):
        if after > before + 1:
            gaps.append((before + 1, after - 1))
    return gaps


def last_positions(session: Session, device_id: str, n: int) -> Sequence[Position]:
    """The ``n`` latest fixes of a device by capture time, newest first."""
    stmt = (
        select(Position)
        .where(Position.device_id == device_id)
        .order_by(Position.captured_at.desc(), Position.id.desc())
        .limit(n)
    )
    return session.scalars(stmt).all()


def track(session: Session, device_id: str, t1: datetime, t2: datetime) -> Sequence[Position]:
    """A device's fixes captured in ``[t1, t2]``, oldest first."""
    stmt = (
        select(Position)
        .where(
            Position.device_id == device_id,
            Position.captured_at >= t1,
            Position.captured_at <= t2,
        )
        .order_by(Position.captured_at, Position.id)
    )
    return session.scalars(stmt).all()


def apply_device_state(session: Session, decoded: DecodedMessage) -> Device | None:
    """Record a device's retained state (online/offline, firmware, applied config).

    Returns the device, or None if it is not registered (the caller quarantines).

    Within one boot, states apply in the order they arrive (ingest keeps each device's
    messages in broker order): a device composes its Last Will before connecting and
    its birth after, so the ``offline`` the broker publishes later carries the
    *earlier* ``sent_at`` and must still win. A state of another boot that is older
    than the one applied is ignored, so a late will of a previous boot cannot
    overwrite the birth of the current one.
    """
    state = decoded.message
    if not isinstance(state, DeviceState):
        raise TypeError(f"not a device state: {type(state).__name__}")
    device = session.get(Device, state.device_id)
    if device is None:
        return None
    if (
        device.boot_id != state.boot_id
        and device.status_changed_at is not None
        and state.sent_at < device.status_changed_at
    ):
        logger.info("stale state from %s ignored", state.device_id)
        return device
    body = state.body
    device.status = body.status
    device.status_changed_at = state.sent_at
    device.boot_id = state.boot_id
    device.fw = body.fw
    device.applied_config_version = body.config_version
    device.applied_config_sha256 = body.config_sha256
    device.config_error = body.config_error
    if device.last_seen_at is None or device.last_seen_at < decoded.received_at:
        device.last_seen_at = decoded.received_at
    return device


def quarantine(
    session: Session,
    *,
    topic: str,
    payload: bytes,
    error_code: str,
    reason: str,
    received_at: datetime,
    device_id: str | None = None,
    field: str | None = None,
) -> Quarantine:
    """Keep a refused payload with the reason; payloads over the cap are cut."""
    row = Quarantine(
        topic=topic[:300],
        device_id=device_id,
        error_code=error_code,
        reason=reason,
        field=field,
        payload=payload[:QUARANTINE_MAX_BYTES],
        payload_size=len(payload),
        truncated=len(payload) > QUARANTINE_MAX_BYTES,
        received_at=received_at,
    )
    session.add(row)
    session.flush()
    return row
