"""Saving and loading galleries: round trips, damaged files, generations, crash safety."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from matching import CorruptGallery, GalleryMismatch
from matching.gallery import MAX_K, Gallery
from matching.persistence import CURRENT, current_generation, generations, read_generation
from tests.matching.gallery_oracle import (
    DIM,
    MODEL,
    Filled,
    assert_same_results,
    make_persons,
    new_gallery,
    unit_rows,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
FILES = ("vectors.f32", "slots.i64", "index.faiss")


def _gen(directory: Path, number: int) -> Path:
    return directory / f"gen-{number:06d}"


def _current_dir(directory: Path) -> Path:
    number = current_generation(directory)
    assert number is not None
    return _gen(directory, number)


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _same_search(a: Gallery, b: Gallery, queries: np.ndarray) -> None:
    for k in (1, 10, MAX_K):
        pa, ta, sa = a.search_arrays(queries, k=k)
        pb, tb, sb = b.search_arrays(queries, k=k)
        np.testing.assert_array_equal(pa, pb)
        np.testing.assert_array_equal(ta, tb)
        np.testing.assert_array_equal(sa, sb)


def _counts(gallery: Gallery) -> tuple[object, ...]:
    s = gallery.stats()
    return (s.model_id, s.dim, s.purpose, s.count, s.persons, s.slots, s.index_kind, s.index)


@pytest.fixture
def saved(filled: Filled, tmp_path: Path) -> tuple[Filled, Path]:
    """The ``filled`` gallery (flat or IVF) with a third of its templates removed, saved."""
    gone = filled.data.template_ids[::3]
    filled.gallery.remove(gone)
    filled.oracle.remove(gone)
    directory = tmp_path / "gallery"
    assert filled.gallery.save(directory) == directory
    return filled, directory


# -- round trips ------------------------------------------------------------------------


def test_round_trip_gives_identical_results(saved: tuple[Filled, Path]) -> None:
    filled, directory = saved
    loaded = Gallery.load(directory)
    assert _counts(loaded) == _counts(filled.gallery)
    assert len(loaded) == len(filled.oracle)
    _same_search(filled.gallery, loaded, filled.queries)
    assert_same_results(
        filled.oracle,
        filled.queries,
        loaded.search(filled.queries, k=MAX_K),
        MAX_K,
        exact_persons=True,
    )
    stats = loaded.stats()
    assert stats.path == str(directory)
    assert stats.mapped_bytes == stats.slots * DIM * 4, "vectors stay on disk, mapped"


def test_saved_gallery_keeps_working_after_save_and_load(
    saved: tuple[Filled, Path], rng: np.random.Generator
) -> None:
    filled, directory = saved
    for gallery in (filled.gallery, Gallery.load(directory, policy=filled.gallery.config.policy)):
        oracle = type(filled.oracle)(DIM, dict(filled.oracle.rows))
        more = make_persons(rng, 10, DIM, first_template=80_000, first_person=80_000)
        gallery.add(more.template_ids, more.person_ids, more.vectors)
        oracle.add(more.template_ids, more.person_ids, more.vectors)
        gone = filled.data.template_ids[1::3][:40]
        gallery.remove(gone)
        oracle.remove(gone)
        queries = np.concatenate([filled.queries, more.centres])
        assert_same_results(oracle, queries, gallery.search(queries, k=20), 20, exact_persons=True)


def test_save_then_load_again_gives_a_new_generation(saved: tuple[Filled, Path]) -> None:
    filled, directory = saved
    loaded = Gallery.load(directory)
    first = current_generation(directory)
    assert first is not None
    loaded.save()
    assert current_generation(directory) == first + 1
    _same_search(filled.gallery, Gallery.load(directory), filled.queries)


def test_empty_gallery_round_trip(tmp_path: Path, rng: np.random.Generator) -> None:
    gallery = new_gallery()
    gallery.save(tmp_path / "empty")
    loaded = Gallery.load(tmp_path / "empty")
    assert len(loaded) == 0 and loaded.stats().slots == 0
    assert loaded.search(unit_rows(rng, 2, DIM)) == [[], []]
    loaded.add([1], [1], unit_rows(rng, 1, DIM))
    assert len(loaded) == 1


def test_load_settings_come_from_the_arguments(saved: tuple[Filled, Path]) -> None:
    filled, directory = saved
    loaded = Gallery.load(directory, alert_threshold=0.6, verify=False)
    assert loaded.config.alert_threshold == 0.6
    results = loaded.search(filled.queries, k=MAX_K, mode="alert")
    assert_same_results(filled.oracle, filled.queries, results, MAX_K, threshold=0.6)


def test_save_without_a_path_is_refused() -> None:
    with pytest.raises(ValueError, match="path"):
        new_gallery().save()


# -- mismatches -------------------------------------------------------------------------


def test_load_refuses_another_model_or_dimension(saved: tuple[Filled, Path]) -> None:
    _, directory = saved
    with pytest.raises(GalleryMismatch, match="other-model"):
        Gallery.load(directory, expect_model_id="other-model")
    with pytest.raises(GalleryMismatch, match="dimension"):
        Gallery.load(directory, expect_dim=DIM * 2)
    assert len(Gallery.load(directory, expect_model_id=MODEL, expect_dim=DIM)) > 0


def test_load_refuses_another_format_version(saved: tuple[Filled, Path]) -> None:
    _, directory = saved
    meta_path = _current_dir(directory) / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["format_version"] = 999
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(GalleryMismatch, match="format version"):
        Gallery.load(directory)


# -- damaged files ------------------------------------------------------------------------


@pytest.mark.parametrize("name", FILES)
def test_flipped_byte_is_a_corrupt_gallery_naming_the_file(
    saved: tuple[Filled, Path], name: str
) -> None:
    _, directory = saved
    path = _current_dir(directory) / name
    _flip_byte(path, path.stat().st_size // 2)
    with pytest.raises(CorruptGallery, match=name):
        Gallery.load(directory)


@pytest.mark.parametrize("name", [*FILES, "meta.json"])
def test_truncated_file_is_a_corrupt_gallery(saved: tuple[Filled, Path], name: str) -> None:
    _, directory = saved
    path = _current_dir(directory) / name
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size - 7)
    with pytest.raises(CorruptGallery, match=name):
        Gallery.load(directory)


@pytest.mark.parametrize("name", [*FILES, "meta.json"])
def test_missing_file_is_a_corrupt_gallery(saved: tuple[Filled, Path], name: str) -> None:
    _, directory = saved
    (_current_dir(directory) / name).unlink()
    with pytest.raises(CorruptGallery, match=name):
        Gallery.load(directory)


def test_truncated_index_without_checksums_is_still_refused(saved: tuple[Filled, Path]) -> None:
    _, directory = saved
    path = _current_dir(directory) / "index.faiss"
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    with pytest.raises(CorruptGallery, match="index.faiss"):
        Gallery.load(directory, verify=False)


@pytest.mark.parametrize(
    "content", [b"", b"garbage\n", b"gen-\n", b"gen-00000x\n", b"\xff\xfe\x00", b"gen-999999\n"]
)
def test_bad_current_pointer_is_a_corrupt_gallery(
    saved: tuple[Filled, Path], content: bytes
) -> None:
    _, directory = saved
    (directory / CURRENT).write_bytes(content)
    with pytest.raises(CorruptGallery):
        Gallery.load(directory)


def test_missing_current_or_directory_is_a_corrupt_gallery(
    saved: tuple[Filled, Path], tmp_path: Path
) -> None:
    _, directory = saved
    with pytest.raises(CorruptGallery, match="no such gallery directory"):
        Gallery.load(tmp_path / "nowhere")
    (directory / CURRENT).unlink()
    with pytest.raises(CorruptGallery, match=CURRENT):
        Gallery.load(directory)


@pytest.mark.parametrize(
    "content", [b"", b"{not json", b"[]", b'{"model_id": "x"}', b"\xe9\xe9\x00"]
)
def test_garbage_meta_json_is_a_corrupt_gallery(saved: tuple[Filled, Path], content: bytes) -> None:
    _, directory = saved
    (_current_dir(directory) / "meta.json").write_bytes(content)
    with pytest.raises(CorruptGallery, match="meta.json"):
        Gallery.load(directory)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("index_params", {"kind": "hnsw"}),
        ("index_params", {"kind": "flat", "nlist": -4}),
        ("index_params", {"kind": "flat", "surprise": 1}),
        ("index_params", "other kind"),
        ("index_kind", "other kind"),
        ("index_kind", "hnsw"),
        ("both", "other kind"),
        ("count", 3),
        ("rows", 5),
        ("dim", 7),
        ("files", {"vectors.f32": {"bytes": 0, "sha256": "0" * 64}}),
    ],
)
def test_inconsistent_meta_json_is_a_corrupt_gallery(
    saved: tuple[Filled, Path], field: str, value: object
) -> None:
    """meta.json parses but does not describe the files: never a FAISS or pydantic error."""
    _, directory = saved
    meta_path = _current_dir(directory) / "meta.json"
    meta = json.loads(meta_path.read_text())
    if value == "other kind":  # describe the other index kind than the one saved
        flat = meta["index_kind"] == "flat"
        kind = "ivf" if flat else "flat"
        params = {"kind": "ivf", "nlist": 4, "nprobe": 4, "pq_m": 4, "rerank": 8}
        value = params if flat else {"kind": "flat"}
        if field == "index_kind":
            value = kind
        elif field == "both":
            meta["index_kind"] = kind
            field = "index_params"
    meta[field] = value
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CorruptGallery):
        Gallery.load(directory)


# -- generations --------------------------------------------------------------------------


def test_previous_generation_is_kept_without_removals_and_stays_loadable(
    filled: Filled, tmp_path: Path, rng: np.random.Generator
) -> None:
    gallery, directory = filled.gallery, tmp_path / "g"
    gallery.save(directory)
    first_count = len(gallery)
    more = make_persons(rng, 5, DIM, first_template=90_000, first_person=90_000)
    gallery.add(more.template_ids, more.person_ids, more.vectors)
    gallery.save()
    assert generations(directory) == [1, 2] and current_generation(directory) == 2

    # Damage the newest generation: loading says so and names the fallback...
    _flip_byte(_gen(directory, 2) / "vectors.f32", 100)
    with pytest.raises(CorruptGallery, match=r"vectors.f32.*other generations on disk: \[1\]"):
        Gallery.load(directory)
    # ...which is complete and loadable.
    previous = read_generation(directory, generation=1)
    assert previous.meta.count == first_count and previous.meta.generation == 1
    assert int((previous.slot_templates >= 0).sum()) == first_count
    (directory / CURRENT).write_text("gen-000001\n")
    restored = Gallery.load(directory)
    assert len(restored) == first_count
    assert_same_results(
        filled.oracle,
        filled.queries,
        restored.search(filled.queries, k=10),
        10,
        exact_persons=True,
    )


def test_only_the_current_and_previous_generations_are_kept(filled: Filled, tmp_path: Path) -> None:
    directory = tmp_path / "g"
    for expected in ([1], [1, 2], [2, 3], [3, 4]):
        filled.gallery.save(directory)
        assert generations(directory) == expected
    assert [p.name for p in directory.iterdir() if p.name.startswith(".")] == []


def test_removal_then_save_deletes_older_generations_and_erases_vectors(
    filled: Filled, tmp_path: Path
) -> None:
    gallery, directory = filled.gallery, tmp_path / "g"
    gallery.save(directory)
    gallery.save(directory)
    assert generations(directory) == [1, 2]
    gone = filled.data.template_ids[10:30]
    gone_vectors = filled.data.vectors[10:30]
    gallery.remove(gone)
    gallery.save()
    assert generations(directory) == [3], "older generations still held the erased vectors"

    gen = _gen(directory, 3)
    slots = np.fromfile(gen / "slots.i64", dtype="<i8").reshape(-1, 2)
    vectors = np.fromfile(gen / "vectors.f32", dtype="<f4").reshape(-1, DIM)
    assert len(slots) == len(vectors) == len(filled.data)
    erased = slots[:, 0] < 0
    assert erased.sum() == len(gone) and (slots[erased, 1] == -1).all()
    assert (vectors[erased] == 0).all()
    assert not set(slots[~erased, 0].tolist()) & set(gone.tolist())
    for vector in gone_vectors:  # no row anywhere still holds an erased template
        assert not np.any(np.all(np.isclose(vectors, vector, atol=1e-6), axis=1))
    assert len(Gallery.load(directory)) == len(filled.data) - len(gone)


def test_save_after_loading_and_removing_keeps_no_older_generation(
    filled: Filled, tmp_path: Path
) -> None:
    directory = tmp_path / "g"
    filled.gallery.save(directory)
    filled.gallery.save(directory)
    loaded = Gallery.load(directory)
    loaded.remove(filled.data.template_ids[:5])
    loaded.save()
    assert generations(directory) == [3]
    raw = np.fromfile(_gen(directory, 3) / "vectors.f32", dtype="<f4").reshape(-1, DIM)
    assert int((~raw.any(axis=1)).sum()) == 5


def test_rebuild_then_save_drops_the_old_content_from_disk(
    filled: Filled, tmp_path: Path, rng: np.random.Generator
) -> None:
    gallery, directory = filled.gallery, tmp_path / "g"
    gallery.save(directory)
    new = make_persons(rng, 20, DIM, first_template=60_000, first_person=60_000)
    gallery.rebuild([(new.template_ids, new.person_ids, new.vectors)])
    assert any(p.name.startswith(".rebuild-") for p in directory.iterdir()), "spilled in place"
    gallery.save()
    assert generations(directory) == [2]
    assert not any(p.name.startswith(".rebuild-") for p in directory.iterdir())
    loaded = Gallery.load(directory)
    assert len(loaded) == len(new)
    assert loaded.remove(filled.data.template_ids[:3], missing_ok=True) == 0


# -- crash safety -------------------------------------------------------------------------

_SAVER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import numpy as np

    from matching.gallery import Gallery, GalleryConfig

    directory, dim, n = Path(sys.argv[1]), 64, 20_000
    rng = np.random.default_rng(5)

    def unit(rows):
        v = rng.standard_normal((rows, dim), dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    gallery = Gallery(GalleryConfig(model_id="crash", dim=dim, purpose="watchlist"), directory)
    gallery.add(np.arange(n), np.arange(n) // 2, unit(n))
    next_id, step = n, 0
    while True:
        step += 1
        gallery.add(np.arange(next_id, next_id + 300), np.arange(300), unit(300))
        next_id += 300
        if step % 2 == 0:
            gallery.remove(np.arange(step * 50, step * 50 + 50))
        sys.stdout.write(f"saving {len(gallery)}\\n")
        sys.stdout.flush()
        gallery.save()
        sys.stdout.write(f"saved {len(gallery)}\\n")
        sys.stdout.flush()
    """
)


def _kill_while_saving(directory: Path, delay: float) -> list[tuple[str, int]]:
    """Run the saver until its first save, wait ``delay`` s, SIGKILL it; return its lines."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _SAVER, str(directory)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        while not lines or not lines[-1].startswith("saved"):
            line = proc.stdout.readline()
            assert line, f"saver exited early with {proc.wait()}"
            lines.append(line)
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    lines.extend(proc.stdout.readlines())
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    events = []
    for line in lines:
        if line.endswith("\n"):  # a line cut by the kill is not an event
            word, count = line.split()
            events.append((word, int(count)))
    return events


def test_sigkill_during_repeated_saves_leaves_a_loadable_gallery(tmp_path: Path) -> None:
    directory = tmp_path / "g"
    chooser = random.Random(8_675_309)
    for attempt in range(4):
        events = _kill_while_saving(directory, chooser.uniform(0.0, 0.6))
        saved = [count for word, count in events if word == "saved"]
        assert saved, "the saver saved at least once before the kill"
        last_word, last_count = events[-1]
        # CURRENT names the last complete save, or the one the kill interrupted if it
        # got as far as replacing CURRENT.
        allowed = {saved[-1]} if last_word == "saved" else {saved[-1], last_count}
        gallery = Gallery.load(directory)
        assert len(gallery) in allowed, (attempt, events[-3:], len(gallery))
        assert gallery.stats().model_id == "crash"
        probe = unit_rows(np.random.default_rng(attempt), 2, 64)
        assert len(gallery.search(probe, k=3)[0]) == 3
