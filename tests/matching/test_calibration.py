"""Alert thresholds from score samples (NIST FRTE FPIR / FNIR definitions)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matching import CalibrationError, calibrate


def _fpir(nonmated: list[float] | np.ndarray, threshold: float) -> float:
    return float(np.mean(np.asarray(nonmated, dtype=np.float64) >= threshold))


def test_hand_made_example() -> None:
    nonmated = [0.10, 0.20, 0.30, 0.40, 0.50, 0.60, 0.70, 0.80, 0.90, 0.95]
    mated = [0.99, 0.92, 0.85, 0.75, 0.60, -math.inf]
    result = calibrate(mated, nonmated, target_fpir=0.2)
    # Two false alarms of ten are allowed: 0.95 and 0.90 may alert, 0.80 may not.
    assert result.threshold == np.nextafter(0.80, 1.0)
    assert result.fpir == pytest.approx(0.2)
    # Mates at 0.85, 0.92 and 0.99 are found; 0.75, 0.60 and the missing one are not.
    assert result.fnir == pytest.approx(3 / 6)
    assert (result.n_mated, result.n_nonmated) == (6, 10)
    assert result.target_fpir == 0.2 and result.resolved


def test_threshold_is_the_lowest_meeting_the_target() -> None:
    nonmated = np.linspace(-0.2, 0.6, 101)
    for target in (0.01, 0.05, 0.1, 0.25, 0.5, 0.99):
        result = calibrate([0.7], nonmated, target)
        assert result.fpir <= target
        assert _fpir(nonmated, result.threshold) == result.fpir
        assert _fpir(nonmated, float(np.nextafter(result.threshold, -np.inf))) > target


@pytest.mark.parametrize(
    ("n", "target", "alarms"),
    [
        (100, 0.57, 57),  # 0.57 * 100 is 56.99999999999999 in floats
        (10, 0.3, 3),
        (10, float(np.nextafter(0.3, 0.0)), 2),  # a hair below 3 in 10
        (1, 0.9999999999999998, 0),  # at most n - 1 alarms: the threshold is above one
        (3, 0.9999999999999998, 2),
    ],
)
def test_allowed_false_alarms_at_float_boundaries(n: int, target: float, alarms: int) -> None:
    nonmated = np.linspace(-0.5, 0.5, n)
    result = calibrate([0.9], nonmated, target)
    assert result.fpir == alarms / n <= target
    assert int((nonmated >= result.threshold).sum()) == alarms


def test_ties_cannot_be_split() -> None:
    # Half may alert, but the three top scores are equal: a threshold letting two of
    # them through does not exist, so none may.
    result = calibrate([0.9], [0.5, 0.5, 0.5, 0.1, 0.0, -0.1], target_fpir=0.34)
    assert result.threshold == np.nextafter(0.5, 1.0)
    assert result.fpir == 0.0
    assert result.fnir == 0.0


def test_mate_exactly_at_the_threshold_is_found() -> None:
    result = calibrate([0.5], [0.1, 0.2, 0.3, 0.4], target_fpir=0.25)
    assert result.threshold == np.nextafter(0.3, 1.0)
    exact = calibrate([result.threshold], [0.1, 0.2, 0.3, 0.4], target_fpir=0.25)
    assert exact.fnir == 0.0
    below = calibrate([float(np.nextafter(result.threshold, 0.0))], [0.1, 0.2, 0.3, 0.4], 0.25)
    assert below.fnir == 1.0


def test_small_sample_is_unresolved() -> None:
    nonmated = np.linspace(0.0, 0.5, 50)
    result = calibrate([0.9, 0.2], nonmated, target_fpir=0.01)  # 50 * 0.01 < 1
    assert not result.resolved
    assert result.threshold == np.nextafter(0.5, 1.0), "just above every non-mated score"
    assert result.fpir == 0.0 and result.fnir == 0.5
    assert calibrate([0.9], np.linspace(0.0, 0.5, 100), target_fpir=0.01).resolved


def test_accepts_arrays_of_any_real_dtype() -> None:
    as_list = calibrate([1, 2, 3], [0, 1, 2, 3], 0.25)
    as_int = calibrate(np.array([1, 2, 3]), np.array([0, 1, 2, 3], dtype=np.int16), 0.25)
    as_f32 = calibrate(np.float32([1, 2, 3]), np.float32([[0, 1], [2, 3]]), 0.25)
    assert as_list == as_int == as_f32


@pytest.mark.parametrize(
    ("mated", "nonmated", "target", "message"),
    [
        ([], [0.1], 0.1, "mated_scores: no scores"),
        ([0.5], [], 0.1, "nonmated_scores: no scores"),
        ([0.5, math.nan], [0.1], 0.1, "mated_scores.*non-finite"),
        ([0.5], [0.1, math.nan], 0.1, "nonmated_scores.*non-finite"),
        ([math.inf], [0.1], 0.1, "mated_scores.*non-finite"),
        ([0.5], [math.inf], 0.1, "nonmated_scores.*non-finite"),
        ([0.5], [-math.inf], 0.1, "nonmated_scores.*non-finite"),
        ([0.5], [0.1], 0.0, "target_fpir"),
        ([0.5], [0.1], 1.0, "target_fpir"),
        ([0.5], [0.1], -0.1, "target_fpir"),
        ([0.5], [0.1], 1.5, "target_fpir"),
        ([0.5], [0.1], math.nan, "target_fpir"),
    ],
)
def test_bad_inputs_are_calibration_errors(
    mated: list[float], nonmated: list[float], target: float, message: str
) -> None:
    with pytest.raises(CalibrationError, match=message):
        calibrate(mated, nonmated, target)


SCORES = st.floats(-1.0, 1.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    nonmated=st.lists(
        st.one_of(SCORES, st.sampled_from([0.0, 0.5, -0.25])), min_size=1, max_size=60
    ),
    mated=st.lists(st.one_of(SCORES, st.just(-math.inf)), min_size=1, max_size=30),
    target=st.floats(0.0, 1.0, exclude_min=True, exclude_max=True),
)
def test_calibration_properties(nonmated: list[float], mated: list[float], target: float) -> None:
    result = calibrate(mated, nonmated, target)
    threshold = result.threshold
    assert result.fpir == _fpir(nonmated, threshold)
    assert result.fpir <= target, "the target is met"
    below = float(np.nextafter(threshold, -np.inf))
    assert _fpir(nonmated, below) > target, "no lower threshold meets it"
    assert result.fnir == float(np.mean(np.asarray(mated) < threshold))
    assert (result.n_mated, result.n_nonmated) == (len(mated), len(nonmated))
    assert result.resolved == (len(nonmated) * target >= 1.0)
    if not result.resolved:
        assert threshold == np.nextafter(max(nonmated), np.inf)
