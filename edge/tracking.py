"""Linking face detections across frames into tracks, and picking what each track sends.

A camera sees the same face in many consecutive frames; the hub wants one sighting
per *appearance*, not one per frame. :class:`Tracker` links each frame's detections
to the open tracks by box overlap and hands back a :class:`TrackSegment` when a track
ends, carrying the best faces seen along it.

Association
    Each open track predicts where its box will be in the current frame (its last box
    moved on by a smoothed per-frame velocity, so two faces passing each other keep
    their ids) and the detections are assigned to tracks by intersection over union
    (IoU) with that prediction. ``assignment="hungarian"`` maximises the total IoU
    (``scipy.optimize.linear_sum_assignment``; scipy comes with the insightface extra,
    not the core install, so without it the tracker logs a warning and assigns
    greedily); ``"greedy"`` takes the highest-IoU pairs first. Either way a pair below
    ``iou_threshold`` is not linked. A detection left over starts a new track; ids
    count up from ``first_id`` (1) and are never reused by one :class:`Tracker`; a
    tracker replacing another within the same boot (a new configuration) starts at
    the old one's :attr:`Tracker.next_id`, so ids are unique per boot.

Lifetime
    A track ends ("lost") at the first processed frame more than ``max_age_frames``
    after its last detection (until then a detection may still continue it), or, if
    ``max_age_s`` is set, more than that many seconds of source time after it (which
    matters when a live source drops frames). A track older than ``max_track_s``
    hands back what it has so far ("max_duration") and carries on under the same id
    with a fresh segment: a person standing in view for an hour yields a sighting
    every ``max_track_s`` rather than one at the end, or none if the camera restarts
    first. :meth:`Tracker.flush` ends every open track ("flush"), at the end of a
    stream.

Quality
    Every detection extends its track, but only those with a quality score (faces that
    passed the quality gate; a failed face has ``score=None``) are kept as candidates,
    at most ``keep`` per segment, the highest scores first. The caller embeds the kept
    faces when the segment ends: one with ``keep=1`` (best shot), or several whose
    vectors it averages with the scores as weights (fused). Embedding only what is
    sent costs one or a few embeddings per appearance instead of one per frame.
    :func:`quality_score` turns a :class:`~models.quality.QualityReport` into that
    score.

A segment is ``confirmed`` once its track has had ``min_hits`` detections in all; an
unconfirmed track (a one-frame false detection) should send nothing.
"""

from __future__ import annotations

import heapq
import importlib
import itertools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from devices.firmware import TrackSettings
from models.quality import QualityReport

__all__ = [
    "IOD_FULL_PX",
    "SHARPNESS_HALF",
    "Box",
    "Detection",
    "EndReason",
    "Kept",
    "TrackSegment",
    "Tracker",
    "TrackerConfig",
    "UpdateResult",
    "iou_matrix",
    "quality_score",
]

logger = logging.getLogger(__name__)

P = TypeVar("P")
Box = tuple[float, float, float, float]
"""x0, y0, x1, y1 in frame pixels."""
EndReason = Literal["lost", "max_duration", "flush"]
F64 = npt.NDArray[np.float64]

SHARPNESS_HALF = 100.0
"""Sharpness (variance of the Laplacian, see :mod:`models.quality`) at which the
sharpness factor of :func:`quality_score` is one half. The gate's threshold is 15;
faces from the shared photos read 30-800, and a Gaussian blur of sigma 1.5 took a
318 face to 32, so the factor separates sharp from soft faces without letting a
very sharp one dwarf the rest as a fusion weight."""

IOD_FULL_PX = 48.0
"""Inter-ocular distance, image pixels, beyond which a larger face scores no higher:
about the eye distance inside dlib's 150 px chip (ArcFace's 112 px crop has 35), so
more pixels are resampled away by the alignment anyway."""

_VELOCITY_SMOOTHING = 0.5
"""Weight of the newest displacement in a track's per-frame velocity."""


def quality_score(report: QualityReport) -> float:
    """How good a face is for recognition, in ``(0, 1]``; higher is better.

    The product of four factors, each in ``(0, 1]``:

    * sharpness ``s / (s + SHARPNESS_HALF)``, saturating;
    * size ``min(1, iod / IOD_FULL_PX)``;
    * pose ``cos(yaw) * cos(pitch)`` for the proxies that were measured;
    * detector score, weakly: ``min(1, max(score, 0.05)) ** 0.25``, since its scale
      depends on the detector (a dlib HOG margin is mostly above 1 and so counts 1;
      YuNet's 0.6-0.95 counts 0.88-0.99).

    Used to rank a track's faces (best shot) and as their weights when fusing; the
    gate itself (pass or fail) is :func:`models.quality.assess`'s.
    """
    sharp = max(report.sharpness, 0.0)
    factors = [
        sharp / (sharp + SHARPNESS_HALF),
        min(1.0, max(report.inter_ocular_px, 0.0) / IOD_FULL_PX),
        min(1.0, max(report.score, 0.05)) ** 0.25,
    ]
    for angle in (report.yaw_deg, report.pitch_deg):
        if angle is not None:
            factors.append(max(math.cos(math.radians(angle)), 0.0))
    return max(float(math.prod(factors)), 1e-9)


class TrackerConfig(BaseModel):
    """How detections are linked and when tracks end (see the module notes)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    iou_threshold: float = Field(0.3, gt=0, le=1, description="Least IoU to link")
    max_age_frames: int = Field(
        10, ge=1, description="Processed frames a track survives without a detection"
    )
    max_age_s: float | None = Field(
        None, gt=0, description="Source seconds a track survives without a detection"
    )
    min_hits: int = Field(2, ge=1, description="Detections before a track is confirmed")
    keep: int = Field(1, ge=1, le=1000, description="Best faces kept per segment")
    max_track_s: float | None = Field(
        10.0, gt=0, description="Segment length after which a long track reports, seconds"
    )
    assignment: Literal["hungarian", "greedy"] = Field(
        "hungarian", description="Optimal (scipy) or greedy assignment"
    )

    @classmethod
    def from_settings(cls, track: TrackSettings, **extra: Any) -> TrackerConfig:
        """The tracker a camera profile's ``track`` section describes (``keep`` is 1
        for best shot, ``fused_max_frames`` for fused); ``extra`` sets the rest."""
        keep = 1 if track.emit == "best_shot" else track.fused_max_frames
        return cls(
            iou_threshold=track.iou_threshold,
            max_age_frames=track.max_age_frames,
            min_hits=track.min_hits,
            keep=keep,
            max_track_s=track.max_track_s,
            **extra,
        )


@dataclass(frozen=True)
class Detection(Generic[P]):
    """One face found in a frame: its box, its quality score (None: it failed the
    gate and only extends its track) and whatever the caller wants kept with it."""

    bbox: Box
    score: float | None
    payload: P


@dataclass(frozen=True)
class Kept(Generic[P]):
    """A detection kept as one of a segment's best faces."""

    score: float
    frame_index: int
    t: float
    bbox: Box
    payload: P


@dataclass(frozen=True)
class TrackSegment(Generic[P]):
    """What a track hands back when it ends or reaches ``max_track_s``."""

    track_id: int
    segment: int
    """0 for a track's first segment, 1, 2 ... for the segments after each
    ``max_duration`` split."""
    reason: EndReason
    confirmed: bool
    """The track has had at least ``min_hits`` detections (in all its segments)."""
    hits: int
    """Detections in this segment."""
    usable: int
    """Detections in this segment that passed the quality gate."""
    first_frame: int
    last_frame: int
    started_at: float
    ended_at: float
    """Source time of the segment's first and last detections, seconds."""
    last_bbox: Box
    kept: list[Kept[P]]
    """At most ``keep`` usable faces, best first; empty when none passed the gate."""


@dataclass(frozen=True)
class UpdateResult(Generic[P]):
    """The track id given to each detection of the frame (in order), and the segments
    that ended at this frame."""

    ids: list[int]
    finished: list[TrackSegment[P]]


@dataclass
class _Track(Generic[P]):
    track_id: int
    bbox: Box
    last_frame: int
    last_t: float
    total_hits: int = 0
    velocity: F64 = field(default_factory=lambda: np.zeros(4))
    segment: int = 0
    seg_hits: int = 0
    seg_usable: int = 0
    seg_first_frame: int = 0
    seg_started: float = 0.0
    order: itertools.count[int] = field(default_factory=itertools.count)
    heap: list[tuple[float, int, Kept[P]]] = field(default_factory=list)

    def predicted(self, frame_index: int) -> Box:
        gap = frame_index - self.last_frame
        x0, y0, x1, y1 = np.asarray(self.bbox) + self.velocity * gap
        return (float(x0), float(y0), float(x1), float(y1))

    def add(self, det: Detection[P], frame_index: int, t: float, keep: int) -> None:
        gap = frame_index - self.last_frame
        if self.total_hits > 0 and gap > 0:
            step = (np.asarray(det.bbox) - np.asarray(self.bbox)) / gap
            a = _VELOCITY_SMOOTHING if self.total_hits > 1 else 1.0
            self.velocity = a * step + (1 - a) * self.velocity
        if self.seg_hits == 0:
            self.seg_first_frame, self.seg_started = frame_index, t
        self.bbox, self.last_frame, self.last_t = det.bbox, frame_index, t
        self.total_hits += 1
        self.seg_hits += 1
        if det.score is None:
            return
        self.seg_usable += 1
        kept = Kept(det.score, frame_index, t, det.bbox, det.payload)
        # A min-heap of (score, arrival): the weakest kept face is the one to drop;
        # equal scores keep the earlier face.
        item = (det.score, -next(self.order), kept)
        if len(self.heap) < keep:
            heapq.heappush(self.heap, item)
        elif item[:2] > self.heap[0][:2]:
            heapq.heapreplace(self.heap, item)

    def cut(self, reason: EndReason, min_hits: int) -> TrackSegment[P]:
        """This segment as handed back; the track starts a fresh one."""
        best = [kept for _, _, kept in sorted(self.heap, key=lambda i: i[:2], reverse=True)]
        segment = TrackSegment(
            track_id=self.track_id,
            segment=self.segment,
            reason=reason,
            confirmed=self.total_hits >= min_hits,
            hits=self.seg_hits,
            usable=self.seg_usable,
            first_frame=self.seg_first_frame,
            last_frame=self.last_frame,
            started_at=self.seg_started,
            ended_at=self.last_t,
            last_bbox=self.bbox,
            kept=best,
        )
        self.segment += 1
        self.seg_hits = self.seg_usable = 0
        self.heap = []
        return segment


def iou_matrix(a: Sequence[Box], b: Sequence[Box]) -> F64:
    """``(len(a), len(b))`` intersection over union of two lists of boxes."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    aa = np.asarray(a, dtype=np.float64)[:, None, :]
    bb = np.asarray(b, dtype=np.float64)[None, :, :]
    w = np.clip(np.minimum(aa[..., 2], bb[..., 2]) - np.maximum(aa[..., 0], bb[..., 0]), 0, None)
    h = np.clip(np.minimum(aa[..., 3], bb[..., 3]) - np.maximum(aa[..., 1], bb[..., 1]), 0, None)
    inter = w * h
    area_a = np.clip(aa[..., 2] - aa[..., 0], 0, None) * np.clip(aa[..., 3] - aa[..., 1], 0, None)
    area_b = np.clip(bb[..., 2] - bb[..., 0], 0, None) * np.clip(bb[..., 3] - bb[..., 1], 0, None)
    union = area_a + area_b - inter
    out: F64 = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return out


def _greedy(iou: F64, threshold: float) -> list[tuple[int, int]]:
    pairs: list[tuple[int, int]] = []
    if iou.size == 0:
        return pairs
    order = np.argsort(-iou, axis=None, kind="stable")
    rows: set[int] = set()
    cols: set[int] = set()
    for flat in order.tolist():
        r, c = divmod(int(flat), iou.shape[1])
        if iou[r, c] < threshold:
            break
        if r not in rows and c not in cols:
            pairs.append((r, c))
            rows.add(r)
            cols.add(c)
    return pairs


Assign = Callable[[F64, float], list[tuple[int, int]]]


def _hungarian_or_greedy() -> Assign:
    """Optimal assignment by scipy when it is installed, else greedy (logged)."""
    try:
        optimize = importlib.import_module("scipy.optimize")
    except ImportError:
        logger.warning("scipy is not installed: tracks are assigned greedily")
        return _greedy

    def hungarian(iou: F64, threshold: float) -> list[tuple[int, int]]:
        if iou.size == 0:
            return []
        # Pairs below the threshold may not link, so they must not steer the optimum.
        gain = np.where(iou >= threshold, iou, 0.0)
        rows, cols = optimize.linear_sum_assignment(gain, maximize=True)
        return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= threshold]

    return hungarian


class Tracker(Generic[P]):
    """Links detections into tracks frame by frame (see the module notes).

    Call :meth:`update` once per frame on which detection ran, with that frame's
    processed-frame index (increasing; frames without detection may be skipped, they
    still count towards ``max_age_frames``) and its source time in seconds. Not
    thread-safe.
    """

    def __init__(self, config: TrackerConfig | None = None, *, first_id: int = 1) -> None:
        if first_id < 0:
            raise ValueError(f"first_id must be >= 0, got {first_id}")
        self.config = config or TrackerConfig()
        self._next_id = first_id
        self._tracks: list[_Track[P]] = []
        self._last_frame: int | None = None
        self._assign: Assign = (
            _hungarian_or_greedy() if self.config.assignment == "hungarian" else _greedy
        )

    @property
    def next_id(self) -> int:
        """The id the next new track will get; pass it as ``first_id`` to a tracker
        that replaces this one within the same boot, so ids stay unique."""
        return self._next_id

    @property
    def active_ids(self) -> list[int]:
        """Ids of the open tracks, oldest first."""
        return [t.track_id for t in self._tracks]

    def update(
        self, detections: Sequence[Detection[P]], frame_index: int, t: float
    ) -> UpdateResult[P]:
        """Link this frame's detections; returns their track ids and ended segments."""
        if self._last_frame is not None and frame_index <= self._last_frame:
            raise ValueError(f"frame_index must increase: {frame_index} after {self._last_frame}")
        self._last_frame = frame_index
        cfg = self.config
        finished: list[TrackSegment[P]] = []
        alive: list[_Track[P]] = []
        for track in self._tracks:
            if self._expired(track, frame_index, t):
                if track.seg_hits:  # else it was split at max_track_s and not seen since
                    finished.append(track.cut("lost", cfg.min_hits))
                logger.debug("track %d ended at frame %d", track.track_id, frame_index)
            else:
                alive.append(track)
        self._tracks = alive

        predicted = [track.predicted(frame_index) for track in self._tracks]
        iou = iou_matrix(predicted, [d.bbox for d in detections])
        pairs = self._assign(iou, cfg.iou_threshold)
        ids = [0] * len(detections)
        matched = set()
        for r, c in pairs:
            track = self._tracks[r]
            track.add(detections[c], frame_index, t, cfg.keep)
            ids[c] = track.track_id
            matched.add(c)
        for c, det in enumerate(detections):
            if c in matched:
                continue
            track = _Track[P](self._next_id, det.bbox, frame_index, t)
            self._next_id += 1
            track.add(det, frame_index, t, cfg.keep)
            self._tracks.append(track)
            ids[c] = track.track_id
            logger.debug("track %d started at frame %d", track.track_id, frame_index)

        if cfg.max_track_s is not None:
            for track in self._tracks:
                if track.seg_hits and t - track.seg_started >= cfg.max_track_s:
                    finished.append(track.cut("max_duration", cfg.min_hits))
        return UpdateResult(ids, finished)

    def _expired(self, track: _Track[P], frame_index: int, t: float) -> bool:
        if frame_index - track.last_frame > self.config.max_age_frames:
            return True
        return self.config.max_age_s is not None and t - track.last_t > self.config.max_age_s

    def flush(self) -> list[TrackSegment[P]]:
        """End every open track (end of stream); segments with no detection since the
        last split are dropped."""
        out = [t.cut("flush", self.config.min_hits) for t in self._tracks if t.seg_hits]
        self._tracks = []
        return out
