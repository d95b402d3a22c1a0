"""Supervision benchmark: the engine against a naive geofence check, and ingest end to end.

One run, same seeded workload (:func:`workload`):

* ``engine``  :class:`hub.supervision.engine.SupervisionEngine.on_fix` over every fix
              in capture-time order, with a clock tick every 60 s of simulated time
              (timed separately). Each subject has five rules: inclusion (a 64-vertex
              "county" around home), exclusion (a victim's home, circle), curfew
              (home, 21:00-06:00 Europe/Amsterdam), proximity (300 m from another
              subject's device) and silence (15 min).
* ``naive``   the anchor the issue names: for each fix, shapely ``contains`` of the
              point on *every* zone of the system, unprepared, no state. It is slow,
              so it runs on the first fixes until :data:`NAIVE_BUDGET_S` is spent.
* ``naive_subject`` the same without the search over everyone's zones: ``contains``
              on only the fix's own subject's three zones, unprepared, no state. This
              is the floor of any per-subject geofence check; the engine's extra cost
              over it is what hysteresis, confirmation, accuracy discs, event time
              and state cost.
* ``e2e`` (``--e2e``) a private Mosquitto, ``lantern hub serve --http`` on a fresh
              SQLite database, a feed WebSocket client, and simulated devices
              publishing positions at ``--rate`` fixes/s for ``--e2e-seconds``; some
              subjects walk into exclusion zones. ``e2e_p99_ms`` is the 99th
              percentile of publish -> alert on the feed (the alert's newest
              evidence fix); publish -> position on the feed is reported too.

Workload: subjects on a grid over the Netherlands, each a
:class:`devices.simulation.tracks.TrackBuilder` (fix every 15-60 s, accuracy 4-15 m,
Gaussian GNSS noise of half the accuracy) that stays home, strolls and comes back;
5 % walk into their exclusion zone, 2 % out of their county, 10 % are not home by
the curfew. Simulated window: 19:30-20:30 UTC on a Monday (the curfew starts at
20:00 UTC in March).

Run ``python -m benchmarks.bench_supervision --size S`` (1k subjects) or ``M`` (10k).
Writes ``benchmarks/results/supervision_<size>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import logging
import math
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import Point
from shapely.geometry.base import BaseGeometry

from benchmarks.machine import base_machine_info, dist_version
from benchmarks.services import free_port, mosquitto, wait
from devices.simulation.geo import LocalFrame
from devices.simulation.tracks import TrackBuilder, TrackPoint, circle_zone
from hub.supervision.engine import SupervisionEngine
from hub.supervision.model import AlertTransition, Fix, Rule, Zone
from hub.supervision.zones import prepare

logger = logging.getLogger("bench_supervision")

SIZES = {"S": 1_000, "M": 10_000}
RULES_PER_SUBJECT = 5
T_START = datetime(2025, 3, 3, 19, 30, tzinfo=UTC)
WINDOW_S = 3600.0
TICK_S = 60.0
NAIVE_BUDGET_S = 15.0
"""Wall time the every-zone naive anchor may spend (it runs on the first fixes)."""
RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]


# -- workload ---------------------------------------------------------------------------


@dataclass
class Workload:
    zones: dict[str, Zone]
    rules: list[Rule]
    fixes: list[Fix]
    subject_zones: dict[str, list[str]]
    """Device id -> ids of its subject's zones (for the per-subject anchor)."""
    plans: Counter[str]


def _county(frame: LocalFrame, zone_id: str, rng: random.Random) -> dict[str, Any]:
    """An irregular 64-vertex polygon of 3.5-4.5 km radius around the frame's origin."""
    ring = []
    for k in range(64):
        angle = 2 * math.pi * k / 64
        r = rng.uniform(3500.0, 4500.0)
        lat, lon = frame.to_latlon(r * math.cos(angle), r * math.sin(angle))
        ring.append([lon, lat])
    ring.append(ring[0])
    return {
        "id": zone_id,
        "name": zone_id,
        "kind": "county",
        "geometry": {"type": "Polygon", "coordinates": [ring]},
    }


def device_name(i: int) -> str:
    return f"bench-{i:05d}"


def workload(subjects: int, seed: int = 1) -> Workload:
    """Zones, 5 rules per subject and their fixes (capture-time order); deterministic."""
    rng = random.Random(seed)
    zones: dict[str, Zone] = {}
    rules: list[Rule] = []
    tracks: list[list[TrackPoint]] = []
    subject_zones: dict[str, list[str]] = {}
    plans: Counter[str] = Counter()
    valid_from = (T_START - timedelta(days=30)).isoformat()
    end = T_START + timedelta(seconds=WINDOW_S)
    side = max(1, math.ceil(math.sqrt(subjects)))
    for i in range(subjects):
        device = device_name(i)
        # A grid of homes 2-3 km apart around the Netherlands.
        lat0 = 51.5 + (i // side) * 0.02 + rng.uniform(-0.004, 0.004)
        lon0 = 4.0 + (i % side) * 0.03 + rng.uniform(-0.006, 0.006)
        frame = LocalFrame(lat0, lon0)
        home = circle_zone(frame, f"home-{i}", "residence", 0, 0, 60)
        victim = circle_zone(frame, f"victim-{i}", "victim", 1500, 0, 150)
        county = _county(frame, f"county-{i}", rng)
        for z in (home, victim, county):
            zones[z["id"]] = Zone.model_validate(z)
        subject_zones[device] = [home["id"], victim["id"], county["id"]]
        base: dict[str, Any] = {
            "subject_id": str(i),
            "device_id": device,
            "valid_from": valid_from,
            "severity": "serious",
        }
        params: list[dict[str, Any]] = [
            {"kind": "inclusion", "zone_ids": [county["id"]]},
            {"kind": "exclusion", "zone_ids": [victim["id"]]},
            {
                "kind": "curfew",
                "zone_id": home["id"],
                "timezone": "Europe/Amsterdam",
                "windows": [{"days": [0, 1, 2, 3, 4, 5, 6], "start": "21:00", "end": "06:00"}],
                "grace_s": 300,
            },
            {
                "kind": "proximity",
                "other_device_id": device_name((i + 1) % subjects),
                "min_distance_m": 300,
            },
            {"kind": "silence", "max_silence_s": 900},
        ]
        for p in params:
            rules.append(Rule.model_validate({**base, "id": f"r{i}-{p['kind']}", "params": p}))
        acc = rng.uniform(4.0, 15.0)
        b = TrackBuilder(
            frame,
            device,
            t=T_START + timedelta(seconds=rng.uniform(0, 30)),
            seed=seed * 1_000_003 + i,
            acc_m=acc,
            jitter_m=acc / 2,
            interval_s=rng.uniform(15.0, 60.0),
        )
        roll = rng.random()
        if roll < 0.05:
            plans["enters_exclusion"] += 1
            b.stay(rng.uniform(0, 900)).walk_to(1500, 0).stay(WINDOW_S)
        elif roll < 0.07:
            plans["leaves_county"] += 1
            b.stay(rng.uniform(0, 300)).walk_to(5500, 0, speed_mps=8.0).stay(WINDOW_S)
        elif roll < 0.17:
            plans["away_at_curfew"] += 1
            angle = rng.uniform(0, 2 * math.pi)
            b.walk_to(800 * math.cos(angle), 800 * math.sin(angle)).stay(WINDOW_S)
        else:
            plans["strolls_home"] += 1
            angle = rng.uniform(0, 2 * math.pi)
            dist = rng.uniform(200, 700)
            b.stay(rng.uniform(0, 600))
            b.walk_to(dist * math.cos(angle), dist * math.sin(angle))
            b.walk_to(0, 0).stay(WINDOW_S)
        tracks.append([p for p in b.points if p.t < end])
    merged = heapq.merge(*tracks, key=lambda p: (p.t, p.device_id))
    fixes = [
        Fix(
            device_id=p.device_id,
            event_id=p.event_id,
            captured_at=p.t,
            lat=p.lat,
            lon=p.lon,
            acc=p.acc,
        )
        for p in merged
    ]
    return Workload(zones, rules, fixes, subject_zones, plans)


# -- engine and anchors -----------------------------------------------------------------


def run_engine(w: Workload) -> dict[str, Any]:
    """All fixes through the engine with ticks every TICK_S of simulated time."""
    t0 = time.perf_counter()
    engine = SupervisionEngine(w.zones, w.rules)
    build_s = time.perf_counter() - t0
    transitions: list[AlertTransition] = []
    fix_s = 0.0
    tick_s = 0.0
    ticks = 0
    next_tick = T_START + timedelta(seconds=TICK_S)
    fixes = w.fixes
    i = 0
    n = len(fixes)
    end = T_START + timedelta(seconds=WINDOW_S)
    while next_tick <= end or i < n:
        j = i
        while j < n and (next_tick > end or fixes[j].captured_at <= next_tick):
            j += 1
        on_fix = engine.on_fix
        t = time.perf_counter()
        for k in range(i, j):
            transitions.extend(on_fix(fixes[k]))
        fix_s += time.perf_counter() - t
        i = j
        if next_tick <= end:
            t = time.perf_counter()
            transitions.extend(engine.tick(next_tick))
            tick_s += time.perf_counter() - t
            ticks += 1
            next_tick += timedelta(seconds=TICK_S)
    t = time.perf_counter()
    states = engine.dirty_states()
    states_s = time.perf_counter() - t
    raised = Counter(tr.type for tr in transitions if tr.action == "raise")
    cleared = Counter(tr.type for tr in transitions if tr.action == "clear")
    return {
        "fixes": n,
        "build_s": round(build_s, 3),
        "fix_s": round(fix_s, 3),
        "engine_fixes_per_s": round(n / fix_s, 1),
        "ticks": ticks,
        "tick_ms_mean": round(1000 * tick_s / max(1, ticks), 3),
        "fixes_per_s_with_ticks": round(n / (fix_s + tick_s), 1),
        "dirty_states": len(states),
        "dirty_states_s": round(states_s, 3),
        "raised": dict(sorted(raised.items())),
        "cleared": dict(sorted(cleared.items())),
    }


def _naive_geometries(w: Workload) -> dict[str, BaseGeometry]:
    """Each zone as a plain WGS84 shapely geometry (circles drawn), not prepared."""
    out = {}
    for zone_id, zone in w.zones.items():
        geom = prepare(zone).area_wgs84()
        assert not shapely.is_prepared(geom)
        out[zone_id] = geom
    return out


def run_naive(w: Workload, geoms: dict[str, BaseGeometry]) -> dict[str, Any]:
    """shapely ``contains`` on every zone for every fix, until NAIVE_BUDGET_S."""
    every = list(geoms.values())
    done = 0
    inside = 0
    t0 = time.perf_counter()
    for fix in w.fixes:
        pt = Point(fix.lon, fix.lat)
        for geom in every:
            if geom.contains(pt):
                inside += 1
        done += 1
        if time.perf_counter() - t0 >= NAIVE_BUDGET_S:
            break
    elapsed = time.perf_counter() - t0
    return {
        "fixes": done,
        "zones_per_fix": len(every),
        "seconds": round(elapsed, 3),
        "naive_fixes_per_s": round(done / elapsed, 1),
        "containments": inside,
    }


def run_naive_subject(w: Workload, geoms: dict[str, BaseGeometry]) -> dict[str, Any]:
    """shapely ``contains`` on the fix's own subject's zones, every fix."""
    by_device = {d: [geoms[z] for z in ids] for d, ids in w.subject_zones.items()}
    inside = 0
    t0 = time.perf_counter()
    for fix in w.fixes:
        pt = Point(fix.lon, fix.lat)
        for geom in by_device[fix.device_id]:
            if geom.contains(pt):
                inside += 1
    elapsed = time.perf_counter() - t0
    return {
        "fixes": len(w.fixes),
        "seconds": round(elapsed, 3),
        "fixes_per_s": round(len(w.fixes) / elapsed, 1),
        "containments": inside,
    }


# -- end to end -------------------------------------------------------------------------


def seed_workload(db_url: str, subjects: int, seed: int) -> tuple[Workload, str]:
    """Sites, devices, persons, zones and rules of a live workload in the hub's
    database, and an admin user; returns the workload (rules valid from now) and the
    user's password."""
    from sqlalchemy.orm import Session

    from hub.auth import Role, create_user
    from hub.db.engine import make_engine, write_session
    from hub.db.models import Device, Person, Site, SupervisionRule, SupervisionZone

    w = workload(subjects, seed)
    password = secrets.token_urlsafe(18)
    engine = make_engine(db_url)
    try:
        with write_session(engine) as session:
            session.add(Site(site_id="bench", name="Bench"))
            session.flush()
            persons = [Person(category="supervised", display_name=f"S{i}") for i in range(subjects)]
            session.add_all(persons)
            session.add_all(
                Device(device_id=device_name(i), site_id="bench", model="lantern-ankle-a1")
                for i in range(subjects)
            )
            session.add_all(
                SupervisionZone(
                    id=z.id,
                    name=z.name,
                    kind=str(z.kind),
                    geometry=z.geometry,
                    radius_m=z.radius_m,
                    buffer_m=z.buffer_m,
                )
                for z in w.zones.values()
            )
            session.flush()
            ids = [p.id for p in persons]
        with Session(engine) as session, session.begin():
            for rule in w.rules:
                session.add(
                    SupervisionRule(
                        id=rule.id,
                        person_id=ids[int(rule.subject_id)],
                        device_id=rule.device_id,
                        kind=str(rule.kind),
                        params=rule.params.model_dump(mode="json"),
                        severity=str(rule.severity),
                        valid_from=datetime.now(UTC) - timedelta(days=1),
                        enter_margin_m=rule.enter_margin_m,
                        exit_margin_m=rule.exit_margin_m,
                        confirm_n=rule.confirm_n,
                        confirm_m=rule.confirm_m,
                        dwell_s=0,
                        enabled=rule.kind in ("exclusion", "inclusion", "proximity"),
                    )
                )
        create_user(
            engine,
            username="bench",
            role=Role.admin,
            password=password,
            actor="bench",
            actor_role="cli",
        )
    finally:
        engine.dispose()
    return w, password


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def run_e2e(subjects: int, rate: float, seconds: float, seed: int) -> dict[str, Any]:
    """MQTT -> stored -> evaluated -> alert on the feed, at ``rate`` fixes/s."""
    import httpx
    from websockets.sync.client import connect

    from devices.protocol import (
        PositionBody,
        PositionEvent,
        encode,
        evt_topic,
        new_boot_id,
        new_event_id,
    )
    from edge.comms.mqtt import MqttPeer, MqttSettings

    result: dict[str, Any] = {"rate_target": rate, "seconds": seconds, "subjects": subjects}
    with (
        tempfile.TemporaryDirectory(prefix="bench-sup-") as tmp,
        mosquitto(Path(tmp) / "broker") as mq,
    ):
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        db_url = f"sqlite:///{data_dir / 'lantern.db'}"
        from hub.db.engine import make_engine
        from hub.db.migrate import upgrade

        eng = make_engine(db_url)
        upgrade(eng)
        eng.dispose()
        w, password = seed_workload(db_url, subjects, seed)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("LANTERN_")}
        env["LANTERN_JWT_SECRET"] = "bench-" + secrets.token_urlsafe(48)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        log_path = Path(tmp) / "hub.log"
        log = log_path.open("w+b")
        hub = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "devices.cli",
                "hub",
                "serve",
                "--data-dir",
                str(data_dir),
                "--http",
                f"127.0.0.1:{port}",
                "--mqtt",
                f"mqtt://127.0.0.1:{mq}",
                "--client-id",
                f"bench-hub-{secrets.token_hex(3)}",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=base, timeout=5.0) as http:

                def healthy() -> bool:
                    if hub.poll() is not None:
                        raise RuntimeError(f"hub exited {hub.returncode}")
                    try:
                        return http.get("/api/v1/health").status_code == 200
                    except httpx.TransportError:
                        return False

                if not wait(healthy, 30.0):
                    raise RuntimeError("hub did not become healthy")
                token = http.post(
                    "/api/v1/auth/token", data={"username": "bench", "password": password}
                ).json()["access_token"]
            published: dict[str, float] = {}
            position_lat: list[float] = []
            alert_lat: list[float] = []
            alert_types: Counter[str] = Counter()
            stop = threading.Event()
            stack = contextlib.ExitStack()
            ws = stack.enter_context(
                connect(f"ws://127.0.0.1:{port}/api/v1/feed?access_token={token}")
            )
            snapshot = json.loads(ws.recv(timeout=10))
            assert snapshot.get("type") == "snapshot", snapshot

            def reader() -> None:
                while not stop.is_set():
                    try:
                        raw = ws.recv(timeout=0.5)
                    except TimeoutError:
                        continue
                    except Exception:
                        return
                    now = time.monotonic()
                    msg = json.loads(raw)
                    data = msg.get("data") or {}
                    if msg.get("type") == "position":
                        sent = published.get(str(data.get("event_id")))
                        if sent is not None:
                            position_lat.append(now - sent)
                    elif "alert" in str(msg.get("type")):
                        body = data or msg
                        alert_types[str(body.get("type"))] += 1
                        sends = [
                            published[e["event_id"]]
                            for e in body.get("evidence", [])
                            if isinstance(e, dict) and e.get("event_id") in published
                        ]
                        if sends and body.get("cleared_at") is None:
                            alert_lat.append(now - max(sends))

            thread = threading.Thread(target=reader, daemon=True)
            thread.start()
            # Devices replay their simulated tracks in real time order, compressed to
            # the target rate: capture time is "now" so rules and silence see live data.
            peer = MqttPeer(
                f"bench-devs-{secrets.token_hex(3)}",
                MqttSettings(host="127.0.0.1", port=mq, max_inflight=10_000),
                subscriptions=[],
            )
            peer.start()
            boots = {d: new_boot_id() for d in w.subject_zones}
            seqs: Counter[str] = Counter()
            total = int(rate * seconds)
            fixes = w.fixes[:total]
            t0 = time.monotonic()
            for k, fix in enumerate(fixes):
                due = t0 + k / rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                now_dt = datetime.now(UTC)
                event = PositionEvent(
                    device_id=fix.device_id,
                    event_id=new_event_id(),
                    boot_id=boots[fix.device_id],
                    seq=seqs[fix.device_id],
                    captured_at=now_dt,
                    sent_at=now_dt,
                    body=PositionBody(lat=fix.lat, lon=fix.lon, acc=fix.acc, src="gnss"),
                )
                seqs[fix.device_id] += 1
                published[event.event_id] = time.monotonic()
                peer.publish(evt_topic(fix.device_id, "position"), encode(event), qos=1)
            sent_s = time.monotonic() - t0
            wait(lambda: len(position_lat) >= len(fixes), 30.0)
            time.sleep(2.0)
            stop.set()
            thread.join(5)
            stack.close()
            peer.close(5)
            result.update(
                {
                    "published": len(fixes),
                    "rate_achieved": round(len(fixes) / sent_s, 1),
                    "positions_on_feed": len(position_lat),
                    "position_p50_ms": _ms(_percentile(position_lat, 0.5)),
                    "position_p99_ms": _ms(_percentile(position_lat, 0.99)),
                    "alerts_on_feed": len(alert_lat),
                    "alert_types": dict(alert_types),
                    "e2e_p50_ms": _ms(_percentile(alert_lat, 0.5)),
                    "e2e_p99_ms": _ms(_percentile(alert_lat, 0.99)),
                }
            )
            if not alert_lat:
                result["note"] = (
                    "no alert reached the feed: the hub does not (yet) evaluate rules "
                    "on ingest or publish alerts on the feed"
                )
        finally:
            hub.send_signal(signal.SIGTERM)
            try:
                hub.wait(timeout=15)
            except subprocess.TimeoutExpired:
                hub.kill()
                hub.wait(timeout=10)
            log.seek(0)
            result["hub_log_tail"] = log.read().decode(errors="replace")[-1500:]
            log.close()
    return result


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(1000 * seconds, 1)


# -- report -----------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# Supervision benchmark, size {report['config']['size']}",
        "",
        f"Run {report['started_at']} on {report['machine']['cpu']} "
        f"({report['machine']['logical_cpus']} CPUs), shapely {report['machine']['shapely']}, "
        f"pyproj {report['machine']['pyproj']}.",
        "",
        "| size | subjects | rules | fixes | engine fixes/s | naive fixes/s (every zone) "
        "| ratio | naive fixes/s (own zones) | ratio | e2e p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size, r in report["sizes"].items():
        lines.append(
            f"| {size} | {r['subjects']} | {r['rules']} | {r['fixes']} "
            f"| {r['engine_fixes_per_s']:,.0f} | {r['naive_fixes_per_s']:,.1f} "
            f"| {r['ratio_engine_to_naive']:,.0f}x | {r['naive_subject_fixes_per_s']:,.0f} "
            f"| {r['ratio_engine_to_naive_subject']:.2f}x | {r['e2e_p99_ms']} |"
        )
    return "\n".join(lines) + "\n"


def run_size(size: str, subjects: int, args: argparse.Namespace) -> dict[str, Any]:
    t = time.perf_counter()
    w = workload(subjects, args.seed)
    gen_s = time.perf_counter() - t
    logger.info(
        "size %s: %d subjects, %d rules, %d zones, %d fixes (generated in %.1f s)",
        size,
        subjects,
        len(w.rules),
        len(w.zones),
        len(w.fixes),
        gen_s,
    )
    engine = run_engine(w)
    logger.info("engine: %.0f fixes/s (%s raised)", engine["engine_fixes_per_s"], engine["raised"])
    geoms = _naive_geometries(w)
    naive = run_naive(w, geoms)
    logger.info("naive (every zone): %.1f fixes/s", naive["naive_fixes_per_s"])
    naive_subject = run_naive_subject(w, geoms)
    logger.info("naive (own zones): %.0f fixes/s", naive_subject["fixes_per_s"])
    e2e: dict[str, Any] | None = None
    if args.e2e:
        try:
            e2e = run_e2e(min(subjects, args.e2e_subjects), args.rate, args.e2e_seconds, args.seed)
        except Exception as exc:  # report, do not lose the engine figures
            logger.exception("end-to-end part failed")
            e2e = {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "subjects": subjects,
        "rules": len(w.rules),
        "zones": len(w.zones),
        "fixes": len(w.fixes),
        "workload_plans": dict(w.plans),
        "generate_s": round(gen_s, 2),
        "engine_fixes_per_s": engine["engine_fixes_per_s"],
        "naive_fixes_per_s": naive["naive_fixes_per_s"],
        "naive_subject_fixes_per_s": naive_subject["fixes_per_s"],
        "ratio_engine_to_naive": round(
            engine["engine_fixes_per_s"] / naive["naive_fixes_per_s"], 1
        ),
        "ratio_engine_to_naive_subject": round(
            engine["engine_fixes_per_s"] / naive_subject["fixes_per_s"], 3
        ),
        "e2e_p99_ms": None if e2e is None else e2e.get("e2e_p99_ms"),
        "engine": engine,
        "naive": naive,
        "naive_subject": naive_subject,
        "e2e": e2e if e2e is not None else "skipped (run with --e2e)",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--size", choices=sorted(SIZES), action="append", help="S or M")
    parser.add_argument("--subjects", type=int, help="override the size's subject count")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the JSON report here")
    parser.add_argument("--no-results", action="store_true", help="do not write results/")
    parser.add_argument("--e2e", action="store_true", help="also run the end-to-end part")
    parser.add_argument("--rate", type=float, default=1000.0, help="e2e fixes/s")
    parser.add_argument("--e2e-seconds", type=float, default=60.0)
    parser.add_argument("--e2e-subjects", type=int, default=1000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sizes = args.size or ["S"]
    machine = base_machine_info(("OMP_NUM_THREADS",))
    for dist in ("shapely", "pyproj", "pydantic"):
        machine[dist] = dist_version(dist)
    machine["geos"] = shapely.geos_version_string
    config = {
        "size": "+".join(sizes),
        "sizes": {s: args.subjects or SIZES[s] for s in sizes},
        "rules_per_subject": RULES_PER_SUBJECT,
        "window_s": WINDOW_S,
        "tick_s": TICK_S,
        "fix_interval_s": [15, 60],
        "naive_budget_s": NAIVE_BUDGET_S,
        "seed": args.seed,
        "e2e": args.e2e,
        "e2e_rate": args.rate if args.e2e else None,
    }
    for key, value in {**machine, **config}.items():
        print(f"{key}: {value}")
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "config": config,
        "sizes": {},
    }
    t = time.perf_counter()
    for size in sizes:
        report["sizes"][size] = run_size(size, config["sizes"][size], args)
    report["total_s"] = round(time.perf_counter() - t, 1)
    text = json.dumps(report, indent=2)
    md = markdown(report)
    print(md)
    if not args.no_results:
        RESULTS.mkdir(exist_ok=True)
        name = f"supervision_{config['size']}"
        (RESULTS / f"{name}.json").write_text(text + "\n")
        (RESULTS / f"{name}.md").write_text(md)
    if args.json is not None:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
