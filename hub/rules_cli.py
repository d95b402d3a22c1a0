"""``lantern rules``: try supervision rules on stored location history.

``lantern rules replay --subject 42 --from 2026-03-01T00:00:00+00:00 --to ...`` reads
the supervised person's enabled rules (or, with ``--rule FILE``, only the rule in
that file: a new or changed rule tried before it goes live), the zones they use and
the stored fixes of the devices they watch in the window, and runs them through a
fresh engine (:func:`hub.supervision.replay.replay`). It prints the alerts the rules
would have raised and a summary (fixes replayed, alerts by type and per UTC day), or
the same as JSON with ``--json``.

Nothing is written except one audit row (``rules.replay``): the command reads a
person's location history.

A rule file is YAML or JSON holding one rule in the engine's shape
(:class:`hub.supervision.model.Rule`). ``subject_id`` defaults to ``--subject`` (and
must equal it when given), ``valid_from`` to ``--from``, ``id`` to ``replay``;
``device_id`` defaults to the device of the subject's stored rules when they all
use one. Zones are referenced by id from the database or given inline under a
top-level ``zones:`` list (an inline zone replaces a stored one of the same id).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from hub import audit
from hub.cli_options import DatabaseUrl, DataDir, cli_actor, resolve_database_url
from hub.db.engine import make_engine
from hub.db.models import Person, Position, SupervisionRule, SupervisionZone
from hub.supervision.model import CurfewParams, Fix, ProximityParams, Rule, Zone
from hub.supervision.replay import ReplayReport, replay
from hub.supervision.service import load_rule, load_zone
from hub.supervision.zones import ZoneError, validate_zone

__all__ = ["app"]

logger = logging.getLogger(__name__)

app = typer.Typer(help="Supervision rules: try them on stored history.", no_args_is_help=True)

TICK_SECONDS = 60.0
"""Clock step of a replay (event time)."""


_KINDS = ("inclusion", "exclusion", "curfew", "proximity", "silence")


class InputError(Exception):
    """Bad input to a command: reported on stderr with exit status 2."""


@app.callback()
def _rules() -> None:
    """Supervision rules (a group of commands)."""


def _when(value: str, option: str) -> datetime:
    try:
        at = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InputError(f"{option}: not an ISO 8601 time: {value!r}") from exc
    if at.tzinfo is None or at.utcoffset() is None:
        raise InputError(f"{option}: give a UTC offset, e.g. {value}+00:00")
    return at


def _loc(error: dict[str, Any], prefix: str = "") -> str:
    parts = [str(p) for p in error.get("loc", ())]
    # Drop the discriminator tag pydantic inserts into a union's path ("params.curfew.x").
    if len(parts) >= 2 and parts[0] == "params" and parts[1] in _KINDS:
        del parts[1]
    path = ".".join(parts)
    return f"{prefix}{path}" if path else prefix.rstrip(".") or "(file)"


def _first_error(exc: ValidationError, prefix: str = "") -> str:
    errors = exc.errors()
    shown = [f"{_loc(dict(e), prefix)}: {e['msg']}" for e in errors[:3]]
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return "; ".join(shown) + more


def _read_rule_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--rule: cannot read {path}: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"--rule: {path} is not valid {path.suffix or 'YAML'}: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(f"--rule: {path} must hold one rule (a mapping)")
    return data


def _file_rule(
    data: dict[str, Any], subject: int, start: datetime, devices: set[str]
) -> tuple[Rule, dict[str, Zone]]:
    """The rule (and inline zones) of a rule file, with the documented defaults."""
    data = dict(data)
    raw_zones = data.pop("zones", None) or []
    if not isinstance(raw_zones, list):
        raise InputError("rule file: zones: must be a list of zones")
    zones: dict[str, Zone] = {}
    for i, raw in enumerate(raw_zones):
        try:
            zone = validate_zone(Zone.model_validate(raw))
        except ValidationError as exc:
            raise InputError(f"rule file: {_first_error(exc, f'zones.{i}.')}") from exc
        except ZoneError as exc:
            raise InputError(f"rule file: zones.{i}.geometry: {exc}") from exc
        zones[zone.id] = zone
    given = data.get("subject_id")
    if given is not None and str(given) != str(subject):
        raise InputError(f"rule file: subject_id: {given!r} is not the subject {subject}")
    data["subject_id"] = str(subject)
    data.setdefault("id", "replay")
    data.setdefault("valid_from", start.isoformat())
    if "device_id" not in data:
        if len(devices) != 1:
            raise InputError(
                "rule file: device_id: required (the subject's stored rules do not name "
                "exactly one device)"
            )
        data["device_id"] = next(iter(devices))
    try:
        rule = Rule.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"rule file: {_first_error(exc)}") from exc
    return rule, zones


def _zone_ids(rule: Rule) -> list[str]:
    params = rule.params
    if isinstance(params, CurfewParams):
        return [params.zone_id]
    return list(getattr(params, "zone_ids", []))


def _devices(rules: Sequence[Rule]) -> list[str]:
    out = {rule.device_id for rule in rules}
    out.update(
        rule.params.other_device_id for rule in rules if isinstance(rule.params, ProximityParams)
    )
    return sorted(out)


def _fixes(engine: Engine, devices: list[str], start: datetime, end: datetime) -> Iterator[Fix]:
    stmt = (
        select(
            Position.device_id,
            Position.event_id,
            Position.captured_at,
            Position.lat,
            Position.lon,
            Position.acc,
            Position.replayed,
        )
        .where(
            Position.device_id.in_(devices),
            Position.captured_at >= start,
            Position.captured_at <= end,
        )
        .order_by(Position.captured_at, Position.id)
        .execution_options(yield_per=5000)
    )
    with Session(engine) as session:
        for device_id, event_id, captured_at, lat, lon, acc, replayed in session.execute(stmt):
            yield Fix(
                device_id=device_id,
                event_id=event_id,
                captured_at=captured_at,
                lat=lat,
                lon=lon,
                acc=acc,
                replayed=replayed,
            )


def _load(
    engine: Engine, subject: int, start: datetime, rule_file: Path | None
) -> tuple[dict[str, Zone], list[Rule]]:
    """The zones and rules to replay, from the database and the rule file."""
    with Session(engine) as session:
        person = session.get(Person, subject)
        if person is None:
            raise InputError(f"--subject: no person with id {subject}")
        if person.category != "supervised":
            raise InputError(f"--subject: person {subject} is not a supervised person")
        rows = session.scalars(
            select(SupervisionRule)
            .where(SupervisionRule.person_id == subject)
            .order_by(SupervisionRule.id)
        ).all()
        stored: list[Rule] = []
        for row in rows:
            try:
                rule = load_rule(row)
            except ValidationError as exc:
                logger.error("stored rule %s is not usable: %s", row.id, exc)
                continue
            if row.enabled:
                stored.append(rule)
        zones: dict[str, Zone] = {}
        if rule_file is not None:
            devices = {row.device_id for row in rows}
            rule, zones = _file_rule(_read_rule_file(rule_file), subject, start, devices)
            rules = [rule]
        else:
            rules = stored
            if not rules:
                raise InputError(f"--subject: person {subject} has no enabled rules")
        wanted = {z for rule in rules for z in _zone_ids(rule)} - set(zones)
        if wanted:
            for zone_row in session.scalars(
                select(SupervisionZone).where(SupervisionZone.id.in_(sorted(wanted)))
            ):
                zones[zone_row.id] = load_zone(zone_row)
    for rule in rules:
        missing = [z for z in _zone_ids(rule) if z not in zones]
        if missing and rule_file is not None:
            field = "params.zone_id" if isinstance(rule.params, CurfewParams) else "params.zone_ids"
            raise InputError(f"rule file: {field}: unknown zone {', '.join(missing)}")
        if missing:
            logger.warning("rule %s uses missing zones %s: not evaluated", rule.id, missing)
    return zones, rules


def _print_report(report: ReplayReport) -> None:
    for alert in report.alerts:
        until = "" if alert.cleared_at is None else f" until {alert.cleared_at.isoformat()}"
        retro = " (retrospective)" if alert.retrospective else ""
        typer.echo(
            f"{alert.at.isoformat()}  {alert.type:<18} {alert.severity:<8} "
            f"rule {alert.rule_id or '-'}: {alert.detail}{retro}{until}"
        )
    typer.echo(
        f"replayed {report.fixes} fixes from {report.start.isoformat()} to "
        f"{report.end.isoformat()} through {len(report.rules)} rule(s) "
        f"({', '.join(report.rules) or 'none'}): {len(report.alerts)} alert(s)"
    )
    if report.not_in_force:
        typer.echo(f"not in force in the window: {', '.join(report.not_in_force)}")
    for type_, count in report.by_type().items():
        typer.echo(f"  {type_}: {count}")
    for day, count in report.by_day().items():
        typer.echo(f"  {day}: {count}")


@app.command("replay")
def replay_command(
    subject: Annotated[int, typer.Option("--subject", help="The supervised person's id.")],
    from_: Annotated[str, typer.Option("--from", help="Window start, ISO 8601 with a UTC offset.")],
    to: Annotated[str, typer.Option("--to", help="Window end, ISO 8601 with a UTC offset.")],
    rule: Annotated[
        Path | None,
        typer.Option("--rule", help="Replay only the rule in this YAML or JSON file."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Replay stored fixes through the subject's rules (or one rule file) and report
    the alerts they would have raised. Writes nothing but one audit row."""
    try:
        start = _when(from_, "--from")
        end = _when(to, "--to")
        if end <= start:
            raise InputError("--to: must be after --from")
    except InputError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    engine = make_engine(resolve_database_url(database_url, data_dir))
    try:
        try:
            zones, rules = _load(engine, subject, start, rule)
        except InputError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from exc
        outcome = "failed"
        try:

            def progress(n: int) -> None:
                typer.echo(f"... {n} fixes replayed", err=True)

            report = replay(
                zones,
                rules,
                _fixes(engine, _devices(rules), start, end),
                start,
                end,
                tick_s=TICK_SECONDS,
                progress=progress,
            )
            outcome = f"ok: {report.fixes} fixes, {len(report.alerts)} alerts"
        except ZoneError as exc:
            typer.echo(f"error: a zone is not usable: {exc}", err=True)
            raise typer.Exit(2) from exc
        finally:
            audit.record(
                engine,
                actor=cli_actor(),
                role="cli",
                action="rules.replay",
                purpose="rule trial on stored history",
                target=f"person:{subject}",
                result=f"{outcome}; {start.isoformat()} to {end.isoformat()}; "
                f"rules {','.join(r.id for r in rules)}"[:1000],
            )
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        _print_report(report)
