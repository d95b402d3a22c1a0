"""Where a camera's frames come from: a folder of images, a video file, an RTSP stream
or a capture device, each behind one small interface, :class:`FrameSource`.

Every source yields :class:`Frame` objects (RGB uint8, the engines' layout) and keeps
:class:`SourceStats`. A source applies the profile's frame rate itself
(:class:`RateLimiter`), so what it yields is what the pipeline should process:

Recorded sources (folder, video file)
    are read as fast as the pipeline takes them, in *source time*: a folder's images
    are frames ``1 / fps`` apart, a video file's frames are timed by its own frame
    rate. Frames closer together than ``1 / fps`` are ``skipped`` (a 25 fps file
    processed at 5 fps keeps every fifth frame); nothing is ever dropped, so a replay
    gives the same result however fast the machine. A file that cannot be decoded is
    logged and counted as ``failed``, and the folder goes on.

Live sources (RTSP, capture device)
    are read by a thread of their own, in wall-clock time, into a one-frame slot the
    pipeline takes from. The rate limit is applied as frames arrive (``skipped``);
    an admitted frame that replaces one the pipeline has not taken yet is ``dropped``,
    because the pipeline is behind: the pipeline always works on the newest frame
    rather than falling further and further behind a stream that does not wait. A
    read failure (the stream went away) is logged, and the thread reopens the stream
    with a backoff of 1 s doubling to 30 s, indefinitely; only the first open must
    succeed, so a mistyped URL fails at once.

RTSP credentials never appear in the configuration: ``credentials_env`` names an
environment variable holding ``user:password``, put into the URL only when opening.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlsplit, urlunsplit

import numpy as np
import numpy.typing as npt

from devices.firmware import DeviceSource, DirSource, FileSource, RtspSource
from models.errors import InvalidImage
from models.images import load_rgb

__all__ = [
    "IMAGE_SUFFIXES",
    "CameraSource",
    "Capture",
    "DirFrames",
    "Frame",
    "FrameSource",
    "LiveFrames",
    "RateLimiter",
    "SourceError",
    "SourceStats",
    "VideoFileFrames",
    "open_source",
    "parse_source",
]

logger = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
CameraSource = RtspSource | FileSource | DirSource | DeviceSource

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
"""Files a folder source reads when its pattern is ``*``."""

_OPEN_TIMEOUT_MS = 10_000
_BACKOFF_FIRST_S = 1.0
_BACKOFF_MAX_S = 30.0


class SourceError(RuntimeError):
    """A source that cannot be opened at all (missing folder or file, unreachable
    stream, absent device, missing credentials)."""


@dataclass(frozen=True)
class Frame:
    """One frame to process."""

    index: int
    """Position in the source: the file's place in the folder, the video's frame
    number, the count of frames read from a live stream."""
    t: float
    """Source time in seconds (recorded sources) or monotonic seconds (live ones);
    what track ages and durations are measured in."""
    captured_at: datetime
    """Wall-clock time (UTC) the frame was read: the events' ``captured_at``."""
    image: U8
    """``(h, w, 3)`` RGB uint8."""
    name: str
    """For logs: a file name or ``frame N``."""


@dataclass
class SourceStats:
    """What happened to the frames of a source."""

    read: int = 0
    """Frames read, readable or not."""
    skipped: int = 0
    """Left out by the rate limit (frames closer together than ``1 / fps``)."""
    dropped: int = 0
    """Lost because the pipeline was behind (live sources only)."""
    failed: int = 0
    """A folder's undecodable files, or a live stream's failed reads (each followed
    by a reopen)."""
    reconnects: int = 0
    """Times a live stream was reopened after a failure."""


class FrameSource(Protocol):
    """Frames to process, already limited to the profile's frame rate."""

    stats: SourceStats
    description: str

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None:
        """Stop reading and release the source; safe to call more than once."""
        ...


class RateLimiter:
    """Admits frames at most ``fps`` per second of their own time.

    Frames are admitted on a grid ``1 / fps`` apart (within 1 ms, so a 5 fps video
    processed at 5 fps keeps every frame despite rounding); after a gap longer than
    the period the grid restarts at the next admitted frame.
    """

    def __init__(self, fps: float) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.period = 1.0 / fps
        self._next: float | None = None

    def admit(self, t: float) -> bool:
        if self._next is not None and t < self._next - 1e-3:
            return False
        self._next = (t if self._next is None else self._next) + self.period
        if self._next <= t:
            self._next = t + self.period
        return True


def _now() -> datetime:
    return datetime.now(UTC)


class DirFrames:
    """The images of a folder in name order, ``1 / fps`` seconds apart.

    ``pattern`` is a glob within the folder; with ``*`` only files whose suffix is in
    :data:`IMAGE_SUFFIXES` are read. Undecodable files are logged and skipped.
    """

    def __init__(self, folder: Path, *, fps: float, pattern: str = "*") -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise SourceError(f"{self.folder}: no such folder")
        self.fps = fps
        self.pattern = pattern
        self.stats = SourceStats()
        self.description = f"folder {self.folder} ({pattern})"
        self._closed = False

    def files(self) -> list[Path]:
        found = (p for p in self.folder.glob(self.pattern) if p.is_file())
        if self.pattern == "*":
            found = (p for p in found if p.suffix.lower() in IMAGE_SUFFIXES)
        return sorted(found)

    def __iter__(self) -> Iterator[Frame]:
        files = self.files()
        if not files:
            logger.warning("%s: no image files", self.description)
        limiter = RateLimiter(self.fps)
        for position, path in enumerate(files):
            if self._closed:
                return
            self.stats.read += 1
            t = position / self.fps
            if not limiter.admit(t):
                self.stats.skipped += 1
                continue
            try:
                image = load_rgb(path)
            except InvalidImage as exc:
                self.stats.failed += 1
                logger.warning("frame skipped: %s", exc)
                continue
            yield Frame(position, t, _now(), image, path.name)

    def close(self) -> None:
        self._closed = True


class Capture(Protocol):
    """The part of ``cv2.VideoCapture`` the sources use (a fake in tests)."""

    def isOpened(self) -> bool: ...  # noqa: N802 - OpenCV's name

    def read(self) -> tuple[bool, U8 | None]: ...

    def get(self, prop: int) -> float: ...

    def release(self) -> None: ...


class _CvCapture:
    """``cv2.VideoCapture`` seen through :class:`Capture`."""

    def __init__(self, target: str | int) -> None:
        import cv2

        if isinstance(target, int):
            self._cap = cv2.VideoCapture(target)
        else:
            params = [
                cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                _OPEN_TIMEOUT_MS,
                cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                _OPEN_TIMEOUT_MS,
            ]
            self._cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, params)

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return bool(self._cap.isOpened())

    def read(self) -> tuple[bool, U8 | None]:
        ok, image = self._cap.read()
        if not ok or image is None:
            return False, None
        return True, np.asarray(image, dtype=np.uint8)

    def get(self, prop: int) -> float:
        return float(self._cap.get(prop))

    def release(self) -> None:
        self._cap.release()


def _open_cv(target: str | int) -> Capture:
    return _CvCapture(target)


def _to_rgb(bgr: U8) -> U8:
    import cv2

    if bgr.ndim == 2:
        return np.ascontiguousarray(np.repeat(bgr[:, :, None], 3, axis=2))
    code = cv2.COLOR_BGRA2RGB if bgr.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return np.ascontiguousarray(cv2.cvtColor(bgr, code), dtype=np.uint8)


class VideoFileFrames:
    """The frames of a video file, timed by the file's own frame rate (``fps`` when
    the container does not say), at most ``fps`` per second of video; with ``loop``
    the file starts again at its end, time running on."""

    def __init__(
        self,
        path: Path,
        *,
        fps: float,
        loop: bool = False,
        opener: Callable[[str], Capture] | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"{self.path}: no such video file")
        self.fps = fps
        self.loop = loop
        self._opener: Callable[[str], Capture] = opener or _open_cv
        self.stats = SourceStats()
        self.description = f"video file {self.path}"
        self._closed = False

    def __iter__(self) -> Iterator[Frame]:
        import cv2

        limiter = RateLimiter(self.fps)
        count = 0
        while not self._closed:
            capture = self._opener(str(self.path))
            if not capture.isOpened():
                capture.release()
                raise SourceError(f"{self.path}: OpenCV cannot open it as a video")
            container_fps = capture.get(cv2.CAP_PROP_FPS)
            step = 1.0 / container_fps if container_fps and container_fps > 0 else 1.0 / self.fps
            started = count
            try:
                while not self._closed:
                    ok, bgr = capture.read()
                    if not ok or bgr is None:
                        break
                    index, count = count, count + 1
                    self.stats.read += 1
                    t = index * step
                    if not limiter.admit(t):
                        self.stats.skipped += 1
                        continue
                    yield Frame(index, t, _now(), _to_rgb(bgr), f"frame {index}")
            finally:
                capture.release()
            if not self.loop or count == started:
                return
            logger.info("%s: end of file, looping", self.description)

    def close(self) -> None:
        self._closed = True


class LiveFrames:
    """Frames of a live stream or device, read by a thread (see the module notes).

    ``opener`` opens the stream (``cv2.VideoCapture`` by default); ``clock`` gives
    the monotonic seconds frames are timed and rate-limited by.
    """

    def __init__(
        self,
        opener: Callable[[], Capture],
        *,
        fps: float,
        description: str,
        clock: Callable[[], float] = time.monotonic,
        backoff: tuple[float, float] = (_BACKOFF_FIRST_S, _BACKOFF_MAX_S),
    ) -> None:
        self._opener = opener
        self._limiter = RateLimiter(fps)
        self._clock = clock
        self._backoff = backoff
        self.stats = SourceStats()
        self.description = description
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._ended = False
        self._thread: threading.Thread | None = None

    def __iter__(self) -> Iterator[Frame]:
        if self._thread is not None:
            raise RuntimeError("a live source is iterated once")
        first = self._opener()
        if not first.isOpened():
            first.release()
            raise SourceError(f"{self.description}: cannot be opened")
        self._thread = threading.Thread(
            target=self._read_loop, args=(first,), name="camera-reader", daemon=True
        )
        self._thread.start()
        try:
            while True:
                with self._cond:
                    while self._slot is None and not self._ended:
                        self._cond.wait(timeout=0.5)
                    frame, self._slot = self._slot, None
                    if frame is None:
                        return
                yield frame
        finally:
            self.close()

    def _read_loop(self, first: Capture) -> None:
        capture: Capture | None = first
        delay = self._backoff[0]
        count = 0
        try:
            while not self._stop.is_set():
                if capture is None:
                    reopened = self._opener()
                    if not reopened.isOpened():
                        reopened.release()
                        logger.warning(
                            "%s: reopen failed, retrying in %.0f s", self.description, delay
                        )
                        self._stop.wait(delay)
                        delay = min(delay * 2, self._backoff[1])
                        continue
                    capture = reopened
                    self.stats.reconnects += 1
                    logger.info("%s: reopened", self.description)
                ok, bgr = capture.read()
                if not ok or bgr is None:
                    self.stats.failed += 1
                    logger.warning("%s: read failed, reopening", self.description)
                    capture.release()
                    capture = None
                    self._stop.wait(delay)
                    delay = min(delay * 2, self._backoff[1])
                    continue
                delay = self._backoff[0]
                index, count = count, count + 1
                self.stats.read += 1
                t = self._clock()
                if not self._limiter.admit(t):
                    self.stats.skipped += 1
                    continue
                frame = Frame(index, t, _now(), _to_rgb(bgr), f"frame {index}")
                with self._cond:
                    if self._slot is not None:
                        self.stats.dropped += 1
                    self._slot = frame
                    self._cond.notify()
        except Exception:  # a crashed reader must end the iteration, not hang it
            logger.exception("%s: reader failed", self.description)
        finally:
            if capture is not None:
                capture.release()
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def interrupt(self) -> None:
        """End the iteration at the consumer's next wait, from any thread and without
        waiting for the reader (which may be blocked in a read); :meth:`close`, called
        when the iteration ends, then reaps the reader."""
        self._stop.set()
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)
            if thread.is_alive():
                logger.warning("%s: reader thread still blocked in a read", self.description)


def _rtsp_url(source: RtspSource) -> str:
    """The URL to open, with the credentials from ``credentials_env`` when named."""
    if source.credentials_env is None:
        return source.url
    secret = os.environ.get(source.credentials_env)
    if not secret or ":" not in secret:
        raise SourceError(
            f"environment variable {source.credentials_env} must hold user:password for the stream"
        )
    user, _, password = secret.partition(":")
    parts = urlsplit(source.url)
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.netloc}"
    return urlunsplit(parts._replace(netloc=netloc))


def open_source(source: CameraSource, *, fps: float) -> FrameSource:
    """The frame source a profile's ``source`` section describes."""
    if isinstance(source, DirSource):
        return DirFrames(Path(source.path), fps=fps, pattern=source.pattern)
    if isinstance(source, FileSource):
        return VideoFileFrames(Path(source.path), fps=fps, loop=source.loop)
    if isinstance(source, DeviceSource):
        index = source.index
        return LiveFrames(lambda: _open_cv(index), fps=fps, description=f"capture device {index}")
    url = _rtsp_url(source)
    if "OPENCV_FFMPEG_CAPTURE_OPTIONS" not in os.environ:
        # Read by OpenCV's FFmpeg backend when a capture is opened.
        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{source.transport}"
    return LiveFrames(lambda: _open_cv(url), fps=fps, description=f"stream {source.url}")


def parse_source(spec: str) -> CameraSource:
    """A ``--source`` argument as a profile source: an ``rtsp://`` or ``rtsps://``
    URL, a capture device index (``0``), a folder of images (all image files, in name
    order) or a video file."""
    text = spec.strip()
    if text.lower().startswith(("rtsp://", "rtsps://")):
        return RtspSource(url=text)
    if text.isdigit():
        return DeviceSource(index=int(text))
    path = Path(text)
    if path.is_dir():
        return DirSource(path=str(path), pattern="*")
    if path.is_file():
        return FileSource(path=str(path))
    raise SourceError(
        f"{spec!r} is not an rtsp:// URL, a capture device index, a folder or a video file"
    )
