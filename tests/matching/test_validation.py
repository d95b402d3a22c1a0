"""Bad vectors and ids are refused with domain errors before anything reaches FAISS.

Every failed call must leave the gallery exactly as it was.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from matching import (
    DuplicateTemplate,
    InvalidIds,
    InvalidVectors,
    MatchingError,
    UnknownTemplate,
)
from matching.validation import NORM_TOLERANCE, check_ids, check_unique, check_vectors
from tests.matching.gallery_oracle import (
    DIM,
    Filled,
    assert_same_results,
    gallery_snapshot,
    unit_rows,
)


def _scaled(rng: np.random.Generator, n: int, norm: float) -> np.ndarray:
    return unit_rows(rng, n, DIM).astype(np.float64) * norm


# -- vectors --------------------------------------------------------------------------


def _bad_vectors(rng: np.random.Generator) -> dict[str, tuple[object, str]]:
    nan = unit_rows(rng, 4, DIM)
    nan[2, 5] = np.nan
    inf = unit_rows(rng, 4, DIM)
    inf[1, 0] = np.inf
    mixed = unit_rows(rng, 4, DIM).astype(np.float64)
    mixed[3] *= 1.0 + 3 * NORM_TOLERANCE
    return {
        "wrong dimension": (unit_rows(rng, 4, DIM + 1), "dimension"),
        "one short": (unit_rows(rng, 4, DIM - 1), "dimension"),
        "3-d": (unit_rows(rng, 4, DIM).reshape(2, 2, DIM), "2-d"),
        "NaN": (nan, "non-finite.*rows 2"),
        "inf": (inf, "non-finite.*rows 1"),
        "too long": (_scaled(rng, 4, 1.0 + 2 * NORM_TOLERANCE), "not L2-normalised"),
        "too short": (_scaled(rng, 4, 1.0 - 2 * NORM_TOLERANCE), "not L2-normalised"),
        "one row off": (mixed, "not L2-normalised in rows 3"),
        "raw embedding": (_scaled(rng, 4, 17.0), "not L2-normalised"),
        "zeros": (np.zeros((4, DIM), dtype=np.float32), "not L2-normalised"),
        "strings": (np.full((4, DIM), "x"), "dtype"),
        "booleans": (np.ones((4, DIM), dtype=bool), "dtype"),
        "complex": (unit_rows(rng, 4, DIM).astype(np.complex64), "dtype"),
        "ragged": ([[1.0, 0.0], [1.0]], "not an array|dtype"),
        "float64 overflow": (np.full((4, DIM), 1e300), "non-finite"),
    }


BAD_VECTOR_CASES = list(_bad_vectors(np.random.default_rng(0)))


@pytest.mark.parametrize("case", BAD_VECTOR_CASES)
def test_bad_vectors_are_refused_by_add(
    case: str, filled: Filled, rng: np.random.Generator
) -> None:
    vectors, message = _bad_vectors(rng)[case]
    gallery = filled.gallery
    before = gallery_snapshot(gallery, filled.queries)
    with pytest.raises(InvalidVectors, match=message):
        gallery.add([1, 2, 3, 4], [1, 1, 2, 2], vectors)
    assert gallery_snapshot(gallery, filled.queries) == before


@pytest.mark.parametrize("case", BAD_VECTOR_CASES)
def test_bad_queries_are_refused_by_search(
    case: str, filled: Filled, rng: np.random.Generator
) -> None:
    vectors, message = _bad_vectors(rng)[case]
    with pytest.raises(InvalidVectors, match=message):
        filled.gallery.search(vectors)
    with pytest.raises(InvalidVectors, match=message):
        filled.gallery.search_arrays(vectors, mode="alert", threshold=0.5)


def test_norm_within_tolerance_is_accepted_and_renormalised(
    filled: Filled, rng: np.random.Generator
) -> None:
    gallery, oracle = filled.gallery, filled.oracle
    unit = unit_rows(rng, 4, DIM)
    near = unit.astype(np.float64) * np.array(
        [[1 + 0.9 * NORM_TOLERANCE], [1 - 0.9 * NORM_TOLERANCE], [1 + 1e-5], [1.0]]
    )
    gallery.add([1, 2, 3, 4], [1, 2, 3, 4], near)
    oracle.add([1, 2, 3, 4], [1, 2, 3, 4], unit)
    for j, query in enumerate(near):  # the query is off by as much, and accepted too
        hit = gallery.search(query, k=1)[0][0]
        assert hit.template_id == j + 1
        assert hit.score == pytest.approx(1.0, abs=2e-6), "stored and queried as unit vectors"
    assert_same_results(oracle, filled.queries, gallery.search(filled.queries, k=10), 10)


def test_the_callers_arrays_are_never_changed(filled: Filled, rng: np.random.Generator) -> None:
    vectors = unit_rows(rng, 3, DIM) * np.float32(1 + 5e-4)  # within tolerance: renormalised
    original = vectors.copy()
    filled.gallery.add([1, 2, 3], [1, 2, 3], vectors)
    filled.gallery.search(vectors)
    np.testing.assert_array_equal(vectors, original)
    frozen = unit_rows(rng, 2, DIM)
    frozen.setflags(write=False)  # like a read-only memory-mapped .npy file
    filled.gallery.add([4, 5], [4, 5], frozen)
    assert [row[0].template_id for row in filled.gallery.search(frozen, k=1)] == [4, 5]


def test_check_vectors_output() -> None:
    rows = np.eye(3, dtype=np.float64)[:, ::-1] * (1 + 5e-4)
    out = check_vectors(rows, 3)
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == (3, 3)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-7)
    assert check_vectors([0.0, 1.0, 0.0], 3).shape == (1, 3)
    assert check_vectors(np.empty((0, 3)), 3).shape == (0, 3)
    with pytest.raises(InvalidVectors, match="queries"):
        check_vectors(np.ones((1, 4)), 3, what="queries")


# -- template ids on add -------------------------------------------------------------------


def _bad_ids(n: int) -> dict[str, tuple[object, object, type[Exception], str]]:
    good = list(range(1, n + 1))
    return {
        "negative template id": ([-1, *good[1:]], good, InvalidIds, "non-negative"),
        "negative person id": (good, [*good[:-1], -5], InvalidIds, "non-negative"),
        "float template ids": ([float(i) for i in good], good, InvalidIds, "integers"),
        "float array person ids": (good, np.arange(n, dtype=np.float64), InvalidIds, "integers"),
        "bool ids": ([True] * n, good, InvalidIds, "integers"),
        "string ids": ([str(i) for i in good], good, InvalidIds, "integers"),
        "too few ids": (good[:-1], good, InvalidIds, f"{n - 1} ids for {n} vectors"),
        "too many person ids": (good, [*good, 99], InvalidIds, f"{n + 1} ids for {n} vectors"),
        "2-d ids": (np.array(good).reshape(n, 1), good, InvalidIds, "1-d"),
        "uint64 beyond int64": (
            np.array([2**63 + 1, *good[1:]], dtype=np.uint64),
            good,
            InvalidIds,
            "64-bit",
        ),
        "repeated in batch": ([7, 8, 7, *good[3:]], good, DuplicateTemplate, r"\[7\]"),
    }


BAD_ID_CASES = list(_bad_ids(4))


@pytest.mark.parametrize("case", BAD_ID_CASES)
def test_bad_ids_are_refused_and_nothing_is_added(
    case: str, filled: Filled, rng: np.random.Generator
) -> None:
    template_ids, person_ids, error, message = _bad_ids(4)[case]
    gallery = filled.gallery
    before = gallery_snapshot(gallery, filled.queries)
    with pytest.raises(error, match=message):
        gallery.add(template_ids, person_ids, unit_rows(rng, 4, DIM))  # type: ignore[arg-type]
    assert gallery_snapshot(gallery, filled.queries) == before


def test_ids_already_in_the_gallery_refuse_the_whole_batch(
    filled: Filled, rng: np.random.Generator
) -> None:
    gallery = filled.gallery
    before = gallery_snapshot(gallery, filled.queries)
    present = int(filled.data.template_ids[5])
    batch = [10**9, 10**9 + 1, present, 10**9 + 2]
    with pytest.raises(DuplicateTemplate, match=str(present)):
        gallery.add(batch, [1, 2, 3, 4], unit_rows(rng, 4, DIM))
    assert gallery_snapshot(gallery, filled.queries) == before
    assert gallery.remove([10**9, 10**9 + 1], missing_ok=True) == 0, "none of the batch went in"


def test_duplicate_errors_are_id_errors() -> None:
    assert issubclass(DuplicateTemplate, InvalidIds)
    assert issubclass(UnknownTemplate, InvalidIds)
    assert issubclass(InvalidIds, MatchingError) and issubclass(InvalidVectors, MatchingError)


def test_large_and_numpy_ids_are_accepted(filled: Filled, rng: np.random.Generator) -> None:
    gallery = filled.gallery
    big = np.array([2**62, 2**63 - 1], dtype=np.uint64)
    vectors = unit_rows(rng, 2, DIM)
    gallery.add(big, np.array([3, 4], dtype=np.int32), vectors)
    hits = gallery.search(vectors, k=1)
    assert [(h[0].template_id, h[0].person_id) for h in hits] == [(2**62, 3), (2**63 - 1, 4)]
    assert gallery.remove([2**63 - 1]) == 1


# -- remove ------------------------------------------------------------------------------------


def test_unknown_ids_on_remove_remove_nothing(filled: Filled) -> None:
    gallery = filled.gallery
    before = gallery_snapshot(gallery, filled.queries)
    known = filled.data.template_ids[:3].tolist()
    with pytest.raises(UnknownTemplate, match="123456789"):
        gallery.remove([*known, 123_456_789])
    assert gallery_snapshot(gallery, filled.queries) == before


def test_missing_ok_removes_the_known_ids(filled: Filled) -> None:
    gallery, oracle = filled.gallery, filled.oracle
    known = filled.data.template_ids[:3].tolist()
    assert gallery.remove([123_456_789, *known, known[0]], missing_ok=True) == 3
    oracle.remove(known)
    assert len(gallery) == len(oracle)
    assert gallery.remove(known, missing_ok=True) == 0
    with pytest.raises(UnknownTemplate):
        gallery.remove(known[:1])
    assert_same_results(oracle, filled.queries, gallery.search(filled.queries, k=10), 10)


def test_remove_nothing_is_a_no_op(filled: Filled) -> None:
    before = gallery_snapshot(filled.gallery, filled.queries)
    assert filled.gallery.remove([]) == 0
    assert filled.gallery.remove(np.empty(0, dtype=np.int64)) == 0
    assert gallery_snapshot(filled.gallery, filled.queries) == before


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([-3], "non-negative"),
        ([1.5], "integers"),
        ([[1, 2]], "integers"),
        (np.array([[1, 2]]), "1-d"),
        (["1"], "integers"),
    ],
)
def test_malformed_ids_on_remove(filled: Filled, ids: object, message: str) -> None:
    before = gallery_snapshot(filled.gallery, filled.queries)
    with pytest.raises(InvalidIds, match=message):
        filled.gallery.remove(ids)  # type: ignore[arg-type]
    assert gallery_snapshot(filled.gallery, filled.queries) == before


# -- the checks on their own ----------------------------------------------------------------


def test_check_ids_and_check_unique() -> None:
    out = check_ids(np.array([3, 1, 2], dtype=np.int32), 3)
    assert out.dtype == np.int64 and out.tolist() == [3, 1, 2]
    assert check_ids(5).tolist() == [5]
    assert check_ids([]).tolist() == []
    check_unique(np.array([1, 2, 3]))
    with pytest.raises(DuplicateTemplate, match="person_ids"):
        check_unique(np.array([1, 2, 1]), what="person_ids")


def test_errors_name_what_was_wrong() -> None:
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: check_ids([1, -2], what="person_ids"), "person_ids"),
        (lambda: check_vectors(np.ones((2, 3)), 3, what="probes"), "probes"),
    ]
    for call, name in cases:
        with pytest.raises(MatchingError, match=name):
            call()
