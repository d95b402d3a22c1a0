"""Small storage functions shared by the tests now and by ingest and the API later.

Events are stored insert-or-ignore on ``(device_id, event_id)``: a redelivered event
(QoS 1 duplicates, outbox replays after a lost ack) returns False and changes
nothing, so the caller can ack it again safely. Each function works inside the
caller's session and transaction; none commits.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from datetime import datetime
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
    Device,
    DeviceBoot,
    Position,
    Quarantine,
    Sighting,
)

__all__ = [
    "apply_device_state",
    "last_positions",
    "quarantine",
    "seq_gaps",
    "store_event",
    "track",
]

logger = logging.getLogger(__name__)


def _insert(session: Session, model: type[Any]) -> Any:
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
    """Store a decoded device event unless it is already stored; True when new.

    Also records the event's ``(boot_id, seq)`` in ``device_boots`` and moves the
    device's ``last_seen_at`` forward. The device must be registered (foreign key).
    """
    event = decoded.message
    if not isinstance(event, EventEnvelope) or event.NAME not in EVENT_MODELS:
        raise TypeError(f"not a stored event: {type(event).__name__}")
    model = EVENT_MODELS[event.NAME]
    values = _event_values(event, decoded.received_at) | _body_values(event)
    stmt = (
        _insert(session, model)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["device_id", "event_id"])
        .returning(model.id)
    )
    # RETURNING yields a row only when the row was inserted (rowcount is not reliable
    # across drivers for ON CONFLICT DO NOTHING).
    new = session.execute(stmt).first() is not None
    if new:
        _record_seq(session, event, decoded.received_at)
    else:
        logger.debug("duplicate event %s from %s ignored", event.event_id, event.device_id)
    return new


def _record_seq(session: Session, event: EventEnvelope, received_at: datetime) -> None:
    table = DeviceBoot.__table__
    stmt: Insert = _insert(session, DeviceBoot).values(
        device_id=event.device_id,
        boot_id=event.boot_id,
        min_seq=event.seq,
        max_seq=event.seq,
        events=1,
        first_seen_at=received_at,
        last_seen_at=received_at,
    )
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
            "events": table.c.events + 1,
            "last_seen_at": excluded.last_seen_at,
        },
    )
    session.execute(stmt)
    device = session.get(Device, event.device_id)
    if device is not None and (device.last_seen_at is None or device.last_seen_at < received_at):
        device.last_seen_at = received_at


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
