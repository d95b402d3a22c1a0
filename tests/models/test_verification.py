"""The LFW protocol's figures against brute-force definitions, and the CLI on real pairs."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from models.cli import app
from models.verification import auc, best_threshold, evaluate, read_pairs, tar_at_far


@settings(max_examples=100, deadline=None)
@given(
    pos=st.lists(st.floats(-1, 1, width=32), min_size=1, max_size=20),
    neg=st.lists(st.floats(-1, 1, width=32), min_size=1, max_size=20),
)
def test_auc_is_the_share_of_correctly_ordered_pairs(pos: list[float], neg: list[float]) -> None:
    scores = np.array(pos + neg)
    same = np.array([True] * len(pos) + [False] * len(neg))
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    assert auc(scores, same) == pytest.approx(wins / (len(pos) * len(neg)))


@settings(max_examples=100, deadline=None)
@given(
    scores=st.lists(st.floats(-1, 1, width=32), min_size=2, max_size=30),
    data=st.data(),
)
def test_best_threshold_is_as_good_as_any(scores: list[float], data: st.DataObject) -> None:
    same = np.array(data.draw(st.lists(st.booleans(), min_size=len(scores), max_size=len(scores))))
    s = np.array(scores)
    t = best_threshold(s, same)
    best = np.mean((s >= t) == same)
    for other in list(s) + [-2.0, 2.0]:
        assert np.mean((s >= other) == same) <= best + 1e-12


def test_tar_at_far_by_hand() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.85, 0.4, 0.3, 0.2, 0.1])
    same = np.array([True] * 5 + [False] * 5)
    # FAR 0.2 allows one impostor (0.85) above: threshold just above 0.4 -> TAR 5/5
    assert tar_at_far(scores, same, 0.2) == 1.0
    # FAR 0.1 allows none: threshold just above 0.85 -> only 0.9 accepted
    assert tar_at_far(scores, same, 0.1) == pytest.approx(0.2)


def test_fold_thresholds_come_from_the_other_folds() -> None:
    # Fold 0 alone would pick a threshold near 0.5; folds 1-2 pick near 0.0.
    scores = np.array([0.6, 0.4, 0.1, -0.1, 0.1, -0.1])
    same = np.array([True, False, True, False, True, False])
    folds = np.array([0, 0, 1, 1, 2, 2])
    report = evaluate(scores, same, folds)
    assert report.fold_thresholds[0] == pytest.approx(0.0)
    assert report.fold_accuracies[0] == 0.5  # 0.4 >= 0.0 is accepted wrongly
    assert report.fold_accuracies[1:] == [1.0, 1.0]


def test_bad_pairs_files_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "pairs.txt"
    bad.write_text("1\t1\nA\t1\t2\nB\t1\n")
    with pytest.raises(ValueError, match="line 3"):
        read_pairs(bad)
    bad.write_text("1\t2\nA\t1\t2\n")
    with pytest.raises(ValueError, match="header says"):
        read_pairs(bad)


def test_eval_lfw_cli_on_real_pairs(faces_dir: Path, tmp_path: Path) -> None:
    lfw = faces_dir / "lfw_dev"
    out = tmp_path / "lfw.json"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "lfw",
            "--root",
            str(lfw),
            "--pairs",
            str(lfw / "pairs.txt"),
            "--limit",
            "3",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert figures["pairs"] == 5 * 2 * 3
    for key in ("accuracy_mean", "accuracy_std", "auc", "tar_at_far_1e-3", "no_face"):
        assert key in figures
    assert figures["auc"] > 0.9  # dlib separates these pairs; chance would be 0.5
    assert "mean ± std" in result.output


def test_eval_lfw_cli_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["eval", "lfw", "--root", str(tmp_path), "--pairs", str(tmp_path / "none.txt")]
    )
    assert result.exit_code == 2
    assert "error" in result.output


def test_detect_draws_and_lists_the_faces(faces_dir: Path, tmp_path: Path) -> None:
    import cv2

    out = tmp_path / "drawn.png"
    image = faces_dir / "groups" / "dlib_faces" / "2008_002506.jpg"
    result = CliRunner().invoke(app, ["detect", str(image), "--draw", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 face(s)" in result.output
    drawn = cv2.imread(str(out))
    original = cv2.imread(str(image))
    assert drawn.shape == original.shape and (drawn != original).any()


def test_compare_scores_same_person_higher(faces_dir: Path) -> None:
    lfw = faces_dir / "lfw_dev"
    line = (lfw / "pairs.txt").read_text().splitlines()[1].split("\t")
    name, i, j = line[0], int(line[1]), int(line[2])
    same = CliRunner().invoke(
        app,
        [
            "compare",
            str(lfw / name / f"{name}_{i:04d}.jpg"),
            str(lfw / name / f"{name}_{j:04d}.jpg"),
        ],
    )
    other = faces_dir / "groups" / "dlib_faces" / "2008_002506.jpg"
    diff = CliRunner().invoke(app, ["compare", str(lfw / name / f"{name}_{i:04d}.jpg"), str(other)])
    assert same.exit_code == 0 and diff.exit_code == 0, same.output + diff.output
    score = lambda text: float(text.strip().split()[-1])  # noqa: E731
    assert score(same.output) > score(diff.output)
    none = CliRunner().invoke(
        app, ["compare", str(faces_dir / "groups" / "nonface" / "dog.jpg"), str(other)]
    )
    assert none.exit_code == 2 and "no face" in none.output
