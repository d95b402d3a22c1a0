"""Alert thresholds from score samples, with the error rates NIST FRTE defines.

For one-to-many identification (NIST FRTE 1:N, formerly FRVT; see NISTIR 8271):

* **FPIR** (false-positive identification rate): the fraction of *non-mated*
  searches (the probe's person is not in the gallery) that return at least one
  candidate at or above the threshold. Only a non-mated search's top score matters.
* **FNIR** (false-negative identification rate): the fraction of *mated* searches
  whose mate is not returned at or above the threshold.

:func:`calibrate` takes, for each mated search, the score of the mate (or ``-inf``
when the mate was not returned at all) and, for each non-mated search, the top
score; it returns the lowest threshold whose FPIR does not exceed the target,
and the FNIR there. A search alerts when ``score >= threshold``.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from matching.errors import CalibrationError


class Calibration(BaseModel):
    """A threshold and the error rates it gives on the calibration sample."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    threshold: float = Field(description="Alert when a candidate's score is >= this")
    target_fpir: float
    fpir: float = Field(description="FPIR measured on the non-mated sample at the threshold")
    fnir: float = Field(description="FNIR measured on the mated sample at the threshold")
    n_mated: int
    n_nonmated: int
    resolved: bool = Field(
        description="False when the non-mated sample is too small to observe the target "
        "rate (fewer than 1/target searches): the threshold is then just above every "
        "non-mated score and the true FPIR is unknown below 1/n_nonmated"
    )


def _as_scores(values: npt.ArrayLike, what: str, *, allow_neg_inf: bool) -> npt.NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise CalibrationError(f"{what}: no scores")
    bad = np.isnan(arr) | np.isposinf(arr) | (np.isneginf(arr) & (not allow_neg_inf))
    if bad.any():
        raise CalibrationError(f"{what}: {int(bad.sum())} non-finite scores")
    return arr


def calibrate(
    mated_scores: npt.ArrayLike, nonmated_scores: npt.ArrayLike, target_fpir: float
) -> Calibration:
    """Lowest threshold with FPIR <= ``target_fpir`` on this sample, and its FNIR."""
    if not (0.0 < target_fpir < 1.0) or math.isnan(target_fpir):
        raise CalibrationError(f"target_fpir must be in (0, 1), got {target_fpir}")
    mated = _as_scores(mated_scores, "mated_scores", allow_neg_inf=True)
    nonmated = _as_scores(nonmated_scores, "nonmated_scores", allow_neg_inf=False)
    ordered = np.sort(nonmated)[::-1]
    n = len(ordered)
    # The most false alarms allowed: the largest m < n with m / n <= target, compared
    # as the FPIR is computed (so a target like 0.57 allows 57 of 100 although
    # 0.57 * 100 rounds below 57). Every score strictly above the next-highest
    # non-mated score may alert, so the threshold sits just above it.
    allowed = min(n - 1, math.floor(target_fpir * n))
    while allowed + 1 < n and (allowed + 1) / n <= target_fpir:
        allowed += 1
    while allowed > 0 and allowed / n > target_fpir:
        allowed -= 1
    threshold = float(np.nextafter(ordered[allowed], np.inf))
    fpir = float(np.mean(nonmated >= threshold))
    fnir = float(np.mean(mated < threshold))
    return Calibration(
        threshold=threshold,
        target_fpir=target_fpir,
        fpir=fpir,
        fnir=fnir,
        n_mated=len(mated),
        n_nonmated=len(nonmated),
        resolved=len(nonmated) * target_fpir >= 1.0,
    )
