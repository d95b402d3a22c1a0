"""Property tests: random interleavings of add / remove / search against the oracle.

Vectors are drawn from NumPy generators seeded by hypothesis (hypothesis shrinks the
seeds and the operation sequences; shrinking float vectors would teach little).
Some added vectors are exact copies of live ones, so equal scores of different
persons occur and the tie tolerance of the comparison is exercised too.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from matching import DuplicateTemplate, UnknownTemplate
from matching.gallery import MAX_K, Gallery, _rank_few, _rank_many
from matching.idmap import IdMap
from tests.matching.gallery_oracle import (
    Oracle,
    assert_same_results,
    assert_valid_candidates,
    ivf_policy,
    make_persons,
    new_gallery,
    saved_index_ids,
    unit_rows,
)

SEEDS = st.integers(0, 2**32 - 1)
TEMPLATE_IDS = st.integers(0, 40)  # a small pool, so ids collide with live and removed ones
PERSON_IDS = st.integers(0, 8)  # few persons, so most have several templates


class GalleryMachine(RuleBasedStateMachine):
    """A flat gallery and the oracle, driven by the same random operations."""

    gallery: Gallery
    oracle: Oracle

    @initialize(dim=st.integers(8, 32))
    def start(self, dim: int) -> None:
        self.dim = dim
        self.gallery = new_gallery(dim)
        self.oracle = Oracle(dim)

    def _vectors(self, seed: int, n: int, copies: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        vectors = unit_rows(rng, n, self.dim)
        live = list(self.oracle.rows.values())
        for row in range(min(copies, n, len(live))):  # exact copies of live templates
            vectors[row] = live[int(rng.integers(len(live)))][1]
        return vectors

    @rule(
        data=st.data(),
        template_ids=st.lists(TEMPLATE_IDS, min_size=1, max_size=8, unique=True),
        seed=SEEDS,
        copies=st.integers(0, 2),
    )
    def add(self, data: st.DataObject, template_ids: list[int], seed: int, copies: int) -> None:
        persons = data.draw(
            st.lists(PERSON_IDS, min_size=len(template_ids), max_size=len(template_ids))
        )
        vectors = self._vectors(seed, len(template_ids), copies)
        if any(t in self.oracle.rows for t in template_ids):
            with pytest.raises(DuplicateTemplate):
                self.gallery.add(template_ids, persons, vectors)
        else:
            self.gallery.add(template_ids, persons, vectors)
            self.oracle.add(template_ids, persons, vectors)

    @rule(data=st.data(), seed=SEEDS)
    def add_repeated_id(self, data: st.DataObject, seed: int) -> None:
        tid = data.draw(TEMPLATE_IDS)
        with pytest.raises(DuplicateTemplate):
            self.gallery.add([tid, tid], [1, 2], self._vectors(seed, 2, 0))

    @rule(template_ids=st.lists(TEMPLATE_IDS, max_size=6), missing_ok=st.booleans())
    def remove(self, template_ids: list[int], missing_ok: bool) -> None:
        present = sorted({t for t in template_ids if t in self.oracle.rows})
        absent = {t for t in template_ids if t not in self.oracle.rows}
        if absent and not missing_ok:
            with pytest.raises(UnknownTemplate):
                self.gallery.remove(template_ids)
        else:
            assert self.gallery.remove(template_ids, missing_ok=missing_ok) == len(present)
            self.oracle.remove(present)

    @precondition(lambda self: len(self.oracle) > 0)
    @rule(data=st.data())
    def remove_live(self, data: st.DataObject) -> None:
        live = sorted(self.oracle.rows)
        chosen = data.draw(st.lists(st.sampled_from(live), min_size=1, max_size=5, unique=True))
        assert self.gallery.remove(chosen) == len(chosen)
        self.oracle.remove(chosen)

    @rule(k=st.integers(1, MAX_K), seed=SEEDS, n=st.integers(1, 4), copies=st.integers(0, 2))
    def search(self, k: int, seed: int, n: int, copies: int) -> None:
        queries = self._vectors(seed, n, copies)
        assert_same_results(self.oracle, queries, self.gallery.search(queries, k=k), k)

    @rule(
        k=st.integers(1, MAX_K),
        seed=SEEDS,
        threshold=st.floats(-1.0, 1.0, allow_nan=False),
        copies=st.integers(0, 2),
    )
    def alert_search(self, k: int, seed: int, threshold: float, copies: int) -> None:
        queries = self._vectors(seed, 3, copies)
        results = self.gallery.search(queries, k=k, mode="alert", threshold=threshold)
        assert_same_results(self.oracle, queries, results, k, threshold=threshold)

    @invariant()
    def sizes_agree(self) -> None:
        stats = self.gallery.stats()
        assert len(self.gallery) == stats.count == len(self.oracle)
        assert stats.persons == len(self.oracle.persons)


GalleryMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
TestGalleryMachine = GalleryMachine.TestCase


# -- IVF, and the flat -> IVF switch while writes and searches go on ------------------------

OPS = st.lists(
    st.tuples(st.sampled_from(["add", "remove", "search"]), st.integers(1, 40)),
    min_size=1,
    max_size=10,
)


@pytest.mark.parametrize("start", ["ivf", "switching", "approximate"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, seed=SEEDS)
def test_ivf_operation_sequences_match_oracle(
    start: str, ops: list[tuple[str, int]], seed: int
) -> None:
    """``ivf``: an IVF gallery of 330 templates from the start, re-ranking all of it, so
    results are exact. ``switching``: a flat one of 300 templates with flat_max 320, so
    adds start the background IVF build and the following operations run while it goes
    on or after the swap. ``approximate``: like ``ivf`` but re-ranking only 24
    candidates, so the IVF index proposes them."""
    dim = 16
    rng = np.random.default_rng(seed)
    flat_max = 320 if start == "switching" else 0
    rerank = 24 if start == "approximate" else 4096
    gallery = new_gallery(dim, policy=ivf_policy(flat_max=flat_max, rerank=rerank))
    oracle = Oracle(dim)
    data = make_persons(rng, 100 if start == "switching" else 110, dim, templates=(3, 3))
    gallery.add(data.template_ids, data.person_ids, data.vectors)
    oracle.add(data.template_ids, data.person_ids, data.vectors)
    if start != "switching":
        assert gallery.wait_for_index(timeout=60)
        assert gallery.stats().index_kind == "ivf"
    check = assert_valid_candidates if start == "approximate" else assert_same_results
    crossed = start != "switching"
    next_id = 10_000
    for op, size in ops:
        if op == "add":
            tids = np.arange(next_id, next_id + size)
            next_id += size
            persons = rng.integers(0, 150, size=size)
            vectors = unit_rows(rng, size, dim)
            gallery.add(tids, persons, vectors)
            oracle.add(tids, persons, vectors)
            crossed |= len(oracle) > flat_max
        elif op == "remove" and len(oracle):
            live = np.array(sorted(oracle.rows))
            gone = rng.choice(live, size=min(size, len(live)), replace=False)
            assert gallery.remove(gone) == len(gone)
            oracle.remove(gone)
        else:
            queries = unit_rows(rng, 4, dim)
            k = min(size, MAX_K)
            check(oracle, queries, gallery.search(queries, k=k), k)
    assert gallery.wait_for_index(timeout=60)
    stats = gallery.stats()
    assert stats.index_kind == ("ivf" if crossed else "flat")
    assert stats.count == len(oracle)
    queries = unit_rows(rng, 6, dim)
    check(oracle, queries, gallery.search(queries, k=MAX_K), MAX_K)
    with tempfile.TemporaryDirectory() as directory:  # the index holds the live slots
        gallery.save(Path(directory))
        ids, live = saved_index_ids(Path(directory))
        assert ids == live and len(live) == len(oracle)


# -- building blocks --------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.lists(st.tuples(st.integers(0, 5), st.floats(-1, 1, width=32)), max_size=12),
        min_size=1,
        max_size=4,
    ),
    padding=st.integers(0, 3),
    k=st.integers(1, 12),
    cut=st.none() | st.floats(-1, 1),
)
def test_ranking_keeps_the_first_entry_of_each_person(
    rows: list[list[tuple[int, float]]], padding: int, k: int, cut: float | None
) -> None:
    # Rows as the re-rank gives them: best first, -1 / -inf padding last, equal widths.
    width = max(1, max(len(row) for row in rows) + padding)
    ordered = [sorted(row, key=lambda e: -e[1]) for row in rows]
    ordered = [row + [(-1, -np.inf)] * (width - len(row)) for row in ordered]
    persons = np.array([[p for p, _ in row] for row in ordered], dtype=np.int64)
    scores = np.array([[s for _, s in row] for row in ordered], dtype=np.float32)
    expect_p = np.full((len(rows), k), -1, dtype=np.int64)
    expect_cols = np.full((len(rows), k), -1, dtype=np.int64)
    expect_deeper = False
    for i, (row_p, row_s) in enumerate(zip(persons.tolist(), scores.tolist(), strict=True)):
        seen: list[int] = []
        for j, (p, s) in enumerate(zip(row_p, row_s, strict=True)):
            if p < 0 or p in seen or (cut is not None and s < cut) or len(seen) == k:
                continue
            expect_p[i, len(seen)] = p
            expect_cols[i, len(seen)] = j
            seen.append(p)
        last = row_s[-1]
        if len(seen) < k and last > -np.inf and (cut is None or last >= cut):
            expect_deeper = True
    for rank in (_rank_few, _rank_many):
        got_p, got_cols, deeper = rank(persons, scores, k, cut)
        np.testing.assert_array_equal(got_p, expect_p)
        np.testing.assert_array_equal(got_cols, expect_cols)
        assert deeper == expect_deeper, rank.__name__


@settings(max_examples=100, deadline=None)
@given(
    batches=st.lists(
        st.tuples(st.booleans(), st.lists(st.integers(0, 2**62), max_size=10, unique=True)),
        max_size=12,
    )
)
def test_idmap_behaves_like_a_dict(batches: list[tuple[bool, list[int]]]) -> None:
    idmap = IdMap()
    reference: dict[int, int] = {}
    next_value = 0
    for insert, keys in batches:
        if insert:
            fresh = [key for key in keys if key not in reference]
            values = list(range(next_value, next_value + len(fresh)))
            next_value += len(fresh)
            idmap.insert(np.array(fresh, dtype=np.int64), np.array(values, dtype=np.int64))
            reference.update(zip(fresh, values, strict=True))
        else:
            present = [key for key in keys if key in reference]
            idmap.delete(np.array(present, dtype=np.int64))
            for key in present:
                del reference[key]
        probe = np.array(sorted(set(keys) | set(reference)), dtype=np.int64)
        want = [reference.get(int(key), -1) for key in probe]
        assert idmap.lookup(probe).tolist() == want
        assert len(idmap) == len(reference)
        keys_sorted, values = idmap.items()
        assert keys_sorted.tolist() == sorted(reference)
        assert values.tolist() == [reference[key] for key in sorted(reference)]
