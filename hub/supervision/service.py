"""The supervision service: the pure engine wired to the database, ingest and a clock.

:class:`SupervisionService` loads zones, enabled rules and their saved evaluation
state into a :class:`~hub.supervision.engine.SupervisionEngine` and then

* takes each newly stored position from ingest (it is a
  :class:`hub.ingest.PositionSink`), evaluates it, and when it raises or clears an
  alert records the transitions (:func:`hub.alerts.record_transitions`, which also
  groups alerts into incidents) with the rule states that changed in one write
  transaction; states changed by quiet fixes are saved by the clock every
  ``save_states_seconds`` (5 s), in bulk, so a crash loses at most that much
  evaluation progress (e.g. the count towards an N-of-M confirmation), never a
  recorded alert;
* takes device alarms (:meth:`SupervisionService.on_alarm`) into the same alerts;
* runs a clock thread (:meth:`start`/:meth:`stop`) that ticks the engine every
  second, for curfews and silences without fixes, and escalates incidents past
  their SLA (:func:`hub.alerts.escalate_overdue`);
* reloads itself when zones or rules change (:meth:`reload`, called by the API).

After each commit the alerts that were raised or cleared are handed to ``on_alert``
(their :class:`hub.alerts.AlertPublic` form as a JSON-ready dict), for the live
feed; its errors are logged and never undo the commit. One lock serialises the
engine, so ingest workers may call :meth:`on_position` from several threads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, or_, select
from sqlalchemy.orm import Session

from devices.protocol import AlarmEvent, PositionEvent
from hub.alerts import (
    alert_from_device_alarm,
    alert_public,
    escalate_overdue,
    record_transitions,
)
from hub.db.engine import write_session
from hub.db.models import (
    Alert,
    Incident,
    SupervisionRule,
    SupervisionRuleState,
    SupervisionZone,
    utcnow,
)
from hub.db.repositories import dialect_insert
from hub.supervision.engine import SupervisionEngine
from hub.supervision.model import (
    AlertTransition,
    Fix,
    Rule,
    RuleState,
    Severity,
    Zone,
    ZoneKind,
)
from hub.supervision.zones import ZoneError

__all__ = ["AlertCallback", "SupervisionService", "load_rule", "load_zone"]

logger = logging.getLogger(__name__)

AlertCallback = Callable[[dict[str, Any]], None]
"""Receives each alert raised or cleared, as a JSON-ready dict (``AlertPublic``)."""

TICK_SECONDS = 1.0
STATES_PER_TRANSACTION = 500
"""Rule states written per transaction when many changed at once."""
SAVE_STATES_SECONDS = 5.0
"""How often the clock saves rule states changed by quiet fixes (a fix that raises or
clears an alert saves them at once)."""
"""How often the clock evaluates time-driven rules and SLAs."""


def load_zone(row: SupervisionZone) -> Zone:
    """The engine's form of a stored zone."""
    return Zone(
        id=row.id,
        name=row.name,
        kind=ZoneKind(row.kind),
        site_id=row.site_id,
        geometry=row.geometry,
        radius_m=row.radius_m,
        buffer_m=row.buffer_m,
    )


def load_rule(row: SupervisionRule) -> Rule:
    """The engine's form of a stored rule (its ``subject_id`` is the person id as text)."""
    return Rule.model_validate(
        {
            "id": row.id,
            "subject_id": str(row.person_id),
            "device_id": row.device_id,
            "params": row.params,
            "severity": Severity(row.severity),
            "valid_from": row.valid_from,
            "valid_until": row.valid_until,
            "enter_margin_m": row.enter_margin_m,
            "exit_margin_m": row.exit_margin_m,
            "confirm_n": row.confirm_n,
            "confirm_m": row.confirm_m,
            "dwell_s": row.dwell_s,
        }
    )


def fix_of(event: PositionEvent) -> Fix:
    """The engine's form of a position event."""
    return Fix(
        device_id=event.device_id,
        event_id=event.event_id,
        captured_at=event.captured_at,
        lat=event.body.lat,
        lon=event.body.lon,
        acc=event.body.acc,
        replayed=event.replayed,
    )


@dataclass
class _Work:
    """What one commit writes: taken from the engine, written outside its lock."""

    transitions: list[AlertTransition]
    states: list[RuleState]
    kinds: dict[str, str]
    now: datetime | None
    escalate: bool


class SupervisionService:
    """The engine with its state in the database; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        *,
        on_alert: AlertCallback | None = None,
        clock: Callable[[], datetime] = utcnow,
        tick_seconds: float = TICK_SECONDS,
        save_states_seconds: float = SAVE_STATES_SECONDS,
    ) -> None:
        self.db = engine
        self.on_alert = on_alert
        self.clock = clock
        self.tick_seconds = tick_seconds
        self.save_states_seconds = save_states_seconds
        self._lock = threading.RLock()
        """Guards the engine."""
        self._write_lock = threading.Lock()
        """Orders database writes of snapshots; taken while holding ``_lock``, never
        the other way round."""
        self._unwritten: _Work | None = None
        """The work of the last write, if it failed (guarded by ``_write_lock``)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._subjects: dict[str, str] = {}
        self.engine = SupervisionEngine({}, [], [])
        self.reload()

    # -- loading ---------------------------------------------------------------------------

    def reload(self) -> None:
        """Rebuild the engine from the database (after zones or rules changed): the
        engine's unsaved state is saved first, so nothing evaluated is lost."""
        with self._lock:
            self._save_states()
            with Session(self.db) as session:
                zones = [load_zone(row) for row in session.scalars(select(SupervisionZone))]
                rows = session.scalars(select(SupervisionRule)).all()
                rules = [load_rule(row) for row in rows if row.enabled]
                subjects = {row.device_id: str(row.person_id) for row in rows}
                states = [
                    RuleState(rule_id=row.rule_id, subject_id=row.subject_id, data=row.data)
                    for row in session.scalars(select(SupervisionRuleState))
                ]
            engine = SupervisionEngine({}, [], states)
            for zone in zones:
                try:
                    engine.upsert_zone(zone)
                except ZoneError as exc:  # stored before a stricter check: skip, say so
                    logger.error(
                        "zone %s not usable, its rules are not evaluated: %s", zone.id, exc
                    )
            for rule in rules:
                engine.upsert_rule(rule)
            self._subjects = subjects
            self.engine = engine
            logger.info(
                "supervision loaded: %d zones, %d rules, %d states",
                len(zones),
                len(rules),
                len(states),
            )

    # -- inputs ----------------------------------------------------------------------------

    def on_position(self, event: PositionEvent, received_at: datetime) -> None:
        """Evaluate a newly stored position (the ingest :class:`PositionSink`).

        A fix that raises or clears an alert is committed at once, with every changed
        rule state; otherwise the changed states wait for the clock's next save (at
        most ``save_states_seconds``), so a stream of quiet fixes costs no transaction
        each and a state changed many times in between is written once."""
        fix = fix_of(event)
        with self._lock:
            transitions = self.engine.on_fix(fix)
            if not transitions:
                return
            work = self._snapshot(transitions)
        self._write(work)

    def on_alarm(self, event: AlarmEvent, received_at: datetime | None = None) -> None:
        """Record a device alarm as an alert, raised or cleared (the ingest
        :class:`~hub.ingest.AlarmSink`)."""
        with self._lock:
            subject = self._subjects.get(event.device_id)
            transition = alert_from_device_alarm(event, subject)
            if transition is None:
                return
            work = self._snapshot([transition])
        self._write(work)

    def tick(self, now: datetime | None = None, *, save_states: bool = True) -> None:
        """One clock step: time-driven rules, then SLA escalations; with
        ``save_states`` also the states quiet fixes changed (transitions always save
        them, with the alerts they raise)."""
        at = now or self.clock()
        escalate = self._overdue(at)  # a read, outside the engine's lock
        with self._lock:
            transitions = self.engine.tick(at)
            work = self._snapshot(
                transitions, now=at, escalate=escalate, save_states=save_states or bool(transitions)
            )
        self._write(work)

    # -- the clock -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the clock thread (ticks every ``tick_seconds``)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="supervision-clock", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the clock thread and save the engine's state."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        with self._lock:
            self._save_states()

    def _run(self) -> None:
        next_save = time.monotonic() + self.save_states_seconds
        while not self._stop.wait(self.tick_seconds):
            save = time.monotonic() >= next_save
            if save:
                next_save = time.monotonic() + self.save_states_seconds
            try:
                self.tick(save_states=save)
            except Exception:
                logger.exception("supervision clock tick failed")

    # -- persistence -----------------------------------------------------------------------

    def _snapshot(
        self,
        transitions: Sequence[AlertTransition],
        *,
        now: datetime | None = None,
        escalate: bool = False,
        save_states: bool = True,
    ) -> _Work | None:
        """Under the engine's lock: what to write (transitions, changed states), or None.

        A returned piece of work holds the write lock, taken before the engine's lock
        is released, so works are written in the order they were taken from the engine
        (a later state never overwritten by an earlier one) while the engine goes on
        evaluating during the database write. The work of a write that failed is taken
        again first: its transitions, and its rules' current states."""
        if not transitions and not save_states and not escalate and self._unwritten is None:
            return None
        self._write_lock.acquire()
        try:
            retry, self._unwritten = self._unwritten, None
            if retry is not None:
                self.engine.mark_dirty(state.rule_id for state in retry.states)
                transitions = [*retry.transitions, *transitions]
                escalate = escalate or retry.escalate
                save_states = True
                now = now or retry.now
            states = self.engine.dirty_states() if save_states else []
            if not transitions and not states and not escalate:
                self._write_lock.release()
                return None
            kinds = {}
            for state in states:
                rule = self.engine.rule(state.rule_id)
                if rule is not None:
                    kinds[state.rule_id] = str(rule.kind)
            return _Work(list(transitions), states, kinds, now, escalate)
        except BaseException:
            self._write_lock.release()
            raise

    def _write(self, work: _Work | None) -> None:
        """Record a snapshot, release the write lock, then publish the alerts.

        Transitions, escalations and the first :data:`STATES_PER_TRANSACTION` states
        go in one transaction, further states in transactions of that many, so a save
        of thousands of states never holds the database (SQLite's one writer: ingest
        waits for it) for long. What fails is kept for the next snapshot."""
        if work is None:
            return
        published: list[dict[str, Any]] = []
        size = STATES_PER_TRANSACTION
        chunks = [work.states[i : i + size] for i in range(0, len(work.states), size)] or [[]]
        done = 0
        try:
            for index, chunk in enumerate(chunks):
                with write_session(self.db) as session:
                    if index == 0:
                        ids = record_transitions(session, work.transitions, now=work.now)
                        if work.escalate:
                            escalate_overdue(session, work.now)
                        if ids and self.on_alert is not None:
                            rows = session.scalars(
                                select(Alert).where(Alert.id.in_(ids)).order_by(Alert.id)
                            ).all()
                            published = [alert_public(r).model_dump(mode="json") for r in rows]
                    self._store_states(session, chunk, work.kinds)
                done = index + 1
        except BaseException:
            # Kept for the next snapshot (the clock's next tick at the latest), so an
            # alert whose write failed (the database restarting) is still recorded.
            first = done == 0
            self._unwritten = _Work(
                work.transitions if first else [],
                [state for chunk in chunks[done:] for state in chunk],
                work.kinds,
                work.now,
                work.escalate and first,
            )
            logger.warning(
                "supervision write of %d transitions and %d states failed; retried with "
                "the next one",
                len(self._unwritten.transitions),
                len(self._unwritten.states),
            )
            raise
        finally:
            self._write_lock.release()
        for alert in published:
            try:
                assert self.on_alert is not None
                self.on_alert(alert)
            except Exception:
                logger.exception("alert callback failed for alert %s", alert.get("id"))

    def _overdue(self, now: datetime) -> bool:
        """Whether an incident is due for escalation or resumption (a cheap read, so
        the clock takes the write lock only when there is work)."""
        stmt = select(Incident.id).where(
            or_(
                (Incident.status == "open") & (Incident.sla_due_at <= now),
                (Incident.status == "suspended") & (Incident.suspended_until <= now),
            )
        )
        with Session(self.db) as session:
            return session.scalar(stmt.limit(1)) is not None

    def _save_states(self) -> None:
        """Save the changed states now (the caller holds the engine's lock)."""
        self._write(self._snapshot([]))

    def _store_states(
        self, session: Session, states: Sequence[RuleState], kinds: Mapping[str, str]
    ) -> None:
        """Upsert changed states in bulk (one multi-row statement per 500), skipping
        states of rules deleted or changed meanwhile (``kinds``: each state's rule kind
        when it was evaluated)."""
        if not states:
            return
        ids = [state.rule_id for state in states]
        stored: dict[str, str] = {}
        for start in range(0, len(ids), 500):  # bound the statements' parameter counts
            chunk = ids[start : start + 500]
            stmt = select(SupervisionRule.id, SupervisionRule.kind)
            for rule_id, kind in session.execute(stmt.where(SupervisionRule.id.in_(chunk))):
                stored[rule_id] = kind
        now = utcnow()
        rows = []
        for state in states:
            evaluated = kinds.get(state.rule_id)
            if state.rule_id not in stored or (
                evaluated is not None and evaluated != stored[state.rule_id]
            ):
                continue  # the rule was deleted or changed kind meanwhile: its state is stale
            rows.append(
                {
                    "rule_id": state.rule_id,
                    "subject_id": state.subject_id,
                    "data": dict(state.data),
                    "updated_at": now,
                }
            )
        session.flush()  # the transaction's ORM changes first
        table = SupervisionRuleState.__table__
        for start in range(0, len(rows), 500):
            upsert = dialect_insert(session, table)
            excluded = upsert.excluded
            upsert = upsert.on_conflict_do_update(
                index_elements=["rule_id"],
                set_={
                    "subject_id": excluded.subject_id,
                    "data": excluded.data,
                    "updated_at": excluded.updated_at,
                },
            )
            session.execute(upsert, rows[start : start + 500])
