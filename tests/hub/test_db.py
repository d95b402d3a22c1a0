"""Storage tests, run on SQLite and PostgreSQL (the ``engine`` fixture)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session

from devices.protocol import (
    AlarmBody,
    AlarmEvent,
    CheckinBody,
    CheckinEvent,
    DecodedMessage,
    DeviceState,
    EventEnvelope,
    PositionBody,
    PositionEvent,
    SightingBody,
    SightingEvent,
    SightingQuality,
    StateBody,
    decode,
    encode,
    encode_embedding,
    new_boot_id,
    new_event_id,
    topic_for,
)
from hub.db.engine import make_engine
from hub.db.migrate import current_revision, drift, head_revision
from hub.db.models import (
    QUARANTINE_MAX_BYTES,
    Alarm,
    Checkin,
    Device,
    DeviceBoot,
    FaceTemplate,
    Person,
    Position,
    Sighting,
    Site,
)
from hub.db.repositories import (
    apply_device_state,
    last_positions,
    quarantine,
    seq_gaps,
    store_event,
    track,
)

DEVICE = "ankle-0001"
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
BOOT = new_boot_id()


def wire(message: EventEnvelope | DeviceState) -> DecodedMessage:
    """Round-trip a message through the wire codec, as ingest will receive it."""
    return decode(topic_for(message), encode(message), now=T0 + timedelta(days=1))


def pos(
    seq: int, minutes: float, *, boot: str = BOOT, event_id: str | None = None
) -> PositionEvent:
    at = T0 + timedelta(minutes=minutes)
    return PositionEvent(
        device_id=DEVICE,
        event_id=event_id or new_event_id(),
        boot_id=boot,
        seq=seq,
        captured_at=at,
        sent_at=at,
        body=PositionBody(lat=51.5 + seq / 1000, lon=-0.12, acc=8.0, src="gnss", batt=80),
    )


def register(session: Session) -> None:
    session.add(Site(site_id="hmp-north", name="HMP North"))
    session.flush()  # no relationship() between the models, so the order is ours
    session.add(Device(device_id=DEVICE, site_id="hmp-north", model="lantern-ankle-a1"))
    session.flush()


def test_migrated_schema_matches_models(engine: Engine) -> None:
    assert current_revision(engine) == head_revision()
    assert drift(engine) == []


def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
    engine.dispose()


def test_position_insert_or_ignore_and_queries(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        register(session)
        events = [pos(seq, minutes=seq) for seq in range(10)]
        assert all(store_event(session, wire(e)) for e in events)
        # Redelivery of the same event ids changes nothing.
        assert not store_event(session, wire(events[3]))
        assert not store_event(session, wire(events[3].model_copy(update={"replayed": True})))
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Position)) == 10
        latest = last_positions(session, DEVICE, 3)
        assert [p.seq for p in latest] == [9, 8, 7]
        assert latest[0].captured_at == T0 + timedelta(minutes=9)
        assert latest[0].captured_at.tzinfo is not None
        assert latest[0].batt == 80 and latest[0].src == "gnss"
        window = track(session, DEVICE, T0 + timedelta(minutes=2), T0 + timedelta(minutes=5))
        assert [p.seq for p in window] == [2, 3, 4, 5]
        assert last_positions(session, "other-device", 3) == []


def test_every_event_kind_is_stored_once(engine: Engine) -> None:
    vector = np.zeros(128, dtype=np.float32)
    vector[0] = 1.0
    common = {"device_id": DEVICE, "boot_id": BOOT, "captured_at": T0, "sent_at": T0}
    alarm = AlarmEvent(
        **common,
        event_id=new_event_id(),
        seq=1,
        body=AlarmBody(
            type="sos",
            state="active",
            alarm_id="sos-1",
            position=PositionBody(lat=1.0, lon=2.0, acc=5.0, src="gnss"),
        ),
    )
    sighting = SightingEvent(
        **common,
        event_id=new_event_id(),
        seq=2,
        body=SightingBody(
            model_id="dlib-resnet-v1",
            embedding=encode_embedding(vector),
            quality=SightingQuality(det_score=0.98, face_px=120),
            bbox=(10.0, 20.0, 130.0, 150.0),
            track_id=7,
            frames_fused=3,
        ),
    )
    checkin = CheckinEvent(
        **common, event_id=new_event_id(), seq=3, body=CheckinBody(next_checkin_s=300, batt=50)
    )
    with Session(engine) as session, session.begin():
        register(session)
        for event in (alarm, sighting, checkin):
            assert store_event(session, wire(event))
            assert not store_event(session, wire(event))
    with Session(engine) as session:
        stored_alarm = session.scalars(select(Alarm)).one()
        assert (stored_alarm.type, stored_alarm.state, stored_alarm.alarm_id) == (
            "sos",
            "active",
            "sos-1",
        )
        assert stored_alarm.position == {"lat": 1.0, "lon": 2.0, "acc": 5.0, "src": "gnss"}
        stored_sighting = session.scalars(select(Sighting)).one()
        restored = np.frombuffer(stored_sighting.embedding, dtype="<f4")
        np.testing.assert_array_equal(restored, vector)
        assert stored_sighting.quality == {"det_score": 0.98, "face_px": 120}
        stored_checkin = session.scalars(select(Checkin)).one()
        assert stored_checkin.body == {"next_checkin_s": 300, "batt": 50}
        assert seq_gaps(session, DEVICE, BOOT) == []
        device = session.get(Device, DEVICE)
        assert device is not None and device.last_seen_at is not None


def test_seq_gaps_per_boot(engine: Engine) -> None:
    other_boot = new_boot_id()
    with Session(engine) as session, session.begin():
        register(session)
        for seq in (1, 2, 5, 6, 9):
            store_event(session, wire(pos(seq, seq)))
        store_event(session, wire(pos(1, 20, boot=other_boot)))
        # A duplicate does not count twice.
        dup = pos(10, 10, event_id=new_event_id())
        store_event(session, wire(dup))
        store_event(session, wire(dup))
    with Session(engine) as session:
        assert seq_gaps(session, DEVICE, BOOT) == [(3, 4), (7, 8)]
        assert seq_gaps(session, DEVICE, other_boot) == []
        boot = session.get(DeviceBoot, (DEVICE, BOOT))
        assert boot is not None
        assert (boot.min_seq, boot.max_seq, boot.events) == (1, 10, 6)
        assert boot.max_seq - boot.min_seq + 1 - boot.events == 4


def test_event_of_unregistered_device_is_refused(engine: Engine) -> None:
    with Session(engine) as session, pytest.raises(IntegrityError):
        store_event(session, wire(pos(1, 1)))


def test_timestamps_are_utc_and_naive_ones_refused(engine: Engine) -> None:
    plus_two = timezone(timedelta(hours=2))
    local = datetime(2025, 1, 1, 14, 30, tzinfo=plus_two)
    with Session(engine) as session, session.begin():
        session.add(Site(site_id="s1", name="Site", created_at=local))
    with Session(engine) as session:
        site = session.get(Site, "s1")
        assert site is not None
        assert site.created_at == datetime(2025, 1, 1, 12, 30, tzinfo=UTC)
        assert site.created_at.utcoffset() == timedelta(0)
    with Session(engine) as session, pytest.raises(StatementError, match="naive"):
        session.add(Site(site_id="s2", name="Site", created_at=datetime(2025, 1, 1)))
        session.flush()


def test_device_state_and_config_versions(engine: Engine) -> None:
    sha = "ab" * 32
    next_boot = new_boot_id()

    def state(status: str, minutes: int, boot: str = BOOT) -> DeviceState:
        return DeviceState(
            device_id=DEVICE,
            boot_id=boot,
            sent_at=T0 + timedelta(minutes=minutes),
            body=StateBody(status=status, fw="1.4.2", config_version=3, config_sha256=sha),  # type: ignore[arg-type]
        )

    with Session(engine) as session, session.begin():
        register(session)
        device = session.get(Device, DEVICE)
        assert device is not None and device.status == "unknown"
        device.desired_config_version = 4
        assert apply_device_state(session, wire(state("online", 5))) is device
        # The Last Will was composed before the birth, so it carries an earlier time,
        # but within one boot arrival order wins: the device is offline.
        assert apply_device_state(session, wire(state("offline", 1))) is device
        assert device.status == "offline"
        assert apply_device_state(session, wire(state("online", 10, next_boot))) is device
        # A late state of the previous boot, older than the applied one, is ignored.
        assert apply_device_state(session, wire(state("offline", 2))) is device
    with Session(engine) as session:
        device = session.get(Device, DEVICE)
        assert device is not None
        assert device.status == "online"
        assert (device.applied_config_version, device.applied_config_sha256) == (3, sha)
        assert device.desired_config_version == 4
        assert device.fw == "1.4.2" and device.boot_id == next_boot


def test_quarantine_caps_payloads(engine: Engine) -> None:
    big = b"x" * (QUARANTINE_MAX_BYTES + 10)
    with Session(engine) as session, session.begin():
        row = quarantine(
            session,
            topic="lantern/v1/ankle-0001/evt/position",
            payload=big,
            error_code="too_large",
            reason="over the cap",
            received_at=T0,
            device_id=DEVICE,
        )
        assert row.id is not None
    with Session(engine) as session:
        stored = session.execute(text("SELECT payload, payload_size, truncated FROM quarantine"))
        payload, size, truncated = stored.one()
        assert len(payload) == QUARANTINE_MAX_BYTES and size == len(big) and truncated


def test_persons_and_templates(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        person = Person(category="watchlist", display_name="A. Person", attributes={"k": 1})
        session.add(person)
        session.flush()
        session.add(
            FaceTemplate(
                person_id=person.id,
                model_id="dlib-resnet-v1",
                dim=128,
                embedding=np.ones(128, dtype="<f4").tobytes(),
            )
        )
    with Session(engine) as session, session.begin():
        person = session.scalars(select(Person)).one()
        assert person.attributes == {"k": 1}
        session.delete(person)
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(FaceTemplate)) == 0
    with Session(engine) as session, pytest.raises(IntegrityError):
        session.add(Person(category="friend", display_name="x"))
        session.flush()


def test_hub_migrate_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from hub.cli import app

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    for _ in range(2):  # a second run is a no-op
        result = CliRunner().invoke(app, ["migrate", "--database-url", url])
        assert result.exit_code == 0, result.output
        assert f"revision {head_revision()}" in result.output
    engine = make_engine(url)
    assert drift(engine) == []
    engine.dispose()
