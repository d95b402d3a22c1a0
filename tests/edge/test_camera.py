"""The camera pipeline end to end on real photos made into short "videos".

A video here is a folder of frames cut from one photo, the window moving a few pixels
per frame so the face moves, followed by empty frames so the track ends. The engine
is dlib without mirror averaging and without upsampling (faces here are over 80 px),
to keep the module to a few seconds.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
import typer
from typer.testing import CliRunner

from devices.firmware import (
    CameraProfile,
    CropSettings,
    DirSource,
    QualityGate,
    TrackSettings,
)
from devices.protocol import (
    AlarmEvent,
    EventEnvelope,
    SightingEvent,
    decode,
    decode_embedding,
    encode,
    topic_for,
)
from edge.camera import (
    CameraConfigError,
    CameraPipeline,
    CameraStats,
    DirFrames,
    FrameSource,
    ListSink,
    LocalEventFactory,
    PipelineOptions,
    VideoFileFrames,
    camera,
    make_camera_command,
)
from edge.camera.events import EventFactory, SightingSink
from edge.watchlist import (
    Watchlist,
    WatchlistMismatch,
    build_document,
    load_watchlist,
    write_document,
)
from models.dlib_backend import DlibConfig
from models.engine import EngineConfig, FaceEngine, build_engine
from models.images import downscaled, load_rgb
from models.quality import QualityConfig, gate

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

EXAMPLES = "people_small/face_recognition_examples"
GROUP = "groups/dlib_faces/2008_002506.jpg"
DEVICE = "cam-test-01"
SIZE = 300
TEST_ENGINE = EngineConfig(backend=DlibConfig(upsample=0), flip=False)


@pytest.fixture(scope="module")
def engine() -> FaceEngine:
    return build_engine(TEST_ENGINE)


def photo(faces_dir: Path, name: str, max_side: int) -> U8:
    image, _ = downscaled(load_rgb(faces_dir / name), max_side)
    return image


@pytest.fixture(scope="module")
def obama(faces_dir: Path) -> U8:
    return photo(faces_dir, f"{EXAMPLES}/obama.jpg", 455)  # 455 x 364, face box ~104 px


def blank(n: int, shape: tuple[int, int] = (SIZE, SIZE)) -> list[U8]:
    return [np.full((*shape, 3), 127, np.uint8) for _ in range(n)]


def moving(image: U8, n: int = 10, step: int = 4) -> list[U8]:
    """``n`` windows of ``image``, ``step`` px further right each time."""
    return [
        np.ascontiguousarray(image[20 : 20 + SIZE, 10 + step * i : 10 + step * i + SIZE])
        for i in range(n)
    ]


def write_frames(folder: Path, frames: Sequence[U8]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        assert cv2.imwrite(str(folder / f"frame_{i:04d}.png"), frame[:, :, ::-1])
    return folder


def camera_profile(
    *,
    emit: str = "best_shot",
    fused_max_frames: int = 5,
    quality: QualityGate | None = None,
    crops: bool = False,
) -> CameraProfile:
    return CameraProfile(
        source=DirSource(path="unused"),
        model_id="dlib-resnet-v1",
        fps=5,
        track=TrackSettings(
            max_age_frames=3,
            min_hits=2,
            emit=emit,  # type: ignore[arg-type]
            fused_max_frames=fused_max_frames,
            max_track_s=600,
        ),
        quality=quality or QualityGate(),
        crops=CropSettings(send_face_crop=crops),
    )


def pipeline_for(
    engine: FaceEngine, profile: CameraProfile, watchlist: Watchlist | None = None
) -> tuple[CameraPipeline, ListSink]:
    sink = ListSink()
    pipeline = CameraPipeline(
        engine,
        profile,
        sink=sink,
        make_event=LocalEventFactory(DEVICE),
        watchlist=watchlist,
        options=PipelineOptions(detector_name="dlib-hog"),
    )
    return pipeline, sink


def checked(messages: list[EventEnvelope]) -> list[EventEnvelope]:
    """Every message survives the wire: encode, then decode as the hub does."""
    for message in messages:
        assert isinstance(message, SightingEvent | AlarmEvent)
        assert decode(topic_for(message), encode(message)).message == message
    return messages


def run(
    engine: FaceEngine,
    profile: CameraProfile,
    source: FrameSource,
    watchlist: Watchlist | None = None,
) -> tuple[list[EventEnvelope], CameraStats]:
    pipeline, sink = pipeline_for(engine, profile, watchlist)
    stats = pipeline.run(source)
    return checked(sink.messages), stats


def sightings(messages: list[EventEnvelope]) -> list[SightingEvent]:
    return [m for m in messages if isinstance(m, SightingEvent)]


def vector(message: SightingEvent) -> F32:
    return decode_embedding(message.body.embedding, 128)


def embedding_of(engine: FaceEngine, image: U8) -> F32:
    faces = engine.detect(image)
    assert len(faces) == 1
    out: F32 = engine.embed(image, faces)[0]
    return out


@pytest.mark.parametrize("emit", ["fused", "best_shot"])
def test_one_person_passing_by_gives_one_sighting(
    engine: FaceEngine, obama: U8, tmp_path: Path, emit: str
) -> None:
    folder = write_frames(tmp_path / "frames", moving(obama) + blank(6))
    profile = camera_profile(emit=emit, fused_max_frames=10, crops=emit == "best_shot")
    pipeline, sink = pipeline_for(engine, profile)
    during = []
    for frame in DirFrames(folder, fps=5):
        during.extend(pipeline.process(frame))
    assert pipeline.flush() == []  # the track ended in the empty frames, not at the end
    assert pipeline.next_track_id == 2
    (sighting,) = sightings(checked(during))
    assert sink.messages == during

    stats = pipeline.stats
    assert (stats.frames_processed, stats.faces, stats.sightings) == (16, 10, 1)
    assert stats.faces_passed == 10
    body = sighting.body
    assert body.frames_fused == (10 if emit == "fused" else 1)
    assert stats.embeddings == body.frames_fused
    assert body.model_id == "dlib-resnet-v1" and body.track_id == 1
    assert body.frame == (SIZE, SIZE)
    x0, y0, x1, y1 = body.bbox
    assert 0 <= x0 < x1 <= SIZE and 0 <= y0 < y1 <= SIZE
    assert body.quality.detector == "dlib-hog" and body.quality.face_px >= 80
    assert body.quality.sharpness is not None and body.quality.sharpness >= 15
    assert sighting.seq == 0 and sighting.device_id == DEVICE

    reference = embedding_of(engine, obama)
    assert float(vector(sighting) @ reference) > 0.9

    if emit == "best_shot":
        assert body.crop_jpeg is not None
        jpeg = base64.b64decode(body.crop_jpeg)
        assert len(jpeg) <= 64 * 1024
        crop = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert crop is not None and max(crop.shape[:2]) <= 112
    else:
        assert body.crop_jpeg is None  # the profile does not allow crops


def test_blurred_frames_are_not_the_best_shot(
    engine: FaceEngine, obama: U8, tmp_path: Path
) -> None:
    frames = moving(obama)
    blurred = [cv2.GaussianBlur(f, (0, 0), 1.5) if i % 2 == 0 else f for i, f in enumerate(frames)]
    folder = write_frames(tmp_path / "frames", blurred + blank(5))

    def sharpness(image: U8) -> float:
        faces = engine.detect(image)
        (report,) = gate(engine, image, faces, QualityConfig())
        assert report.passed  # blurred, yet good enough to pass the gate
        return report.sharpness

    soft = [sharpness(f) for f in blurred[0::2]]
    sharp = [sharpness(f) for f in blurred[1::2]]
    assert max(soft) < min(sharp)

    messages, stats = run(engine, camera_profile(), DirFrames(folder, fps=5))
    (sighting,) = sightings(messages)
    chosen = sighting.body.quality.sharpness
    assert chosen is not None and chosen > max(soft)
    assert min(abs(chosen - s) for s in sharp) < 1e-3 * chosen
    assert stats.faces_passed == 10


def test_a_track_that_never_passes_the_gate_sends_nothing(
    engine: FaceEngine, obama: U8, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = write_frames(tmp_path / "frames", moving(obama, n=6) + blank(5))
    strict = camera_profile(quality=QualityGate(min_sharpness=1e6))
    with caplog.at_level(logging.INFO, logger="edge.camera.pipeline"):
        messages, stats = run(engine, strict, DirFrames(folder, fps=5))
    assert messages == []
    assert (stats.faces, stats.faces_passed, stats.embeddings) == (6, 0, 0)
    assert stats.tracks_without_usable_face == 1 and stats.sightings == 0
    assert any("no face passing the quality gate" in r.getMessage() for r in caplog.records)


@pytest.fixture(scope="module")
def group(faces_dir: Path) -> U8:
    return load_rgb(faces_dir / GROUP)  # 500 x 375, three faces of 87-104 px


@pytest.fixture(scope="module")
def group_boxes(engine: FaceEngine, group: U8) -> list[tuple[float, float, float, float]]:
    """The group photo's face boxes, left to right."""
    return sorted((f.bbox for f in engine.detect(group)), key=lambda b: b[0])


def group_frames(
    image: U8,
    boxes: list[tuple[float, float, float, float]],
    n: int,
    hide: Callable[[int], Sequence[int]],
) -> tuple[list[U8], list[tuple[float, float]]]:
    """Windows of the group photo moving 3 px right and 2 px down per frame; in frame
    ``i`` the faces ``hide(i)`` (indices into ``boxes``) are greyed out."""
    centres = [((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in boxes]
    frames = []
    for i in range(n):
        frame = image.copy()
        for k in hide(i):
            x0, y0, x1, y1 = (int(v) for v in boxes[k])
            frame[max(0, y0 - 12) : y1 + 12, max(0, x0 - 12) : x1 + 12] = 127
        frames.append(np.ascontiguousarray(frame[2 * i : 2 * i + 340, 3 * i : 3 * i + 460]))
    return frames, centres


def test_co_present_faces_give_one_sighting_per_face(
    engine: FaceEngine,
    group: U8,
    group_boxes: list[tuple[float, float, float, float]],
    tmp_path: Path,
) -> None:
    # The left face is hidden in frames 3 and 4: a gap its track survives.
    frames, centres = group_frames(group, group_boxes, 8, lambda i: [0] if i in (3, 4) else [])
    assert len(centres) == 3
    folder = write_frames(tmp_path / "frames", frames + blank(5, (340, 460)))
    messages, stats = run(engine, camera_profile(), DirFrames(folder, fps=5))
    found = sightings(messages)
    assert len(found) == 3 and len({s.body.track_id for s in found}) == 3
    assert stats.faces == 3 * 8 - 2 and stats.tracks_unconfirmed == 0
    # Each sighting is one of the three faces (boxes in window coordinates, the
    # window having moved at most 21 px).
    matched = set()
    for s in found:
        x0, y0, x1, y1 = s.body.bbox
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        distances = [np.hypot(cx - fx, cy - fy) for fx, fy in centres]
        assert min(distances) < 40
        matched.add(int(np.argmin(distances)))
    assert matched == {0, 1, 2}


def test_alternating_faces_keep_their_own_tracks(
    engine: FaceEngine,
    group: U8,
    group_boxes: list[tuple[float, float, float, float]],
    tmp_path: Path,
) -> None:
    # Faces 0 and 1 take turns (each hidden every other frame), face 2 never shows.
    frames, _ = group_frames(group, group_boxes, 10, lambda i: [i % 2, 2])
    folder = write_frames(tmp_path / "frames", frames + blank(5, (340, 460)))
    messages, stats = run(engine, camera_profile(), DirFrames(folder, fps=5))
    found = sightings(messages)
    assert len(found) == 2 and len({s.body.track_id for s in found}) == 2
    assert stats.faces == 10


@pytest.fixture(scope="module")
def watchlist_file(
    engine: FaceEngine, faces_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Obama enrolled from *another* photo of him; Biden as a second person."""
    obama2 = embedding_of(engine, photo(faces_dir, f"{EXAMPLES}/obama2.jpg", 800))
    biden = embedding_of(engine, photo(faces_dir, f"{EXAMPLES}/biden.jpg", 800))
    doc = build_document(
        model_id=engine.model_id,
        entries=[("wl-obama", obama2), ("wl-biden", biden)],
        threshold=0.9,
        version=5,
    )
    return write_document(tmp_path_factory.mktemp("wl") / "watchlist.json", doc)


def test_offline_watchlist_hit_raises_an_alarm(
    engine: FaceEngine, obama: U8, tmp_path: Path, watchlist_file: Path
) -> None:
    watchlist = load_watchlist(watchlist_file, model_id=engine.model_id, dim=engine.dim)
    folder = write_frames(tmp_path / "frames", moving(obama, n=6) + blank(5))
    messages, stats = run(engine, camera_profile(), DirFrames(folder, fps=5), watchlist)
    assert [type(m) for m in messages] == [SightingEvent, AlarmEvent]
    sighting, alarm = messages
    assert isinstance(alarm, AlarmEvent)
    assert alarm.body.type == "watchlist.hit" and alarm.body.state == "active"
    assert alarm.body.related_event_id == sighting.event_id
    assert alarm.body.detail is not None
    assert "wl-obama" in alarm.body.detail and "wl-biden" not in alarm.body.detail
    assert alarm.seq == sighting.seq + 1 and alarm.captured_at == sighting.captured_at
    assert stats.alarms == 1


def test_no_alarm_for_someone_else(
    engine: FaceEngine, obama: U8, tmp_path: Path, watchlist_file: Path
) -> None:
    full = load_watchlist(watchlist_file, model_id=engine.model_id)
    biden_only = [(e.person_ref, e.embedding) for e in full.document.entries][1:]
    vectors = np.stack([decode_embedding(v, 128) for _, v in biden_only])
    doc = build_document(
        model_id=engine.model_id,
        entries=[(ref, v) for (ref, _), v in zip(biden_only, vectors, strict=True)],
        threshold=0.9,
        version=6,
    )
    folder = write_frames(tmp_path / "frames", moving(obama, n=4) + blank(5))
    messages, stats = run(
        engine, camera_profile(), DirFrames(folder, fps=5), Watchlist(doc, vectors)
    )
    assert [type(m) for m in messages] == [SightingEvent] and stats.alarms == 0


def test_parts_of_other_models_are_refused(engine: FaceEngine) -> None:
    other = camera_profile().model_copy(update={"model_id": "insightface-w600k_r50"})
    with pytest.raises(CameraConfigError, match="insightface-w600k_r50.*dlib-resnet-v1"):
        pipeline_for(engine, other)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((1, 512)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    doc = build_document(
        model_id="insightface-w600k_r50", entries=[("p-1", vectors[0])], threshold=0.5, version=1
    )
    pipeline, _ = pipeline_for(engine, camera_profile())
    with pytest.raises(WatchlistMismatch, match="insightface-w600k_r50"):
        pipeline.watchlist = Watchlist(doc, vectors)


def test_video_file_gives_the_same_sightings_as_the_folder(
    engine: FaceEngine, obama: U8, tmp_path: Path
) -> None:
    # Frame 5 is the one sharp frame, so both sources pick the same best shot.
    faces = [f if i == 5 else cv2.GaussianBlur(f, (0, 0), 1.2) for i, f in enumerate(moving(obama))]
    frames = faces + blank(6)
    folder = write_frames(tmp_path / "frames", frames)
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 5.0, (SIZE, SIZE))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()

    from_dir, dir_stats = run(engine, camera_profile(), DirFrames(folder, fps=5))
    from_video, video_stats = run(engine, camera_profile(), VideoFileFrames(video, fps=5))
    (a,) = sightings(from_dir)
    (b,) = sightings(from_video)
    assert (a.body.track_id, a.body.frames_fused) == (b.body.track_id, b.body.frames_fused)
    assert a.body.frame == b.body.frame
    assert np.abs(np.subtract(a.body.bbox, b.body.bbox)).max() <= 4
    assert float(vector(a) @ vector(b)) > 0.97  # MJPG re-compression only
    assert dir_stats.faces == video_stats.faces == 10
    assert dir_stats.faces_passed == video_stats.faces_passed
    assert dir_stats.source is not None and video_stats.source is not None
    assert dir_stats.source.read == video_stats.source.read == 16


def test_corrupt_frame_in_folder_is_skipped_with_a_log(
    engine: FaceEngine, obama: U8, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = write_frames(tmp_path / "frames", moving(obama, n=8) + blank(5))
    (folder / "frame_0004.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with caplog.at_level(logging.WARNING):
        messages, stats = run(engine, camera_profile(), DirFrames(folder, fps=5))
    assert len(sightings(messages)) == 1  # the track bridges the missing frame
    assert stats.source is not None and stats.source.failed == 1
    assert stats.frames_processed == 12 and stats.faces == 7
    assert any("frame_0004.png" in r.getMessage() for r in caplog.records)


# -- the command ----------------------------------------------------------------------

runner = CliRunner()


def command_app(command: Callable[..., None]) -> typer.Typer:
    app = typer.Typer()
    app.command("camera")(command)
    return app


@pytest.fixture(scope="module")
def engine_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("engine") / "engine.json"
    path.write_text(TEST_ENGINE.model_dump_json())
    return path


def test_command_dry_run_prints_wire_json(
    obama: U8, tmp_path: Path, engine_file: Path, watchlist_file: Path
) -> None:
    folder = write_frames(tmp_path / "frames", moving(obama, n=5) + blank(2))
    args = ["--device-id", DEVICE, "--source", str(folder), "--engine", str(engine_file)]
    result = runner.invoke(
        command_app(camera), [*args, "--watchlist", str(watchlist_file), "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    kinds = []
    for line in lines:
        data = json.loads(line)
        kind = "alarm" if "type" in data["body"] else "sighting"
        decoded = decode(f"lantern/v1/{DEVICE}/evt/{kind}", line.encode())
        kinds.append(type(decoded.message))
    assert kinds == [SightingEvent, AlarmEvent]


def test_command_needs_a_publisher_or_dry_run(tmp_path: Path) -> None:
    result = runner.invoke(command_app(camera), ["--device-id", DEVICE, "--source", str(tmp_path)])
    assert result.exit_code == 2 and "--dry-run" in result.output
    result = runner.invoke(
        command_app(camera),
        ["--device-id", DEVICE, "--source", str(tmp_path / "nope"), "--dry-run"],
    )
    assert result.exit_code == 2 and "not an rtsp" in result.output
    result = runner.invoke(command_app(camera), ["--device-id", "Bad Id", "--dry-run"])
    assert result.exit_code == 2 and "device id" in result.output


def test_command_publishes_through_the_given_opener(
    obama: U8, tmp_path: Path, engine_file: Path
) -> None:
    folder = write_frames(tmp_path / "frames", moving(obama, n=4) + blank(2))
    profile_file = tmp_path / "profile.yaml"
    profile_file.write_text(
        "type: camera\nsource: {kind: device, index: 0}\nmodel_id: dlib-resnet-v1\n"
        "track: {min_hits: 2, max_age_frames: 3}\n"
    )
    opened: list[tuple[str, CameraProfile]] = []
    sink = ListSink()

    @contextmanager
    def opener(
        device_id: str, profile: CameraProfile
    ) -> Iterator[tuple[SightingSink, EventFactory]]:
        opened.append((device_id, profile))
        yield sink, LocalEventFactory(device_id)

    result = runner.invoke(
        command_app(make_camera_command(opener)),
        [
            "--device-id", DEVICE, "--source", str(folder), "--profile", str(profile_file),
            "--engine", str(engine_file), "--max-frames", "5",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ((device_id, profile),) = opened
    assert device_id == DEVICE and profile.track.max_age_frames == 3
    assert isinstance(profile.source, DirSource)  # --source replaced the profile's
    assert len(sightings(checked(sink.messages))) == 1
