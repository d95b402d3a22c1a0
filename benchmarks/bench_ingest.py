"""Ingest under load: simulated wearables -> Mosquitto -> the hub (stored, evaluated
against supervision rules, acked), with raw Mosquitto throughput as the ceiling.

What runs
    A private Mosquitto, the real hub (``lantern hub serve``: ingest, the supervision
    engine with five rules per supervised person, alerts) on SQLite or PostgreSQL, and
    publisher processes that play the devices. The database is seeded with N devices,
    each the ankle tag of one supervised person (home, victim and county zones;
    inclusion, exclusion, curfew, proximity and silence rules: the workload of
    ``benchmarks/bench_supervision.py``). Fixes walk that workload's tracks and carry
    the time they are sent as their capture time.

Phases (per fleet size)
    * ``realistic``: every device reports every 15-60 s (uniform), the 5 % that are
      in violation every 5 s, for ``--realistic-s`` seconds;
    * ``rate R``: a steady ``R`` fixes/s over all devices for ``--step-s`` seconds, for
      each R of ``--rates``;
    * ``burst``: every device sends ``--burst-per-device`` fixes at once, as after a
      shared outage (the publishers go as fast as they can): the throughput ceiling of
      ingest.

Latency
    From the publish call to the arrival of the hub's ``ack`` naming the event. The hub
    publishes an ack only after the event's transaction committed *and* after the
    supervision engine evaluated it (hub/ingest.py: the sinks run before the acks are
    collected), so this is publish -> stored -> evaluated -> acked, as a device sees it.

Ceiling
    In the same run, before the hub starts, the same publisher processes send the same
    payloads at QoS 1 through the same broker to one plain subscriber at QoS 1: what
    Mosquitto and two plain clients manage on this machine. Ingest throughput is
    reported as a ratio of it.

Run: ``python -m benchmarks.bench_ingest`` (1,000 and 10,000 devices on SQLite);
``--backend postgresql`` uses a throw-away database on the local server;
``--quick`` for a short check; ``--json FILE`` to keep the report.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import multiprocessing as mp
import os
import random
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks.machine import base_machine_info, dist_version
from benchmarks.services import HubProcess, mosquitto, postgres_database, wait

logger = logging.getLogger("bench_ingest")

CEILING_TOPIC = "bench/ceiling"
VIOLATION_SHARE = 0.05
VIOLATION_INTERVAL_S = 5.0
TRACK_STEP_S = 30.0
"""Wall-clock seconds per step along a device's track, whatever its reporting rate: a
device reporting every second repeats its place rather than running along the track
at an impossible speed (which the engine would flag as spoofing, not evaluate)."""


# -- the devices' schedule -----------------------------------------------------------------


@dataclass
class Phase:
    """One phase: when each device sends (seconds from the phase start)."""

    name: str
    offered_rate: float | None
    """Fixes per second offered on average (None: as fast as possible)."""
    times: list[float]
    devices: list[int]


def realistic_phase(n: int, seconds: float, rng: random.Random) -> Phase:
    """Each device every 15-60 s, the ones in violation every 5 s; random phases."""
    events: list[tuple[float, int]] = []
    for d in range(n):
        violating = rng.random() < VIOLATION_SHARE
        interval = VIOLATION_INTERVAL_S if violating else rng.uniform(15.0, 60.0)
        t = rng.uniform(0.0, interval)
        while t < seconds:
            events.append((t, d))
            t += interval
    events.sort()
    return Phase(
        "realistic",
        len(events) / seconds,
        [t for t, _ in events],
        [d for _, d in events],
    )


def steady_phase(n: int, rate: float, seconds: float, rng: random.Random) -> Phase:
    """``rate`` fixes/s, devices in a shuffled round robin."""
    count = int(rate * seconds)
    order = list(range(n))
    rng.shuffle(order)
    return Phase(
        f"rate {rate:g}",
        rate,
        [k / rate for k in range(count)],
        [order[k % n] for k in range(count)],
    )


def burst_phase(n: int, per_device: int) -> Phase:
    """Every device sends ``per_device`` fixes at once."""
    devices = [d for _ in range(per_device) for d in range(n)]
    return Phase("burst", None, [0.0] * len(devices), devices)


# -- publisher processes -------------------------------------------------------------------


@dataclass
class PublisherJob:
    """What one publisher process sends (picklable)."""

    port: int
    client_id: str
    start_at: float
    """``time.monotonic()`` of the phase start (the clock is system-wide on Linux)."""
    epoch: float
    """``time.monotonic()`` when the devices started walking (first phase)."""
    times: list[float]
    devices: list[str]
    boots: dict[str, str]
    first_seq: dict[str, int]
    tracks: dict[str, list[tuple[float, float, float]]]
    raw_topic: str | None = None
    """Publish a ready payload to this topic prefix instead of position events."""
    raw_payload: bytes = b""


@dataclass
class PublisherResult:
    sent: list[tuple[str, float]] = field(default_factory=list)
    """(event id, monotonic time of the publish call)."""
    failed: int = 0
    seconds: float = 0.0


def _publish(job: PublisherJob, out: Any) -> None:
    """Child process: publish the job's events on schedule, report send times."""
    from datetime import UTC, datetime

    from devices.protocol import PositionBody, PositionEvent, encode, evt_topic, new_event_id
    from edge.comms.mqtt import MqttPeer, MqttSettings

    peer = MqttPeer(
        job.client_id,
        MqttSettings(host="127.0.0.1", port=job.port, max_inflight=65_535),
        subscriptions=[],
    )
    peer.start()
    result = PublisherResult()
    try:
        if not peer.wait_connected(20.0):
            raise RuntimeError("publisher could not connect")
        seqs = dict(job.first_seq)
        futures = []
        topics = {d: evt_topic(d, "position") for d in set(job.devices)}
        delay = job.start_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t0 = time.monotonic()
        for offset, device in zip(job.times, job.devices, strict=True):
            due = job.start_at + offset
            ahead = due - time.monotonic()
            if ahead > 0.0005:
                time.sleep(ahead)
            if job.raw_topic is not None:
                event_id = new_event_id()
                sent_at = time.monotonic()
                futures.append(peer.publish(f"{job.raw_topic}/{device}", job.raw_payload, qos=1))
            else:
                track = job.tracks[device]
                step = int((time.monotonic() - job.epoch) / TRACK_STEP_S)
                lat, lon, acc = track[step % len(track)]
                now = datetime.now(UTC)
                event = PositionEvent(
                    device_id=device,
                    event_id=new_event_id(),
                    boot_id=job.boots[device],
                    seq=seqs[device],
                    captured_at=now,
                    sent_at=now,
                    body=PositionBody(lat=lat, lon=lon, acc=acc, src="gnss"),
                )
                seqs[device] += 1
                payload = encode(event)
                event_id = event.event_id
                sent_at = time.monotonic()
                futures.append(peer.publish(topics[device], payload, qos=1))
            result.sent.append((event_id, sent_at))
        for future in futures:
            try:
                future.result(120)
            except Exception:
                result.failed += 1
        result.seconds = time.monotonic() - t0
    finally:
        peer.close(10)
        out.put(result)


def _run_publishers(jobs: Sequence[PublisherJob]) -> list[PublisherResult]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_publish, args=(job, out), daemon=True) for job in jobs]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=900) for _ in procs]
    for proc in procs:
        proc.join(30)
    return results


# -- listening -----------------------------------------------------------------------------


class Listener:
    """Records the arrival time of each acked event id (or of each raw message)."""

    def __init__(self, port: int, topic: str, *, raw: bool) -> None:
        from edge.comms.mqtt import MqttPeer, MqttSettings, RawMessage

        self.raw = raw
        self.arrivals: dict[str, float] = {}
        self.raw_arrivals: list[float] = []
        self.rejected = 0
        self._lock = threading.Lock()

        def on_message(message: RawMessage) -> None:
            now = time.monotonic()
            if self.raw:
                with self._lock:
                    self.raw_arrivals.append(now)
                return
            body = json.loads(message.payload).get("body", {})
            with self._lock:
                for event_id in body.get("event_ids", ()):
                    self.arrivals.setdefault(event_id, now)
                self.rejected += len(body.get("rejected", ()))

        self.peer = MqttPeer(
            f"bench-listen-{secrets.token_hex(3)}",
            MqttSettings(host="127.0.0.1", port=port, max_inflight=65_535),
            subscriptions=[(topic, 1)],
            on_message=on_message,
        )

    def __enter__(self) -> Listener:
        self.peer.start()
        if not self.peer.wait_subscribed(20):
            raise RuntimeError("listener could not subscribe")
        return self

    def __exit__(self, *exc: object) -> None:
        self.peer.close(10)

    def acked(self, event_ids: Iterable[str]) -> dict[str, float]:
        """Arrival times of the acks of those of ``event_ids`` acked so far."""
        with self._lock:
            return {e: self.arrivals[e] for e in event_ids if e in self.arrivals}

    def count(self) -> int:
        with self._lock:
            return len(self.raw_arrivals) if self.raw else len(self.arrivals)


# -- measuring -----------------------------------------------------------------------------


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


@dataclass
class Fleet:
    """The seeded devices and what the publishers need to play them."""

    device_ids: list[str]
    boots: dict[str, str]
    seqs: dict[str, int]
    tracks: dict[str, list[tuple[float, float, float]]]
    epoch: float = field(default_factory=time.monotonic)


def _jobs(
    fleet: Fleet, phase: Phase, port: int, publishers: int, start_at: float, raw: bytes | None
) -> list[PublisherJob]:
    """Split a phase by device (a device always on the same publisher, in order)."""
    per: list[tuple[list[float], list[str]]] = [([], []) for _ in range(publishers)]
    for t, d in zip(phase.times, phase.devices, strict=True):
        times, devices = per[d % publishers]
        times.append(t)
        devices.append(fleet.device_ids[d])
    jobs = []
    for k, (times, devices) in enumerate(per):
        mine = set(devices)
        jobs.append(
            PublisherJob(
                port=port,
                client_id=f"bench-pub-{k}-{secrets.token_hex(3)}",
                start_at=start_at,
                epoch=fleet.epoch,
                times=times,
                devices=devices,
                boots={d: fleet.boots[d] for d in mine},
                first_seq={d: fleet.seqs[d] for d in mine},
                tracks={} if raw is not None else {d: fleet.tracks[d] for d in mine},
                raw_topic=CEILING_TOPIC if raw is not None else None,
                raw_payload=raw or b"",
            )
        )
    for d in phase.devices:
        fleet.seqs[fleet.device_ids[d]] += 1
    return jobs


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def run_phase(
    fleet: Fleet, phase: Phase, port: int, publishers: int, listener: Listener, hub_pid: int
) -> dict[str, Any]:
    """Play one phase against the hub; wait for its acks; report (with the hub's CPU
    time per message, which unlike throughput hardly depends on what else runs)."""
    logger.info(
        "phase %s: %d fixes from %d devices%s",
        phase.name,
        len(phase.times),
        len(set(phase.devices)),
        "" if phase.offered_rate is None else f" at {phase.offered_rate:.0f}/s offered",
    )
    start_at = time.monotonic() + 3.0  # the publishers' start-up
    cpu_before = _cpu_s(hub_pid)
    results = _run_publishers(_jobs(fleet, phase, port, publishers, start_at, None))
    sent = {event_id: t for r in results for event_id, t in r.sent}
    patience = max(30.0, len(sent) / 500)  # the queue drains at well over 500/s
    wait(lambda: len(listener.acked(sent)) >= len(sent), patience, step=0.5)
    hub_cpu = _cpu_s(hub_pid) - cpu_before
    acked = listener.acked(sent)
    latencies = [acked[e] - sent[e] for e in acked]
    first = min(sent.values()) if sent else 0.0
    last = max(acked.values()) if acked else first
    send_s = max(r.seconds for r in results) if results else 0.0
    report = {
        "phase": phase.name,
        "offered_per_s": None if phase.offered_rate is None else round(phase.offered_rate, 1),
        "sent": len(sent),
        "publish_failed": sum(r.failed for r in results),
        "acked": len(acked),
        "lost": len(sent) - len(acked),
        "publish_s": round(send_s, 2),
        "sent_per_s": round(len(sent) / send_s, 1) if send_s else None,
        "throughput_per_s": round(len(acked) / (last - first), 1) if last > first else None,
        "p50_ms": _ms(_percentile(latencies, 0.50)),
        "p99_ms": _ms(_percentile(latencies, 0.99)),
        "max_ms": _ms(max(latencies) if latencies else None),
        "hub_cpu_us_per_msg": round(hub_cpu / len(acked) * 1e6) if acked else None,
    }
    logger.info("phase %s: %s", phase.name, json.dumps(report))
    return report


def run_ceiling(fleet: Fleet, port: int, publishers: int, count: int) -> dict[str, Any]:
    """Raw Mosquitto: the same publishers, the same payload size, one plain subscriber."""
    from datetime import UTC, datetime

    from devices.protocol import PositionBody, PositionEvent, encode, new_event_id

    device = fleet.device_ids[0]
    now = datetime.now(UTC)
    lat, lon, acc = fleet.tracks[device][0]
    payload = encode(
        PositionEvent(
            device_id=device,
            event_id=new_event_id(),
            boot_id=fleet.boots[device],
            seq=0,
            captured_at=now,
            sent_at=now,
            body=PositionBody(lat=lat, lon=lon, acc=acc, src="gnss"),
        )
    )
    n = len(fleet.device_ids)
    phase = Phase("ceiling", None, [0.0] * count, [k % n for k in range(count)])
    seqs = dict(fleet.seqs)
    with Listener(port, f"{CEILING_TOPIC}/#", raw=True) as listener:
        start_at = time.monotonic() + 3.0
        cpu_before = _cpu_s(os.getpid())
        results = _run_publishers(_jobs(fleet, phase, port, publishers, start_at, payload))
        wait(lambda: listener.count() >= count, 60.0, step=0.1)
        subscriber_cpu = _cpu_s(os.getpid()) - cpu_before
        arrivals = list(listener.raw_arrivals)
    fleet.seqs = seqs  # the raw messages used no device sequence numbers
    first = min(t for r in results for _, t in r.sent)
    last = max(arrivals) if arrivals else first
    report = {
        "messages": count,
        "received": len(arrivals),
        "payload_bytes": len(payload),
        "throughput_per_s": round(len(arrivals) / (last - first), 1) if last > first else None,
        # This process only received (the publishers are other processes): what a
        # plain Python QoS 1 subscriber spends per message, the hub's MQTT floor.
        "subscriber_cpu_us_per_msg": round(subscriber_cpu / len(arrivals) * 1e6)
        if arrivals
        else None,
    }
    logger.info("ceiling: %s", json.dumps(report))
    return report


# -- seeding -------------------------------------------------------------------------------


def seed(db_url: str, devices: int, seed_value: int) -> Fleet:
    """Migrate, then seed the supervision workload of ``devices`` people."""
    from benchmarks.bench_supervision import device_name, seed_workload
    from devices.protocol import new_boot_id
    from hub.db.engine import make_engine
    from hub.db.migrate import upgrade

    engine = make_engine(db_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    t0 = time.monotonic()
    workload, _ = seed_workload(db_url, devices, seed_value)
    logger.info("seeded %d devices in %.1f s", devices, time.monotonic() - t0)
    tracks: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for fix in workload.fixes:
        tracks[fix.device_id].append((fix.lat, fix.lon, fix.acc))
    ids = [device_name(i) for i in range(devices)]
    return Fleet(
        device_ids=ids,
        boots={d: new_boot_id() for d in ids},
        seqs=dict.fromkeys(ids, 0),
        tracks=dict(tracks),
    )


def _stored(db_url: str) -> dict[str, int]:
    from sqlalchemy import distinct, func, select

    from hub.db.engine import make_engine
    from hub.db.models import Alert, Position

    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.scalar(select(func.count()).select_from(Position)) or 0
            unique = conn.scalar(
                select(func.count(distinct(Position.event_id))).select_from(Position)
            )
            alerts = conn.scalar(select(func.count()).select_from(Alert)) or 0
    finally:
        engine.dispose()
    return {"rows": rows, "duplicates_stored": rows - (unique or 0), "alerts": alerts}


@contextlib.contextmanager
def _database(backend: str, folder: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{folder / 'lantern.db'}"
    else:
        with postgres_database() as url:
            yield url


def run_fleet(devices: int, backend: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every phase for one fleet size on one backend."""
    rng = random.Random(args.seed)
    report: dict[str, Any] = {"devices": devices, "backend": backend}
    with (
        tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp,
        mosquitto(Path(tmp) / "broker") as port,
        _database(backend, Path(tmp)) as db_url,
    ):
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        fleet = seed(db_url, devices, args.seed)
        report["ceiling"] = run_ceiling(fleet, port, args.publishers, args.ceiling_messages)
        hub = HubProcess(data_dir, db_url, port, workers=args.workers)
        t0 = time.monotonic()
        hub.start()
        report["hub_start_s"] = round(time.monotonic() - t0, 1)
        phases = [realistic_phase(devices, args.realistic_s, rng)]
        phases += [steady_phase(devices, r, args.step_s, rng) for r in args.rates]
        phases.append(burst_phase(devices, args.burst_per_device))
        try:
            with Listener(port, "lantern/v1/+/ack", raw=False) as listener:
                assert hub.process is not None
                pid = hub.process.pid
                report["phases"] = [
                    run_phase(fleet, phase, port, args.publishers, listener, pid)
                    for phase in phases
                ]
                report["rejected"] = listener.rejected
        finally:
            hub.stop()
        report["hub_log_tail"] = hub.tail(1500)
        report["database"] = _stored(db_url)
    ceiling = report["ceiling"]["throughput_per_s"]
    for phase in report["phases"]:
        tp = phase["throughput_per_s"]
        phase["ratio_to_ceiling"] = round(tp / ceiling, 3) if tp and ceiling else None
    return report


class _NoNetwork:
    """Stands in for the hub's MQTT client in the in-process stage costs: PUBACKs and
    acks are dropped after they are built (the acks are still encoded)."""

    def ack(self, generation: int, mid: int, qos: int) -> None:
        del generation, mid, qos

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        del topic, payload, qos, retain


def run_stages(devices: int, batches: int, batch_size: int, seed_value: int) -> dict[str, Any]:
    """CPU time per message of the hub's stages, in one process and without MQTT:
    decoding alone; a batch decoded, stored and acked (no sinks); the same plus the
    supervision engine. What the live phases cost beyond the last is MQTT I/O,
    threads and the clock."""
    from datetime import UTC, datetime

    from devices.protocol import (
        PositionBody,
        PositionEvent,
        decode,
        encode,
        evt_topic,
        new_event_id,
    )
    from hub.comms.mqtt import Inbound
    from hub.db.engine import make_engine
    from hub.ingest import IngestSettings, IngestWorker, NullPositionSink, NullSightingSink
    from hub.supervision.service import SupervisionService

    report: dict[str, Any] = {"devices": devices, "batch_size": batch_size}
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'lantern.db'}"
        fleet = seed(url, devices, seed_value)
        engine = make_engine(url)
        k = 0

        def batch() -> list[Inbound]:
            nonlocal k
            out = []
            for _ in range(batch_size):
                device = fleet.device_ids[k % devices]
                k += 1
                lat, lon, acc = fleet.tracks[device][0]
                now = datetime.now(UTC)
                event = PositionEvent(
                    device_id=device,
                    event_id=new_event_id(),
                    boot_id=fleet.boots[device],
                    seq=fleet.seqs[device],
                    captured_at=now,
                    sent_at=now,
                    body=PositionBody(lat=lat, lon=lon, acc=acc, src="gnss"),
                )
                fleet.seqs[device] += 1
                out.append(
                    Inbound(
                        topic=evt_topic(device, "position"),
                        payload=encode(event),
                        qos=1,
                        retain=False,
                        mid=k % 65_535 + 1,
                        generation=1,
                        received_at=now,
                    )
                )
            return out

        try:
            sample = [m for _ in range(batches) for m in batch()]
            c0 = time.process_time()
            for m in sample:
                decode(m.topic, m.payload, now=m.received_at)
            report["decode_us"] = round((time.process_time() - c0) / len(sample) * 1e6, 1)
            supervision = SupervisionService(engine)
            client: Any = _NoNetwork()
            for label, sink in (("stored_us", NullPositionSink()), ("evaluated_us", supervision)):
                worker = IngestWorker(0, engine, client, IngestSettings(), sink, NullSightingSink())
                work = [batch() for _ in range(batches)]
                c0 = time.process_time()
                for messages in work:
                    worker.handle(messages)
                n = sum(map(len, work))
                report[label] = round((time.process_time() - c0) / n * 1e6, 1)
            c0 = time.process_time()
            supervision.tick()  # saves the states the fixes above changed
            report["state_save_ms"] = round((time.process_time() - c0) * 1e3, 1)
        finally:
            engine.dispose()
    logger.info("stages: %s", json.dumps(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| devices | backend | phase | offered/s | sent | acked | lost | throughput/s "
        "| ratio to Mosquitto | p50 ms | p99 ms | hub CPU µs/msg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for fleet in report["fleets"]:
        for p in fleet["phases"]:
            lines.append(
                f"| {fleet['devices']:,} | {fleet['backend']} | {p['phase']} "
                f"| {p['offered_per_s'] if p['offered_per_s'] is not None else 'max'} "
                f"| {p['sent']:,} | {p['acked']:,} | {p['lost']} | {p['throughput_per_s']} "
                f"| {p['ratio_to_ceiling']} | {p['p50_ms']} | {p['p99_ms']} "
                f"| {p['hub_cpu_us_per_msg']} |"
            )
    lines.append("")
    for stage in report.get("stages", []):
        lines.append(
            f"- stage CPU per message, {stage['devices']:,} devices, batches of "
            f"{stage['batch_size']}: decode {stage['decode_us']} µs; decode + store + ack "
            f"{stage['stored_us']} µs; + supervision {stage['evaluated_us']} µs; saving the "
            f"changed rule states once {stage['state_save_ms']} ms"
        )
    for fleet in report["fleets"]:
        c = fleet["ceiling"]
        lines.append(
            f"- {fleet['devices']:,} devices, {fleet['backend']}: raw Mosquitto "
            f"{c['throughput_per_s']} msg/s ({c['messages']:,} x {c['payload_bytes']} B, QoS 1; "
            f"the plain subscriber spent {c['subscriber_cpu_us_per_msg']} µs CPU a message); "
            f"hub start {fleet['hub_start_s']} s; database rows "
            f"{fleet['database']['rows']:,}, duplicates stored "
            f"{fleet['database']['duplicates_stored']}, alerts {fleet['database']['alerts']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_ingest",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--devices", default="1000,10000", help="Fleet sizes, comma-separated.")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--rates", default="1000,2500,5000", help="Steady rates (fixes/s).")
    parser.add_argument("--realistic-s", type=float, default=30.0)
    parser.add_argument("--step-s", type=float, default=10.0, help="Seconds per steady rate.")
    parser.add_argument("--burst-per-device", type=int, default=2)
    parser.add_argument("--ceiling-messages", type=int, default=30_000)
    parser.add_argument("--publishers", type=int, default=2, help="Publisher processes.")
    parser.add_argument("--workers", type=int, default=4, help="Hub ingest workers.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="1,000 devices, short phases.")
    parser.add_argument(
        "--stages-only",
        action="store_true",
        help="Only the in-process CPU cost per message of each stage (no MQTT, no phases).",
    )
    parser.add_argument("--json", type=Path, help="Write the report here.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # SIGTERM unwinds like Ctrl-C, so the hub and the broker are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    try:
        sizes = [int(x) for x in args.devices.split(",") if x.strip()]
        args.rates = [float(x) for x in args.rates.split(",") if x.strip()]
    except ValueError as exc:
        parser.error(f"not a number list: {exc}")
    if any(s < 1 for s in sizes) or any(r <= 0 for r in args.rates):
        parser.error("fleet sizes and rates must be positive")
    if args.quick:
        sizes, args.realistic_s, args.step_s = [1000], 10.0, 5.0
        args.ceiling_messages = 10_000
    report: dict[str, Any] = {
        "machine": base_machine_info(()),
        "versions": {d: dist_version(d) for d in ("paho-mqtt", "sqlalchemy", "shapely")},
        "config": {
            "devices": sizes,
            "backend": args.backend,
            "rates": args.rates,
            "realistic_s": args.realistic_s,
            "step_s": args.step_s,
            "burst_per_device": args.burst_per_device,
            "publishers": args.publishers,
            "workers": args.workers,
        },
        "fleets": [],
        "stages": [],
    }
    logger.info("machine: %s", json.dumps(report["machine"]))
    logger.info("config: %s", json.dumps(report["config"]))
    for size in sizes:
        report["stages"].append(run_stages(size, 25, 200, args.seed))
    if not args.stages_only:
        for size in sizes:
            report["fleets"].append(run_fleet(size, args.backend, args))
    text = markdown(report)
    logger.info("results\n%s", text)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
