"""The camera pipeline: frames in, one sighting per face appearance out.

Per processed frame (every ``detector.every_n_frames``-th runs detection; the others
only count towards track ages):

1. **detect** on a copy no larger than ``detect_max_side`` (:func:`models.images.detect_large`;
   faces are mapped back to the full frame), drop faces under the profile's
   ``detector.score_threshold``, keep the ``max_faces`` best;
2. **align and gate**: the engine's aligned crops, assessed by
   :func:`models.quality.assess` with the profile's ``quality`` thresholds;
3. **track** (:class:`edge.tracking.Tracker`): every face extends a track, faces
   that passed the gate are ranked by :func:`edge.tracking.quality_score` and the
   best kept (one for ``emit: best_shot``, ``fused_max_frames`` for ``fused``);
4. when a track ends (or reaches ``max_track_s``), **embed** its kept crops, in one
   batch: the best shot's vector, or the quality-weighted mean of the kept faces'
   unit vectors, re-normalised. ``frames_fused`` is how many faces made the vector
   (1 for a best shot), as the profile's ``track`` section defines it; how many
   detections the track had goes to the log;
5. **emit** a :class:`~devices.protocol.SightingBody` with the best face's box,
   quality and (where the profile allows crops) a JPEG crop of at most 64 KiB, in an
   envelope from the :class:`~edge.camera.events.EventFactory`, to the
   :class:`~edge.camera.events.SightingSink`;
6. with an offline :class:`~edge.watchlist.Watchlist`, search the sighting's vector
   and, on a hit, emit a ``watchlist.hit`` alarm pointing at the sighting, through
   the same sink whatever the state of the link: the outbox holds it. A track raises
   at most one alarm per watchlist person.

Tracks that never reached ``track.min_hits`` detections, and tracks none of whose
faces passed the gate, send nothing; both are counted in :class:`CameraStats` and
logged. A frame whose processing fails is logged and counted, and the next frame is
processed as usual; so is a sighting that fails to be emitted.

Embedding only at the end of a track is the design's main economy: dlib's descriptor
costs about 90 ms per face on these machines (twice that with mirror averaging),
detection on a 500 px frame about 20-100 ms, alignment and the gate about 2 ms a face.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from devices.firmware import CameraProfile
from devices.protocol import (
    MAX_CROP_BYTES,
    EventEnvelope,
    SightingBody,
    SightingQuality,
    encode_embedding,
)
from edge.camera.events import EventFactory, SightingSink
from edge.camera.sources import Frame, FrameSource, SourceStats
from edge.tracking import Detection, Tracker, TrackerConfig, TrackSegment, quality_score
from edge.watchlist import Watchlist, WatchlistMismatch, hit_alarm
from models.images import detect_large
from models.quality import QualityConfig, QualityReport, assess
from models.types import Face

__all__ = [
    "STAGES",
    "CameraConfigError",
    "CameraPipeline",
    "CameraStats",
    "Engine",
    "FaceSample",
    "PipelineOptions",
    "encode_crop",
    "face_crop",
]

logger = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

STAGES = ("detect", "quality", "track", "embed", "emit")
"""The timed stages, as keys of :attr:`CameraStats.seconds`."""

_CROP_MARGIN = 0.25
"""A crop extends the face box by this fraction of its size on every side."""


class CameraConfigError(ValueError):
    """A pipeline set up with parts that do not fit (engine and profile models)."""


class Engine(Protocol):
    """What the pipeline needs of a face engine (:class:`models.engine.FaceEngine`)."""

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def detect(self, image: object) -> list[Face]: ...

    def align(self, image: object, faces: Sequence[Face]) -> U8: ...

    def embed_aligned(self, chips: U8) -> F32: ...


class PipelineOptions(BaseModel):
    """Settings of the pipeline that are not in the camera profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    detect_max_side: int = Field(
        1280,
        ge=64,
        le=8192,
        description="Detect on a copy whose longer side is at most this (faces mapped back)",
    )
    detector_name: str | None = Field(
        None, max_length=64, description="Sent as quality.detector, e.g. dlib-hog, yunet"
    )
    max_age_s: float | None = Field(
        None, gt=0, description="Also end tracks unseen for this many seconds of source time"
    )
    assignment: Literal["hungarian", "greedy"] = Field(
        "hungarian", description="Track assignment method"
    )


@dataclass(frozen=True)
class FaceSample:
    """What a track keeps of one face that passed the gate."""

    face: Face
    chip: U8
    """The engine's aligned crop, embedded if this face is sent."""
    report: QualityReport
    captured_at: datetime
    frame_size: tuple[int, int]
    """Width and height of the frame it was found in."""
    crop: U8 | None
    """A small RGB crop around the face, kept only when the profile sends crops."""


@dataclass
class CameraStats:
    """Counts and time spent; ``seconds`` per stage of :data:`STAGES`."""

    frames_processed: int = 0
    frames_detected: int = 0
    frame_errors: int = 0
    faces: int = 0
    faces_passed: int = 0
    embeddings: int = 0
    sightings: int = 0
    alarms: int = 0
    tracks_unconfirmed: int = 0
    tracks_without_usable_face: int = 0
    emit_errors: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    source: SourceStats | None = None

    def ms_per_frame(self) -> dict[str, float]:
        """Mean milliseconds per processed frame, by stage and in total."""
        n = max(self.frames_processed, 1)
        out = {stage: 1000.0 * s / n for stage, s in self.seconds.items()}
        out["total"] = sum(out.values())
        return out

    def summary(self) -> dict[str, object]:
        """Everything, as plain values (for logs and JSON)."""
        data: dict[str, object] = {
            k: v for k, v in vars(self).items() if k not in ("seconds", "source")
        }
        data["ms_per_frame"] = {k: round(v, 2) for k, v in self.ms_per_frame().items()}
        if self.embeddings:
            data["ms_per_embedding"] = round(1000.0 * self.seconds["embed"] / self.embeddings, 2)
        if self.source is not None:
            data["source"] = dict(vars(self.source))
        return data


def face_crop(image: U8, bbox: tuple[float, float, float, float], max_px: int) -> U8 | None:
    """The face box widened by a quarter on each side, clipped to the frame and shrunk
    so its longer side is at most ``max_px``; None if nothing of it is in the frame."""
    import cv2

    h, w = image.shape[:2]
    x0, y0, x1, y1 = bbox
    mx, my = (x1 - x0) * _CROP_MARGIN, (y1 - y0) * _CROP_MARGIN
    left, top = max(0, int(x0 - mx)), max(0, int(y0 - my))
    right, bottom = min(w, int(np.ceil(x1 + mx))), min(h, int(np.ceil(y1 + my)))
    if right - left < 2 or bottom - top < 2:
        return None
    region = image[top:bottom, left:right]
    longer = max(region.shape[:2])
    if longer > max_px:
        scale = max_px / longer
        size = (max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale)))
        return np.ascontiguousarray(
            cv2.resize(region, size, interpolation=cv2.INTER_AREA), dtype=np.uint8
        )
    return np.ascontiguousarray(region, dtype=np.uint8)


def encode_crop(crop: U8, quality: int) -> str | None:
    """Base64 JPEG of an RGB crop at ``quality``, lowered in steps of 10 until it fits
    :data:`~devices.protocol.MAX_CROP_BYTES`; None if even quality 10 does not."""
    import cv2

    bgr = np.ascontiguousarray(crop[:, :, ::-1])
    q = quality
    while q >= 10:
        ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok and len(buffer) <= MAX_CROP_BYTES:
            return base64.b64encode(buffer.tobytes()).decode("ascii")
        q -= 10
    return None


def _angle(value: float | None) -> float | None:
    return None if value is None else float(min(90.0, max(-90.0, value)))


class CameraPipeline:
    """One camera's face pipeline (see the module notes). Not thread-safe except for
    replacing :attr:`watchlist`, which may happen from another thread.

    Track ids (the sightings' ``track_id``) count from ``first_track_id``; when the
    agent rebuilds the pipeline within one boot (a new profile), it passes the old
    pipeline's :attr:`next_track_id` so ids stay unique per boot.
    """

    def __init__(
        self,
        engine: Engine,
        profile: CameraProfile,
        *,
        sink: SightingSink,
        make_event: EventFactory,
        watchlist: Watchlist | None = None,
        options: PipelineOptions | None = None,
        first_track_id: int = 1,
    ) -> None:
        if engine.model_id != profile.model_id:
            raise CameraConfigError(
                f"the profile names model {profile.model_id} but the engine embeds with "
                f"{engine.model_id}; the hub matches sightings against galleries of the "
                "profile's model, so configure an engine of that model"
            )
        self.engine = engine
        self.profile = profile
        self.sink = sink
        self.make_event = make_event
        self.options = options or PipelineOptions()
        self.quality = QualityConfig(**profile.quality.model_dump())
        self.tracker: Tracker[FaceSample] = Tracker(
            TrackerConfig.from_settings(
                profile.track,
                max_age_s=self.options.max_age_s,
                assignment=self.options.assignment,
            ),
            first_id=first_track_id,
        )
        self.stats = CameraStats()
        self._watchlist: Watchlist | None = None
        self._watchlist_lock = threading.Lock()
        self._alerted: dict[int, set[str]] = {}
        self.watchlist = watchlist

    @property
    def next_track_id(self) -> int:
        return self.tracker.next_id

    @property
    def watchlist(self) -> Watchlist | None:
        return self._watchlist

    @watchlist.setter
    def watchlist(self, watchlist: Watchlist | None) -> None:
        """Install (or with None, remove) the offline watchlist; refused when it was
        made for another model than the engine's."""
        if watchlist is not None and (
            watchlist.model_id != self.engine.model_id or watchlist.document.dim != self.engine.dim
        ):
            raise WatchlistMismatch(
                f"watchlist v{watchlist.version} is for {watchlist.model_id} "
                f"({watchlist.document.dim}-d), the engine is {self.engine.model_id} "
                f"({self.engine.dim}-d)"
            )
        with self._watchlist_lock:
            self._watchlist = watchlist

    # -- per frame ------------------------------------------------------------
    def process(self, frame: Frame) -> list[EventEnvelope]:
        """Process one frame; returns the events it caused (also given to the sink)."""
        stats = self.stats
        stats.frames_processed += 1
        index = stats.frames_processed
        if (index - 1) % self.profile.detector.every_n_frames:
            return []
        stats.frames_detected += 1
        seconds = stats.seconds

        started = time.perf_counter()
        faces = self._detect(frame.image)
        seconds["detect"] += time.perf_counter() - started

        started = time.perf_counter()
        detections = self._assess(frame, faces)
        seconds["quality"] += time.perf_counter() - started

        started = time.perf_counter()
        result = self.tracker.update(detections, index, frame.t)
        seconds["track"] += time.perf_counter() - started

        events: list[EventEnvelope] = []
        for segment in result.finished:
            events.extend(self._finish(segment))
        return events

    def process_safely(self, frame: Frame) -> list[EventEnvelope]:
        """:meth:`process`, with any error logged and counted instead of raised."""
        try:
            return self.process(frame)
        except Exception:
            self.stats.frame_errors += 1
            logger.exception("frame %s failed; going on with the next", frame.name)
            return []

    def _detect(self, image: U8) -> list[Face]:
        faces = detect_large(self.engine, image, self.options.detect_max_side)
        threshold = self.profile.detector.score_threshold
        if threshold is not None:
            faces = [f for f in faces if f.score >= threshold]
        faces.sort(key=lambda f: f.score, reverse=True)
        return faces[: self.profile.detector.max_faces]

    def _assess(self, frame: Frame, faces: list[Face]) -> list[Detection[FaceSample]]:
        if not faces:
            return []
        chips = self.engine.align(frame.image, faces)
        crops = self.profile.crops
        size = (int(frame.image.shape[1]), int(frame.image.shape[0]))
        out: list[Detection[FaceSample]] = []
        for face, chip in zip(faces, chips, strict=True):
            report = assess(face, chip, self.quality)
            self.stats.faces += 1
            score: float | None = None
            crop: U8 | None = None
            if report.passed:
                self.stats.faces_passed += 1
                score = quality_score(report)
                chip = chip.copy()  # free the batch array; only kept faces hold a chip
                if crops.send_face_crop:
                    crop = face_crop(frame.image, face.bbox, crops.max_px)
            sample = FaceSample(face, chip, report, frame.captured_at, size, crop)
            out.append(Detection(face.bbox, score, sample))
        return out

    # -- per track --------------------------------------------------------------
    def flush(self) -> list[EventEnvelope]:
        """End every open track and emit what they hold (end of stream)."""
        events: list[EventEnvelope] = []
        for segment in self.tracker.flush():
            events.extend(self._finish(segment))
        return events

    def _finish(self, segment: TrackSegment[FaceSample]) -> list[EventEnvelope]:
        try:
            return self._emit(segment)
        except Exception:
            self.stats.emit_errors += 1
            logger.exception("track %d: sighting not emitted", segment.track_id)
            return []
        finally:
            if segment.reason != "max_duration":
                self._alerted.pop(segment.track_id, None)

    def _emit(self, segment: TrackSegment[FaceSample]) -> list[EventEnvelope]:
        if not segment.confirmed:
            self.stats.tracks_unconfirmed += 1
            logger.debug(
                "track %d ended after %d detection(s), under min_hits: nothing sent",
                segment.track_id,
                segment.hits,
            )
            return []
        if not segment.kept:
            self.stats.tracks_without_usable_face += 1
            logger.info(
                "track %d (%d detections) had no face passing the quality gate: nothing sent",
                segment.track_id,
                segment.hits,
            )
            return []
        seconds = self.stats.seconds
        started = time.perf_counter()
        vector, fused = self._embed(segment)
        seconds["embed"] += time.perf_counter() - started

        started = time.perf_counter()
        best = segment.kept[0]
        body = self._sighting(segment, best.payload, best.bbox, vector, fused)
        sighting = self.make_event("sighting", body, best.payload.captured_at)
        self.sink.put(sighting)
        self.stats.sightings += 1
        events = [sighting]
        logger.info(
            "sighting: track %d segment %d (%s), %d detections, %d passed, %d fused",
            segment.track_id,
            segment.segment,
            segment.reason,
            segment.hits,
            segment.usable,
            fused,
        )
        alarm = self._check_watchlist(segment.track_id, vector, sighting, best.payload)
        if alarm is not None:
            events.append(alarm)
        seconds["emit"] += time.perf_counter() - started
        return events

    def _embed(self, segment: TrackSegment[FaceSample]) -> tuple[F32, int]:
        chips = np.stack([kept.payload.chip for kept in segment.kept])
        vectors = self.engine.embed_aligned(chips)
        self.stats.embeddings += len(vectors)
        if len(vectors) == 1:
            return np.ascontiguousarray(vectors[0], dtype=np.float32), 1
        weights = np.array([kept.score for kept in segment.kept], dtype=np.float64)
        mean = (weights[:, None] * vectors.astype(np.float64)).sum(axis=0)
        norm = float(np.linalg.norm(mean))
        if norm < 1e-9:  # opposite vectors cancelling: fall back to the best face
            return np.ascontiguousarray(vectors[0], dtype=np.float32), 1
        return (mean / norm).astype(np.float32), len(vectors)

    def _sighting(
        self,
        segment: TrackSegment[FaceSample],
        best: FaceSample,
        bbox: tuple[float, float, float, float],
        vector: F32,
        fused: int,
    ) -> SightingBody:
        report = best.report
        crop: str | None = None
        if self.profile.crops.send_face_crop and best.crop is not None:
            crop = encode_crop(best.crop, self.profile.crops.jpeg_quality)
        quality = SightingQuality(
            det_score=float(min(1000.0, max(-1000.0, best.face.score))),
            detector=self.options.detector_name,
            face_px=max(1, round(report.box_min_side_px)),
            iod_px=float(report.inter_ocular_px),
            sharpness=float(report.sharpness),
            yaw=_angle(report.yaw_deg),
            pitch=_angle(report.pitch_deg),
        )
        return SightingBody(
            model_id=self.engine.model_id,
            embedding=encode_embedding(vector),
            quality=quality,
            bbox=(float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3])),
            frame=best.frame_size,
            track_id=segment.track_id,
            frames_fused=fused,
            crop_jpeg=crop,
        )

    def _check_watchlist(
        self, track_id: int, vector: F32, sighting: EventEnvelope, best: FaceSample
    ) -> EventEnvelope | None:
        with self._watchlist_lock:
            watchlist = self._watchlist
        if watchlist is None:
            return None
        hit = watchlist.match(vector, model_id=self.engine.model_id)
        if hit is None:
            return None
        alerted = self._alerted.setdefault(track_id, set())
        if hit.person_ref in alerted:
            return None
        alarm = self.make_event(
            "alarm", hit_alarm(hit, sighting_event_id=sighting.event_id), best.captured_at
        )
        self.sink.put(alarm)
        alerted.add(hit.person_ref)
        self.stats.alarms += 1
        logger.warning(
            "watchlist candidate %s (score %.3f, threshold %.3f) on track %d: alarm raised",
            hit.person_ref,
            hit.score,
            hit.threshold,
            track_id,
        )
        return alarm

    # -- a whole source -----------------------------------------------------------
    def run(
        self,
        source: FrameSource,
        *,
        max_frames: int | None = None,
        stop: threading.Event | None = None,
    ) -> CameraStats:
        """Process ``source`` until it ends, ``max_frames`` frames have been processed
        or ``stop`` is set; then end every track (their sightings are emitted) and
        close the source."""
        self.stats.source = source.stats
        logger.info(
            "camera pipeline: %s at %g fps, engine %s, emit %s",
            source.description,
            self.profile.fps,
            self.engine.model_id,
            self.profile.track.emit,
        )
        try:
            for frame in source:
                self.process_safely(frame)
                if max_frames is not None and self.stats.frames_processed >= max_frames:
                    break
                if stop is not None and stop.is_set():
                    break
        finally:
            source.close()
            self.flush()
            logger.info("camera pipeline finished: %s", self.stats.summary())
        return self.stats
