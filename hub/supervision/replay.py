"""Replay stored fixes through rules: the alerts a rule would have raised.

Pure, like the engine: the caller supplies zones, rules and the fixes (already read
from wherever they are stored); :func:`replay` runs them through a *fresh*
:class:`~hub.supervision.engine.SupervisionEngine` in capture-time order with a clock
tick every ``tick_s`` seconds of event time, and returns a :class:`ReplayReport`.
Nothing is written anywhere.

The replay knows nothing from before its window, so each rule is evaluated as if it
came into force at the window's start (its ``valid_from`` is moved up to ``start``):
otherwise a silence rule would find "no fix since the order began" at the first tick.
Rules whose validity ends before the window are reported in
:attr:`ReplayReport.not_in_force` and not evaluated.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hub.supervision.engine import SupervisionEngine
from hub.supervision.model import AlertTransition, Fix, Rule, Zone

__all__ = ["PROGRESS_EVERY", "ReplayAlert", "ReplayReport", "replay"]

logger = logging.getLogger(__name__)

PROGRESS_EVERY = 10_000
"""Fixes between two calls of the progress callback."""


@dataclass
class ReplayAlert:
    """One alert the rules would have raised, and when it would have been cleared."""

    key: str
    type: str
    severity: str
    rule_id: str | None
    at: datetime
    detail: str
    retrospective: bool
    evidence: int
    """Number of fixes that decided it."""
    cleared_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "type": self.type,
            "severity": self.severity,
            "rule_id": self.rule_id,
            "at": self.at.isoformat(),
            "cleared_at": None if self.cleared_at is None else self.cleared_at.isoformat(),
            "detail": self.detail,
            "retrospective": self.retrospective,
            "evidence": self.evidence,
        }


@dataclass
class ReplayReport:
    """What a replay found."""

    start: datetime
    end: datetime
    rules: list[str]
    """Ids of the rules evaluated."""
    not_in_force: list[str] = field(default_factory=list)
    """Ids of rules whose validity does not overlap the window (not evaluated)."""
    fixes: int = 0
    ticks: int = 0
    alerts: list[ReplayAlert] = field(default_factory=list)

    def by_type(self) -> dict[str, int]:
        return dict(sorted(Counter(a.type for a in self.alerts).items()))

    def by_day(self) -> dict[str, int]:
        """Alerts per UTC day (ISO date) of the time the condition began."""
        days = Counter(a.at.astimezone(UTC).date().isoformat() for a in self.alerts)
        return dict(sorted(days.items()))

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "rules": self.rules,
            "not_in_force": self.not_in_force,
            "alerts": [a.to_json() for a in self.alerts],
            "summary": {
                "fixes": self.fixes,
                "ticks": self.ticks,
                "alerts": len(self.alerts),
                "by_type": self.by_type(),
                "by_day": self.by_day(),
            },
        }


def _in_force(rule: Rule, start: datetime, end: datetime) -> Rule | None:
    """The rule as the replay evaluates it, or None if not in force in the window."""
    if rule.valid_from >= end or (rule.valid_until is not None and rule.valid_until <= start):
        return None
    if rule.valid_from < start:
        # model_copy does not re-validate; valid_until > start holds from the check above.
        return rule.model_copy(update={"valid_from": start})
    return rule


def replay(
    zones: Mapping[str, Zone],
    rules: Sequence[Rule],
    fixes: Iterable[Fix],
    start: datetime,
    end: datetime,
    *,
    tick_s: float = 60.0,
    progress: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Run ``fixes`` (in capture-time order; checked) through a fresh engine holding
    ``rules``, ticking every ``tick_s`` seconds from ``start`` to ``end``.

    Raises ValueError for an empty or reversed window or fixes out of order, and
    :class:`hub.supervision.zones.ZoneError` for an unusable zone.
    """
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    if end <= start:
        raise ValueError("the window must end after it starts")
    if tick_s <= 0:
        raise ValueError("tick_s must be positive")
    evaluated: list[Rule] = []
    report = ReplayReport(start=start, end=end, rules=[])
    for rule in rules:
        used = _in_force(rule, start, end)
        if used is None:
            report.not_in_force.append(rule.id)
        else:
            evaluated.append(used)
            report.rules.append(rule.id)
    engine = SupervisionEngine(zones, evaluated)
    open_: dict[str, ReplayAlert] = {}
    step = timedelta(seconds=tick_s)
    next_tick = start + step
    last: datetime | None = None

    def take(transitions: list[AlertTransition]) -> None:
        for tr in transitions:
            if tr.action == "raise":
                alert = ReplayAlert(
                    key=tr.key,
                    type=tr.type,
                    severity=str(tr.severity),
                    rule_id=tr.rule_id,
                    at=tr.at,
                    detail=tr.detail,
                    retrospective=tr.retrospective,
                    evidence=len(tr.evidence),
                )
                report.alerts.append(alert)
                open_[tr.key] = alert
            else:
                raised = open_.pop(tr.key, None)
                if raised is not None:
                    raised.cleared_at = tr.at

    for fix in fixes:
        at = fix.captured_at
        if last is not None and at < last:
            raise ValueError(f"fixes out of capture-time order at {fix.event_id}")
        last = at
        if at < start or at > end:
            continue
        while next_tick < at:
            take(engine.tick(next_tick))
            report.ticks += 1
            next_tick += step
        take(engine.on_fix(fix))
        report.fixes += 1
        if progress is not None and report.fixes % PROGRESS_EVERY == 0:
            progress(report.fixes)
    while next_tick <= end:
        take(engine.tick(next_tick))
        report.ticks += 1
        next_tick += step
    report.alerts.sort(key=lambda a: (a.at, a.key))
    logger.info(
        "replayed %d fixes and %d ticks through %d rules: %d alerts",
        report.fixes,
        report.ticks,
        len(evaluated),
        len(report.alerts),
    )
    return report
