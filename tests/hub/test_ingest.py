"""Hub ingest against a private Mosquitto and both database backends.

Devices are played by :class:`FakeDevices`: one edge ``MqttPeer`` publishing the
events of several device ids and reading their ``ack`` topics, so the tests see
what the devices see (which event ids were acked, how often, which were rejected).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from devices.protocol import (
    Ack,
    DeviceState,
    PositionBody,
    PositionEvent,
    StateBody,
    ack_topic,
    decode,
    encode,
    evt_topic,
    new_boot_id,
    new_event_id,
    state_topic,
)
from edge.comms.mqtt import MqttPeer, MqttSettings, OutgoingMessage, RawMessage
from hub.comms.mqtt import HubMqttSettings, parse_mqtt_url
from hub.db.models import Device, DeviceBoot, Position, Quarantine, Site
from hub.db.repositories import seq_gaps
from hub.feed import FeedBroker, FeedObserver
from hub.ingest import Ingest, IngestSettings, partition
from tests.edge.mqtt_helpers import CutProxy, PrivateBroker, unique_id, wait_until

SITE = "hmp-test"


def register(engine: Engine, device_ids: Sequence[str]) -> None:
    """Put the site and devices in the database (events need a registered device)."""
    with Session(engine) as session, session.begin():
        if session.get(Site, SITE) is None:
            session.add(Site(site_id=SITE, name="Test site"))
            session.flush()
        for device_id in device_ids:
            session.add(Device(device_id=device_id, site_id=SITE, model="lantern-ankle-a1"))


def position(device_id: str, boot_id: str, seq: int, **body: Any) -> PositionEvent:
    now = datetime.now(UTC)
    fields: dict[str, Any] = {"lat": 51.5, "lon": -0.12, "acc": 8.0, "src": "gnss", **body}
    return PositionEvent(
        event_id=new_event_id(),
        device_id=device_id,
        boot_id=boot_id,
        seq=seq,
        captured_at=now,
        sent_at=now,
        body=PositionBody(**fields),
    )


def state(device_id: str, boot_id: str, status: str) -> bytes:
    message = DeviceState(
        device_id=device_id,
        boot_id=boot_id,
        sent_at=datetime.now(UTC),
        body=StateBody.model_validate(
            {"status": status, "fw": "1.0.0", "hw_model": "lantern-ankle-a1"}
        ),
    )
    return encode(message)


class FakeDevices:
    """Several devices on one MQTT connection, counting the acks they are sent."""

    def __init__(
        self,
        settings: MqttSettings,
        device_ids: Sequence[str],
        *,
        will: OutgoingMessage | None = None,
    ) -> None:
        self.device_ids = list(device_ids)
        self.boots = {d: new_boot_id() for d in device_ids}
        self.seqs = dict.fromkeys(device_ids, 0)
        self.lock = threading.Lock()
        self.acked: Counter[str] = Counter()
        self.rejected: dict[str, str] = {}
        self.payloads: dict[str, tuple[str, bytes]] = {}
        self.peer = MqttPeer(
            unique_id("devs"),
            settings.model_copy(update={"max_inflight": 1000}),
            subscriptions=[(ack_topic(d), 1) for d in device_ids],
            on_message=self._on_ack,
            will=will,
        )

    def __enter__(self) -> FakeDevices:
        self.peer.start()
        assert self.peer.wait_subscribed(10), "fake devices could not subscribe"
        return self

    def __exit__(self, *exc: object) -> None:
        self.peer.close(5)

    def _on_ack(self, raw: RawMessage) -> None:
        ack = decode(raw.topic, raw.payload).message
        assert isinstance(ack, Ack)
        with self.lock:
            self.acked.update(ack.body.event_ids)
            for rejection in ack.body.rejected:
                self.rejected[rejection.event_id] = rejection.code

    def next_event(self, device_id: str, **body: Any) -> PositionEvent:
        seq = self.seqs[device_id]
        self.seqs[device_id] = seq + 1
        return position(device_id, self.boots[device_id], seq, **body)

    def send(self, event: PositionEvent) -> str:
        topic = evt_topic(event.device_id, "position")
        payload = encode(event)
        self.payloads[event.event_id] = (topic, payload)
        self.peer.publish(topic, payload, qos=1).result(10)
        return event.event_id

    def send_nowait(self, event: PositionEvent) -> Future[None]:
        topic = evt_topic(event.device_id, "position")
        payload = encode(event)
        with self.lock:
            self.payloads[event.event_id] = (topic, payload)
        return self.peer.publish(topic, payload, qos=1)

    def send_raw(self, topic: str, payload: bytes) -> None:
        self.peer.publish(topic, payload, qos=1).result(10)

    def outstanding(self) -> set[str]:
        with self.lock:
            return {
                e for e in list(self.payloads) if e not in self.acked and e not in self.rejected
            }


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    with PrivateBroker(tmp_path / "broker") as running:
        yield running


@pytest.fixture
def hub(engine: Engine, broker: PrivateBroker) -> Iterator[Ingest]:
    ingest = Ingest(
        engine,
        HubMqttSettings(port=broker.port, client_id=unique_id("hub"), session_expiry_s=60),
        IngestSettings(workers=3),
    )
    assert ingest.start(10), "hub ingest did not subscribe"
    yield ingest
    ingest.stop(10)


def count(engine: Engine, model: type[Any]) -> int:
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_events_reach_the_database_once_and_are_all_acked(
    engine: Engine, broker: PrivateBroker, hub: Ingest
) -> None:
    ids = [unique_id("wb") for _ in range(4)]
    register(engine, ids)
    with FakeDevices(broker.settings(), ids) as devices:
        sent = [devices.send(devices.next_event(d)) for _ in range(25) for d in ids]
        assert wait_until(lambda: not devices.outstanding(), 15), devices.outstanding()
        assert set(devices.acked) == set(sent)
        assert all(n == 1 for n in devices.acked.values())
    assert count(engine, Position) == 100
    with Session(engine) as session:
        for device_id in ids:
            stored = session.scalars(
                select(Position.seq).where(Position.device_id == device_id)
            ).all()
            assert sorted(stored) == list(range(25))
            device = session.get(Device, device_id)
            assert device is not None and device.last_seen_at is not None


def test_a_duplicate_is_stored_once_and_acked_twice(
    engine: Engine, broker: PrivateBroker, hub: Ingest
) -> None:
    device_id = unique_id("wb")
    register(engine, [device_id])
    with FakeDevices(broker.settings(), [device_id]) as devices:
        event_id = devices.send(devices.next_event(device_id))
        assert wait_until(lambda: devices.acked[event_id] == 1, 10)
        topic, payload = devices.payloads[event_id]
        devices.send_raw(topic, payload)
        assert wait_until(lambda: devices.acked[event_id] == 2, 10)
    assert count(engine, Position) == 1


def test_a_bad_payload_is_quarantined_and_the_device_keeps_flowing(
    engine: Engine, broker: PrivateBroker, hub: Ingest
) -> None:
    device_id = unique_id("wb")
    register(engine, [device_id])
    with FakeDevices(broker.settings(), [device_id]) as devices:
        bad = devices.next_event(device_id).model_dump(mode="json")
        bad["body"]["lat"] = 123.0  # out of range, but the event id is readable
        topic = evt_topic(device_id, "position")
        devices.send_raw(topic, json.dumps(bad).encode())
        devices.send_raw(topic, b"\xff not json")
        good = devices.send(devices.next_event(device_id))
        assert wait_until(lambda: devices.acked[good] == 1, 10)
        assert wait_until(lambda: bad["event_id"] in devices.rejected, 10)
        assert devices.rejected[bad["event_id"]] == "invalid"
    with Session(engine) as session:
        rows = session.scalars(select(Quarantine).order_by(Quarantine.id)).all()
        assert [r.error_code for r in rows] == ["invalid", "bad_json"]
        assert all(r.device_id == device_id and r.topic == topic for r in rows)
        assert "lat" in rows[0].reason and rows[1].payload == b"\xff not json"
        stored = session.scalars(select(Position.event_id)).all()
        assert stored == [good]


def test_events_of_an_unregistered_device_are_quarantined_not_acked(
    engine: Engine, broker: PrivateBroker, hub: Ingest
) -> None:
    device_id = unique_id("wb")
    with FakeDevices(broker.settings(), [device_id]) as devices:
        devices.send(devices.next_event(device_id))
        assert wait_until(lambda: count(engine, Quarantine) == 1, 10)
        assert devices.outstanding()
    with Session(engine) as session:
        row = session.scalars(select(Quarantine)).one()
        assert row.error_code == "unknown_device" and row.device_id == device_id


def test_a_seq_gap_is_recorded(engine: Engine, broker: PrivateBroker, hub: Ingest) -> None:
    device_id = unique_id("wb")
    register(engine, [device_id])
    with FakeDevices(broker.settings(), [device_id]) as devices:
        boot = devices.boots[device_id]
        for seq in (0, 1, 4, 5):
            devices.send(position(device_id, boot, seq))
        assert wait_until(lambda: not devices.outstanding(), 10)
    with Session(engine) as session:
        assert seq_gaps(session, device_id, boot) == [(2, 3)]
        row = session.get(DeviceBoot, (device_id, boot))
        assert row is not None and (row.min_seq, row.max_seq, row.events) == (0, 5, 4)


def test_device_state_from_retained_birth_and_last_will(
    engine: Engine, broker: PrivateBroker, hub: Ingest
) -> None:
    device_id = unique_id("wb")
    boot = new_boot_id()
    register(engine, [device_id])
    proxy = CutProxy(broker.port)
    will = OutgoingMessage(state_topic(device_id), state(device_id, boot, "offline"), 1, True)
    try:
        settings = broker.settings(port=proxy.port, keepalive_s=5)
        with FakeDevices(settings, [device_id], will=will) as devices:
            devices.peer.publish(
                state_topic(device_id), state(device_id, boot, "online"), qos=1, retain=True
            ).result(10)

            def status() -> str | None:
                with Session(engine) as session:
                    device = session.get(Device, device_id)
                    return None if device is None else device.status

            assert wait_until(lambda: status() == "online", 10)
            proxy.cut()  # the broker sees the link die and publishes the will
            assert wait_until(lambda: status() == "offline", 10)
            proxy.restore()
    finally:
        proxy.close()
    with Session(engine) as session:
        device = session.get(Device, device_id)
        assert device is not None and device.boot_id == boot and device.fw == "1.0.0"


def test_a_retained_state_published_before_the_hub_started_is_recorded(
    engine: Engine, broker: PrivateBroker
) -> None:
    device_id = unique_id("wb")
    boot = new_boot_id()
    register(engine, [device_id])
    with FakeDevices(broker.settings(), [device_id]) as devices:
        devices.peer.publish(
            state_topic(device_id), state(device_id, boot, "online"), qos=1, retain=True
        ).result(10)
    ingest = Ingest(
        engine, HubMqttSettings(port=broker.port, client_id=unique_id("hub")), IngestSettings(1)
    )
    try:
        assert ingest.start(10)

        def online() -> bool:
            with Session(engine) as session:
                device = session.get(Device, device_id)
                return device is not None and device.status == "online"

        assert wait_until(online, 10)
    finally:
        ingest.stop(10)


def test_new_events_and_applied_states_reach_a_feed_subscriber(
    engine: Engine, broker: PrivateBroker
) -> None:
    """Through real ingest: a position is fed once (its redelivery is not), then the
    device's state; a device of another site is not seen by a site subscriber."""
    device_id, elsewhere = unique_id("wb"), unique_id("wb")
    register(engine, [device_id])
    with Session(engine) as session, session.begin():
        session.add(Site(site_id="hmp-other", name="Other site"))
        session.flush()
        session.add(Device(device_id=elsewhere, site_id="hmp-other", model="lantern-ankle-a1"))
    feed = FeedBroker()

    async def scenario() -> None:
        subscription = feed.subscribe(sites=[SITE])
        ingest = Ingest(
            engine,
            HubMqttSettings(port=broker.port, client_id=unique_id("hub")),
            IngestSettings(workers=2),
            observer=FeedObserver(engine, feed),
        )
        assert await asyncio.to_thread(ingest.start, 10), "hub ingest did not subscribe"
        try:
            with FakeDevices(broker.settings(), [device_id, elsewhere]) as devices:
                await asyncio.to_thread(devices.send, devices.next_event(elsewhere))
                event = devices.next_event(device_id, lat=51.6, lon=-0.2)
                await asyncio.to_thread(devices.send, event)
                got = await asyncio.wait_for(subscription.get(), 10)
                assert (got.type, got.site_id, got.device_id) == ("position", SITE, device_id)
                assert got.time == event.captured_at
                assert got.data["event_id"] == event.event_id
                assert (got.data["lat"], got.data["lon"]) == (51.6, -0.2)

                topic, payload = devices.payloads[event.event_id]
                await asyncio.to_thread(devices.send_raw, topic, payload)
                acked_twice = await asyncio.to_thread(
                    wait_until, lambda: devices.acked[event.event_id] == 2, 10
                )
                assert acked_twice and subscription.pending() == 0

                boot = devices.boots[device_id]
                await asyncio.to_thread(
                    lambda: devices.peer.publish(
                        state_topic(device_id), state(device_id, boot, "online"), qos=1, retain=True
                    ).result(10)
                )
                got = await asyncio.wait_for(subscription.get(), 10)
                assert (got.type, got.device_id) == ("device_state", device_id)
                assert got.data["status"] == "online" and got.data["boot_id"] == boot

                # A late state of an older boot is ignored by the database, so not fed:
                # the next delta is the fresh one sent after it.
                stale = DeviceState(
                    device_id=device_id,
                    boot_id=new_boot_id(),
                    sent_at=got.time - timedelta(minutes=5),
                    body=StateBody.model_validate({"status": "offline", "fw": "0.9.0"}),
                )
                for payload in (encode(stale), state(device_id, boot, "offline")):
                    await asyncio.to_thread(
                        lambda p=payload: devices.peer.publish(
                            state_topic(device_id), p, qos=1
                        ).result(10)
                    )
                got = await asyncio.wait_for(subscription.get(), 10)
                assert (got.data["status"], got.data["boot_id"]) == ("offline", boot)
                assert subscription.pending() == 0
        finally:
            await asyncio.to_thread(ingest.stop, 10)
            feed.unsubscribe(subscription)

    asyncio.run(scenario())
    assert count(engine, Position) == 2


def test_partition_is_stable_and_in_range() -> None:
    assert partition("wb-0001", 4) == partition("wb-0001", 4)
    assert {partition(f"wb-{i:04d}", 4) for i in range(100)} == {0, 1, 2, 3}


@pytest.mark.parametrize(
    ("url", "expected"),
    [("mqtt://127.0.0.1:1884", ("127.0.0.1", 1884)), ("mqtt://broker", ("broker", 1883))],
)
def test_parse_mqtt_url(url: str, expected: tuple[str, int]) -> None:
    assert parse_mqtt_url(url) == expected


@pytest.mark.parametrize("url", ["http://x:1", "mqtt://", "mqtt://h:1/path", "127.0.0.1:1883"])
def test_parse_mqtt_url_refuses(url: str) -> None:
    with pytest.raises(ValueError):
        parse_mqtt_url(url)
