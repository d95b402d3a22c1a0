"""``lantern match``: build, search, stats and calibrate from .npy files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import faiss
import numpy as np
import pytest
from typer.testing import CliRunner

from matching import calibrate
from matching.cli import app
from matching.gallery import Gallery
from matching.persistence import generations
from tests.matching.gallery_oracle import make_persons, noisy_copies, unit_rows

runner = CliRunner()
DIM = 32


def _plain(text: str) -> str:
    """Output with rich's line wrapping and box drawing undone, for matching messages."""
    return re.sub(r"[\s│╭╮╰╯─]+", " ", text)


@pytest.fixture
def inputs(tmp_path: Path, rng: np.random.Generator) -> dict[str, Path]:
    """.npy files of 60 persons with 1-4 templates each, and of 12 probes."""
    data = make_persons(rng, 60, DIM, first_template=5_000, first_person=700)
    files = {
        "vectors": data.vectors,
        "template_ids": data.template_ids,
        "person_ids": data.person_ids,
        "queries": np.concatenate(
            [noisy_copies(rng, data.centres[:8], 0.8), unit_rows(rng, 4, DIM)]
        ),
    }
    paths = {}
    for name, array in files.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], array)
    return paths


def _build(inputs: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "build",
        str(out),
        "--vectors",
        str(inputs["vectors"]),
        "--template-ids",
        str(inputs["template_ids"]),
        "--person-ids",
        str(inputs["person_ids"]),
        "--model-id",
        "cli-model",
        "--purpose",
        "watchlist",
        "--block",
        "50",
        *extra,
    ]


def test_build_stats_and_search(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "gallery"
    built = runner.invoke(app, _build(inputs, out))
    assert built.exit_code == 0, built.output
    n = len(np.load(inputs["vectors"]))
    assert f"{n} templates" in _plain(built.stderr) and "60 persons" in built.stderr

    stats = runner.invoke(app, ["stats", str(out), "--json"])
    assert stats.exit_code == 0, stats.output
    info = json.loads(stats.stdout)
    assert (info["model_id"], info["dim"], info["purpose"]) == ("cli-model", DIM, "watchlist")
    assert (info["count"], info["persons"], info["index_kind"]) == (n, 60, "flat")

    gallery = Gallery.load(out)
    queries = np.load(inputs["queries"])
    for args, kwargs in (
        ([], {"k": 10}),
        (["-k", "3"], {"k": 3}),
        (
            ["--k", "50", "--mode", "alert", "--threshold", "0.4"],
            {"k": 50, "mode": "alert", "threshold": 0.4},
        ),
    ):
        found = runner.invoke(
            app,
            [
                "search",
                str(out),
                "--queries",
                str(inputs["queries"]),
                "--json",
                "--model-id",
                "cli-model",
                *args,
            ],
        )
        assert found.exit_code == 0, found.output
        lines = [json.loads(line) for line in found.stdout.splitlines()]
        expected = gallery.search(queries, **kwargs)  # type: ignore[arg-type]
        assert [line["query"] for line in lines] == list(range(len(queries)))
        assert [
            [(c["person_id"], c["template_id"], c["score"]) for c in line["candidates"]]
            for line in lines
        ] == [[tuple(c) for c in row] for row in expected]

    table = runner.invoke(app, ["search", str(out), "--queries", str(inputs["queries"])])
    assert table.exit_code == 0, table.output
    assert "person_id" in table.stdout and "candidates, not identities" in _plain(table.stdout)
    shown = runner.invoke(app, ["stats", str(out)])
    assert shown.exit_code == 0 and "cli-model" in shown.stdout


def test_build_with_default_ids(tmp_path: Path, rng: np.random.Generator) -> None:
    vectors = tmp_path / "v.npy"
    np.save(vectors, unit_rows(rng, 40, 16))
    out = tmp_path / "g"
    result = runner.invoke(
        app, ["build", str(out), "--vectors", str(vectors), "--model-id", "m", "--purpose", "found"]
    )
    assert result.exit_code == 0, result.output
    gallery = Gallery.load(out)
    assert gallery.stats().count == gallery.stats().persons == 40
    hit = gallery.search(np.load(vectors)[17], k=1)[0][0]
    assert (hit.template_id, hit.person_id) == (17, 17)


def test_flat_max_gives_an_ivf_gallery(tmp_path: Path, rng: np.random.Generator) -> None:
    vectors = tmp_path / "v.npy"
    np.save(vectors, unit_rows(rng, 5_000, 16))
    out = tmp_path / "g"
    threads = faiss.omp_get_max_threads()
    try:
        result = runner.invoke(
            app,
            [
                "build",
                str(out),
                "--vectors",
                str(vectors),
                "--model-id",
                "m",
                "--purpose",
                "found",
                "--flat-max",
                "1000",
                "--threads",
                "1",
            ],
        )
        assert faiss.omp_get_max_threads() == 1
    finally:
        faiss.omp_set_num_threads(threads)  # a process-wide setting: put it back
    assert result.exit_code == 0, result.output
    info = json.loads(runner.invoke(app, ["stats", str(out), "--json"]).stdout)
    assert info["index_kind"] == "ivf" and info["count"] == 5_000


def test_replace_overwrites_an_existing_gallery(
    inputs: dict[str, Path], tmp_path: Path, rng: np.random.Generator
) -> None:
    out = tmp_path / "gallery"
    assert runner.invoke(app, _build(inputs, out)).exit_code == 0
    before = Gallery.load(out).stats().count

    refused = runner.invoke(app, _build(inputs, out))
    assert refused.exit_code == 2
    assert "already holds a gallery" in _plain(refused.stderr) and "--replace" in refused.stderr
    assert Gallery.load(out).stats().count == before

    smaller = tmp_path / "smaller.npy"
    np.save(smaller, unit_rows(rng, 7, DIM))
    replaced = runner.invoke(
        app,
        [
            "build",
            str(out),
            "--vectors",
            str(smaller),
            "--model-id",
            "cli-model",
            "--purpose",
            "watchlist",
            "--replace",
        ],
    )
    assert replaced.exit_code == 0, replaced.output
    assert Gallery.load(out).stats().count == 7
    assert len(generations(out)) == 1, "the replaced content is not kept on disk"
    assert not any(p.name.startswith(".") for p in out.iterdir())


def test_damaged_gallery_in_the_way_is_a_clear_error(
    inputs: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "gallery"
    out.mkdir()
    (out / "CURRENT").write_text("garbage\n")
    for extra in ((), ("--replace",)):
        result = runner.invoke(app, _build(inputs, out, *extra))
        assert result.exit_code == 2, (extra, result.output)
        assert "CURRENT" in _error(result) and "does not name a generation" in _error(result)
    assert (out / "CURRENT").read_text() == "garbage\n"


def _error(result: object) -> str:
    return _plain(result.stderr)  # type: ignore[attr-defined]


def test_missing_input_file(inputs: dict[str, Path], tmp_path: Path) -> None:
    args = _build(inputs, tmp_path / "g")
    args[args.index("--vectors") + 1] = str(tmp_path / "nope.npy")
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "--vectors: no such file" in _error(result) and "nope.npy" in _error(result)
    missing = runner.invoke(
        app, ["search", str(tmp_path / "g"), "--queries", str(tmp_path / "nope.npy")]
    )
    assert missing.exit_code == 2 and "--queries: no such file" in _error(missing)


def test_unreadable_npy(inputs: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not numpy at all")
    args = _build(inputs, tmp_path / "g")
    args[args.index("--vectors") + 1] = str(bad)
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "not a readable .npy array" in _error(result)


@pytest.mark.parametrize("shape", [(5,), (7, 2)])
def test_ids_of_the_wrong_shape(
    inputs: dict[str, Path], tmp_path: Path, shape: tuple[int, ...]
) -> None:
    ids = tmp_path / "ids.npy"
    np.save(ids, np.arange(int(np.prod(shape))).reshape(shape))
    args = _build(inputs, tmp_path / "g")
    args[args.index("--template-ids") + 1] = str(ids)
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert f"--template-ids: shape {shape}" in _error(result)
    assert "does not match" in _error(result)
    assert not (tmp_path / "g").exists()


def test_vectors_that_are_not_a_matrix(tmp_path: Path, inputs: dict[str, Path]) -> None:
    flat = tmp_path / "flat.npy"
    np.save(flat, np.ones(8, dtype=np.float32))
    args = _build(inputs, tmp_path / "g")
    args[args.index("--vectors") + 1] = str(flat)
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "expected a 2-d array" in _error(result)


def test_bad_content_is_a_clear_error(
    inputs: dict[str, Path], tmp_path: Path, rng: np.random.Generator
) -> None:
    raw = tmp_path / "raw.npy"
    np.save(raw, unit_rows(rng, len(np.load(inputs["vectors"])), DIM) * 3.0)
    args = _build(inputs, tmp_path / "g")
    args[args.index("--vectors") + 1] = str(raw)
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "not L2-normalised" in _error(result)
    assert not (tmp_path / "g" / "CURRENT").exists()

    dup = tmp_path / "dup.npy"
    ids = np.load(inputs["template_ids"]).copy()
    ids[-1] = ids[0]
    np.save(dup, ids)
    args = _build(inputs, tmp_path / "g")
    args[args.index("--template-ids") + 1] = str(dup)
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and str(ids[0]) in _error(result)


def test_search_refuses_another_model(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "gallery"
    assert runner.invoke(app, _build(inputs, out)).exit_code == 0
    result = runner.invoke(
        app,
        ["search", str(out), "--queries", str(inputs["queries"]), "--model-id", "another-model"],
    )
    assert result.exit_code == 2
    assert "another-model" in _error(result) and "cli-model" in _error(result)
    assert result.stdout == ""


def test_search_errors(inputs: dict[str, Path], tmp_path: Path, rng: np.random.Generator) -> None:
    out = tmp_path / "gallery"
    assert runner.invoke(app, _build(inputs, out)).exit_code == 0
    query_args = ["search", str(out), "--queries", str(inputs["queries"])]
    no_threshold = runner.invoke(app, [*query_args, "--mode", "alert"])
    assert no_threshold.exit_code == 2 and "threshold" in _error(no_threshold)
    wrong_dim = tmp_path / "q16.npy"
    np.save(wrong_dim, unit_rows(rng, 2, 16))
    result = runner.invoke(app, ["search", str(out), "--queries", str(wrong_dim)])
    assert result.exit_code == 2 and "dimension 16" in _error(result)
    too_many = runner.invoke(app, [*query_args, "-k", "51"])
    assert too_many.exit_code == 2
    not_there = runner.invoke(
        app, ["search", str(tmp_path / "none"), "--queries", str(inputs["queries"])]
    )
    assert not_there.exit_code == 2 and "no such gallery directory" in _error(not_there)
    stats = runner.invoke(app, ["stats", str(tmp_path / "none")])
    assert stats.exit_code == 2 and "no such gallery directory" in _error(stats)


def test_calibrate_command(tmp_path: Path) -> None:
    mated = np.array([0.9, 0.8, 0.7, 0.2, -np.inf])
    nonmated = np.linspace(0.0, 0.6, 200)
    np.save(tmp_path / "m.npy", mated)
    np.save(tmp_path / "n.npy", nonmated)
    result = runner.invoke(
        app,
        [
            "calibrate",
            "--mated",
            str(tmp_path / "m.npy"),
            "--nonmated",
            str(tmp_path / "n.npy"),
            "--target-fpir",
            "0.01",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(
        calibrate(mated, nonmated, 0.01).model_dump_json()
    )
    bad = runner.invoke(
        app,
        [
            "calibrate",
            "--mated",
            str(tmp_path / "m.npy"),
            "--nonmated",
            str(tmp_path / "n.npy"),
            "--target-fpir",
            "1.5",
        ],
    )
    assert bad.exit_code == 2 and "target_fpir" in _error(bad)


@pytest.mark.parametrize(
    ("command", "purpose"),
    [
        ("build", "Build a gallery from .npy files"),
        ("search", "Search probes against a gallery"),
        ("stats", "Show a saved gallery's model, size, index kind and memory"),
        ("calibrate", "Alert threshold for a target FPIR"),
    ],
)
def test_help_of_each_command_states_its_purpose(command: str, purpose: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert purpose in _plain(result.stdout)


def test_group_help_lists_the_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("build", "search", "stats", "calibrate"):
        assert re.search(rf"^\W*{command}\b", result.stdout, re.MULTILINE), command
