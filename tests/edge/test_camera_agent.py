"""The camera as an agent with a hub: ``lantern edge camera`` publishing over a private
Mosquitto, the outbox holding sightings while the broker is away, and the hub's camera
profiles applied live or refused (with the reason in the retained state).

Frames are cut from one LFW photo (the window moving 3 px a frame) followed by grey
frames, so one face passes by; the engine is dlib without mirror averaging or
upsampling, to keep the module to a few seconds.
"""

from __future__ import annotations

import base64
import json
import queue
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from typer.testing import CliRunner

import edge.camera.agent as camera_agent_module
from devices.catalog import BUILTIN_CATALOG
from devices.firmware import CameraProfile, DeviceSource, DirSource, TrackSettings
from devices.protocol import (
    ConfigBody,
    ConfigMessage,
    SightingEvent,
    config_sha256,
    decode,
    decode_embedding,
    encode,
    topic_for,
)
from edge.agent import AgentTuning
from edge.camera import CameraAgent, EngineChoice, LiveFrames
from edge.cli import app
from edge.comms.mqtt import MqttSettings
from edge.outbox import Outbox, OutboxLimits
from models.dlib_backend import DlibConfig
from models.engine import EngineConfig, FaceEngine, build_engine
from models.images import load_rgb
from tests.edge.mqtt_helpers import (
    HubRecord,
    HubSim,
    PrivateBroker,
    edge_command,
    run_env,
    unique_id,
    wait_until,
)

U8 = npt.NDArray[np.uint8]

PHOTO = "lfw_dev/Aaron_Sorkin/Aaron_Sorkin_0001.jpg"  # 250 x 250, face box ~104 px
SIZE = 200
ENGINE = EngineConfig(backend=DlibConfig(upsample=0), flip=False)
MODEL = "lantern-fixcam-f1"
FAST = AgentTuning(resend_after_s=1.0, close_timeout_s=3.0, idle_wait_s=0.05)

runner = CliRunner()


@pytest.fixture(scope="module")
def face_image(faces_dir: Path) -> U8:
    return load_rgb(faces_dir / PHOTO)


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return build_engine(ENGINE)


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    with PrivateBroker(tmp_path) as running:
        yield running


def passing_face(image: U8, n: int = 8, step: int = 3) -> list[U8]:
    """``n`` windows of ``image``, ``step`` px further right each time."""
    return [
        np.ascontiguousarray(image[25 : 25 + SIZE, 20 + step * i : 20 + step * i + SIZE])
        for i in range(n)
    ]


def grey(n: int) -> list[U8]:
    return [np.full((SIZE, SIZE, 3), 127, np.uint8) for _ in range(n)]


def write_frames(folder: Path, frames: list[U8]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        assert cv2.imwrite(str(folder / f"frame_{i:04d}.png"), frame[:, :, ::-1])
    return folder


def camera_profile(source: DirSource | DeviceSource, **changes: Any) -> CameraProfile:
    base = CameraProfile(
        source=source,
        model_id="dlib-resnet-v1",
        fps=5,
        track=TrackSettings(min_hits=2, max_age_frames=2),
    )
    return base.model_copy(update=changes)


def profile_yaml(path: Path, folder: Path) -> Path:
    path.write_text(
        f"type: camera\nsource: {{kind: dir, path: {json.dumps(str(folder))}}}\n"
        "model_id: dlib-resnet-v1\nfps: 5\ntrack: {min_hits: 2, max_age_frames: 2}\n",
        encoding="utf-8",
    )
    return path


def check_sighting(record: HubRecord, device_id: str) -> SightingEvent:
    """The sighting decodes as the hub decodes it, with a unit dlib vector."""
    message = record.message
    assert isinstance(message, SightingEvent)
    again = decode(topic_for(message), encode(message)).message
    assert again == message and message.device_id == device_id
    body = message.body
    assert body.model_id == "dlib-resnet-v1"
    assert len(base64.b64decode(body.embedding)) == 128 * 4
    vector = decode_embedding(body.embedding, 128)
    assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-3
    assert body.frame == (SIZE, SIZE) and body.quality.detector == "dlib-hog"
    return message


def stored_topics(outbox: Path) -> list[str]:
    """Topics of the events in an outbox file, read beside the agent (WAL readers)."""
    with sqlite3.connect(f"file:{outbox}?mode=ro", uri=True, timeout=5) as db:
        return [str(r[0]) for r in db.execute("SELECT topic FROM outbox WHERE kind = 'event'")]


def outbox_events(path: Path) -> int:
    box = Outbox(path, OutboxLimits(10**9, 10**6))
    try:
        return box.events
    finally:
        box.close()


def test_command_publishes_one_sighting_and_exits_once_acked(
    face_image: U8, broker: PrivateBroker, tmp_path: Path
) -> None:
    device_id = unique_id("cam")
    frames = write_frames(tmp_path / "frames", passing_face(face_image) + grey(3))
    engine_file = tmp_path / "engine.json"
    engine_file.write_text(ENGINE.model_dump_json(), encoding="utf-8")
    outbox = tmp_path / "outbox.db"
    args = [
        "camera", "--device-id", device_id, "--source", str(frames),
        "--profile", str(profile_yaml(tmp_path / "profile.yaml", frames)),
        "--engine", str(engine_file), "--broker", f"127.0.0.1:{broker.port}",
        "--outbox", str(outbox), "--resend-after", "1", "--drain-timeout", "30",
    ]  # fmt: skip
    with HubSim(broker.settings()) as hub:
        started = time.monotonic()
        done = subprocess.run(
            edge_command(*args),
            env=run_env(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        stderr = done.stderr.decode(errors="replace")
        assert done.returncode == 0, stderr[-3000:]
        assert "every event delivered and acked; stopping" in stderr
        assert time.monotonic() - started < 20  # well before the drain timeout
        (record,) = hub.records("sighting")
        sighting = check_sighting(record, device_id)
        assert hub.copies[sighting.event_id] == 1 and not hub.invalid
        assert sighting.body.track_id == 1 and sighting.seq >= 0
        assert wait_until(
            lambda: (hub.last_state(device_id) or {}).get("body", {}).get("status") == "offline", 5
        )
        state = hub.last_state(device_id)
        assert state is not None and state["schema"] == "lantern.state/2"
        assert state["body"]["hw_model"] == MODEL and "config_error" not in state["body"]
    summary = json.loads(stderr.strip().splitlines()[-1])
    assert summary["camera"]["sightings"] == 1 and summary["camera"]["frames_processed"] == 11
    assert summary["acked"] == summary["produced"] >= 2  # a check-in and the sighting
    assert outbox_events(outbox) == 0


def test_sightings_are_kept_while_the_broker_is_away_then_delivered(
    face_image: U8, engine: FaceEngine, tmp_path: Path
) -> None:
    device_id = unique_id("cam")
    frames = write_frames(tmp_path / "frames", passing_face(face_image) + grey(3))
    broker = PrivateBroker(tmp_path / "broker")  # not started yet
    outbox = tmp_path / "outbox.db"
    engines = EngineChoice(ENGINE)
    engines.add(ENGINE, engine)
    agent = CameraAgent(
        device_id=device_id,
        model=BUILTIN_CATALOG.get_model(MODEL),
        profile=camera_profile(DirSource(path=str(frames), pattern="*")),
        mqtt=broker.settings(),
        outbox_path=outbox,
        engines=engines,
        tuning=FAST,
    )
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        assert agent.frames_done.wait(15) and agent.failure is None
        assert wait_until(
            lambda: any(t.endswith("/evt/sighting") for t in stored_topics(outbox)), 5
        )
        assert not agent.link.connected and agent.camera_stats().sightings == 1
        with broker, HubSim(broker.settings()) as hub:
            assert wait_until(lambda: len(hub.records("sighting")) == 1, 15)
            assert wait_until(lambda: agent.outbox.events == 0, 10)
            (record,) = hub.records("sighting")
            sighting = check_sighting(record, device_id)
            assert record.replayed  # captured while the link was down
            reference = engine.embed(face_image, engine.detect(face_image))[0]
            assert float(decode_embedding(sighting.body.embedding, 128) @ reference) > 0.9
            agent.stop()
            thread.join(10)
            assert not thread.is_alive()
            assert len(hub.records("sighting")) == 1
    finally:
        agent.stop()
        thread.join(10)
    assert outbox_events(outbox) == 0


class FakeCamera:
    """A capture device filming a grey wall at 25 frames a second, showing the frames
    queued with :meth:`show` when there are any."""

    def __init__(self) -> None:
        self.frames: queue.Queue[U8] = queue.Queue()
        self.opened = 0

    def show(self, frames: list[U8]) -> None:
        for frame in frames:
            self.frames.put(frame)

    def open(self) -> FakeCamera._Capture:
        self.opened += 1
        return FakeCamera._Capture(self)

    class _Capture:
        def __init__(self, camera: FakeCamera) -> None:
            self.camera = camera

        def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
            return True

        def read(self) -> tuple[bool, U8 | None]:
            time.sleep(0.04)
            try:
                rgb = self.camera.frames.get_nowait()
            except queue.Empty:
                rgb = grey(1)[0]
            return True, np.ascontiguousarray(rgb[:, :, ::-1])

        def get(self, prop: int) -> float:
            return 0.0

        def release(self) -> None:
            pass


def config_message(device_id: str, version: int, profile: CameraProfile) -> ConfigMessage:
    config = profile.model_dump(mode="json")
    return ConfigMessage(
        device_id=device_id,
        sent_at=datetime.now(UTC),
        body=ConfigBody(version=version, sha256=config_sha256(config), config=config),
    )


def test_pushed_profiles_apply_live_or_are_refused_with_the_reason_in_the_state(
    face_image: U8,
    engine: FaceEngine,
    broker: PrivateBroker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    device_id = unique_id("cam")
    camera = FakeCamera()

    def fake_source(source: object, *, fps: float) -> LiveFrames:
        return LiveFrames(camera.open, fps=fps, description="fake camera")

    monkeypatch.setattr(camera_agent_module, "open_source", fake_source)
    engines = EngineChoice(ENGINE)
    engines.add(ENGINE, engine)
    first = camera_profile(DeviceSource(index=0), fps=60)
    settings: MqttSettings = broker.settings()
    with HubSim(settings) as hub:
        agent = CameraAgent(
            device_id=device_id,
            model=BUILTIN_CATALOG.get_model(MODEL),
            profile=first,
            mqtt=settings,
            outbox_path=tmp_path / "outbox.db",
            engines=engines,
            tuning=FAST,
        )
        thread = threading.Thread(target=agent.run, daemon=True)
        thread.start()

        def state_body() -> dict[str, Any]:
            state = hub.last_state(device_id, boot=agent.outbox.boot_id)
            return {} if state is None else dict(state["body"])

        def push(version: int, profile: CameraProfile) -> None:
            message = config_message(device_id, version, profile)
            hub.peer.publish(topic_for(message), encode(message), retain=True).result(5)

        try:
            assert agent.link.wait_subscribed(5)
            camera.show(passing_face(face_image))
            assert wait_until(lambda: len(hub.records("sighting")) == 1, 10)
            assert hub.records("sighting")[0].message.body.crop_jpeg is None

            # Crops switched on: the pipeline takes it between two frames.
            crops_on = first.model_copy(
                update={"crops": first.crops.model_copy(update={"send_face_crop": True})}
            )
            push(2, crops_on)
            assert wait_until(lambda: state_body().get("config_version") == 2, 5)
            assert wait_until(
                lambda: (
                    agent.running_profile is not None and agent.running_profile.crops.send_face_crop
                ),
                5,
            )
            camera.show(passing_face(face_image))
            assert wait_until(lambda: len(hub.records("sighting")) == 2, 10)
            second = hub.records("sighting")[1].message
            assert second.body.crop_jpeg is not None and second.body.track_id == 2
            assert camera.opened == 1  # the stream was not reopened for that

            # Another face model than the engine's: refused, and the state says why.
            other = first.model_copy(update={"model_id": "insightface-w600k_r50"})
            push(3, other)
            assert wait_until(lambda: "config_error" in state_body(), 5)
            body = state_body()
            assert body["config_version"] == 2 and "model_id" in body["config_error"]
            assert agent.camera_profile.model_id == "dlib-resnet-v1"
            # The hub goes back to the config in force: nothing to refuse any more.
            push(2, crops_on)
            assert wait_until(lambda: "config_error" not in state_body(), 5)
            # A config with many faults: the reason is cut to the protocol's 300 characters.
            faulty = first.model_dump(mode="json") | {f"zoom_{i:02d}": i for i in range(30)}
            message = ConfigMessage(
                device_id=device_id,
                sent_at=datetime.now(UTC),
                body=ConfigBody(version=4, sha256=config_sha256(faulty), config=faulty),
            )
            hub.peer.publish(topic_for(message), encode(message), retain=True).result(5)
            assert wait_until(lambda: "config_error" in state_body(), 5)
            error = state_body()["config_error"]
            assert len(error) == 300 and error.endswith("\u2026") and "zoom_00" in error

            # A new frame rate: applied, the stream reopened, the error gone.
            slower = first.model_copy(update={"fps": 20.0})
            push(5, slower)
            assert wait_until(lambda: state_body().get("config_version") == 5, 5)
            assert "config_error" not in state_body() and agent.config_error is None
            assert wait_until(lambda: camera.opened == 2, 5)
            assert wait_until(
                lambda: agent.running_profile is not None and agent.running_profile.fps == 20, 5
            )
            assert agent.failure is None
        finally:
            agent.stop()
            thread.join(15)
        assert not thread.is_alive()
        assert len({r.message.body.track_id for r in hub.records("sighting")}) == 2


def test_command_refusals(tmp_path: Path) -> None:
    missing = runner.invoke(
        app, ["camera", "--device-id", "cam-1", "--source", str(tmp_path / "nope")]
    )
    assert missing.exit_code == 2 and "not an rtsp" in missing.output
    wrong_model = runner.invoke(
        app,
        [
            "camera", "--device-id", "cam-1", "--source", str(tmp_path), "--model",
            "lantern-ankle-a1", "--outbox", str(tmp_path / "o.db"),
        ],
    )  # fmt: skip
    assert wrong_model.exit_code == 2 and "camera" in wrong_model.output
    bad_model = runner.invoke(
        app, ["camera", "--device-id", "cam-1", "--source", str(tmp_path), "--model", "nope"]
    )
    assert bad_model.exit_code == 2


def test_a_stalled_live_source_can_be_interrupted() -> None:
    """The agent stops a stream that sends nothing (no frame to notice the stop on)."""
    stall = threading.Event()

    class Stalled:
        def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
            return True

        def read(self) -> tuple[bool, U8 | None]:
            stall.wait(10)
            return False, None

        def get(self, prop: int) -> float:
            return 0.0

        def release(self) -> None:
            pass

    source = LiveFrames(Stalled, fps=5, description="stalled", backoff=(0.05, 0.1))
    frames: list[object] = []
    reader = threading.Thread(target=lambda: frames.extend(source), daemon=True)
    reader.start()
    time.sleep(0.2)
    assert reader.is_alive()  # waiting for a frame that does not come
    source.interrupt()
    stall.set()  # the blocked read returns; the reader sees the stop and does not reopen
    reader.join(3)
    assert not reader.is_alive() and frames == []
    assert source.stats.reconnects == 0
