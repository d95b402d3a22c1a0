"""1:1 verification protocol of LFW View 2 and its figures.

The pairs file (``pairs.txt``) starts with ``folds<TAB>n``, then per fold ``n``
same-person lines ``name<TAB>i<TAB>j`` and ``n`` different-person lines
``name1<TAB>i<TAB>name2<TAB>j``; images are ``root/name/name_%04d.jpg``.

Figures, as the protocol asks and as usually reported:

* accuracy per fold at the threshold that is best on the *other* folds, then the
  mean and the sample standard deviation over folds;
* ROC AUC over all pairs (the Mann-Whitney statistic, ties counted half);
* TAR at FAR: the share of same-person pairs at or above the lowest threshold
  that accepts at most ``FAR`` of the different-person pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Pair:
    fold: int
    same: bool
    a: tuple[str, int]
    b: tuple[str, int]


def image_path(root: Path, person: tuple[str, int]) -> Path:
    name, number = person
    return root / name / f"{name}_{number:04d}.jpg"


def read_pairs(path: Path) -> list[Pair]:
    """Parse a View-2 pairs file; raises ValueError naming the line on bad input."""
    lines = path.read_text(encoding="utf-8").splitlines()
    try:
        folds, per = (int(v) for v in lines[0].split())
    except (IndexError, ValueError) as exc:
        raise ValueError(f"{path}: first line must be '<folds> <pairs per half-fold>'") from exc
    pairs = []
    body = [line for line in lines[1:] if line.strip()]
    if len(body) != folds * per * 2:
        raise ValueError(f"{path}: {len(body)} pair lines, header says {folds * per * 2}")
    for k, line in enumerate(body):
        fields = line.split("\t") if "\t" in line else line.split()
        fold, same = k // (2 * per), (k % (2 * per)) < per
        try:
            if same and len(fields) == 3:
                pairs.append(
                    Pair(fold, True, (fields[0], int(fields[1])), (fields[0], int(fields[2])))
                )
            elif not same and len(fields) == 4:
                pairs.append(
                    Pair(fold, False, (fields[0], int(fields[1])), (fields[2], int(fields[3])))
                )
            else:
                raise ValueError("wrong number of fields")
        except ValueError as exc:
            raise ValueError(f"{path}: line {k + 2}: {line!r} ({exc})") from exc
    return pairs


def accuracy_at(scores: F64, same: npt.NDArray[np.bool_], threshold: float) -> float:
    return float(np.mean((scores >= threshold) == same))


def best_threshold(scores: F64, same: npt.NDArray[np.bool_]) -> float:
    """The threshold (midway between neighbouring scores) with the best accuracy."""
    ordered = np.unique(scores)
    candidates = np.concatenate(
        [[ordered[0] - 1e-6], (ordered[1:] + ordered[:-1]) / 2, [ordered[-1] + 1e-6]]
    )
    accuracies = [accuracy_at(scores, same, float(t)) for t in candidates]
    return float(candidates[int(np.argmax(accuracies))])


def auc(scores: F64, same: npt.NDArray[np.bool_]) -> float:
    pos, neg = scores[same], scores[~same]
    order = np.argsort(np.concatenate([pos, neg]), kind="stable")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    # average ranks for ties
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def tar_at_far(scores: F64, same: npt.NDArray[np.bool_], far: float) -> float:
    impostor = np.sort(scores[~same])[::-1]
    allowed = math.floor(far * len(impostor) + 1e-9)
    if allowed >= len(impostor):
        return 1.0
    threshold = np.nextafter(impostor[allowed], np.inf)
    return float(np.mean(scores[same] >= threshold))


@dataclass(frozen=True)
class VerificationReport:
    fold_accuracies: list[float]
    fold_thresholds: list[float]
    accuracy_mean: float
    accuracy_std: float
    auc: float
    tar_at_far_1e_2: float
    tar_at_far_1e_3: float


def evaluate(
    scores: F64, same: npt.NDArray[np.bool_], folds: npt.NDArray[np.int64]
) -> VerificationReport:
    """Fold-wise accuracy with thresholds chosen on the other folds, AUC and TAR@FAR."""
    accs, thresholds = [], []
    for k in np.unique(folds):
        train, test = folds != k, folds == k
        t = best_threshold(scores[train], same[train]) if train.any() else 0.0
        thresholds.append(t)
        accs.append(accuracy_at(scores[test], same[test], t))
    return VerificationReport(
        fold_accuracies=accs,
        fold_thresholds=thresholds,
        accuracy_mean=float(np.mean(accs)),
        accuracy_std=float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0,
        auc=auc(scores, same),
        tar_at_far_1e_2=tar_at_far(scores, same, 1e-2),
        tar_at_far_1e_3=tar_at_far(scores, same, 1e-3),
    )
