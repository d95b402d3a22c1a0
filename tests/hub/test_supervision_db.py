"""Supervision storage, alerts and incidents (hub.alerts), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from devices.protocol import AlarmBody, AlarmEvent, PositionBody, new_boot_id, new_event_id
from hub import alerts
from hub.audit import verify
from hub.auth import Role, create_user
from hub.db.engine import write_session
from hub.db.models import (
    Alert,
    AuditEntry,
    Device,
    Incident,
    IncidentEvent,
    Person,
    Site,
    SupervisionRule,
    SupervisionRuleState,
    SupervisionZone,
)
from hub.supervision.model import AlertTransition, Fix, Severity

T0 = datetime(2026, 3, 2, 21, 0, tzinfo=UTC)
DEVICE = "ankle-0042"
OFFICER = alerts.Actor("olive", "officer")


def seed(engine: Engine) -> int:
    """A site, a device and a supervised person; the person's id."""
    with write_session(engine) as session:
        session.add(Site(site_id="probation-east", name="Probation East"))
        session.flush()
        session.add(Device(device_id=DEVICE, site_id="probation-east", model="lantern-ankle-a1"))
        person = Person(category="supervised", display_name="Sam Subject", case_id="CASE-7")
        session.add(person)
        session.flush()
        return person.id


def raise_(
    key: str,
    person_id: int | str,
    at: datetime,
    severity: Severity = Severity.serious,
    type_: str = "exclusion.entered",
) -> AlertTransition:
    fix = Fix(
        device_id=DEVICE, event_id=new_event_id(), captured_at=at, lat=51.5, lon=-0.1, acc=6.0
    )
    return AlertTransition(
        key=key,
        action="raise",
        type=type_,
        severity=severity,
        subject_id=str(person_id),
        device_id=DEVICE,
        rule_id="r-1",
        at=at,
        evidence=[fix],
        detail="entered victim-home",
    )


def clear_(key: str, person_id: int, at: datetime) -> AlertTransition:
    return AlertTransition(
        key=key,
        action="clear",
        type="exclusion.entered",
        severity=Severity.serious,
        subject_id=str(person_id),
        device_id=DEVICE,
        rule_id="r-1",
        at=at,
    )


def record(engine: Engine, transitions: list[AlertTransition], now: datetime) -> list[int]:
    with write_session(engine) as session:
        return alerts.record_transitions(session, transitions, now=now)


def audit_actions(engine: Engine) -> list[tuple[str, str, str | None]]:
    with Session(engine) as session:
        rows = session.execute(
            select(AuditEntry.action, AuditEntry.actor, AuditEntry.case_id).order_by(AuditEntry.seq)
        ).all()
    return [tuple(row) for row in rows]


def test_tables_store_zones_rules_and_states(engine: Engine) -> None:
    person_id = seed(engine)
    square = {
        "type": "Polygon",
        "coordinates": [[[-0.1, 51.5], [-0.09, 51.5], [-0.09, 51.51], [-0.1, 51.5]]],
    }
    with write_session(engine) as session:
        session.add(SupervisionZone(id="victim-home", name="V", kind="victim", geometry=square))
        session.add(
            SupervisionRule(
                id="r-1",
                person_id=person_id,
                device_id=DEVICE,
                kind="exclusion",
                params={"kind": "exclusion", "zone_ids": ["victim-home"]},
                severity="critical",
                valid_from=T0,
                enter_margin_m=10,
                exit_margin_m=25,
                confirm_n=2,
                confirm_m=3,
                dwell_s=30,
                enabled=True,
            )
        )
        session.flush()
        session.add(
            SupervisionRuleState(
                rule_id="r-1", subject_id=str(person_id), data={"phase": "outside", "n": [1, 2]}
            )
        )
    with Session(engine) as session:
        zone = session.get(SupervisionZone, "victim-home")
        assert zone is not None and zone.geometry == square and zone.created_at.tzinfo
        state = session.get(SupervisionRuleState, "r-1")
        assert state is not None and state.data == {"phase": "outside", "n": [1, 2]}
    # A rule's state goes with the rule; a bad kind or severity is refused.
    with write_session(engine) as session:
        session.delete(session.get(SupervisionRule, "r-1"))
    with Session(engine) as session:
        assert session.get(SupervisionRuleState, "r-1") is None
    with pytest.raises(IntegrityError), write_session(engine) as session:
        session.add(SupervisionZone(id="z", name="Z", kind="volcano", geometry=square))


def test_alerts_are_idempotent_by_key_and_cleared_once(engine: Engine) -> None:
    person_id = seed(engine)
    first = record(engine, [raise_("r-1:100", person_id, T0)], T0)
    assert len(first) == 1
    # The same violation again (a replay, a restart): nothing new.
    assert record(engine, [raise_("r-1:100", person_id, T0)], T0 + timedelta(seconds=5)) == []
    cleared = record(engine, [clear_("r-1:100", person_id, T0 + timedelta(minutes=3))], T0)
    assert cleared == first
    assert record(engine, [clear_("r-1:100", person_id, T0 + timedelta(minutes=9))], T0) == []
    assert record(engine, [clear_("r-1:unknown", person_id, T0)], T0) == []
    with Session(engine) as session:
        (alert,) = session.scalars(select(Alert)).all()
        assert alert.person_id == person_id and alert.device_id == DEVICE
        assert alert.raised_at == T0 and alert.cleared_at == T0 + timedelta(minutes=3)
        assert alert.evidence[0]["lat"] == 51.5 and alert.detail == "entered victim-home"
        public = alerts.alert_public(alert)
        assert public.severity is Severity.serious and public.incident_id is not None
    with pytest.raises(IntegrityError), write_session(engine) as session:
        session.add(
            Alert(
                key="r-1:100",
                type="x",
                severity="info",
                device_id=DEVICE,
                raised_at=T0,
                evidence=[],
                detail="",
            )
        )


def test_alerts_group_into_incidents_within_the_window(engine: Engine) -> None:
    person_id = seed(engine)
    now = T0
    record(engine, [raise_("a", person_id, T0, Severity.serious, "silence")], now)
    record(
        engine,
        [raise_("b", person_id, T0, Severity.critical, "strap.tamper")],
        now + timedelta(minutes=10),
    )
    record(
        engine,
        [raise_("c", person_id, T0, Severity.info, "battery.low")],
        now + timedelta(minutes=35),
    )
    # Past the window after the last alert: a new incident.
    record(
        engine,
        [raise_("d", person_id, T0, Severity.info, "battery.low")],
        now + timedelta(minutes=70),
    )
    with Session(engine) as session:
        incidents = session.scalars(select(Incident).order_by(Incident.id)).all()
        assert len(incidents) == 2
        story, later = incidents
        keys = session.scalars(
            select(Alert.key).where(Alert.incident_id == story.id).order_by(Alert.key)
        ).all()
        assert keys == ["a", "b", "c"]
        assert story.severity == "critical" and story.status == "open"
        # The critical alert pulled the SLA in: 10 min + 4 min.
        assert story.sla_due_at == now + timedelta(minutes=14)
        assert later.severity == "info" and later.sla_due_at == now + timedelta(
            minutes=70, hours=24
        )
        actions = session.scalars(
            select(IncidentEvent.action)
            .where(IncidentEvent.incident_id == story.id)
            .order_by(IncidentEvent.id)
        ).all()
        assert actions == ["open", "alert", "alert", "alert"]
    assert [a for a, _, _ in audit_actions(engine)] == ["incident.open", "incident.open"]


def test_a_cleared_incident_is_not_joined(engine: Engine) -> None:
    person_id = seed(engine)
    (alert_id,) = record(engine, [raise_("a", person_id, T0)], T0)
    with write_session(engine) as session:
        incident_id = session.get(Alert, alert_id).incident_id  # type: ignore[union-attr]
        assert incident_id is not None
        alerts.clear(session, incident_id, OFFICER, "false alarm: visiting the court", now=T0)
    record(engine, [raise_("b", person_id, T0)], T0 + timedelta(minutes=1))
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Incident)) == 2


def _open(engine: Engine, severity: Severity = Severity.critical) -> int:
    person_id = seed(engine)
    (alert_id,) = record(engine, [raise_("k", person_id, T0, severity)], T0)
    with Session(engine) as session:
        alert = session.get(Alert, alert_id)
        assert alert is not None and alert.incident_id is not None
        return alert.incident_id


def test_incident_lifecycle_and_audit(engine: Engine) -> None:
    incident_id = _open(engine)
    user = create_user(
        engine,
        username="olive",
        role=Role.officer,
        password="x" * 16,
        actor="test",
        actor_role="cli",
    )
    at = T0 + timedelta(minutes=1)
    with write_session(engine) as session:
        inc = alerts.acknowledge(session, incident_id, OFFICER, note="on it", now=at)
        assert inc.status == "acknowledged" and inc.acknowledged_by == "olive"
        alerts.assign(session, incident_id, OFFICER, user.id, now=at)
        alerts.note(session, incident_id, OFFICER, "phoned the subject", now=at)
        alerts.escalate(session, incident_id, OFFICER, "no answer", now=at)
        inc = alerts.suspend(
            session, incident_id, OFFICER, "in hospital", at + timedelta(hours=2), now=at
        )
        assert inc.status == "suspended" and inc.suspend_reason == "in hospital"
        inc = alerts.clear(session, incident_id, OFFICER, "discharged, home", now=at)
        assert inc.status == "cleared" and inc.cleared_by == "olive"
        assert inc.assigned_to == user.id and inc.clear_note == "discharged, home"
        alerts.note(session, incident_id, OFFICER, "closing call made", now=at)
    with Session(engine) as session:
        timeline = session.execute(
            select(IncidentEvent.action, IncidentEvent.actor)
            .where(IncidentEvent.incident_id == incident_id)
            .order_by(IncidentEvent.id)
        ).all()
    assert [a for a, _ in timeline] == [
        "open",
        "alert",
        "acknowledge",
        "assign",
        "note",
        "escalate",
        "suspend",
        "clear",
        "note",
    ]
    audited = [row for row in audit_actions(engine) if row[0].startswith("incident.")]
    assert audited[1:] == [
        (f"incident.{a}", "olive", "CASE-7")
        for a in ("acknowledge", "assign", "note", "escalate", "suspend", "clear", "note")
    ]
    with Session(engine) as session:
        assert verify(session).ok


@pytest.mark.parametrize(
    ("steps", "refused"),
    [
        (["clear"], "clear"),
        (["acknowledge"], "acknowledge"),
        (["suspend"], "suspend"),
        (["escalate"], "escalate"),
        (["clear"], "assign"),
        (["clear"], "escalate"),
    ],
)
def test_invalid_transitions_are_refused(engine: Engine, steps: list[str], refused: str) -> None:
    incident_id = _open(engine)
    until = T0 + timedelta(hours=1)
    calls = {
        "acknowledge": lambda s: alerts.acknowledge(s, incident_id, OFFICER, now=T0),
        "clear": lambda s: alerts.clear(s, incident_id, OFFICER, "done", now=T0),
        "suspend": lambda s: alerts.suspend(s, incident_id, OFFICER, "away", until, now=T0),
        "escalate": lambda s: alerts.escalate(s, incident_id, OFFICER, "why", now=T0),
        "assign": lambda s: alerts.assign(s, incident_id, OFFICER, 1, now=T0),
    }
    with write_session(engine) as session:
        for step in steps:
            calls[step](session)
    before = len(audit_actions(engine))
    with pytest.raises(alerts.IncidentConflict), write_session(engine) as session:
        calls[refused](session)
    assert len(audit_actions(engine)) == before


def test_bad_input_and_unknown_incidents(engine: Engine) -> None:
    incident_id = _open(engine)
    analyst = create_user(
        engine, username="ann", role=Role.analyst, password="x" * 16, actor="test", actor_role="cli"
    )
    with write_session(engine) as session:
        with pytest.raises(alerts.IncidentInvalid) as info:
            alerts.clear(session, incident_id, OFFICER, "  ", now=T0)
        assert info.value.field == "note" and info.value.status_code == 422
        with pytest.raises(alerts.IncidentInvalid, match="in the future"):
            alerts.suspend(session, incident_id, OFFICER, "away", T0, now=T0)
        with pytest.raises(alerts.IncidentInvalid, match="not an officer"):
            alerts.assign(session, incident_id, OFFICER, analyst.id, now=T0)
        with pytest.raises(alerts.IncidentInvalid, match="no enabled user"):
            alerts.assign(session, incident_id, OFFICER, 987654, now=T0)
        with pytest.raises(alerts.IncidentNotFound):
            alerts.acknowledge(session, 987654, OFFICER, now=T0)


def test_overdue_incidents_escalate_and_suspensions_expire(engine: Engine) -> None:
    incident_id = _open(engine, Severity.critical)
    with write_session(engine) as session:
        assert alerts.escalate_overdue(session, T0 + timedelta(minutes=3)) == []
        assert alerts.escalate_overdue(session, T0 + timedelta(minutes=4)) == [incident_id]
        assert alerts.escalate_overdue(session, T0 + timedelta(minutes=5)) == []
        inc = session.get(Incident, incident_id)
        assert inc is not None and inc.status == "escalated"
        alerts.suspend(
            session,
            incident_id,
            OFFICER,
            "court",
            T0 + timedelta(hours=1),
            now=T0 + timedelta(minutes=6),
        )
        assert alerts.escalate_overdue(session, T0 + timedelta(minutes=59)) == []
        assert alerts.escalate_overdue(session, T0 + timedelta(hours=1)) == [incident_id]
        inc = session.get(Incident, incident_id)
        assert inc is not None and inc.status == "open" and inc.suspended_until is None
        assert inc.sla_due_at == T0 + timedelta(hours=1, minutes=4)
    rows = [r for r in audit_actions(engine) if r[1] == alerts.SYSTEM_ACTOR]
    assert [r[0] for r in rows] == ["incident.open", "incident.escalate", "incident.resume"]


def test_acknowledged_incidents_do_not_escalate(engine: Engine) -> None:
    incident_id = _open(engine, Severity.serious)
    with write_session(engine) as session:
        alerts.acknowledge(session, incident_id, OFFICER, now=T0 + timedelta(minutes=2))
        assert alerts.escalate_overdue(session, T0 + timedelta(hours=3)) == []


def _alarm(type_: str, state: str, alarm_id: str = "al-1") -> AlarmEvent:
    return AlarmEvent(
        device_id=DEVICE,
        event_id=new_event_id(),
        boot_id=new_boot_id(),
        seq=1,
        captured_at=T0,
        sent_at=T0,
        body=AlarmBody(
            type=type_,
            state=state,
            alarm_id=alarm_id,  # type: ignore[arg-type]
            position=PositionBody(lat=51.5, lon=-0.1, acc=9.0, src="gnss"),
        ),
    )


def test_device_alarms_map_to_alerts(engine: Engine) -> None:
    person_id = seed(engine)
    tamper = alerts.alert_from_device_alarm(_alarm("strap.tamper", "active"), str(person_id))
    assert tamper is not None and tamper.severity is Severity.critical
    assert tamper.action == "raise" and tamper.rule_id is None and tamper.evidence[0].acc == 9.0
    ended = alerts.alert_from_device_alarm(_alarm("strap.tamper", "cleared"), str(person_id))
    assert ended is not None and ended.action == "clear" and ended.key == tamper.key
    assert alerts.alert_from_device_alarm(_alarm("watchlist.hit", "active"), None) is None
    low = alerts.alert_from_device_alarm(_alarm("battery.low", "active", "al-2"), None)
    assert low is not None and low.severity is Severity.info
    assert alerts.ALARM_SEVERITY["power.cut"] is Severity.serious
    assert alerts.ALARM_SEVERITY["sos"] is Severity.critical
    ids = record(engine, [tamper, low], T0)
    assert len(ids) == 2
    assert record(engine, [ended], T0) == ids[:1]
    with Session(engine) as session:
        rows = {a.type: a for a in session.scalars(select(Alert))}
        assert rows["strap.tamper"].person_id == person_id
        assert rows["strap.tamper"].cleared_at == T0
        # A device bound to nobody: its own incident, keyed by the device.
        assert rows["battery.low"].person_id is None
        assert rows["battery.low"].incident_id != rows["strap.tamper"].incident_id
        unbound = session.get(Incident, rows["battery.low"].incident_id)
        assert unbound is not None and unbound.device_id == DEVICE and unbound.person_id is None
