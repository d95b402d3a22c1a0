"""The outbox on its own: durability, boot/seq, acks, limits, corrupt files."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devices.protocol import (
    AlarmBody,
    AlarmEvent,
    EventEnvelope,
    PositionBody,
    PositionEvent,
    Telemetry,
    TelemetryBody,
    decode,
    loads_object,
    new_event_id,
)
from edge.outbox import (
    AlarmState,
    Outbox,
    OutboxCorrupt,
    OutboxLimits,
    OutboxLocked,
    restamp,
)

DEVICE = "ob-test-01"
BIG = OutboxLimits(max_bytes=10_000_000, max_events=100_000)


def position(event_id: str | None = None) -> object:
    def make(boot_id: str, seq: int) -> EventEnvelope:
        now = datetime.now(UTC)
        return PositionEvent(
            device_id=DEVICE,
            event_id=event_id or new_event_id(),
            boot_id=boot_id,
            seq=seq,
            captured_at=now,
            sent_at=now,
            body=PositionBody(lat=51.5, lon=-0.12, acc=8.0, src="gnss"),
        )

    return make


def alarm_factory(state: AlarmState, alarm_id: str, boot_id: str, seq: int) -> EventEnvelope:
    now = datetime.now(UTC)
    return AlarmEvent(
        device_id=DEVICE,
        event_id=new_event_id(),
        boot_id=boot_id,
        seq=seq,
        captured_at=now,
        sent_at=now,
        body=AlarmBody(type="outbox.full", state=state, alarm_id=alarm_id),
    )


def telemetry(box: Outbox) -> Telemetry:
    return Telemetry(
        device_id=DEVICE,
        boot_id=box.boot_id,
        sent_at=datetime.now(UTC),
        body=TelemetryBody(batt=80),
    )


def put(box: Outbox) -> str:
    result = box.put_event(position())  # type: ignore[arg-type]
    assert result.row is not None and result.row.event_id is not None
    return result.row.event_id


def test_put_is_committed_before_anything_else(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, BIG) as box:
        event_id = put(box)
        # Another connection sees the row at once: it was committed by put_event.
        other = sqlite3.connect(path)
        rows = other.execute("SELECT event_id, seq FROM outbox").fetchall()
        other.close()
    assert rows == [(event_id, 0)]


def test_survives_a_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from tests.edge.test_outbox import BIG, put\n"
        "from edge.outbox import Outbox\n"
        "box = Outbox(Path(sys.argv[1]), BIG)\n"
        "ids = [put(box) for _ in range(20)]\n"
        "print(box.boot_id, ' '.join(ids), flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == -9, done.stderr
    boot, ids = done.stdout.split(" ", 1)
    with Outbox(path, BIG) as box:
        rows = box.pending(100)
        assert [r.event_id for r in rows] == ids.split()
        assert {r.boot_id for r in rows} == {boot}
        assert [r.seq for r in rows] == list(range(20))
        assert box.boot_id != boot  # a restart is a new boot
        assert box.next_seq == 0


def test_boot_and_seq_persist_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, BIG) as box:
        first_boot = box.boot_id
        first = [put(box) for _ in range(3)]
    with Outbox(path, BIG) as box:
        assert box.boot_id != first_boot
        second = [put(box) for _ in range(2)]
        rows = box.pending(10)
        assert [(r.boot_id, r.seq) for r in rows] == [
            (first_boot, 0),
            (first_boot, 1),
            (first_boot, 2),
            (box.boot_id, 0),
            (box.boot_id, 1),
        ]
        assert [r.event_id for r in rows] == first + second
        boots = [b for (b,) in box._db.execute("SELECT boot_id FROM boots ORDER BY started_at")]
        assert boots == [first_boot, box.boot_id]


def test_a_failed_put_takes_no_seq(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db", BIG) as box:
        put(box)

        def broken(boot_id: str, seq: int) -> EventEnvelope:
            raise RuntimeError("sensor failed")

        with pytest.raises(RuntimeError):
            box.put_event(broken)
        put(box)
        assert [r.seq for r in box.pending(10)] == [0, 1]
        assert box.events == 2


def test_ack_and_rejected_delete_only_named_events(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db", BIG) as box:
        ids = [put(box) for _ in range(5)]
        deleted, cleared = box.ack([ids[0], ids[2], new_event_id()], [(ids[4], "invalid")])
        assert deleted == 3 and cleared is None
        assert [r.event_id for r in box.pending(10)] == [ids[1], ids[3]]
        assert box.ack([ids[0]]) == (0, None)  # a repeated ack is harmless
        assert box.events == 2


def test_pending_excludes_in_flight_and_mark_sent_counts(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db", BIG) as box:
        for _ in range(4):
            put(box)
        first = box.pending(2)
        box.mark_sent(r.id for r in first)
        rest = box.pending(10, exclude={r.id for r in first})
        assert [r.seq for r in rest] == [2, 3]
        again = box.pending(10)
        assert [r.attempts for r in again] == [1, 1, 0, 0]
        assert again[0].last_sent_at is not None


def test_restamp_changes_only_transport_fields(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db", BIG) as box:
        put(box)
        row = box.pending(1)[0]
    later = datetime(2030, 1, 1, tzinfo=UTC)
    again = restamp(row.payload, sent_at=later, replayed=True)
    before, after = loads_object(row.payload), loads_object(again)
    assert after.pop("replayed") is True and before.pop("replayed") is False
    assert after.pop("sent_at") == "2030-01-01T00:00:00Z"
    before.pop("sent_at")
    assert before == after
    assert decode(row.topic, again, now=later).message.replayed  # type: ignore[union-attr]


def test_telemetry_dropped_oldest_first(tmp_path: Path) -> None:
    limits = OutboxLimits(max_bytes=10_000_000, max_events=5, telemetry_drop_policy="oldest")
    with Outbox(tmp_path / "outbox.db", limits) as box:
        tele_ids = [box.put_telemetry(telemetry(box)).row for _ in range(5)]
        assert all(row is not None for row in tele_ids)
        result = box.put_telemetry(telemetry(box))
        assert result.row is not None and result.dropped_telemetry == 1
        ids = [r.id for r in box.pending(10)]
        assert tele_ids[0] is not None and tele_ids[0].id not in ids
        # An event pushes out telemetry too, oldest first.
        event = box.put_event(position())  # type: ignore[arg-type]
        assert event.dropped_telemetry == 1 and event.alarm is None
        kinds = [r.kind for r in box.pending(10)]
        assert kinds == ["tele"] * 4 + ["event"]


def test_telemetry_newest_policy_refuses_new(tmp_path: Path) -> None:
    limits = OutboxLimits(max_bytes=10_000_000, max_events=3, telemetry_drop_policy="newest")
    with Outbox(tmp_path / "outbox.db", limits) as box:
        kept = [box.put_telemetry(telemetry(box)).row for _ in range(3)]
        refused = box.put_telemetry(telemetry(box))
        assert refused.row is None and refused.dropped_telemetry == 0
        assert [r.id for r in box.pending(10)] == [row.id for row in kept if row]


def test_full_of_events_keeps_them_and_raises_then_clears_the_alarm(tmp_path: Path) -> None:
    limits = OutboxLimits(max_bytes=10_000_000, max_events=10)
    path = tmp_path / "outbox.db"
    with Outbox(path, limits, alarm=alarm_factory) as box:
        ids = [put(box) for _ in range(10)]
        assert not box.full
        assert box.put_telemetry(telemetry(box)).row is None  # no room for telemetry
        result = box.put_event(position())  # type: ignore[arg-type]
        assert result.row is not None and result.alarm == "active"
        assert box.full and box.events == 12  # 11 positions + the outbox.full alarm
        more = [put(box) for _ in range(5)]  # still kept, past the limit
        assert box.events == 17
        rows = box.pending(100)
        alarms = [decode(r.topic, r.payload).message for r in rows if r.topic.endswith("/alarm")]
        assert len(alarms) == 1
        alarm = alarms[0]
        assert isinstance(alarm, AlarmEvent)
        assert alarm.body.type == "outbox.full" and alarm.body.state == "active"
        assert alarm.body.alarm_id == box.full_alarm_id
        alarm_id = alarm.body.alarm_id
    # The alarm survives a restart and is cleared once acks bring it under 90%.
    with Outbox(path, limits, alarm=alarm_factory) as box:
        assert box.full and box.full_alarm_id == alarm_id
        deleted, cleared = box.ack(ids + more[:3])
        assert deleted == 13 and cleared == "cleared"
        assert not box.full
        rows = box.pending(100)
        cleared_alarm = decode(rows[-1].topic, rows[-1].payload).message
        assert isinstance(cleared_alarm, AlarmEvent)
        assert cleared_alarm.body.state == "cleared" and cleared_alarm.body.alarm_id == alarm_id


def test_byte_limit_counts_payload_and_topic(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.db", BIG) as box:
        put(box)
        row = box.pending(1)[0]
        one = len(row.payload) + len(row.topic)
        assert box.size_bytes == one
    limits = OutboxLimits(max_bytes=one * 3, max_events=1000)
    with Outbox(tmp_path / "other.db", limits, alarm=alarm_factory) as box:
        put(box)
        put(box)
        put(box)
        assert not box.full
        assert box.put_event(position()).alarm == "active"  # type: ignore[arg-type]


def test_telemetry_expires(tmp_path: Path) -> None:
    clock = [1_000_000.0]
    with Outbox(tmp_path / "outbox.db", BIG, clock=lambda: clock[0]) as box:
        box.put_telemetry(telemetry(box))
        clock[0] += 300
        box.put_telemetry(telemetry(box))
        clock[0] += 400
        assert box.expire_telemetry() == 1
        assert box.telemetry == 1


def test_second_process_is_locked_out(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, BIG):
        with pytest.raises(OutboxLocked):
            Outbox(path, BIG)
    Outbox(path, BIG).close()  # free again once closed


def _corrupt_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    assert len(data) > 8192
    for i in range(4096, len(data) - 1024):
        data[i] = (data[i] * 7 + 13) & 0xFF
    path.write_bytes(bytes(data))


def _filled(path: Path) -> None:
    with Outbox(path, BIG) as box:
        for _ in range(40):
            put(box)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: p.write_bytes(b"this is not a database at all" * 100), "SQLite says"),
        (_corrupt_middle, ""),
        (lambda p: p.write_bytes(p.read_bytes()[:3000]), ""),
    ],
    ids=["garbage", "scrambled-pages", "truncated"],
)
def test_corrupt_file_is_refused_with_a_way_out(
    tmp_path: Path, damage: object, reason: str
) -> None:
    path = tmp_path / "outbox.db"
    _filled(path)
    damage(path)  # type: ignore[operator]
    with pytest.raises(OutboxCorrupt) as caught:
        Outbox(path, BIG)
    message = str(caught.value)
    assert reason in message
    assert "--recover-outbox" in message and str(path) in message
    assert path.exists()  # nothing was deleted
    moved = Outbox.move_aside(path, now=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert moved[0].name == "outbox.db.corrupt-20300102T030405Z"
    assert not path.exists()
    with Outbox(path, BIG) as box:
        assert box.events == 0


def test_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE something (x INTEGER)")
    db.execute("INSERT INTO something VALUES (1)")
    db.commit()
    db.close()
    with pytest.raises(OutboxCorrupt, match="not an outbox"):
        Outbox(path, BIG)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    _filled(path)
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    db.commit()
    db.close()
    with pytest.raises(OutboxCorrupt, match="schema version 99"):
        Outbox(path, BIG)
