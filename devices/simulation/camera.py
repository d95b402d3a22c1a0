"""Simulated cameras: frames replayed from a folder of images or a video file.

:class:`CameraReplay` is a source of RGB frames at a set rate, for the edge camera
pipeline's tests, load runs and the demo. It is a state machine like the wearables
(``next_due`` / ``step``), so the same :class:`~devices.simulation.scheduler.Scheduler`
can drive cameras beside wearables, and it is iterable for plain offline use. It runs
no face model: what is done with the frames is the caller's business.

Folders are read in file-name order (``frame_002.jpg`` before ``frame_010.jpg``, so
number files with leading zeros); a file OpenCV cannot read is logged and skipped.
Videos are read with ``cv2.VideoCapture``. With ``loop`` the source starts again at
its end; otherwise the camera finishes (``next_due`` is None).

When ``step`` is called late (a real clock, a slow consumer), a real camera does not
queue old frames, it shows the latest: frames whose time has passed are skipped
(their files still advance the source) and counted in :attr:`CameraReplay.dropped`,
unless ``drop_late=False``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from devices.firmware import DirSource, FileSource
from devices.protocol import validate_device_id

__all__ = ["IMAGE_SUFFIXES", "CameraReplay", "Frame"]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
"""Files a folder replay reads when no pattern is given."""

_DEFAULT_FPS = 5.0


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """One frame of a simulated camera."""

    device_id: str
    index: int
    """Position in the replay, counting from 0 (including dropped frames)."""
    captured_at: datetime
    image: npt.NDArray[np.uint8] = field(repr=False)
    """Height x width x 3, RGB, uint8."""
    source: str
    """The file it came from (a video's frames: ``name#frame-number``)."""


class _Reader:
    """Reads frames in order from a folder or a video, looping or not."""

    def __init__(self, path: Path, *, loop: bool, pattern: str | None) -> None:
        self.path = path
        self.loop = loop
        self._files: list[Path] = []
        self._capture: cv2.VideoCapture | None = None
        self._position = 0
        if path.is_dir():
            if pattern is not None:
                files = sorted(p for p in path.glob(pattern) if p.is_file())
            else:
                files = sorted(
                    p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                )
            if not files:
                matching = f" matching {pattern}" if pattern else ""
                raise ValueError(f"{path}: no image files{matching}")
            self._files = files
        elif path.is_file():
            self._open()
        else:
            raise ValueError(f"{path}: no such folder or video file")

    def _open(self) -> None:
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            capture.release()
            raise ValueError(f"{self.path}: OpenCV cannot open this video")
        self._capture = capture
        self._position = 0

    @property
    def video_fps(self) -> float | None:
        """The video's own frame rate, when it states one."""
        if self._capture is None:
            return None
        fps = float(self._capture.get(cv2.CAP_PROP_FPS))
        return fps if math.isfinite(fps) and fps > 0 else None

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def read(self, *, decode: bool = True) -> tuple[npt.NDArray[np.uint8] | None, str] | None:
        """The next frame (RGB, or None when ``decode`` is false) and its source name;
        None at the end of a source that does not loop."""
        if self._files:
            return self._read_file(decode)
        return self._read_video(decode)

    def _read_file(self, decode: bool) -> tuple[npt.NDArray[np.uint8] | None, str] | None:
        failures = 0
        while failures < len(self._files):
            if self._position >= len(self._files):
                if not self.loop:
                    return None
                self._position = 0
            path = self._files[self._position]
            self._position += 1
            if not decode:
                return None, path.name
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None or image.dtype != np.uint8:
                logger.warning("%s: OpenCV cannot read this image; skipped", path)
                failures += 1
                continue
            return _rgb(image), path.name
        raise ValueError(f"{self.path}: none of its {len(self._files)} images can be read")

    def _read_video(self, decode: bool) -> tuple[npt.NDArray[np.uint8] | None, str] | None:
        for attempt in range(2):
            if self._capture is None:
                return None
            ok = self._capture.grab()
            if ok:
                name = f"{self.path.name}#{self._position}"
                self._position += 1
                if not decode:
                    return None, name
                ok, image = self._capture.retrieve()
                if ok and image is not None and image.dtype == np.uint8:
                    return _rgb(image), name
                logger.warning(
                    "%s: frame %d cannot be decoded; skipped", self.path, self._position - 1
                )
                continue
            empty = self._position == 0
            if not self.loop or empty or attempt > 0:
                if empty:
                    raise ValueError(f"{self.path}: the video has no frames OpenCV can read")
                return None
            self.close()
            self._open()
        return None


def _rgb(image: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    code = cv2.COLOR_GRAY2RGB if image.ndim == 2 else cv2.COLOR_BGR2RGB
    return np.ascontiguousarray(cv2.cvtColor(image, code), dtype=np.uint8)


class CameraReplay:
    """A camera that replays a folder of images or a video file at ``fps``.

    ``fps`` defaults to the video's own rate (or 5 for folders and videos that state
    none). ``start`` is the capture time of frame 0; ``max_frames`` ends the replay
    after that many frames even when looping. Use as a context manager, or call
    :meth:`close`, to release a video.
    """

    def __init__(
        self,
        device_id: str,
        source: Path,
        *,
        start: datetime,
        fps: float | None = None,
        loop: bool = False,
        pattern: str | None = None,
        max_frames: int | None = None,
        drop_late: bool = True,
    ) -> None:
        self.device_id = validate_device_id(device_id)
        if start.tzinfo is None or start.utcoffset() is None:
            raise ValueError("start must be timezone-aware")
        if fps is not None and not 0 < fps <= 240:
            raise ValueError(f"fps {fps} is not within (0, 240]")
        if max_frames is not None and max_frames < 0:
            raise ValueError("max_frames must be >= 0")
        self.source = Path(source)
        self.start = start.astimezone(UTC)
        self._reader = _Reader(self.source, loop=loop, pattern=pattern)
        self.fps = fps or self._reader.video_fps or _DEFAULT_FPS
        self.max_frames = max_frames
        self.drop_late = drop_late
        self.dropped = 0
        """Frames skipped because ``step`` came after their time."""
        self._index = 0
        self._done = max_frames == 0
        # Read the first frame now, so a source that cannot be read fails here.
        self._pending: tuple[npt.NDArray[np.uint8] | None, str] | None = (
            None if self._done else self._reader.read()
        )
        if self._pending is None:
            self._done = True

    @classmethod
    def from_source(
        cls,
        device_id: str,
        source: FileSource | DirSource,
        *,
        start: datetime,
        fps: float,
        max_frames: int | None = None,
    ) -> CameraReplay:
        """A replay of a camera profile's ``file`` or ``dir`` source
        (:class:`devices.firmware.FileSource`, :class:`devices.firmware.DirSource`)."""
        if isinstance(source, FileSource):
            return cls(
                device_id,
                Path(source.path),
                start=start,
                fps=fps,
                loop=source.loop,
                max_frames=max_frames,
            )
        return cls(
            device_id,
            Path(source.path),
            start=start,
            fps=fps,
            pattern=source.pattern,
            max_frames=max_frames,
        )

    def __enter__(self) -> CameraReplay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CameraReplay({self.device_id!r}, {str(self.source)!r}, fps={self.fps:g})"

    def close(self) -> None:
        """Release the video (if any); the replay is finished."""
        self._reader.close()
        self._done = True
        self._pending = None

    def _time_of(self, index: int) -> datetime:
        return self.start + timedelta(seconds=index / self.fps)

    def next_due(self) -> datetime | None:
        """Capture time of the next frame; None once the replay has ended."""
        return None if self._done else self._time_of(self._index)

    def _take(self) -> Frame:
        if self._pending is None:  # pragma: no cover - guarded by callers
            raise RuntimeError("no frame pending")
        image, name = self._pending
        if image is None:  # pragma: no cover - the last frame due is always decoded
            raise RuntimeError("the pending frame was not decoded")
        frame = Frame(self.device_id, self._index, self._time_of(self._index), image, name)
        self._move_on(decode=True)
        return frame

    def _move_on(self, *, decode: bool) -> None:
        """Make the next frame the pending one (``decode``: with its pixels)."""
        self._index += 1
        if self.max_frames is not None and self._index >= self.max_frames:
            self._done = True
            self._pending = None
            return
        self._pending = self._reader.read(decode=decode)
        if self._pending is None:
            self._done = True

    def _last_due(self, now: datetime) -> int:
        """Index of the latest frame due at ``now`` (at least the pending one)."""
        elapsed = (now - self.start).total_seconds()
        last = max(self._index, math.floor(elapsed * self.fps))
        while last > self._index and self._time_of(last) > now:
            last -= 1
        while self._time_of(last + 1) <= now:
            last += 1
        if self.max_frames is not None:
            last = min(last, self.max_frames - 1)
        return last

    def step(self, now: datetime) -> Sequence[Frame]:
        """The frames due at or before ``now``: all of them, or with ``drop_late``
        only the latest."""
        frames: list[Frame] = []
        while not self._done and self._time_of(self._index) <= now:
            if self.drop_late:
                last = self._last_due(now)
                while self._index < last and not self._done:
                    self.dropped += 1
                    self._move_on(decode=self._index + 1 == last)
                if self._done:
                    break
            frames.append(self._take())
        return frames

    def __iter__(self) -> Iterator[Frame]:
        """Every remaining frame in order, ignoring clocks."""
        while not self._done:
            yield self._take()
