"""The seeded synthetic data shared by the tests and the benchmarks."""

from __future__ import annotations

import numpy as np
import pytest

from matching.datasets import SyntheticFaces, l2_normalise
from matching.gallery import Gallery, GalleryConfig


def _same(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_same_arguments_give_the_same_data() -> None:
    one = SyntheticFaces(dim=24, n_persons=300, n_mated=50, n_nonmated=40, seed=7)
    two = SyntheticFaces(dim=24, n_persons=300, n_mated=50, n_nonmated=40, seed=7)
    assert _same(one.gallery(), two.gallery())
    q1, q2 = one.queries(), two.queries()
    assert np.array_equal(q1.vectors, q2.vectors) and np.array_equal(q1.persons, q2.persons)


def test_another_seed_gives_other_data() -> None:
    one = SyntheticFaces(dim=24, n_persons=50, seed=7).gallery()[2]
    other = SyntheticFaces(dim=24, n_persons=50, seed=8).gallery()[2]
    assert one.shape == other.shape
    assert not np.allclose(one, other)


def test_gallery_layout() -> None:
    data = SyntheticFaces(dim=16, n_persons=120, templates_per_person=3)
    tids, pids, vectors = data.gallery()
    assert data.n_templates == 360
    assert vectors.shape == (360, 16) and vectors.dtype == np.float32
    assert tids.tolist() == list(range(360))
    assert pids.tolist() == [t // 3 for t in range(360)]
    assert tids.dtype == pids.dtype == np.int64


def test_blocks_do_not_depend_on_block_size() -> None:
    """More persons than one generation block (8192), streamed in different sizes."""
    data = SyntheticFaces(dim=16, n_persons=20_000, templates_per_person=2)
    whole = data.gallery()
    for block_persons in (1, 8_192, 16_384, 100_000):
        blocks = list(data.iter_gallery(block_persons=block_persons))
        joined = tuple(np.concatenate([b[i] for b in blocks]) for i in range(3))
        assert _same(joined, whole), block_persons
        for tids, pids, vectors in blocks:
            assert len(tids) == len(pids) == len(vectors)
    sizes = [len(b[0]) for b in data.iter_gallery(block_persons=8_192)]
    assert sizes == [16_384, 16_384, 2 * (20_000 - 16_384)]
    assert len(list(data.iter_gallery(block_persons=16_384))) == 2
    assert len(list(data.iter_gallery(block_persons=100_000))) == 1


def test_centres_agree_across_blocks() -> None:
    data = SyntheticFaces(dim=16, n_persons=10)
    ids = np.array([3, 9_000, 8_191, 8_192, 3], dtype=np.int64)
    centres = data.centres(ids)
    assert np.array_equal(centres[0], centres[4])
    assert np.array_equal(centres[2:4], data.centres(np.array([8_191, 8_192])))
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("dim", [16, 64])
def test_everything_is_unit_length(dim: int) -> None:
    data = SyntheticFaces(dim=dim, n_persons=200, n_mated=60, n_nonmated=60)
    _, _, vectors = data.gallery()
    queries = data.queries()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(queries.vectors, axis=1), 1.0, atol=1e-6)


def test_queries_mated_first_then_non_mated() -> None:
    data = SyntheticFaces(dim=32, n_persons=100, n_mated=30, n_nonmated=20)
    queries = data.queries()
    assert queries.vectors.shape == (50, 32)
    assert queries.mated.tolist() == [True] * 30 + [False] * 20
    mated = queries.persons[:30]
    assert (np.diff(mated) > 0).all() and mated.min() >= 0 and mated.max() < 100
    assert (queries.persons[30:] == -1).all()
    # More mated queries than persons: each person is asked for once.
    few = SyntheticFaces(dim=32, n_persons=10, n_mated=25, n_nonmated=0).queries()
    assert sorted(few.persons.tolist()) == list(range(10))


def test_mated_queries_find_their_own_person_first() -> None:
    data = SyntheticFaces(dim=64, n_persons=300, n_mated=100, n_nonmated=100, seed=11)
    tids, pids, vectors = data.gallery()
    gallery = Gallery(GalleryConfig(model_id="synthetic", dim=64, purpose="test"))
    gallery.add(tids, pids, vectors)
    queries = data.queries()
    persons, _, scores = gallery.search_arrays(queries.vectors, k=1)
    mated = queries.mated
    assert (persons[mated, 0] == queries.persons[mated]).all()
    # Brute force agrees, and mated top scores are well above non-mated ones.
    exact = queries.vectors @ vectors.T
    assert (pids[exact.argmax(axis=1)][mated] == queries.persons[mated]).all()
    assert np.median(scores[mated, 0]) > 0.6 > np.median(scores[~mated, 0])


def test_l2_normalise_keeps_zero_rows() -> None:
    rows = np.array([[3.0, 4.0], [0.0, 0.0]])
    out = l2_normalise(rows)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
