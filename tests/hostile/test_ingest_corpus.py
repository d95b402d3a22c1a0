"""A corpus of generated hostile payloads through a private Mosquitto into the real
``hub.ingest.Ingest``, on SQLite and PostgreSQL, interleaved with a well-behaved device.

The corpus (at least :data:`CORPUS_SIZE` payloads) is drawn deterministically from the
strategies of ``strategies.py`` on the topics a hub subscribes to (events and states,
plus broken topics under ``lantern/v1/+/evt/#``). Each payload's expected refusal is
what ``devices.protocol.decode`` answers locally; the hub must quarantine every one of
them with that code and a reason, keep all its workers alive, and store and ack every
event of the good device, including its replays (stored once, acked again). Figures go
to ``tests/artifacts/reliability/hostile-ingest.json``.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from concurrent.futures import Future
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, Phase, given, settings
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from devices.protocol import ProtocolError, decode
from devices.signing import generate_private_key, public_key_to_b64, sign
from hub.db.models import Credential, Position, Quarantine
from hub.ingest import Ingest
from tests.edge.mqtt_helpers import PrivateBroker, unique_id, wait_until
from tests.hostile.conftest import Figures
from tests.hostile.strategies import Hostile, hostile_payloads, hub_bound_messages
from tests.hub.test_ingest import FakeDevices, register

pytestmark = [pytest.mark.hostile, pytest.mark.usefixtures("watchdog")]

CORPUS_SIZE = 2000
GOOD_EVENTS = 200
REPLAYS = 40
CHUNK = 50
"""Hostile payloads published between two events of the good device."""


@functools.cache
def corpus() -> tuple[Hostile, ...]:
    """The hostile payloads, the same on every run and for both backends."""
    drawn: list[Hostile] = []

    @settings(
        max_examples=CORPUS_SIZE + 100,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(hostile_payloads(hub_bound_messages))
    def collect(hostile: Hostile) -> None:
        drawn.append(hostile)

    collect()
    assert len(drawn) >= CORPUS_SIZE
    return tuple(drawn)


def _quarantined(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(Quarantine)) or 0)


def test_a_hostile_corpus_is_quarantined_and_the_good_device_keeps_flowing(
    engine: Engine, broker: PrivateBroker, hub: Ingest, figures: Figures
) -> None:
    payloads = corpus()
    good = unique_id("wb")
    register(engine, [good])
    expected: Counter[str] = Counter()
    started = time.monotonic()
    with FakeDevices(broker.settings(), [good]) as devices:
        pending: list[Future[None]] = []
        sent: list[str] = []
        for start in range(0, len(payloads), CHUNK):
            for hostile in payloads[start : start + CHUNK]:
                with pytest.raises(ProtocolError) as refused:
                    decode(hostile.topic, hostile.payload, now=datetime.now(UTC))
                assert refused.value.code in hostile.codes
                expected[refused.value.code] += 1
                pending.append(devices.peer.publish(hostile.topic, hostile.payload, qos=1))
            if len(sent) < GOOD_EVENTS:
                event = devices.next_event(good)
                pending.append(devices.send_nowait(event))
                sent.append(event.event_id)
        while len(sent) < GOOD_EVENTS:
            event = devices.next_event(good)
            pending.append(devices.send_nowait(event))
            sent.append(event.event_id)
        for future in pending:
            future.result(60)
        published = time.monotonic() - started

        assert wait_until(lambda: _quarantined(engine) >= len(payloads), 90), (
            _quarantined(engine),
            len(payloads),
        )
        assert wait_until(lambda: not devices.outstanding(), 60), len(devices.outstanding())
        # Replayed event ids: the same bytes again, as an outbox resends them after an
        # outage (once acked, so each copy gets its own ack).
        for event_id in sent[:REPLAYS]:
            devices.send_raw(*devices.payloads[event_id])
        assert wait_until(lambda: all(devices.acked[e] == 2 for e in sent[:REPLAYS]), 30)
        assert all(devices.acked[e] == 1 for e in sent[REPLAYS:])
        assert not devices.rejected
        done = time.monotonic() - started

    assert all(worker._thread.is_alive() for worker in hub.workers), "an ingest worker died"
    with Session(engine) as session:
        rows = session.execute(select(Quarantine.error_code, Quarantine.reason)).all()
        stored = session.scalars(select(Position.event_id).where(Position.device_id == good)).all()
    by_code = Counter(code for code, _ in rows)
    assert by_code == expected
    assert all(reason.strip() for _, reason in rows)
    assert sorted(stored) == sorted(sent)

    backend = engine.dialect.name
    kinds = Counter(h.kind for h in payloads)
    figures.record("ingest", "corpus_size", len(payloads))
    figures.record("ingest", "corpus_by_kind", dict(sorted(kinds.items())))
    figures.record(
        "ingest",
        backend,
        {
            "quarantined": len(rows),
            "quarantine_by_code": dict(sorted(by_code.items())),
            "good_events_sent": len(sent),
            "good_events_stored": len(stored),
            "good_events_acked": sum(1 for e in sent if devices.acked[e] >= 1),
            "good_replays_sent": REPLAYS,
            "good_replays_acked_again": sum(1 for e in sent[:REPLAYS] if devices.acked[e] == 2),
            "workers_alive": sum(w._thread.is_alive() for w in hub.workers),
            "publish_s": round(published, 2),
            "all_handled_s": round(done, 2),
        },
    )


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_a_forged_signature_of_a_registered_key_is_quarantined(
    engine: Engine, broker: PrivateBroker, hub: Ingest
) -> None:
    device = unique_id("wb")
    register(engine, [device])
    registered = Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
    with Session(engine) as session, session.begin():
        session.add(
            Credential(
                device_id=device,
                kind="ed25519",
                kid="k1",
                public_key=public_key_to_b64(registered.public_key()),
            )
        )
    with FakeDevices(broker.settings(), [device]) as devices:
        forged = sign(devices.next_event(device), generate_private_key(), "k1")
        devices.send(forged)
        assert wait_until(
            lambda: forged.event_id in devices.rejected or devices.acked[forged.event_id] == 1,
            15,
        )
        assert devices.rejected.get(forged.event_id) == "bad_signature"
        # The device's own signature passes; an unsigned event and an unknown key do not.
        genuine = sign(devices.next_event(device), registered, "k1")
        unsigned = devices.next_event(device)
        other_kid = sign(devices.next_event(device), registered, "k2")
        for event in (genuine, unsigned, other_kid):
            devices.send(event)
        assert wait_until(
            lambda: devices.acked[genuine.event_id] == 1
            and {unsigned.event_id, other_kid.event_id} <= devices.rejected.keys(),
            15,
        )
        assert genuine.event_id not in devices.rejected
        assert devices.acked[genuine.event_id] == 1
        assert devices.rejected.get(unsigned.event_id) == "unsigned"
        assert devices.rejected.get(other_kid.event_id) == "unknown_kid"
    with Session(engine) as session:
        stored = set(session.scalars(select(Position.event_id).where(Position.device_id == device)))
    assert stored == {genuine.event_id}
    assert _quarantined(engine) == 3
