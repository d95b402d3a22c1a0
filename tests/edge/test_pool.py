"""ClientPool: 200 MQTT clients on one asyncio loop against a private Mosquitto."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from pathlib import Path

from edge.comms.mqtt import ClientPool, MqttPeer, OutgoingMessage, PooledClient, RawMessage
from tests.edge.mqtt_helpers import PrivateBroker, unique_id, wait_until

logger = logging.getLogger(__name__)

CLIENTS = 200


def _state(device: str, status: str) -> OutgoingMessage:
    payload = json.dumps({"device": device, "status": status}).encode()
    return OutgoingMessage(f"pool/{device}/state", payload, qos=1, retain=True)


def test_two_hundred_clients_on_one_loop(tmp_path: Path) -> None:
    with PrivateBroker(tmp_path) as broker:
        seen: dict[str, list[RawMessage]] = {"evt": [], "state": [], "cmd": []}
        lock = threading.Lock()

        def watch(message: RawMessage) -> None:
            kind = message.topic.split("/")[2]
            with lock:
                seen[kind].append(message)

        watcher = MqttPeer(
            unique_id("watch"),
            broker.settings(),
            subscriptions=[("pool/+/evt", 1), ("pool/+/state", 1)],
            on_message=watch,
        )
        watcher.start()
        assert watcher.wait_subscribed(5)
        received: list[tuple[str, bytes]] = []
        timings: dict[str, float] = {}

        async def scenario() -> None:
            pool = ClientPool(broker.settings(keepalive_s=30), connect_concurrency=32)
            started = time.monotonic()
            clients: list[PooledClient] = []
            for i in range(CLIENTS):
                device = f"dev{i:03d}"
                clients.append(
                    pool.add(
                        device,
                        will=lambda d=device: _state(d, "offline"),  # type: ignore[misc]
                        birth=lambda d=device: _state(d, "online"),  # type: ignore[misc]
                        farewell=lambda d=device: _state(d, "bye"),  # type: ignore[misc]
                        subscriptions=[(f"pool/{device}/cmd", 1)],
                        on_message=lambda c, m: received.append((c.client_id, m.payload)),
                    )
                )
            assert await pool.wait_all_connected(20)
            timings["connect"] = time.monotonic() - started
            started = time.monotonic()
            await asyncio.gather(
                *(c.publish(f"pool/{c.client_id}/evt", b"hello", timeout=10) for c in clients)
            )
            timings["publish"] = time.monotonic() - started
            # Messages to the pooled clients arrive on the loop too.
            await asyncio.sleep(0.3)  # SUBACKs
            for c in clients[:20]:
                watcher.publish(f"pool/{c.client_id}/cmd", c.client_id.encode())
            for _ in range(100):
                if len(received) >= 20:
                    break
                await asyncio.sleep(0.05)
            # One device dies without DISCONNECT: the broker sends its will.
            clients[7].abort()
            await asyncio.sleep(0.5)
            await pool.close(timeout=5)

        asyncio.run(scenario())
        assert sorted(received) == sorted(
            (f"dev{i:03d}", f"dev{i:03d}".encode()) for i in range(20)
        )
        assert wait_until(lambda: len(seen["evt"]) >= CLIENTS, 10)
        assert wait_until(lambda: len(seen["state"]) >= 2 * CLIENTS, 10)
        watcher.close(2)
    with lock:
        evt_devices = {m.topic.split("/")[1] for m in seen["evt"]}
        by_device: dict[str, list[str]] = {}
        for m in seen["state"]:
            data = json.loads(m.payload)
            by_device.setdefault(data["device"], []).append(data["status"])
    assert evt_devices == {f"dev{i:03d}" for i in range(CLIENTS)}
    assert by_device["dev007"] == ["online", "offline"]
    assert all(statuses == ["online", "bye"] for d, statuses in by_device.items() if d != "dev007")
    logger.info(
        "%d pooled clients: connected in %.2f s, %d QoS 1 publishes acked in %.2f s",
        CLIENTS,
        timings["connect"],
        CLIENTS,
        timings["publish"],
    )
