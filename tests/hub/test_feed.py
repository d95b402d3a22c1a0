"""The live feed: the broker on its own, and the WebSocket route over the app on
SQLite and PostgreSQL (snapshot, deltas, filters, slow clients, every role)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIWebSocketRoute as WebSocketRoute
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.websockets import WebSocketDisconnect

from devices.protocol import (
    AlarmBody,
    AlarmEvent,
    PositionBody,
    PositionEvent,
    decode,
    encode,
    new_boot_id,
    new_event_id,
    topic_for,
)
from hub.api import create_app
from hub.api.routes.feed import FEED_ROLES
from hub.auth import Role, disable_user
from hub.db.models import Device, Site
from hub.db.repositories import store_event
from hub.feed import FeedBroker, FeedDelta, FeedObserver, SubscriberDropped
from tests.hub import policy_live
from tests.hub.test_api import _add_user, _login, _settings

FEED = "/api/v1/feed"
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
BOOT = new_boot_id()


def delta(
    kind: Any = "position", site: str = "north", device: str = "ankle-a", n: int = 0
) -> FeedDelta:
    return FeedDelta(type=kind, site_id=site, device_id=device, time=T0, data={"n": n, "lat": 51.5})


def gauge() -> float:
    return REGISTRY.get_sample_value("lantern_feed_subscribers") or 0.0


def dropped() -> float:
    return REGISTRY.get_sample_value("lantern_feed_dropped_total") or 0.0


# -- the broker alone ----------------------------------------------------------------------


class LoopThread:
    """An event loop on its own thread, standing in for the API server's."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> LoopThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def run(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


def test_publish_never_blocks_and_a_slow_subscriber_is_dropped() -> None:
    broker = FeedBroker(queue_size=1000)
    base_gauge, base_dropped = gauge(), dropped()
    with LoopThread() as server:

        async def subscribe() -> Any:
            return (
                broker.subscribe(),  # never reads: the slow client
                broker.subscribe(types=["alarm"]),  # reads the few alarms
            )

        slow, alarms = server.run(subscribe())
        assert broker.subscriber_count == 2 and gauge() == base_gauge + 2

        # Hold the subscribers' loop hostage: publish must not care.
        release = threading.Event()
        server.loop.call_soon_threadsafe(release.wait, 30)
        slowest = 0.0
        started = time.perf_counter()
        for n in range(10_000):
            t = time.perf_counter()
            broker.publish(delta("alarm" if n % 1000 == 0 else "position", n=n))
            slowest = max(slowest, time.perf_counter() - t)
        elapsed = time.perf_counter() - started
        release.set()
        assert elapsed < 2.0, elapsed
        assert slowest < 0.05, slowest

        assert slow.dropped and broker.subscriber_count == 1
        assert dropped() == base_dropped + 1 and gauge() == base_gauge + 1
        with pytest.raises(SubscriberDropped):
            server.run(slow.get())

        async def ten() -> list[int]:
            return [(await alarms.get()).data["n"] for _ in range(10)]

        assert server.run(ten()) == list(range(0, 10_000, 1000))
        assert alarms.pending() == 0 and not alarms.dropped
        broker.unsubscribe(alarms)
        broker.unsubscribe(alarms)  # idempotent
        assert broker.subscriber_count == 0 and gauge() == base_gauge


def test_broker_filters_by_site_and_type_and_keeps_order() -> None:
    broker = FeedBroker()

    async def scenario() -> tuple[list[int], list[int]]:
        north = broker.subscribe(sites=["north"])
        south_states = broker.subscribe(sites=["south"], types=["device_state"])
        publisher = threading.Thread(
            target=lambda: [
                broker.publish(delta(kind, site, n=n))
                for n, (kind, site) in enumerate(
                    [("position", "north"), ("device_state", "south"), ("alarm", "south")] * 50
                )
            ]
        )
        publisher.start()
        got_north = [(await north.get()).data["n"] for _ in range(50)]
        got_south = [(await south_states.get()).data["n"] for _ in range(50)]
        publisher.join()
        return got_north, got_south

    got_north, got_south = asyncio.run(scenario())
    assert got_north == list(range(0, 150, 3))
    assert got_south == list(range(1, 150, 3))
    with pytest.raises(ValueError, match="unknown delta types"):
        asyncio.run(_subscribe(broker, types=["weather"]))


async def _subscribe(broker: FeedBroker, **kwargs: Any) -> Any:
    return broker.subscribe(**kwargs)


# -- the WebSocket route -------------------------------------------------------------------


@pytest.fixture
def app(engine: Engine) -> FastAPI:
    return create_app(_settings(engine), engine)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def tokens(engine: Engine, client: TestClient) -> dict[Role, str]:
    """A token of every role."""
    out = {}
    for role in Role:
        _add_user(engine, f"{role.value}-user", role)
        out[role] = _login(client, f"{role.value}-user")["Authorization"].split(" ", 1)[1]
    return out


def _event_position(device: str, seq: int, minutes: int, lat: float) -> PositionEvent:
    at = T0 + timedelta(minutes=minutes)
    return PositionEvent(
        device_id=device,
        event_id=new_event_id(),
        boot_id=BOOT,
        seq=seq,
        captured_at=at,
        sent_at=at,
        body=PositionBody(lat=lat, lon=-0.1, acc=4.0, src="gnss"),
    )


def _event_alarm(device: str, seq: int, state: Any, alarm_id: str) -> AlarmEvent:
    at = T0 + timedelta(minutes=seq)
    return AlarmEvent(
        device_id=device,
        event_id=new_event_id(),
        boot_id=BOOT,
        seq=seq,
        captured_at=at,
        sent_at=at,
        body=AlarmBody(type="strap.tamper", state=state, alarm_id=alarm_id),
    )


@pytest.fixture
def world(engine: Engine) -> None:
    with Session(engine) as session, session.begin():
        session.add_all([Site(site_id="north", name="North"), Site(site_id="south", name="South")])
        session.flush()
        session.add_all(
            [
                Device(device_id="ankle-a", site_id="north", model="ankle", status="online"),
                Device(device_id="cam-s", site_id="south", model="cam", status="offline"),
            ]
        )
        session.flush()
        for event in [
            _event_position("ankle-a", 0, 0, 51.50),
            _event_position("ankle-a", 1, 5, 51.55),
            _event_alarm("ankle-a", 10, "active", "open-1"),
            _event_alarm("ankle-a", 11, "active", "closed-1"),
            _event_alarm("ankle-a", 12, "cleared", "closed-1"),
            _event_alarm("cam-s", 13, "active", "open-2"),
        ]:
            decoded = decode(topic_for(event), encode(event), now=T0 + timedelta(days=1))
            assert store_event(session, decoded)


def _refusal(client: TestClient, url: str, **kwargs: Any) -> WebSocketDisconnect:
    with client.websocket_connect(url, **kwargs) as ws, pytest.raises(WebSocketDisconnect) as info:
        ws.receive_json()
    return info.value


def test_feed_admits_exactly_its_roles(
    app: FastAPI, client: TestClient, tokens: dict[Role, str]
) -> None:
    assert FEED_ROLES == policy_live.WEBSOCKET_POLICY[FEED]
    sockets = [
        c.path
        for c in iter_route_contexts(app.routes)
        if isinstance(c.original_route, WebSocketRoute)
    ]
    assert sockets == [FEED]  # the only WebSocket route, so the only one checked here
    for role, token in tokens.items():
        if role in policy_live.WEBSOCKET_POLICY[FEED]:
            with client.websocket_connect(f"{FEED}?access_token={token}") as ws:
                assert ws.receive_json()["type"] == "snapshot", role
            header = {"Authorization": f"Bearer {token}"}
            with client.websocket_connect(FEED, headers=header) as ws:
                assert ws.receive_json()["type"] == "snapshot", role
        else:
            refused = _refusal(client, f"{FEED}?access_token={token}")
            assert (refused.code, refused.reason) == (1008, f"role {role.value} may not do this")
    missing = _refusal(client, FEED)
    assert (missing.code, missing.reason) == (1008, "not authenticated")
    forged = tokens[Role.admin][:-4] + "AAAA"
    bad = _refusal(client, f"{FEED}?access_token={forged}")
    assert (bad.code, bad.reason) == (1008, "invalid or expired token")
    basic = _refusal(client, FEED, headers={"Authorization": "Basic YTpi"})
    assert basic.code == 1008


def test_a_disabled_user_is_refused(engine: Engine, client: TestClient) -> None:
    user = _add_user(engine, "dora", Role.officer)
    token = _login(client, "dora")["Authorization"].split(" ", 1)[1]
    disable_user(engine, user.id, actor="test", actor_role="admin")
    refused = _refusal(client, f"{FEED}?access_token={token}")
    assert (refused.code, refused.reason) == (1008, "user unknown or disabled")


def test_snapshot_then_deltas(
    app: FastAPI, client: TestClient, tokens: dict[Role, str], world: None
) -> None:
    token = tokens[Role.officer]
    with client.websocket_connect(f"{FEED}?access_token={token}") as ws:
        snapshot = ws.receive_json()
        assert snapshot["type"] == "snapshot" and snapshot["sites"] is None
        assert snapshot["types"] == ["alarm", "alert", "device_state", "position", "sighting"]
        devices = {d["device_id"]: d for d in snapshot["devices"]}
        assert devices["ankle-a"]["status"] == "online" and devices["ankle-a"]["site_id"] == "north"
        assert devices["ankle-a"]["position"]["lat"] == 51.55  # the latest fix
        assert devices["cam-s"]["status"] == "offline" and devices["cam-s"]["position"] is None
        assert [a["alarm_id"] for a in snapshot["open_alarms"]] == ["open-2", "open-1"]

        broker: FeedBroker = app.state.feed  # made by the first connection
        assert broker.subscriber_count == 1
        sent = delta("position", "north", "ankle-a", n=7)
        threading.Thread(target=broker.publish, args=(sent,)).start()  # as ingest would
        assert FeedDelta.model_validate(ws.receive_json()) == sent
    assert wait_for(lambda: broker.subscriber_count == 0)


def test_site_and_type_filters(
    app: FastAPI, client: TestClient, tokens: dict[Role, str], world: None
) -> None:
    broker = FeedBroker()
    app.state.feed = broker
    url = f"{FEED}?access_token={tokens[Role.analyst]}&site=south&types=alarm,device_state"
    with client.websocket_connect(url) as ws:
        snapshot = ws.receive_json()
        assert snapshot["sites"] == ["south"] and snapshot["types"] == ["alarm", "device_state"]
        assert [d["device_id"] for d in snapshot["devices"]] == ["cam-s"]
        assert [a["alarm_id"] for a in snapshot["open_alarms"]] == ["open-2"]
        broker.publish(delta("alarm", "north", n=1))  # other site
        broker.publish(delta("position", "south", "cam-s", n=2))  # other type
        broker.publish(delta("sighting", "south", "cam-s", n=3))  # other type
        broker.publish(delta("device_state", "south", "cam-s", n=4))
        broker.publish(delta("alarm", "south", "cam-s", n=5))
        assert ws.receive_json()["data"]["n"] == 4
        assert ws.receive_json()["data"]["n"] == 5
    bad = _refusal(client, f"{FEED}?access_token={tokens[Role.admin]}&types=position,weather")
    assert (bad.code, bad.reason) == (1008, "types: unknown weather")


def test_a_client_that_does_not_keep_up_is_closed_too_slow(
    app: FastAPI, client: TestClient, tokens: dict[Role, str]
) -> None:
    broker = FeedBroker(queue_size=10)
    app.state.feed = broker
    before = dropped()

    def burst() -> float:
        # Runs on the server's event loop: the connection cannot send anything while
        # 50 deltas arrive, exactly as if its client had stopped reading.
        started = time.perf_counter()
        for n in range(50):
            broker.publish(delta(n=n))
        return time.perf_counter() - started

    with client.websocket_connect(f"{FEED}?access_token={tokens[Role.admin]}") as ws:
        assert ws.receive_json()["type"] == "snapshot"
        assert client.portal is not None
        assert client.portal.call(burst) < 0.5
        with pytest.raises(WebSocketDisconnect) as info:
            ws.receive_json()
        assert (info.value.code, info.value.reason) == (4008, "too slow")
    assert dropped() == before + 1
    assert broker.subscriber_count == 0


def test_the_feed_observer_maps_devices_to_sites(engine: Engine, world: None) -> None:
    broker = FeedBroker()
    observer = FeedObserver(engine, broker)
    event = _event_position("ankle-a", 7, 9, 51.6)

    async def scenario() -> FeedDelta:
        subscription = broker.subscribe(sites=["north"])
        observer.on_event(event, T0 + timedelta(minutes=10))
        observer.on_event(_event_position("ghost", 0, 0, 1.0), T0)  # unregistered: not fed
        return await asyncio.wait_for(subscription.get(), 5)

    got = asyncio.run(scenario())
    assert (got.type, got.site_id, got.device_id, got.time) == (
        "position",
        "north",
        "ankle-a",
        event.captured_at,
    )
    assert got.data["event_id"] == event.event_id and got.data["lat"] == 51.6
    assert observer.site_of("ankle-a") == "north" and observer.site_of("ghost") is None
    with Session(engine) as session, session.begin():
        device = session.get(Device, "ankle-a")
        assert device is not None
        device.site_id = "south"
    assert observer.site_of("ankle-a") == "north"  # cached
    observer.forget("ankle-a")
    assert observer.site_of("ankle-a") == "south"


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())
