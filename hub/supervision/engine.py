"""The supervision engine: fixes and clock ticks in, alert transitions out.

Pure: no database, no MQTT, no wall clock. Time comes from the fixes' capture times and
from the ``now`` given to :meth:`SupervisionEngine.tick`, so replaying the same inputs
gives the same transitions.

Per rule the engine keeps a small state machine:

* zone rules (inclusion, exclusion, curfew) classify each fix as inside / outside /
  uncertain with hysteresis (the enter margin applies while the subject is out, the
  exit margin while in); proximity compares the distance minus both accuracies with the
  least distance allowed. Each fix gives a violation observation (yes / no / unknown);
  a violation is raised when ``confirm_n`` of the last ``confirm_m`` observations say
  yes and it has lasted ``dwell_s``; it is cleared when ``confirm_n`` of the last
  ``confirm_m`` say no. Unknowns change nothing, so a stationary device with jittery
  fixes at an edge does not flap.
* curfew and silence are also driven by the clock (:meth:`~SupervisionEngine.tick`).

Event time: inclusion, exclusion and proximity rules keep a bounded history of the fixes
they evaluated with the state after each one. A fix older than the rule's latest is
inserted in its place and the rule is re-evaluated from the state before it; what that
finds that was not already reported is reported as ``retrospective``. Alert keys are
the rule id, the alert type and the start of the violation rounded down to the minute,
so finding the same violation again (a second replay, a restart) gives the same key and
the engine does not report it twice.

Speed sanity: a fix implying more than :data:`MAX_SPEED_MPS` from the device's previous
accepted fix (after subtracting both accuracies) is flagged once (``fix.implausible``)
and not used for zone or proximity state.

State: :meth:`~SupervisionEngine.dirty_states` returns the changed rules' states as JSON
(times as ISO 8601 strings); an engine built from them continues exactly.
"""

from __future__ import annotations

import logging
import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from hub.supervision.model import (
    AlertTransition,
    CurfewParams,
    Fix,
    ProximityParams,
    Rule,
    RuleKind,
    RuleState,
    Severity,
    SilenceParams,
    Zone,
)
from hub.supervision.schedule import CurfewSchedule
from hub.supervision.zones import PreparedZone, ZoneIndex, prepare

__all__ = [
    "HISTORY_SIZE",
    "MAX_SPEED_MPS",
    "PROXIMITY_MAX_AGE_S",
    "SupervisionEngine",
]

log = logging.getLogger(__name__)

MAX_SPEED_MPS = 70.0
"""Fastest plausible movement between two fixes, after subtracting both accuracies."""
IMPLAUSIBLE_LIMIT = 3
"""After this many consecutive implausible fixes the next one is accepted (the device
really moved, e.g. after a long gap or a transport the model did not foresee)."""
PROXIMITY_MAX_AGE_S = 120.0
"""The other device's latest fix is used if at most this far from the fix evaluated."""
HISTORY_SIZE = 100
"""Fixes kept per rule for inserting late fixes."""
_KEYS_KEPT = 64
"""Alert keys remembered per rule (for idempotency of re-evaluations)."""
_CURFEW_SILENT_MIN_S = 300.0
_EARTH_RADIUS_M = 6_371_008.8
_VERSION = 1

_TYPES = {
    RuleKind.inclusion: "inclusion.exited",
    RuleKind.exclusion: "exclusion.entered",
    RuleKind.proximity: "proximity.breach",
}

Window = tuple[tuple[bool | None, Fix], ...]
Active = tuple[str, str, float]
"""An open alert: key, type, since (POSIX seconds)."""


class _Fx:
    """The fix-driven part of a rule's state; immutable, so history entries can share
    it without copying."""

    __slots__ = ("member", "window", "pending", "ok_since", "active", "own", "other")

    def __init__(
        self,
        member: int = -1,
        window: Window = (),
        pending: float | None = None,
        ok_since: float | None = None,
        active: Active | None = None,
        own: Fix | None = None,
        other: Fix | None = None,
    ) -> None:
        self.member = member
        """1 inside, 0 outside, -1 never confidently classified."""
        self.window = window
        self.pending = pending
        """Start of the current run of violating observations."""
        self.ok_since = ok_since
        """Start of the current run of non-violating observations."""
        self.active = active
        self.own = own
        self.other = other

    def replace(self, **changes: Any) -> _Fx:
        new = _Fx(
            self.member, self.window, self.pending, self.ok_since, self.active, self.own, self.other
        )
        for name, value in changes.items():
            setattr(new, name, value)
        return new

    def to_json(self) -> dict[str, Any]:
        return {
            "member": self.member,
            "window": [[v, _fix_json(f)] for v, f in self.window],
            "pending": _iso_or_none(self.pending),
            "ok_since": _iso_or_none(self.ok_since),
            "active": None if self.active is None else [*self.active[:2], _iso(self.active[2])],
            "own": None if self.own is None else _fix_json(self.own),
            "other": None if self.other is None else _fix_json(self.other),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _Fx:
        active = data.get("active")
        return cls(
            member=int(data.get("member", -1)),
            window=tuple((v, Fix.model_validate(f)) for v, f in data.get("window", [])),
            pending=_ts_or_none(data.get("pending")),
            ok_since=_ts_or_none(data.get("ok_since")),
            active=None if active is None else (str(active[0]), str(active[1]), _ts(active[2])),
            own=None if data.get("own") is None else Fix.model_validate(data["own"]),
            other=None if data.get("other") is None else Fix.model_validate(data["other"]),
        )


_INITIAL = _Fx()


class _Runtime:
    """One rule with its prepared zones and state."""

    __slots__ = (
        "rule",
        "kind",
        "zones",
        "missing",
        "sched",
        "fx",
        "hist",
        "hist_t",
        "base",
        "base_t",
        "emitted",
        "last_fix_t",
        "clock_until",
        "ended",
        "t_from",
        "t_until",
        "alert_type",
    )

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.kind = rule.kind
        self.zones: list[PreparedZone] = []
        self.missing: list[str] = []
        self.sched = CurfewSchedule(rule.params) if isinstance(rule.params, CurfewParams) else None
        self.fx = _INITIAL
        self.hist: list[tuple[Fix, _Fx]] = []
        self.hist_t: list[float] = []
        self.base: _Fx | None = None
        self.base_t: float | None = None
        self.emitted: dict[str, str] = {}
        self.last_fix_t: float | None = None
        self.clock_until: float | None = None
        self.ended = False
        self.t_from = rule.valid_from.timestamp()
        self.t_until = math.inf if rule.valid_until is None else rule.valid_until.timestamp()
        self.alert_type = _TYPES.get(rule.kind, str(rule.kind))

    @property
    def zone_ids(self) -> list[str]:
        params = self.rule.params
        if isinstance(params, CurfewParams):
            return [params.zone_id]
        return list(getattr(params, "zone_ids", []))

    @property
    def replayable(self) -> bool:
        return self.kind in _TYPES

    def remember(self, key: str, action: str) -> None:
        self.emitted.pop(key, None)
        self.emitted[key] = action
        while len(self.emitted) > _KEYS_KEPT:
            del self.emitted[next(iter(self.emitted))]

    def to_json(self, devices: Mapping[str, _Device]) -> dict[str, Any]:
        rule = self.rule
        dev_ids = [rule.device_id]
        if isinstance(rule.params, ProximityParams):
            dev_ids.append(rule.params.other_device_id)
        return {
            "v": _VERSION,
            "fx": self.fx.to_json(),
            "base": None if self.base is None else self.base.to_json(),
            "base_t": _iso_or_none(self.base_t),
            "hist": [_fix_json(f) for f, _ in self.hist],
            "emitted": [[k, a] for k, a in self.emitted.items()],
            "last_fix_t": _iso_or_none(self.last_fix_t),
            "clock_until": _iso_or_none(self.clock_until),
            "ended": self.ended,
            "devices": {d: devices[d].to_json() for d in dev_ids if d in devices},
        }


class _Device:
    """Speed-sanity state of one device: its last accepted fix."""

    __slots__ = ("last", "last_t", "rejects")

    def __init__(self, last: Fix | None = None, rejects: int = 0) -> None:
        self.last = last
        self.last_t = -math.inf if last is None else last.captured_at.timestamp()
        self.rejects = rejects

    def to_json(self) -> dict[str, Any]:
        return {
            "last": None if self.last is None else _fix_json(self.last),
            "rejects": self.rejects,
        }


class SupervisionEngine:
    """Evaluates rules on fixes (:meth:`on_fix`) and on the clock (:meth:`tick`)."""

    def __init__(
        self,
        zones: Mapping[str, Zone] = MappingProxyType({}),
        rules: Sequence[Rule] = (),
        states: Iterable[RuleState] = (),
    ) -> None:
        self._zones: dict[str, PreparedZone] = {}
        self._rules: dict[str, _Runtime] = {}
        self._by_device: dict[str, list[_Runtime]] = {}
        self._devices: dict[str, _Device] = {}
        self._dirty: set[str] = set()
        """Rules whose state changed since :meth:`dirty_states` was last called."""
        self._saved: dict[str, RuleState] = {s.rule_id: s for s in states}
        self._index: ZoneIndex | None = None
        for zone in zones.values():
            self.upsert_zone(zone)
        for rule in rules:
            self.upsert_rule(rule)

    # --- configuration -------------------------------------------------------------

    def upsert_zone(self, zone: Zone) -> None:
        """Add or replace a zone (validated; raises ZoneError if unusable)."""
        self._zones[zone.id] = prepare(zone)
        self._index = None
        for rt in self._rules.values():
            if zone.id in rt.zone_ids:
                self._bind_zones(rt)

    def remove_zone(self, zone_id: str) -> None:
        """Forget a zone; rules that use it stop being evaluated until it is back."""
        if self._zones.pop(zone_id, None) is not None:
            self._index = None
            for rt in self._rules.values():
                if zone_id in rt.zone_ids:
                    self._bind_zones(rt)

    def upsert_rule(self, rule: Rule) -> None:
        """Add or replace a rule. A replaced rule of the same kind keeps its state."""
        old = self._rules.get(rule.id)
        if old is not None and old.rule == rule:
            return
        rt = _Runtime(rule)
        self._bind_zones(rt)
        if old is not None and old.kind == rule.kind:
            for name in (
                "fx",
                "hist",
                "hist_t",
                "base",
                "base_t",
                "emitted",
                "last_fix_t",
                "clock_until",
            ):
                setattr(rt, name, getattr(old, name))
        elif old is None and rule.id in self._saved:
            self._restore(rt, self._saved.pop(rule.id))
        if old is not None:
            self._unlink(old)
        self._rules[rule.id] = rt
        for device_id in self._devices_of(rule):
            group = self._by_device.setdefault(device_id, [])
            group.append(rt)
            group.sort(key=lambda r: r.rule.id)
        self._dirty.add(rt.rule.id)

    def remove_rule(self, rule_id: str) -> None:
        """Forget a rule and its state."""
        self._saved.pop(rule_id, None)
        rt = self._rules.pop(rule_id, None)
        if rt is not None:
            self._unlink(rt)

    @property
    def rules(self) -> Mapping[str, Rule]:
        return {rid: rt.rule for rid, rt in self._rules.items()}

    def mark_dirty(self, rule_ids: Iterable[str]) -> None:
        """Have :meth:`dirty_states` report these rules' states again (their last save
        failed)."""
        self._dirty.update(rid for rid in rule_ids if rid in self._rules)

    def rule(self, rule_id: str) -> Rule | None:
        """The evaluated rule of this id, if any (without copying all of them)."""
        rt = self._rules.get(rule_id)
        return None if rt is None else rt.rule

    def zones_at(self, lat: float, lon: float) -> list[str]:
        """Ids of all zones containing the point (STRtree over every zone)."""
        if self._index is None:
            self._index = ZoneIndex(self._zones.values())
        return self._index.zones_at(lat, lon)

    def dirty_states(self) -> list[RuleState]:
        """States changed since the last call, for the hub to persist."""
        out = []
        dirty, self._dirty = self._dirty, set()
        for rid in sorted(dirty):
            rt = self._rules.get(rid)
            if rt is not None:
                out.append(
                    RuleState(
                        rule_id=rid, subject_id=rt.rule.subject_id, data=rt.to_json(self._devices)
                    )
                )
        return out

    # --- evaluation ----------------------------------------------------------------

    def on_fix(self, fix: Fix) -> list[AlertTransition]:
        """Evaluate every rule of the fix's device, and proximity rules protecting it."""
        group = self._by_device.get(fix.device_id)
        if not group:
            return []
        t = fix.captured_at.timestamp()
        out: list[AlertTransition] = []
        usable = self._plausible(fix, t, out)
        for rt in group:
            if t < rt.t_from or rt.ended:
                continue
            if t >= rt.t_until:
                out.extend(self._end(rt))
                continue
            self._dirty.add(rt.rule.id)
            own = fix.device_id == rt.rule.device_id
            if own and (rt.last_fix_t is None or t > rt.last_fix_t):
                previous, rt.last_fix_t = rt.last_fix_t, t
            else:
                previous = rt.last_fix_t
            kind = rt.kind
            if kind is RuleKind.silence:
                if own:
                    out.extend(self._silence_fix(rt, fix, t, previous))
            elif not usable or rt.missing:
                if kind is RuleKind.curfew and own:
                    out.extend(self._curfew_heard(rt, fix, t))
            elif kind is RuleKind.curfew:
                if own and (previous is None or t >= previous):
                    out.extend(self._curfew_fix(rt, fix, t, previous))
            elif rt.hist_t and t < rt.hist_t[-1]:
                out.extend(self._backfill(rt, fix, t))
            else:
                out.extend(self._append(rt, fix, t))
        return out

    def tick(self, now: datetime) -> list[AlertTransition]:
        """Time-driven evaluation: validity ends, silence, curfew deadlines, dwell."""
        t = now.timestamp()
        out: list[AlertTransition] = []
        for rid in sorted(self._rules):
            rt = self._rules[rid]
            if rt.ended or t < rt.t_from:
                continue
            if t >= rt.t_until:
                out.extend(self._end(rt))
                continue
            if rt.kind is RuleKind.silence:
                out.extend(self._silence_tick(rt, t))
            elif rt.kind is RuleKind.curfew:
                if not rt.missing:
                    out.extend(self._curfew_tick(rt, t))
            else:
                out.extend(self._dwell_tick(rt, t))
        return out

    # --- internals: bookkeeping ----------------------------------------------------

    @staticmethod
    def _devices_of(rule: Rule) -> list[str]:
        ids = [rule.device_id]
        if (
            isinstance(rule.params, ProximityParams)
            and rule.params.other_device_id != rule.device_id
        ):
            ids.append(rule.params.other_device_id)
        return ids

    def _unlink(self, rt: _Runtime) -> None:
        for device_id in self._devices_of(rt.rule):
            group = self._by_device.get(device_id, [])
            if rt in group:
                group.remove(rt)
            if not group:
                self._by_device.pop(device_id, None)

    def _bind_zones(self, rt: _Runtime) -> None:
        ids = rt.zone_ids
        rt.zones = [self._zones[z] for z in ids if z in self._zones]
        rt.missing = [z for z in ids if z not in self._zones]
        if rt.missing:
            log.warning("rule %s: zones %s unknown; not evaluated", rt.rule.id, rt.missing)

    def _restore(self, rt: _Runtime, state: RuleState) -> None:
        data = state.data
        if data.get("v") != _VERSION:
            log.warning("rule %s: state of another version ignored", rt.rule.id)
            return
        rt.base = None if data.get("base") is None else _Fx.from_json(data["base"])
        rt.base_t = _ts_or_none(data.get("base_t"))
        fx = rt.base or _INITIAL
        for raw in data.get("hist", []):
            fix = Fix.model_validate(raw)
            t = fix.captured_at.timestamp()
            fx, _ = self._step(rt, fx, fix, t, retro=False)
            rt.hist.append((fix, fx))
            rt.hist_t.append(t)
        rt.fx = _Fx.from_json(data["fx"])
        rt.emitted = {str(k): str(a) for k, a in data.get("emitted", [])}
        rt.last_fix_t = _ts_or_none(data.get("last_fix_t"))
        rt.clock_until = _ts_or_none(data.get("clock_until"))
        rt.ended = bool(data.get("ended", False))
        for device_id, dev in data.get("devices", {}).items():
            last = None if dev.get("last") is None else Fix.model_validate(dev["last"])
            known = self._devices.get(device_id)
            candidate = _Device(last, int(dev.get("rejects", 0)))
            if known is None or candidate.last_t > known.last_t:
                self._devices[device_id] = candidate

    def _plausible(self, fix: Fix, t: float, out: list[AlertTransition]) -> bool:
        dev = self._devices.get(fix.device_id)
        if dev is None:
            self._devices[fix.device_id] = _Device(fix)
            return True
        last = dev.last
        if last is None or t < dev.last_t:
            return True  # late fixes are not speed-checked against later ones
        dt = max(t - dev.last_t, 1.0)
        gap = _haversine_m(last.lat, last.lon, fix.lat, fix.lon) - last.acc - fix.acc
        if gap <= MAX_SPEED_MPS * dt or dev.rejects >= IMPLAUSIBLE_LIMIT:
            dev.last, dev.last_t, dev.rejects = fix, t, 0
            return True
        dev.rejects += 1
        speed = gap / dt
        rule = next(
            (
                r.rule
                for r in self._by_device.get(fix.device_id, ())
                if r.rule.device_id == fix.device_id
            ),
            None,
        )
        out.append(
            AlertTransition(
                key=f"fix.implausible:{fix.device_id}:{fix.event_id}",
                action="raise",
                type="fix.implausible",
                severity=Severity.info,
                subject_id=rule.subject_id if rule is not None else "",
                device_id=fix.device_id,
                rule_id=None,
                at=fix.captured_at,
                retrospective=fix.replayed,
                evidence=[last, fix],
                detail=f"implies {speed:.0f} m/s from the previous fix; not used for zones",
            )
        )
        return False

    def _emit(
        self,
        rt: _Runtime,
        action: str,
        type_: str,
        key: str,
        at: float,
        evidence: Sequence[Fix],
        detail: str,
        retro: bool,
    ) -> AlertTransition:
        rule = rt.rule
        return AlertTransition(
            key=key,
            action="raise" if action == "raise" else "clear",
            type=type_,
            severity=rule.severity,
            subject_id=rule.subject_id,
            device_id=rule.device_id,
            rule_id=rule.id,
            at=_dt(at),
            retrospective=retro,
            evidence=list(evidence),
            detail=detail,
        )

    def _end(self, rt: _Runtime) -> list[AlertTransition]:
        """The order ended: stop evaluating, clear what is open."""
        rt.ended = True
        self._dirty.add(rt.rule.id)
        active = rt.fx.active
        if active is None:
            return []
        rt.fx = rt.fx.replace(active=None)
        rt.remember(active[0], "clear")
        return [self._emit(rt, "clear", active[1], active[0], rt.t_until, (), "order ended", False)]

    # --- internals: zone and proximity state machines -------------------------------

    def _observe(
        self, rt: _Runtime, fx: _Fx, fix: Fix
    ) -> tuple[int, bool | None, Fix | None, Fix | None]:
        """(member, violation observation, own, other) for one fix."""
        rule = rt.rule
        params = rule.params
        if isinstance(params, ProximityParams):
            own, other = fx.own, fx.other
            if fix.device_id == rule.device_id:
                own = fix
            else:
                other = fix
            if own is None or other is None:
                return fx.member, None, own, other
            apart = abs((own.captured_at - other.captured_at).total_seconds())
            if apart > PROXIMITY_MAX_AGE_S:
                return fx.member, None, own, other
            d = _haversine_m(own.lat, own.lon, other.lat, other.lon) - own.acc - other.acc
            limit = params.min_distance_m
            if d < limit:
                return fx.member, True, own, other
            if fx.active is None or d >= limit + rule.exit_margin_m:
                return fx.member, False, own, other
            return fx.member, None, own, other
        margin = rule.exit_margin_m if fx.member == 1 else rule.enter_margin_m
        cls = 0
        unsure = False
        for pz in rt.zones:
            c = pz.classify(fix.lat, fix.lon, fix.acc, margin)
            if c == "inside":
                cls = 1
                break
            if c == "uncertain":
                unsure = True
        else:
            if unsure:
                cls = -1
        if cls == -1:
            return fx.member, None, None, None
        inside = cls == 1
        violation = inside if rt.kind is RuleKind.exclusion else not inside
        return (1 if inside else 0), violation, None, None

    def _step(
        self, rt: _Runtime, fx: _Fx, fix: Fix, t: float, retro: bool, alerts: bool = True
    ) -> tuple[_Fx, list[AlertTransition]]:
        """One fix through an inclusion / exclusion / proximity rule (pure); with
        ``alerts`` false only the membership and the observation window move (curfew)."""
        rule = rt.rule
        member, obs, own, other = self._observe(rt, fx, fix)
        window = (*fx.window, (obs, fix))[-rule.confirm_m :]
        votes = [v for v, _ in window]
        n_true = votes.count(True)
        n_false = votes.count(False)
        pending, ok_since, active = fx.pending, fx.ok_since, fx.active
        if obs is True:
            ok_since = None
            if pending is None:
                pending = t
        elif obs is False and ok_since is None:
            ok_since = t
        if n_false >= rule.confirm_n:
            pending = None
        out: list[AlertTransition] = []
        extra = [other] if other is not None and other is not fix else []
        if not alerts:
            pass
        elif active is None:
            if pending is not None and n_true >= rule.confirm_n and t - pending >= rule.dwell_s:
                key = _key(rule.id, rt.alert_type, pending)
                evidence = [f for v, f in window if v is True] + extra
                out.append(
                    self._emit(
                        rt,
                        "raise",
                        rt.alert_type,
                        key,
                        pending,
                        evidence,
                        _explain(rt, True),
                        retro or all(f.replayed for f in evidence),
                    )
                )
                active = (key, rt.alert_type, pending)
        elif n_false >= rule.confirm_n:
            evidence = [f for v, f in window if v is False] + extra
            at = ok_since if ok_since is not None else t
            out.append(
                self._emit(
                    rt,
                    "clear",
                    active[1],
                    active[0],
                    at,
                    evidence,
                    _explain(rt, False),
                    retro or all(f.replayed for f in evidence),
                )
            )
            active = None
        new = _Fx(
            member,
            window,
            pending,
            ok_since,
            active,
            own if own is not None else fx.own,
            other if other is not None else fx.other,
        )
        return new, out

    def _append(self, rt: _Runtime, fix: Fix, t: float) -> list[AlertTransition]:
        if rt.hist_t and t == rt.hist_t[-1] and _seen(rt, fix, t):
            return []
        fx, out = self._step(rt, rt.fx, fix, t, retro=False)
        rt.fx = fx
        rt.hist.append((fix, fx))
        rt.hist_t.append(t)
        if len(rt.hist) > HISTORY_SIZE:
            rt.base = rt.hist[0][1]
            rt.base_t = rt.hist_t[0]
            del rt.hist[0]
            del rt.hist_t[0]
        for tr in out:
            rt.remember(tr.key, tr.action)
        return out

    def _backfill(self, rt: _Runtime, fix: Fix, t: float) -> list[AlertTransition]:
        """A fix older than the rule's latest: insert it and re-evaluate from there."""
        if rt.base_t is not None and t <= rt.base_t:
            log.info(
                "rule %s: fix %s older than the kept history; ignored", rt.rule.id, fix.event_id
            )
            return []
        if _seen(rt, fix, t):
            return []
        i = bisect_right(rt.hist_t, t)
        fx = rt.hist[i - 1][1] if i > 0 else (rt.base or _INITIAL)
        before = rt.fx.active
        rt.hist.insert(i, (fix, fx))
        rt.hist_t.insert(i, t)
        produced: list[AlertTransition] = []
        for k in range(i, len(rt.hist)):
            f = rt.hist[k][0]
            fx, trs = self._step(rt, fx, f, rt.hist_t[k], retro=True)
            rt.hist[k] = (f, fx)
            produced.extend(trs)
        rt.fx = fx
        out = []
        for tr in produced:
            done = rt.emitted.get(tr.key)
            if done is None or (tr.action == "clear" and done == "raise"):
                out.append(tr)
                rt.remember(tr.key, tr.action)
        if (
            before is not None
            and (fx.active is None or fx.active[0] != before[0])
            and rt.emitted.get(before[0]) == "raise"
        ):
            # The open alert is no longer what the completed timeline shows.
            out.append(
                self._emit(
                    rt,
                    "clear",
                    before[1],
                    before[0],
                    t,
                    [fix],
                    "superseded by backfilled data",
                    True,
                )
            )
            rt.remember(before[0], "clear")
        if len(rt.hist) > HISTORY_SIZE:
            rt.base = rt.hist[0][1]
            rt.base_t = rt.hist_t[0]
            del rt.hist[0]
            del rt.hist_t[0]
        return out

    def _dwell_tick(self, rt: _Runtime, t: float) -> list[AlertTransition]:
        fx = rt.fx
        rule = rt.rule
        if fx.active is not None or fx.pending is None or rt.missing:
            return []
        evidence = [f for v, f in fx.window if v is True]
        if len(evidence) < rule.confirm_n or t - fx.pending < rule.dwell_s:
            return []
        key = _key(rule.id, rt.alert_type, fx.pending)
        if key in rt.emitted:
            return []
        if fx.other is not None and rt.kind is RuleKind.proximity:
            evidence.append(fx.other)
        tr = self._emit(
            rt,
            "raise",
            rt.alert_type,
            key,
            fx.pending,
            evidence,
            _explain(rt, True),
            all(f.replayed for f in evidence),
        )
        rt.fx = fx.replace(active=(key, rt.alert_type, fx.pending))
        rt.remember(key, "raise")
        self._dirty.add(rt.rule.id)
        return [tr]

    # --- internals: curfew ---------------------------------------------------------

    def _curfew_heard(self, rt: _Runtime, fix: Fix, t: float) -> list[AlertTransition]:
        """A fix that cannot be placed still proves the device is not silent."""
        active = rt.fx.active
        if active is None or active[1] != "curfew.silent":
            return []
        rt.fx = rt.fx.replace(active=None)
        rt.remember(active[0], "clear")
        return [
            self._emit(rt, "clear", active[1], active[0], t, [fix], "device reported", fix.replayed)
        ]

    def _curfew_fix(
        self, rt: _Runtime, fix: Fix, t: float, previous: float | None
    ) -> list[AlertTransition]:
        rule = rt.rule
        params = rule.params
        assert rt.sched is not None and isinstance(params, CurfewParams)
        start = rt.fx
        if previous is not None and t - previous > max(float(params.grace_s), _CURFEW_SILENT_MIN_S):
            # After a silence, old observations say nothing about where the subject is.
            start = start.replace(window=(), pending=None, ok_since=None)
        fx, _ = self._step(rt, start, fix, t, retro=False, alerts=False)
        out: list[AlertTransition] = []
        votes = [v for v, _ in fx.window]
        n_true = votes.count(True)
        n_false = votes.count(False)
        active = fx.active
        if active is not None:
            if rt.clock_until is not None and t >= rt.clock_until:
                out.append(
                    self._emit(
                        rt,
                        "clear",
                        active[1],
                        active[0],
                        rt.clock_until,
                        [fix],
                        "curfew period ended",
                        fix.replayed,
                    )
                )
                active = None
            elif active[1] == "curfew.silent":
                out.append(
                    self._emit(
                        rt, "clear", active[1], active[0], t, [fix], "device reported", fix.replayed
                    )
                )
                active = None
            elif n_false >= rule.confirm_n:
                at = fx.ok_since if fx.ok_since is not None else t
                evidence = [f for v, f in fx.window if v is False]
                out.append(
                    self._emit(
                        rt,
                        "clear",
                        active[1],
                        active[0],
                        at,
                        evidence,
                        "back inside during the curfew",
                        fix.replayed,
                    )
                )
                active = None
        period = rt.sched.period_at(t)
        if active is None and period is not None:
            deadline = rt.sched.deadline(period)
            if (
                t >= deadline
                and fx.pending is not None
                and n_true >= rule.confirm_n
                and t - fx.pending >= rule.dwell_s
            ):
                at = max(fx.pending, deadline)
                key = _key(rule.id, "curfew.absent", at)
                if key not in rt.emitted:
                    evidence = [f for v, f in fx.window if v is True]
                    out.append(
                        self._emit(
                            rt,
                            "raise",
                            "curfew.absent",
                            key,
                            at,
                            evidence,
                            "outside the curfew zone during the curfew",
                            all(f.replayed for f in evidence),
                        )
                    )
                    active = (key, "curfew.absent", at)
                    rt.clock_until = period[1]
        rt.fx = fx if active is fx.active else fx.replace(active=active)
        for tr in out:
            rt.remember(tr.key, tr.action)
        return out

    def _curfew_tick(self, rt: _Runtime, t: float) -> list[AlertTransition]:
        rule = rt.rule
        params = rule.params
        assert rt.sched is not None and isinstance(params, CurfewParams)
        fx = rt.fx
        out: list[AlertTransition] = []
        active = fx.active
        if active is not None and rt.clock_until is not None and t >= rt.clock_until:
            out.append(
                self._emit(
                    rt,
                    "clear",
                    active[1],
                    active[0],
                    rt.clock_until,
                    [],
                    "curfew period ended",
                    False,
                )
            )
            active = None
        period = rt.sched.period_at(t)
        if active is None and period is not None and t >= rt.sched.deadline(period):
            deadline = rt.sched.deadline(period)
            quiet_s = max(float(params.grace_s), _CURFEW_SILENT_MIN_S)
            silent = rt.last_fix_t is None or t - rt.last_fix_t > quiet_s
            n_true = sum(1 for v, _ in fx.window if v is True)
            type_ = None
            at = deadline
            if silent and fx.member != 1:
                type_, detail = "curfew.silent", "not home by the curfew and the device is silent"
            elif not silent and fx.pending is not None and n_true >= rule.confirm_n:
                type_, detail = "curfew.absent", "outside the curfew zone during the curfew"
                at = max(deadline, fx.pending)
            if type_ is not None:
                key = _key(rule.id, type_, at)
                if key not in rt.emitted:
                    evidence = [f for v, f in fx.window if v is not None][-1:]
                    out.append(self._emit(rt, "raise", type_, key, at, evidence, detail, False))
                    active = (key, type_, at)
                    rt.clock_until = period[1]
        if out:
            rt.fx = fx.replace(active=active)
            self._dirty.add(rt.rule.id)
            for tr in out:
                rt.remember(tr.key, tr.action)
        return out

    # --- internals: silence --------------------------------------------------------

    def _silence_fix(
        self, rt: _Runtime, fix: Fix, t: float, previous: float | None
    ) -> list[AlertTransition]:
        active = rt.fx.active
        if active is None or (previous is not None and t <= previous):
            return []
        rt.fx = rt.fx.replace(active=None)
        rt.remember(active[0], "clear")
        return [
            self._emit(rt, "clear", "silence", active[0], t, [fix], "device reported", fix.replayed)
        ]

    def _silence_tick(self, rt: _Runtime, t: float) -> list[AlertTransition]:
        assert isinstance(rt.rule.params, SilenceParams)
        if rt.fx.active is not None:
            return []
        ref = rt.last_fix_t if rt.last_fix_t is not None else rt.t_from
        limit = rt.rule.params.max_silence_s
        if t - ref <= limit:
            return []
        at = ref + limit
        key = _key(rt.rule.id, "silence", at)
        if key in rt.emitted:
            return []
        rt.fx = rt.fx.replace(active=(key, "silence", at))
        rt.remember(key, "raise")
        self._dirty.add(rt.rule.id)
        detail = f"no fix for more than {limit} s"
        return [self._emit(rt, "raise", "silence", key, at, [], detail, False)]


# --- helpers ---------------------------------------------------------------------------


def _seen(rt: _Runtime, fix: Fix, t: float) -> bool:
    i = bisect_right(rt.hist_t, t) - 1
    while i >= 0 and rt.hist_t[i] == t:
        if rt.hist[i][0].event_id == fix.event_id:
            return True
        i -= 1
    return False


def _explain(rt: _Runtime, raised: bool) -> str:
    kind = rt.kind
    if kind is RuleKind.inclusion:
        return "left the permitted area" if raised else "back inside the permitted area"
    if kind is RuleKind.exclusion:
        return "entered an exclusion zone" if raised else "left the exclusion zone"
    return "closer than allowed to the protected device" if raised else "distance restored"


def _haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def _key(rule_id: str, type_: str, since: float) -> str:
    return f"{rule_id}:{type_}:{_iso(math.floor(since / 60.0) * 60.0)}"


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _iso(t: float) -> str:
    return _dt(t).isoformat()


def _iso_or_none(t: float | None) -> str | None:
    return None if t is None else _iso(t)


def _ts(s: str) -> float:
    return datetime.fromisoformat(s).timestamp()


def _ts_or_none(s: Any) -> float | None:
    return None if s is None else _ts(str(s))


@lru_cache(maxsize=65_536)
def _fix_json(fix: Fix) -> dict[str, Any]:
    """A fix as JSON, memoised: a fix stays in a rule's history for several saves of
    its state, and serialising it again each time was a third of the save's cost.
    Callers must not change the dict they get (fixes are frozen, so is this)."""
    return fix.model_dump(mode="json")
