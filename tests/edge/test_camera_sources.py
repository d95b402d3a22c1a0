"""Frame sources, the rate limit, dropping when behind, and the event plumbing."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest
from pydantic import ValidationError

from devices.firmware import DeviceSource, DirSource, FileSource, RtspSource
from devices.protocol import (
    AlarmBody,
    EventEnvelope,
    SightingEvent,
    decode,
    encode,
    topic_for,
)
from edge.camera.events import JsonLinesSink, ListSink, LocalEventFactory, OutboxPublisher
from edge.camera.sources import (
    DirFrames,
    LiveFrames,
    RateLimiter,
    SourceError,
    VideoFileFrames,
    _rtsp_url,
    open_source,
    parse_source,
)

U8 = npt.NDArray[np.uint8]


def test_rate_limiter_keeps_one_frame_per_period() -> None:
    limiter = RateLimiter(5.0)
    admitted = [i for i in range(50) if limiter.admit(i / 25)]  # 25 fps in, 5 out
    assert admitted == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45]
    same = RateLimiter(5.0)
    assert all(same.admit(i * 0.2) for i in range(20))  # float steps of exactly the period
    gap = RateLimiter(5.0)
    assert [gap.admit(t) for t in (0.0, 0.1, 3.0, 3.1, 3.2)] == [True, False, True, False, True]
    with pytest.raises(ValueError):
        RateLimiter(0)


def _png(path: Path, value: int) -> None:
    cv2.imwrite(str(path), np.full((40, 60, 3), value, np.uint8))


def test_dir_frames_in_name_order_skipping_bad_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for i in (2, 0, 1, 4):
        _png(tmp_path / f"f{i:02d}.png", 10 * i)
    (tmp_path / "f03.png").write_bytes(b"not a png at all")
    (tmp_path / "notes.txt").write_text("not a frame")
    source = DirFrames(tmp_path, fps=5)
    with caplog.at_level(logging.WARNING, logger="models.images"):
        with caplog.at_level(logging.WARNING, logger="edge.camera.sources"):
            frames = list(source)
    assert [f.name for f in frames] == ["f00.png", "f01.png", "f02.png", "f04.png"]
    assert [f.index for f in frames] == [0, 1, 2, 4]
    assert [f.t for f in frames] == pytest.approx([0.0, 0.2, 0.4, 0.8])
    assert frames[3].image.shape == (40, 60, 3) and frames[3].image[0, 0, 0] == 40
    assert (source.stats.read, source.stats.failed, source.stats.skipped) == (5, 1, 0)
    assert any("f03.png" in r.getMessage() for r in caplog.records)
    assert frames[0].captured_at.tzinfo is not None


def test_dir_source_pattern_and_missing_folder(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", 1)
    _png(tmp_path / "b.jpg", 2)
    assert [f.name for f in DirFrames(tmp_path, fps=5, pattern="*.jpg")] == ["b.jpg"]
    with pytest.raises(SourceError, match="no such folder"):
        DirFrames(tmp_path / "nope", fps=5)


def _write_video(path: Path, frames: list[U8], fps: float) -> None:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()


def test_video_file_is_decimated_to_the_profile_rate(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    _write_video(path, [np.full((48, 64, 3), 8 * i, np.uint8) for i in range(25)], 25.0)
    source = VideoFileFrames(path, fps=5)
    frames = list(source)
    assert [f.index for f in frames] == [0, 5, 10, 15, 20]
    assert [f.t for f in frames] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert (source.stats.read, source.stats.skipped) == (25, 20)
    assert frames[1].image.shape == (48, 64, 3)
    assert abs(int(frames[1].image[10, 10, 0]) - 40) <= 3  # RGB, not BGR, values kept
    with pytest.raises(SourceError):
        VideoFileFrames(tmp_path / "none.avi", fps=5)
    (tmp_path / "junk.avi").write_bytes(b"\x00" * 100)
    with pytest.raises(SourceError, match="cannot open"):
        list(VideoFileFrames(tmp_path / "junk.avi", fps=5))


class FakeCapture:
    """A capture that yields ``n`` frames, then fails."""

    def __init__(self, n: int, opened: bool = True) -> None:
        self.n = n
        self.opened = opened
        self.released = False

    def isOpened(self) -> bool:  # noqa: N802
        return self.opened

    def read(self) -> tuple[bool, U8 | None]:
        if self.n <= 0:
            return False, None
        self.n -= 1
        return True, np.zeros((8, 8, 3), np.uint8)

    def get(self, prop: int) -> float:
        return 0.0

    def release(self) -> None:
        self.released = True


def opener_of(captures: list[FakeCapture]) -> Callable[[], FakeCapture]:
    it = iter(captures)
    return lambda: next(it, FakeCapture(0, opened=False))


def test_live_source_drops_frames_when_the_pipeline_is_behind() -> None:
    """Two stream sessions of 100 frames at 25 fps (fake clock), read at 5 fps by a
    consumer slower than the reader: the reader keeps only the newest frame."""
    captures = [FakeCapture(100), FakeCapture(100)]
    ticks = itertools.count()
    source = LiveFrames(
        opener_of(captures),
        fps=5,
        description="fake",
        clock=lambda: next(ticks) / 25,
        backoff=(0.001, 0.002),
    )
    deadline = time.monotonic() + 10

    def close_after_both_sessions() -> None:
        while source.stats.failed < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        source.close()  # ends the iteration below once the reader has stopped

    watcher = threading.Thread(target=close_after_both_sessions)
    watcher.start()
    got = []
    for frame in source:
        got.append(frame)
        time.sleep(0.01)
    watcher.join()
    stats = source.stats
    assert stats.read == 200 and stats.reconnects == 1 and stats.failed >= 2
    admitted = stats.read - stats.skipped
    assert admitted == 40
    assert stats.dropped > 0
    assert len(got) + stats.dropped <= admitted <= len(got) + stats.dropped + 1
    assert [f.index for f in got] == sorted(f.index for f in got)
    assert all(c.released for c in captures)


def test_live_source_that_cannot_open_fails_at_once() -> None:
    source = LiveFrames(opener_of([FakeCapture(0, opened=False)]), fps=5, description="cam 9")
    with pytest.raises(SourceError, match="cam 9: cannot be opened"):
        next(iter(source))


def test_parse_source(tmp_path: Path) -> None:
    video = tmp_path / "v.avi"
    video.write_bytes(b"x")
    assert parse_source("rtsp://10.0.0.5:554/s1") == RtspSource(url="rtsp://10.0.0.5:554/s1")
    assert parse_source("2") == DeviceSource(index=2)
    assert parse_source(str(tmp_path)) == DirSource(path=str(tmp_path), pattern="*")
    assert parse_source(str(video)) == FileSource(path=str(video))
    with pytest.raises(SourceError, match="not an rtsp"):
        parse_source(str(tmp_path / "missing"))
    with pytest.raises(ValidationError, match="credentials must not be in the URL"):
        parse_source("rtsp://user:secret@10.0.0.5/s1")
    assert isinstance(open_source(DirSource(path=str(tmp_path)), fps=5), DirFrames)
    assert isinstance(open_source(FileSource(path=str(video)), fps=5), VideoFileFrames)


def test_rtsp_credentials_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    source = RtspSource(url="rtsp://10.0.0.5:554/s1", credentials_env="CAM_CREDS")
    monkeypatch.delenv("CAM_CREDS", raising=False)
    with pytest.raises(SourceError, match="CAM_CREDS must hold user:password"):
        _rtsp_url(source)
    monkeypatch.setenv("CAM_CREDS", "admin:p@ss:word")
    assert _rtsp_url(source) == "rtsp://admin:p%40ss%3Aword@10.0.0.5:554/s1"
    assert _rtsp_url(RtspSource(url="rtsp://h/s")) == "rtsp://h/s"


def alarm_body() -> AlarmBody:
    return AlarmBody(type="watchlist.hit", state="active", alarm_id="wl:test")


def test_local_factory_numbers_events_and_sinks_take_them() -> None:
    make = LocalEventFactory("cam-test-01")
    first = make("alarm", alarm_body(), datetime.now(UTC))
    second = make("alarm", alarm_body(), datetime.now(UTC))
    assert (first.seq, second.seq) == (0, 1) and first.boot_id == second.boot_id
    assert first.event_id != second.event_id
    sink = ListSink()
    sink.put(first)
    assert sink.messages == [first]
    lines: list[str] = []
    JsonLinesSink(lines.append).put(second)
    decoded = decode(topic_for(second), lines[0].encode())
    assert decoded.message == second
    with pytest.raises(ValueError):
        LocalEventFactory("Bad Id")


def test_outbox_publisher_restamps_boot_and_seq() -> None:
    stored: list[EventEnvelope] = []

    def put_event(make: Callable[[str, int], EventEnvelope]) -> int:
        stored.append(make("6f1c2d3e-4a5b-4c6d-8e7f-901a2b3c4d5e", 41))
        return len(stored)

    publisher = OutboxPublisher("cam-test-01", put_event)
    captured = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    event = publisher("alarm", alarm_body(), captured)
    assert publisher.put(event) == 1
    (kept,) = stored
    assert (kept.boot_id, kept.seq) == ("6f1c2d3e-4a5b-4c6d-8e7f-901a2b3c4d5e", 41)
    assert kept.event_id == event.event_id and kept.captured_at == captured
    assert type(kept) is type(event)
    assert decode(topic_for(kept), encode(kept)).message == kept  # type: ignore[arg-type]
    assert not isinstance(kept, SightingEvent)
