"""The IoU tracker with synthetic boxes: ids, gaps, crossings, segments, kept faces."""

from __future__ import annotations

import pytest

from devices.firmware import TrackSettings
from edge.tracking import (
    Box,
    Detection,
    Tracker,
    TrackerConfig,
    iou_matrix,
    quality_score,
)
from models.quality import QualityReport


def box(x: float, y: float, size: float = 50.0) -> Box:
    return (x, y, x + size, y + size)


def det(b: Box, score: float | None = 0.5, tag: str = "") -> Detection[str]:
    return Detection(b, score, tag)


def test_iou_matrix_values() -> None:
    iou = iou_matrix([box(0, 0), box(100, 100)], [box(0, 0), box(25, 0), box(500, 500)])
    assert iou.shape == (2, 3)
    assert iou[0, 0] == pytest.approx(1.0)
    assert iou[0, 1] == pytest.approx(1250 / 3750)
    assert iou[0, 2] == 0.0 and iou[1, 0] == 0.0
    assert iou_matrix([], [box(0, 0)]).shape == (0, 1)


@pytest.mark.parametrize("assignment", ["hungarian", "greedy"])
def test_id_stable_under_small_motion(assignment: str) -> None:
    tracker: Tracker[str] = Tracker(TrackerConfig(assignment=assignment, max_track_s=None))
    ids = []
    for f in range(1, 21):
        result = tracker.update([det(box(3.0 * f, 2.0 * f))], f, f / 5)
        assert result.finished == []
        ids.extend(result.ids)
    assert set(ids) == {1}
    (segment,) = tracker.flush()
    assert (segment.track_id, segment.hits, segment.reason) == (1, 20, "flush")
    assert segment.confirmed and segment.first_frame == 1 and segment.last_frame == 20


def test_gap_within_max_age_keeps_id_and_longer_gap_starts_new_track() -> None:
    tracker: Tracker[str] = Tracker(TrackerConfig(max_age_frames=3, max_track_s=None))
    for f in range(1, 6):
        assert tracker.update([det(box(0, 0))], f, f).ids == [1]
    for f in (6, 7):
        assert tracker.update([], f, f).finished == []
    assert tracker.update([det(box(0, 0))], 8, 8).ids == [1]  # 8 - 5 = 3 frames: alive

    for f in (9, 10, 11):
        assert tracker.update([], f, f).finished == []
    result = tracker.update([det(box(0, 0))], 12, 12)  # 12 - 8 = 4 > 3: ended
    assert result.ids == [2]
    (lost,) = result.finished
    assert (lost.track_id, lost.reason, lost.hits, lost.last_frame) == (1, "lost", 6, 8)


def test_max_age_seconds_ends_tracks_across_dropped_frames() -> None:
    tracker: Tracker[str] = Tracker(TrackerConfig(max_age_frames=100, max_age_s=1.0))
    tracker.update([det(box(0, 0))], 1, 0.0)
    result = tracker.update([det(box(0, 0))], 2, 1.5)  # one processed frame, 1.5 s later
    assert result.ids == [2]
    assert [s.track_id for s in result.finished] == [1]


@pytest.mark.parametrize("assignment", ["hungarian", "greedy"])
def test_crossing_tracks_keep_their_ids(assignment: str) -> None:
    """Two faces on the same row walk through each other; the velocity each track
    carries tells them apart after they overlap completely at frame 10."""
    tracker: Tracker[str] = Tracker(TrackerConfig(assignment=assignment, max_track_s=None))
    seen: dict[str, set[int]] = {"a": set(), "b": set()}
    for f in range(0, 21):
        a = det(box(10.0 * f, 0), tag="a")
        b = det(box(200.0 - 10.0 * f, 0), tag="b")
        order = [a, b] if f % 2 else [b, a]  # detector order must not matter
        result = tracker.update(order, f + 1, f / 5)
        for d, track_id in zip(order, result.ids, strict=True):
            if abs(d.bbox[0] - (200.0 - d.bbox[0])) > 1e-6:  # not the frame they coincide
                seen[d.payload].add(track_id)
    assert len(seen["a"]) == 1 and len(seen["b"]) == 1
    assert seen["a"] != seen["b"]


def test_two_tracks_far_apart_are_independent() -> None:
    tracker: Tracker[str] = Tracker(TrackerConfig(max_age_frames=2, max_track_s=None))
    tracker.update([det(box(0, 0)), det(box(300, 0))], 1, 0)
    tracker.update([det(box(2, 0)), det(box(302, 0))], 2, 0.2)
    assert tracker.active_ids == [1, 2]
    tracker.update([det(box(304, 0))], 3, 0.4)
    tracker.update([det(box(306, 0))], 4, 0.6)
    result = tracker.update([det(box(308, 0))], 5, 0.8)
    assert [s.track_id for s in result.finished] == [1]
    assert result.ids == [2] and tracker.active_ids == [2]


def test_long_track_is_split_by_max_track_s_under_one_id() -> None:
    tracker: Tracker[str] = Tracker(TrackerConfig(max_track_s=5.0, max_age_frames=5))
    segments = []
    for f in range(1, 26):
        segments.extend(tracker.update([det(box(f, 0))], f, f * 0.5).finished)
    segments.extend(tracker.flush())
    assert {s.track_id for s in segments} == {1}
    assert [s.segment for s in segments] == list(range(len(segments)))
    assert [s.reason for s in segments[:-1]] == ["max_duration"] * (len(segments) - 1)
    assert segments[-1].reason == "flush"
    assert sum(s.hits for s in segments) == 25
    assert len(segments) == 3
    assert all(s.ended_at - s.started_at <= 5.0 for s in segments)


def test_split_then_lost_without_new_detection_sends_nothing_more() -> None:
    tracker: Tracker[str] = Tracker(TrackerConfig(max_track_s=1.0, max_age_frames=1))
    tracker.update([det(box(0, 0))], 1, 0.0)
    (split,) = tracker.update([det(box(0, 0))], 2, 1.0).finished
    assert split.reason == "max_duration"
    assert tracker.update([], 3, 1.2).finished == []
    assert tracker.update([], 4, 1.4).finished == []  # expired, empty segment dropped
    assert tracker.active_ids == [] and tracker.flush() == []


def test_keeps_best_usable_faces_and_counts_failed_ones() -> None:
    scores = [0.2, None, 0.9, 0.5, None, 0.9, 0.7]
    for keep, expected in [(1, ["f2"]), (3, ["f2", "f5", "f6"])]:
        tracker: Tracker[str] = Tracker(TrackerConfig(keep=keep, max_track_s=None))
        for f, score in enumerate(scores):
            tracker.update([det(box(f, 0), score, tag=f"f{f}")], f + 1, f)
        (segment,) = tracker.flush()
        assert [k.payload for k in segment.kept] == expected  # ties: the earlier face
        assert segment.hits == 7 and segment.usable == 5
        assert segment.kept[0].score == 0.9


def test_track_without_usable_face_keeps_nothing() -> None:
    tracker: Tracker[str] = Tracker(TrackerConfig(max_track_s=None))
    for f in range(1, 5):
        tracker.update([det(box(f, 0), None)], f, f)
    (segment,) = tracker.flush()
    assert segment.kept == [] and segment.usable == 0 and segment.confirmed


def test_min_hits_confirms() -> None:
    tracker: Tracker[str] = Tracker(TrackerConfig(min_hits=3, max_age_frames=1))
    frames: list[list[Detection[str]]] = [
        [det(box(0, 0)), det(box(300, 0))],
        [det(box(0, 0))],
        [det(box(0, 0))],
        [],
        [],
    ]
    finished = {}
    for f, dets in enumerate(frames, start=1):
        finished.update({s.track_id: s for s in tracker.update(dets, f, f / 5).finished})
    assert set(finished) == {1, 2}
    assert finished[2].confirmed is False and finished[2].hits == 1
    assert finished[1].confirmed is True


def test_a_replacing_tracker_continues_the_ids() -> None:
    first: Tracker[str] = Tracker()
    first.update([det(box(0, 0)), det(box(300, 0))], 1, 0)
    assert first.next_id == 3
    second: Tracker[str] = Tracker(first_id=first.next_id)
    assert second.update([det(box(0, 0))], 1, 0).ids == [3]


def test_frame_index_must_increase() -> None:
    tracker: Tracker[str] = Tracker()
    tracker.update([], 5, 1.0)
    with pytest.raises(ValueError, match="increase"):
        tracker.update([], 5, 1.2)


def test_config_from_profile_track_settings() -> None:
    best = TrackerConfig.from_settings(TrackSettings(emit="best_shot", fused_max_frames=7))
    fused = TrackerConfig.from_settings(
        TrackSettings(emit="fused", fused_max_frames=7, max_age_frames=4), assignment="greedy"
    )
    assert best.keep == 1 and fused.keep == 7
    assert fused.max_age_frames == 4 and fused.assignment == "greedy"


def report(
    sharpness: float = 200.0,
    iod: float = 48.0,
    yaw: float | None = 0.0,
    pitch: float | None = None,
    score: float = 1.5,
) -> QualityReport:
    return QualityReport(
        inter_ocular_px=iod,
        box_min_side_px=iod * 2.5,
        sharpness=sharpness,
        yaw_deg=yaw,
        pitch_deg=pitch,
        score=score,
        passed=True,
        failed=[],
        reasons=[],
    )


def test_quality_score_orders_sharpness_size_and_pose() -> None:
    base = quality_score(report())
    assert 0 < base <= 1
    assert quality_score(report(sharpness=30)) < quality_score(report(sharpness=100)) < base
    assert quality_score(report(iod=20)) < quality_score(report(iod=40)) < base
    assert quality_score(report(iod=80)) == pytest.approx(base)  # saturates
    assert quality_score(report(yaw=30)) < base
    assert quality_score(report(yaw=-30)) == pytest.approx(quality_score(report(yaw=30)))
    assert quality_score(report(pitch=20)) < base
    assert quality_score(report(yaw=None)) == pytest.approx(base)
    assert quality_score(report(score=0.3)) < base
    assert quality_score(report(sharpness=0)) > 0
