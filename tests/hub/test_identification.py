"""1:N identification harness: the split, the figures on vectors whose answer is known,
and ``lantern faces eval identify`` end to end on real LFW images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hub.identification import evaluate_identification, split_people
from models.cli import app


def test_split_enrols_first_image_and_alternates_singles() -> None:
    split = split_people(
        {
            "carol": ["c1.jpg"],
            "alice": ["a2.jpg", "a1.jpg", "a3.jpg"],
            "dave": ["d1.jpg"],
            "bob": ["b1.jpg"],
            "erin": [],
        }
    )
    assert split.enrolled == [("alice", "a1.jpg")]
    assert split.mated == [("alice", "a2.jpg"), ("alice", "a3.jpg")]
    assert split.distractors == [("bob", "b1.jpg"), ("dave", "d1.jpg")]
    assert split.nonmated == [("carol", "c1.jpg")]


def _unit(*values: float) -> np.ndarray:
    v = np.array(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_figures_on_vectors_with_a_known_answer() -> None:
    split = split_people(
        {
            "a": ["a0", "a1"],
            "b": ["b0", "b1"],
            "c": ["c0", "c1"],
            "p": ["p0"],  # singles alternate in name order: distractor,
            "q": ["q0"],  # non-mated,
            "r": ["r0"],  # distractor,
            "s": ["s0"],  # non-mated
        }
    )
    vectors = {
        ("a", "a0"): _unit(1, 0, 0, 0),
        ("b", "b0"): _unit(0, 1, 0, 0),
        ("c", "c0"): _unit(0, 0, 1, 0),
        ("p", "p0"): _unit(0, 0, 0, 1),
        ("r", "r0"): _unit(0, 0, -1, 0),
        ("a", "a1"): _unit(1, 0.1, 0, 0),  # mate first
        ("b", "b1"): _unit(0, 0.5, 0, 1),  # distractor p first, mate second
        ("c", "c1"): _unit(0, 0, 0.2, 1),  # distractor p first, mate second
        ("q", "q0"): _unit(0.6, 0, 0, 0.8),  # top score 0.8 (p)
        ("s", "s0"): _unit(0, 0.3, 0, -1),  # top score 0.287 (b)
    }
    report = evaluate_identification("toy", vectors, split, k=2, fpirs=(0.5, 0.01))
    assert report.gallery_persons == 5
    assert (report.mated_searches, report.nonmated_searches) == (3, 2)
    assert report.rank1 == pytest.approx(1 / 3)
    assert report.rank_k == pytest.approx(1.0)
    half, strict = report.calibrations
    # One of two non-mated searches may alert: the threshold sits just above 0.287.
    assert half.threshold == pytest.approx(0.3 / np.sqrt(1.09), abs=1e-5)
    assert half.fpir == 0.5
    # Mate scores: a 0.995, b 0.447, c 0.196 -> only c falls below the threshold.
    assert half.fnir == pytest.approx(1 / 3)
    assert not strict.resolved and strict.fpir == 0.0
    assert strict.fnir == pytest.approx(2 / 3)  # above 0.8 only a's mate alerts


def test_unreadable_images_are_left_out_not_fatal() -> None:
    split = split_people({"a": ["a0", "a1"], "x": ["x0"], "y": ["y0"]})
    vectors = {
        ("a", "a0"): _unit(1, 0),
        ("a", "a1"): _unit(1, 0.1),
        ("y", "y0"): _unit(0, 1),
    }  # the distractor x0 could not be read
    report = evaluate_identification("toy", vectors, split, k=1)
    assert report.gallery_persons == 1 and report.rank1 == 1.0
    with pytest.raises(ValueError, match="mated"):
        evaluate_identification("toy", {("a", "a0"): _unit(1, 0)}, split)


def test_eval_identify_on_real_lfw_people(faces_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "identify.json"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "identify",
            "--root",
            str(faces_dir / "lfw_dev"),
            "--people",
            "40",
            "--workers",
            "2",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert figures["model_id"] == "dlib-resnet-v1"
    assert figures["mated_searches"] > 20 and figures["nonmated_searches"] > 5
    # dlib's descriptor identifies LFW people well; chance would be about 1 in 25.
    assert figures["rank1"] > 0.8
    assert figures["rank_k"] >= figures["rank1"]
    fpir_01 = figures["calibrations"][0]
    assert fpir_01["target_fpir"] == 0.01 and 0.0 <= fpir_01["fnir"] <= 1.0
    assert "rank-1 identification rate" in result.output


def test_eval_identify_refuses_an_empty_folder(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", "identify", "--root", str(tmp_path)])
    assert result.exit_code == 2
    assert "no <person>/<image> files" in result.output
