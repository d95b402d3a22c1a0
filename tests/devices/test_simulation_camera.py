"""Simulated cameras: replaying image folders and videos (devices/simulation/camera.py)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from devices.firmware import DirSource, FileSource
from devices.simulation import CameraReplay, Frame, Scheduler, VirtualClock

START = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (128, 64, 32)]
"""RGB colour of each test image, in name order."""


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, rgb in enumerate(COLOURS):
        image = np.zeros((24, 32, 3), np.uint8)
        image[:] = rgb[::-1]  # OpenCV writes BGR
        cv2.putText(image, str(i), (2, 20), cv2.FONT_HERSHEY_PLAIN, 1.0, (255, 255, 255))
        assert cv2.imwrite(str(folder / f"frame_{i:03d}.png"), image)
    (folder / "notes.txt").write_text("not an image", encoding="utf-8")
    return folder


def write_video(path: Path, fourcc: str, frames: int = 12, fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, (64, 48))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((48, 64, 3), i * 20, np.uint8))
    writer.release()
    return path


def corner(frame: Frame) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in frame.image[-1, -1])
    return r, g, b


def test_a_folder_replays_in_name_order_as_rgb(image_dir: Path) -> None:
    with CameraReplay("cam-sim-01", image_dir, start=START, fps=4) as camera:
        frames = list(camera)
    assert [f.index for f in frames] == list(range(len(COLOURS)))
    assert [f.source for f in frames] == [f"frame_{i:03d}.png" for i in range(len(COLOURS))]
    assert [corner(f) for f in frames] == COLOURS
    assert [f.captured_at for f in frames] == [
        START + timedelta(seconds=i / 4) for i in range(len(COLOURS))
    ]
    assert all(f.image.dtype == np.uint8 and f.image.shape == (24, 32, 3) for f in frames)
    assert camera.next_due() is None


def test_a_folder_loops_up_to_max_frames(image_dir: Path) -> None:
    camera = CameraReplay("cam-sim-01", image_dir, start=START, loop=True, max_frames=15)
    frames = list(camera)
    assert len(frames) == 15
    assert [corner(f) for f in frames] == (COLOURS * 3)[:15]
    assert camera.fps == 5.0  # the default for folders


@pytest.mark.parametrize(("fourcc", "suffix"), [("MJPG", ".avi"), ("mp4v", ".mp4")])
def test_a_video_replays_every_frame_in_order(tmp_path: Path, fourcc: str, suffix: str) -> None:
    video = write_video(tmp_path / f"clip{suffix}", fourcc)
    with CameraReplay("cam-sim-02", video, start=START) as camera:
        assert camera.fps == pytest.approx(10.0)  # the video's own rate
        frames = list(camera)
    assert len(frames) == 12
    means = [float(f.image.mean()) for f in frames]
    assert means == sorted(means)
    assert means == pytest.approx([i * 20 for i in range(12)], abs=6)
    assert frames[3].source == f"clip{suffix}#3"
    assert frames[-1].captured_at == START + timedelta(seconds=1.1)


def test_a_video_loops(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", "MJPG", frames=5)
    camera = CameraReplay("cam-sim-02", video, start=START, fps=25, loop=True, max_frames=12)
    means = [round(float(f.image.mean()) / 20) for f in camera]
    assert means == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]


def test_late_steps_drop_old_frames_unless_asked_not_to(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", "MJPG")
    camera = CameraReplay("cam-sim-02", video, start=START, fps=10)
    (latest,) = camera.step(START + timedelta(seconds=0.55))
    assert latest.index == 5 and camera.dropped == 5
    assert round(float(latest.image.mean()) / 20) == 5
    assert camera.next_due() == START + timedelta(seconds=0.6)
    camera.close()
    keep_all = CameraReplay("cam-sim-02", video, start=START, fps=10, drop_late=False)
    frames = keep_all.step(START + timedelta(seconds=0.55))
    assert [f.index for f in frames] == [0, 1, 2, 3, 4, 5] and keep_all.dropped == 0
    assert keep_all.step(START + timedelta(seconds=0.55)) == []
    keep_all.close()


def test_the_scheduler_drives_cameras_in_virtual_time(image_dir: Path, tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", "MJPG")
    cameras = [
        CameraReplay("cam-dir", image_dir, start=START, fps=2, loop=True),
        CameraReplay("cam-vid", video, start=START, fps=5),
    ]
    seen: dict[str, list[Frame]] = {}

    def sink(device_id: str, frame: Frame) -> None:
        seen.setdefault(device_id, []).append(frame)

    scheduler: Scheduler[Frame] = Scheduler(cameras, clock=VirtualClock(START))
    stats = asyncio.run(scheduler.run(timedelta(seconds=10), sink))
    assert len(seen["cam-dir"]) == 21  # 0 to 10 s at 2 fps, looping
    assert len(seen["cam-vid"]) == 12  # the whole clip, then it is done
    assert stats.finished_devices == 1
    assert [f.captured_at for f in seen["cam-vid"]] == [
        START + timedelta(seconds=i / 5) for i in range(12)
    ]
    assert camera_dropped(cameras) == 0


def camera_dropped(cameras: list[CameraReplay]) -> int:
    return sum(c.dropped for c in cameras)


def test_profile_sources(image_dir: Path, tmp_path: Path) -> None:
    camera = CameraReplay.from_source(
        "cam-sim-03", DirSource(path=str(image_dir), pattern="*_00[0-2].png"), start=START, fps=1
    )
    assert [f.source for f in camera] == ["frame_000.png", "frame_001.png", "frame_002.png"]
    video = write_video(tmp_path / "clip.avi", "MJPG", frames=3)
    looping = CameraReplay.from_source(
        "cam-sim-03", FileSource(path=str(video), loop=True), start=START, fps=1, max_frames=7
    )
    assert len(list(looping)) == 7


def test_bad_sources_fail_loudly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no image files"):
        CameraReplay("cam-bad", empty, start=START)
    with pytest.raises(ValueError, match="no such folder"):
        CameraReplay("cam-bad", tmp_path / "missing", start=START)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video")
    with pytest.raises(ValueError, match="cannot open|no frames"):
        CameraReplay("cam-bad", junk, start=START)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"\xff\xd8\xff not really")
    with pytest.raises(ValueError, match="none of its 1 images"):
        CameraReplay("cam-bad", broken, start=START)
    cv2.imwrite(str(broken / "b.png"), np.zeros((4, 4, 3), np.uint8))
    with caplog.at_level(logging.WARNING, logger="devices.simulation.camera"):
        frames = list(CameraReplay("cam-bad", broken, start=START))
    assert [f.source for f in frames] == ["b.png"]
    assert "a.jpg: OpenCV cannot read this image; skipped" in caplog.text
    with pytest.raises(ValueError, match="fps"):
        CameraReplay("cam-bad", broken, start=START, fps=0)
    with pytest.raises(ValueError, match="timezone-aware"):
        CameraReplay("cam-bad", broken, start=datetime(2025, 1, 1))
