"""``lantern rules replay`` on SQLite and PostgreSQL: a scripted exclusion entry stored
as positions, replayed through the stored rule and through rule files; bad input
refused with exit status 2; one audit row and nothing else written. Also the pure
:func:`hub.supervision.replay.replay`."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from devices.protocol import (
    PositionBody,
    PositionEvent,
    decode,
    encode,
    new_boot_id,
    new_event_id,
    topic_for,
)
from devices.simulation.tracks import T0, TrackPoint, exclusion_entry
from hub.db.engine import write_session
from hub.db.models import (
    Alert,
    AuditEntry,
    Device,
    Person,
    Position,
    Site,
    SupervisionRule,
    SupervisionRuleState,
    SupervisionZone,
)
from hub.db.repositories import store_event
from hub.rules_cli import app
from hub.supervision.model import Rule, Zone
from hub.supervision.replay import replay
from tests.hub.supervision.scripted import to_fix

SCENARIO = exclusion_entry()
DEVICE = "wearable-1"
FROM = T0.isoformat()
TO = (T0 + timedelta(minutes=30)).isoformat()


def _url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _event(point: TrackPoint, seq: int, boot: str) -> PositionEvent:
    return PositionEvent(
        device_id=point.device_id,
        event_id=new_event_id(),
        boot_id=boot,
        seq=seq,
        captured_at=point.t,
        sent_at=point.t,
        replayed=point.replayed,
        body=PositionBody(lat=point.lat, lon=point.lon, acc=point.acc, src="gnss"),
    )


def _seed(engine: Engine, *, enabled: bool = True) -> int:
    """The scenario's zone and rule in the database, its fixes stored as ingest would."""
    with write_session(engine) as session:
        session.add(Site(site_id="probation", name="Probation"))
        session.flush()
        session.add(Device(device_id=DEVICE, site_id="probation", model="ankle"))
        person = Person(category="supervised", display_name="Sam", case_id="CASE-1")
        session.add(person)
        (zone,) = SCENARIO.zones
        session.add(
            SupervisionZone(
                id=zone["id"],
                name=zone["name"],
                kind=zone["kind"],
                geometry=zone["geometry"],
                radius_m=zone["radius_m"],
            )
        )
        session.flush()
        (rule,) = SCENARIO.rules
        session.add(
            SupervisionRule(
                id=rule["id"],
                person_id=person.id,
                device_id=DEVICE,
                kind="exclusion",
                params=rule["params"],
                severity="critical",
                valid_from=T0 - timedelta(days=30),
                enter_margin_m=10,
                exit_margin_m=25,
                confirm_n=2,
                confirm_m=3,
                dwell_s=30,
                enabled=enabled,
            )
        )
        person_id = person.id
    boot = new_boot_id()
    with Session(engine) as session, session.begin():
        for seq, point in enumerate(SCENARIO.points):
            event = _event(point, seq, boot)
            wire = decode(topic_for(event), encode(event), now=point.t + timedelta(days=1))
            assert store_event(session, wire)
    return person_id


def _run(engine: Engine, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["replay", *args, "--database-url", _url(engine)])
    return result.exit_code, result.stdout, result.stderr


def _audit(engine: Engine) -> list[tuple[str, str | None, str]]:
    with Session(engine) as session:
        rows = session.execute(
            select(AuditEntry.action, AuditEntry.target, AuditEntry.actor).order_by(AuditEntry.seq)
        ).all()
    return [(a, t, actor) for a, t, actor in rows]


def test_replay_prints_the_alert_the_stored_rule_would_raise(engine: Engine) -> None:
    person = _seed(engine)
    code, out, err = _run(engine, "--subject", str(person), "--from", FROM, "--to", TO)
    assert code == 0, out + err
    lines = out.splitlines()
    (alert,) = [line for line in lines if line.startswith("2025-")]
    assert alert.startswith("2025-03-03T18:09:00+00:00")
    assert "critical" in alert and "rule keep-off-victim" in alert
    assert "entered an exclusion zone" in alert
    assert f"replayed {len(SCENARIO.points)} fixes" in out and "1 alert(s)" in out
    assert "  exclusion.entered: 1" in lines and "  2025-03-03: 1" in lines
    # Reading history is audited; nothing else is written.
    ((action, target, actor),) = _audit(engine)
    assert action == "rules.replay" and target == f"person:{person}"
    assert actor.startswith("cli:")
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Alert)) == 0
        assert session.scalar(select(func.count()).select_from(SupervisionRuleState)) == 0
        assert session.scalar(select(func.count()).select_from(Position)) == len(SCENARIO.points)


def test_replay_json(engine: Engine) -> None:
    person = _seed(engine)
    code, out, err = _run(engine, "--subject", str(person), "--from", FROM, "--to", TO, "--json")
    assert code == 0, out + err
    body = json.loads(out)
    assert body["rules"] == ["keep-off-victim"] and body["not_in_force"] == []
    (alert,) = body["alerts"]
    assert alert["type"] == "exclusion.entered" and alert["severity"] == "critical"
    assert alert["rule_id"] == "keep-off-victim" and alert["at"] == "2025-03-03T18:09:00+00:00"
    assert alert["cleared_at"] is None and alert["retrospective"] is False
    assert alert["evidence"] >= 2
    summary = body["summary"]
    assert summary["fixes"] == len(SCENARIO.points) and summary["alerts"] == 1
    assert summary["ticks"] == 30
    assert summary["by_type"] == {"exclusion.entered": 1}
    assert summary["by_day"] == {"2025-03-03": 1}


def test_window_selects_the_fixes(engine: Engine) -> None:
    person = _seed(engine)
    # Only the first five minutes: the walk has not reached the zone yet.
    early_to = (T0 + timedelta(minutes=5)).isoformat()
    code, out, _ = _run(
        engine, "--subject", str(person), "--from", FROM, "--to", early_to, "--json"
    )
    assert code == 0
    summary = json.loads(out)["summary"]
    assert summary["fixes"] == sum(1 for p in SCENARIO.points if p.t <= T0 + timedelta(minutes=5))
    assert summary["alerts"] == 0


def test_disabled_rules_are_not_replayed(engine: Engine) -> None:
    person = _seed(engine, enabled=False)
    code, _, err = _run(engine, "--subject", str(person), "--from", FROM, "--to", TO)
    assert code == 2 and "no enabled rules" in err


def test_rule_file_with_an_inline_zone_and_defaults(engine: Engine, tmp_path: Path) -> None:
    """A candidate rule tried before go-live: a larger zone given inline (YAML), the
    device, subject and start taken from the command and the stored rules."""
    person = _seed(engine)
    (zone,) = SCENARIO.zones
    bigger = {**zone, "id": "victim-street", "name": "Victim street", "radius_m": 400.0}
    path = tmp_path / "candidate.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "id": "keep-off-street",
                "params": {"kind": "exclusion", "zone_ids": ["victim-street"]},
                "severity": "serious",
                "zones": [bigger],
            }
        )
    )
    code, out, err = _run(
        engine, "--subject", str(person), "--from", FROM, "--to", TO, "--rule", str(path), "--json"
    )
    assert code == 0, out + err
    body = json.loads(out)
    assert body["rules"] == ["keep-off-street"]
    (alert,) = body["alerts"]
    assert alert["rule_id"] == "keep-off-street" and alert["severity"] == "serious"
    # The 400 m circle is reached minutes before the 100 m one.
    assert alert["at"] < "2025-03-03T18:09:00+00:00"


def test_rule_file_json_silence_rule_fires_on_the_clock(engine: Engine, tmp_path: Path) -> None:
    person = _seed(engine)
    path = tmp_path / "silence.json"
    path.write_text(
        json.dumps({"id": "report", "params": {"kind": "silence", "max_silence_s": 300}})
    )
    code, out, err = _run(
        engine, "--subject", str(person), "--from", FROM, "--to", TO, "--rule", str(path), "--json"
    )
    assert code == 0, out + err
    (alert,) = json.loads(out)["alerts"]
    # The last fix is at 18:14; five silent minutes later the clock raises it.
    assert alert["type"] == "silence" and alert["at"] == "2025-03-03T18:19:00+00:00"


def _write(tmp_path: Path, data: Any, name: str = "rule.yaml") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"params": {"kind": "exclusion"}}, "params.zone_ids"),
        ({"params": {"kind": "exclusion", "zone_ids": ["nowhere"]}}, "params.zone_ids"),
        ({"params": {"kind": "proximity", "other_device_id": "v"}}, "params.min_distance_m"),
        ({"params": {"kind": "teleport"}}, "params"),
        ({"params": {"kind": "silence", "max_silence_s": 600}, "confirm_n": 0}, "confirm_n"),
        (
            {"params": {"kind": "silence", "max_silence_s": 600}, "subject_id": "999"},
            "subject_id",
        ),
        (
            {
                "params": {"kind": "exclusion", "zone_ids": ["z"]},
                "zones": [{"id": "z", "name": "Z", "kind": "victim"}],
            },
            "zones.0.geometry",
        ),
        ("- just\n- a list\n", "one rule"),
        ("params: [unclosed\n", "not valid"),
    ],
)
def test_bad_rule_files_name_the_field(
    engine: Engine, tmp_path: Path, content: Any, expected: str
) -> None:
    person = _seed(engine)
    rule = _write(tmp_path, content)
    code, out, err = _run(
        engine, "--subject", str(person), "--from", FROM, "--to", TO, "--rule", rule
    )
    assert code == 2, out + err
    assert expected in err
    assert _audit(engine) == []


def test_bad_command_input(engine: Engine, tmp_path: Path) -> None:
    person = _seed(engine)
    code, _, err = _run(engine, "--subject", "999999", "--from", FROM, "--to", TO)
    assert code == 2 and "--subject: no person with id 999999" in err
    code, _, err = _run(engine, "--subject", str(person), "--from", TO, "--to", FROM)
    assert code == 2 and "--to: must be after --from" in err
    code, _, err = _run(engine, "--subject", str(person), "--from", FROM, "--to", FROM)
    assert code == 2 and "--to" in err
    code, _, err = _run(engine, "--subject", str(person), "--from", "2025-03-03T18:00", "--to", TO)
    assert code == 2 and "--from: give a UTC offset" in err
    code, _, err = _run(engine, "--subject", str(person), "--from", "yesterday", "--to", TO)
    assert code == 2 and "--from: not an ISO 8601 time" in err
    missing = str(tmp_path / "missing.yaml")
    code, _, err = _run(
        engine, "--subject", str(person), "--from", FROM, "--to", TO, "--rule", missing
    )
    assert code == 2 and "--rule: cannot read" in err
    with write_session(engine) as session:
        watch = Person(category="watchlist", display_name="W")
        session.add(watch)
        session.flush()
        watch_id = watch.id
    code, _, err = _run(engine, "--subject", str(watch_id), "--from", FROM, "--to", TO)
    assert code == 2 and "not a supervised person" in err
    assert _audit(engine) == []


# --- the pure replay ---------------------------------------------------------------------


def _model() -> tuple[dict[str, Zone], list[Rule]]:
    zones = {z["id"]: Zone.model_validate(z) for z in SCENARIO.zones}
    return zones, [Rule.model_validate(r) for r in SCENARIO.rules]


def test_pure_replay_matches_the_live_engine_and_is_deterministic() -> None:
    zones, rules = _model()
    fixes = [to_fix(p) for p in SCENARIO.points]
    end = T0 + timedelta(minutes=30)
    first = replay(zones, rules, fixes, T0, end)
    again = replay(zones, rules, fixes, T0, end)
    assert first.to_json() == again.to_json()
    assert [(a.type, a.at.strftime("%H:%M:%S")) for a in first.alerts] == [
        ("exclusion.entered", "18:09:00")
    ]
    assert first.fixes == len(fixes) and first.ticks == 30


def test_pure_replay_refuses_bad_windows_and_unordered_fixes() -> None:
    zones, rules = _model()
    fixes = [to_fix(p) for p in SCENARIO.points]
    with pytest.raises(ValueError, match="end after it starts"):
        replay(zones, rules, fixes, T0, T0)
    with pytest.raises(ValueError, match="out of capture-time order"):
        replay(zones, rules, list(reversed(fixes)), T0, T0 + timedelta(hours=1))


def test_rules_not_in_force_in_the_window_are_reported() -> None:
    zones, rules = _model()
    ended = rules[0].model_copy(update={"valid_until": T0 - timedelta(days=1)})
    report = replay(
        zones, [ended], [to_fix(p) for p in SCENARIO.points], T0, T0 + timedelta(hours=1)
    )
    assert report.rules == [] and report.not_in_force == ["keep-off-victim"]
    assert report.alerts == []
