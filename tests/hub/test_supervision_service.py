"""The supervision service end to end on SQLite and PostgreSQL: positions through
``on_position`` become alerts and incidents, state survives a restart, device alarms
and the clock (silence, SLA escalation) go through the same path."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from devices.protocol import (
    AlarmBody,
    AlarmEvent,
    PositionBody,
    PositionEvent,
    new_boot_id,
    new_event_id,
)
from hub.db.engine import write_session
from hub.db.models import (
    Alert,
    AuditEntry,
    Device,
    Incident,
    Person,
    Site,
    SupervisionRule,
    SupervisionRuleState,
    SupervisionZone,
)
from hub.supervision.service import SupervisionService

T0 = datetime(2026, 3, 2, 21, 0, tzinfo=UTC)
DEVICE = "ankle-0042"
BOOT = new_boot_id()
# A victim's home: about 700 m x 1.1 km around (51.505, -0.095).
HOME = {
    "type": "Polygon",
    "coordinates": [[[-0.1, 51.5], [-0.09, 51.5], [-0.09, 51.51], [-0.1, 51.51], [-0.1, 51.5]]],
}
# Either side of its southern edge (latitude 51.5), 55 m away: walking pace between.
INSIDE = (51.5005, -0.095)
OUTSIDE = (51.4995, -0.095)


def seed(engine: Engine, *rules: tuple[str, str, dict[str, Any]]) -> int:
    with write_session(engine) as session:
        session.add(Site(site_id="probation-east", name="Probation East"))
        session.flush()
        session.add(Device(device_id=DEVICE, site_id="probation-east", model="m"))
        person = Person(category="supervised", display_name="Sam", case_id="CASE-7")
        session.add(person)
        session.add(SupervisionZone(id="victim-home", name="Victim", kind="victim", geometry=HOME))
        session.flush()
        for rule_id, kind, params in rules:
            session.add(
                SupervisionRule(
                    id=rule_id,
                    person_id=person.id,
                    device_id=DEVICE,
                    kind=kind,
                    params=params,
                    severity="critical",
                    valid_from=T0 - timedelta(days=1),
                    enter_margin_m=10,
                    exit_margin_m=25,
                    confirm_n=2,
                    confirm_m=3,
                    dwell_s=30,
                    enabled=True,
                )
            )
        return person.id


EXCLUSION = ("r-excl", "exclusion", {"kind": "exclusion", "zone_ids": ["victim-home"]})


def position(seq: int, at: datetime, where: tuple[float, float]) -> PositionEvent:
    lat, lon = where
    return PositionEvent(
        device_id=DEVICE,
        event_id=new_event_id(),
        boot_id=BOOT,
        seq=seq,
        captured_at=at,
        sent_at=at,
        body=PositionBody(lat=lat, lon=lon, acc=5.0, src="gnss"),
    )


def walk(
    service: SupervisionService, start: int, at: datetime, where: tuple[float, float], count: int
) -> datetime:
    for i in range(count):
        when = at + timedelta(seconds=10 * i)
        service.on_position(position(start + i, when, where), when + timedelta(seconds=1))
    return at + timedelta(seconds=10 * count)


def alarm(state: str, type_: str = "strap.tamper", alarm_id: str = "tamper-1") -> AlarmEvent:
    """An alarm event of the seeded device at T0."""
    return AlarmEvent(
        device_id=DEVICE,
        event_id=new_event_id(),
        boot_id=BOOT,
        seq=1,
        captured_at=T0,
        sent_at=T0,
        body=AlarmBody(type=type_, state=state, alarm_id=alarm_id),  # type: ignore[arg-type]
    )


def alerts_of(engine: Engine) -> list[Alert]:
    with Session(engine) as session:
        return list(session.scalars(select(Alert).order_by(Alert.id)))


def test_exclusion_entry_is_one_alert_and_one_incident_across_a_restart(engine: Engine) -> None:
    person_id = seed(engine, EXCLUSION)
    published: list[dict[str, Any]] = []
    service = SupervisionService(engine, on_alert=published.append)
    t = walk(service, 0, T0, OUTSIDE, 3)
    assert alerts_of(engine) == []
    t = walk(service, 3, t, INSIDE, 6)
    (alert,) = alerts_of(engine)
    assert alert.type == "exclusion.entered" and alert.rule_id == "r-excl"
    assert alert.person_id == person_id and alert.severity == "critical"
    assert alert.cleared_at is None and len(alert.evidence) >= 2
    assert [p["id"] for p in published] == [alert.id]
    assert published[0]["type"] == "exclusion.entered" and published[0]["cleared_at"] is None
    with Session(engine) as session:
        (incident,) = session.scalars(select(Incident)).all()
        assert incident.person_id == person_id and incident.severity == "critical"
        assert alert.incident_id == incident.id
        assert session.get(SupervisionRuleState, "r-excl") is not None

    # The hub restarts: a new service continues from the saved state.
    service.stop()
    restarted = SupervisionService(engine, on_alert=published.append)
    t = walk(restarted, 9, t, INSIDE, 4)
    assert len(alerts_of(engine)) == 1  # still the same violation: nothing new
    walk(restarted, 13, t, OUTSIDE, 4)
    (alert,) = alerts_of(engine)
    assert alert.cleared_at is not None and alert.cleared_at > alert.raised_at
    assert [p["id"] for p in published] == [alert.id, alert.id]
    assert published[-1]["cleared_at"] is not None
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Incident)) == 1


def test_redelivered_positions_change_nothing(engine: Engine) -> None:
    seed(engine, EXCLUSION)
    service = SupervisionService(engine)
    fixes = [position(i, T0 + timedelta(seconds=10 * i), INSIDE) for i in range(6)]
    for fix in fixes:
        service.on_position(fix, fix.captured_at)
    # A second service replays everything from scratch state (as after losing state).
    with write_session(engine) as session:
        session.query(SupervisionRuleState).delete()
    again = SupervisionService(engine)
    for fix in fixes:
        again.on_position(fix, fix.captured_at)
    assert len(alerts_of(engine)) == 1


def test_reload_picks_up_new_rules(engine: Engine) -> None:
    person_id = seed(engine)
    service = SupervisionService(engine)
    walk(service, 0, T0, INSIDE, 6)
    assert alerts_of(engine) == []
    with write_session(engine) as session:
        rule_id, kind, params = EXCLUSION
        session.add(
            SupervisionRule(
                id=rule_id,
                person_id=person_id,
                device_id=DEVICE,
                kind=kind,
                params=params,
                severity="serious",
                valid_from=T0 - timedelta(days=1),
                enter_margin_m=10,
                exit_margin_m=25,
                confirm_n=2,
                confirm_m=3,
                dwell_s=30,
                enabled=True,
            )
        )
    service.reload()
    walk(service, 6, T0 + timedelta(minutes=5), INSIDE, 6)
    assert [a.type for a in alerts_of(engine)] == ["exclusion.entered"]


def test_device_alarms_become_alerts_of_the_subject(engine: Engine) -> None:
    person_id = seed(engine, EXCLUSION)
    published: list[dict[str, Any]] = []
    service = SupervisionService(engine, on_alert=published.append)

    service.on_alarm(alarm("active"))
    service.on_alarm(alarm("active"))  # redelivered
    service.on_alarm(alarm("active", "watchlist.hit"))  # not a supervision alert
    (alert,) = alerts_of(engine)
    assert alert.type == "strap.tamper" and alert.person_id == person_id
    assert alert.severity == "critical" and alert.rule_id is None
    service.on_alarm(alarm("cleared"))
    (alert,) = alerts_of(engine)
    assert alert.cleared_at == T0
    assert [p["type"] for p in published] == ["strap.tamper", "strap.tamper"]


def test_an_alert_whose_write_failed_is_recorded_by_the_next_tick(engine: Engine) -> None:
    """The database refuses the write (its alerts table is gone for a moment, as when
    it restarts): the alarm's alert is kept and written by the clock's next tick."""
    seed(engine, EXCLUSION)
    service = SupervisionService(engine)
    sos = alarm("active", "sos", "sos-1")
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE alerts RENAME TO alerts_away"))
    try:
        with pytest.raises(DBAPIError):
            service.on_alarm(sos)
        with pytest.raises(DBAPIError):
            service.tick(T0 + timedelta(seconds=1), save_states=False)  # still away
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE alerts_away RENAME TO alerts"))
    assert alerts_of(engine) == []
    service.tick(T0 + timedelta(seconds=2), save_states=False)
    assert [a.type for a in alerts_of(engine)] == ["sos"]
    service.tick(T0 + timedelta(seconds=3))
    assert len(alerts_of(engine)) == 1


def test_the_clock_raises_silence_and_escalates_overdue_incidents(engine: Engine) -> None:
    seed(engine, ("r-silent", "silence", {"kind": "silence", "max_silence_s": 600}))
    service = SupervisionService(engine)
    service.on_position(position(0, T0, OUTSIDE), T0)
    service.tick(T0 + timedelta(minutes=9))
    assert alerts_of(engine) == []
    service.tick(T0 + timedelta(minutes=11))
    (alert,) = alerts_of(engine)
    assert alert.type == "silence" and alert.raised_at == T0 + timedelta(minutes=10)
    with Session(engine) as session:
        (incident,) = session.scalars(select(Incident)).all()
    # Critical: 4 minutes to acknowledge, counted from when the hub opened it (now).
    assert incident.status == "open"
    service.tick(incident.sla_due_at + timedelta(seconds=1))
    with Session(engine) as session:
        incident = session.get(Incident, incident.id)  # type: ignore[assignment]
        assert incident is not None and incident.status == "escalated"
        actions = session.scalars(
            select(AuditEntry.action).where(AuditEntry.actor == "system").order_by(AuditEntry.seq)
        ).all()
    assert actions == ["incident.open", "incident.escalate"]


def test_the_clock_thread_ticks(engine: Engine) -> None:
    seed(engine, ("r-silent", "silence", {"kind": "silence", "max_silence_s": 60}))
    service = SupervisionService(engine, tick_seconds=0.05)
    service.start()
    try:
        deadline = time.monotonic() + 10
        while not alerts_of(engine) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        service.stop()
    # The rule has been valid since yesterday and the device never reported.
    assert [a.type for a in alerts_of(engine)] == ["silence"]
