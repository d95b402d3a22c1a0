"""Gallery add / remove / search / rebuild against a brute-force oracle, both index kinds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from matching import (
    DuplicateTemplate,
    GalleryMismatch,
    IndexPolicy,
    InvalidQuery,
    InvalidVectors,
    SearchMode,
)
from matching.gallery import MAX_K
from tests.matching.gallery_oracle import (
    DIM,
    MODEL,
    Enrolment,
    Filled,
    Oracle,
    assert_same_results,
    assert_valid_candidates,
    fill,
    gallery_snapshot,
    ivf_policy,
    make_persons,
    new_gallery,
    noisy_copies,
    saved_index_ids,
    unit_rows,
)


def _blocks(data: Enrolment, size: int) -> Iterator[tuple[object, object, object]]:
    for start in range(0, len(data), size):
        stop = start + size
        yield data.template_ids[start:stop], data.person_ids[start:stop], data.vectors[start:stop]


# -- investigative search ---------------------------------------------------------


@pytest.mark.parametrize("k", [1, 7, MAX_K])
def test_search_equals_oracle(filled: Filled, k: int) -> None:
    results = filled.gallery.search(filled.queries, k=k)
    assert_same_results(filled.oracle, filled.queries, results, k, exact_persons=True)


def test_search_arrays_agrees_with_search(filled: Filled) -> None:
    persons, templates, scores = filled.gallery.search_arrays(filled.queries, k=12)
    assert persons.shape == templates.shape == scores.shape == (len(filled.queries), 12)
    assert persons.dtype == templates.dtype == np.int64
    assert scores.dtype == np.float32
    rows = filled.gallery.search(filled.queries, k=12)
    for i, row in enumerate(rows):
        assert [c.person_id for c in row] == persons[i].tolist()
        assert [c.template_id for c in row] == templates[i].tolist()
        assert [c.score for c in row] == scores[i].tolist()
        assert np.all(np.diff(scores[i]) <= 0), "ranked best first"


def test_fewer_persons_than_k_pads_with_minus_one(rng: np.random.Generator) -> None:
    gallery = new_gallery(16)
    data = make_persons(rng, 3, 16, templates=(2, 3))
    gallery.add(data.template_ids, data.person_ids, data.vectors)
    persons, templates, scores = gallery.search_arrays(data.centres, k=10)
    assert (persons[:, :3] >= 0).all() and (templates[:, :3] >= 0).all()
    assert (persons[:, 3:] == -1).all() and (templates[:, 3:] == -1).all()
    assert np.isneginf(scores[:, 3:]).all()
    for row in gallery.search(data.centres, k=10):
        assert sorted(c.person_id for c in row) == [0, 1, 2]


def test_one_entry_per_person_and_the_best_template_wins(rng: np.random.Generator) -> None:
    dim = 16
    gallery = new_gallery(dim)
    centre = unit_rows(rng, 1, dim)
    own = noisy_copies(rng, np.repeat(centre, 3, axis=0), 0.5)  # person 7: three templates
    others = unit_rows(rng, 5, dim)  # persons 8..12, one template each
    gallery.add([70, 71, 72], [7, 7, 7], own)
    gallery.add([80, 90, 100, 110, 120], [8, 9, 10, 11, 12], others)
    for j, tid in enumerate([70, 71, 72]):
        row = gallery.search(own[j], k=MAX_K)[0]
        assert len(row) == 6, "six persons, each once"
        assert row[0].person_id == 7 and row[0].template_id == tid
        assert row[0].score == pytest.approx(1.0, abs=1e-6)
        assert [c.person_id for c in row].count(7) == 1


def test_scores_are_exact_inner_products(filled: Filled) -> None:
    gallery, data = filled.gallery, filled.data
    by_id = dict(zip(data.template_ids.tolist(), data.vectors, strict=True))
    persons, templates, scores = gallery.search_arrays(filled.queries, k=20)
    exact = np.einsum(
        "nkd,nd->nk",
        np.stack([[by_id[t] for t in row] for row in templates.tolist()]).astype(np.float64),
        filled.queries.astype(np.float64),
    )
    np.testing.assert_allclose(scores, exact, atol=1e-5)


def test_single_vector_and_empty_query_batches(filled: Filled) -> None:
    gallery = filled.gallery
    assert gallery.search(filled.queries[0], k=5) == gallery.search(filled.queries[:1], k=5)
    assert gallery.search(np.empty((0, DIM), dtype=np.float32)) == []
    persons, _, scores = gallery.search_arrays(np.empty((0, DIM), dtype=np.float32), k=4)
    assert persons.shape == scores.shape == (0, 4)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_empty_gallery_returns_no_candidates(kind: str, rng: np.random.Generator) -> None:
    gallery = new_gallery(policy=IndexPolicy() if kind == "flat" else ivf_policy())
    queries = unit_rows(rng, 3, DIM)
    assert gallery.search(queries, k=5) == [[], [], []]
    persons, templates, scores = gallery.search_arrays(queries, k=5)
    assert (persons == -1).all() and (templates == -1).all() and np.isneginf(scores).all()
    assert gallery.search(queries, k=5, mode="alert", threshold=-1.0) == [[], [], []]


def test_numpy_integer_k_is_accepted(filled: Filled) -> None:
    gallery = filled.gallery
    assert gallery.search(filled.queries, k=np.int64(5)) == gallery.search(filled.queries, k=5)


@pytest.mark.parametrize("k", [0, -1, MAX_K + 1, 10_000, 2.5, "5", None])
def test_k_outside_1_to_50_is_invalid(filled: Filled, k: object) -> None:
    with pytest.raises(InvalidQuery, match="k must be"):
        filled.gallery.search(filled.queries, k=k)  # type: ignore[arg-type]


def test_unknown_mode_is_invalid(filled: Filled) -> None:
    with pytest.raises(InvalidQuery, match="mode"):
        filled.gallery.search(filled.queries, mode="fuzzy")


def test_approximate_ivf_candidates_are_reranked_exactly(rng: np.random.Generator) -> None:
    """A re-rank depth well below the gallery size: the IVF index proposes candidates."""
    gallery = new_gallery(policy=ivf_policy(rerank=64))
    data = make_persons(rng, 160, DIM, templates=(2, 4))
    filled = fill(gallery, data, rng)
    assert len(data) > 4 * 64 and gallery.stats().index_kind == "ivf"
    for k in (1, 10, MAX_K):
        results = gallery.search(filled.queries, k=k)
        assert_valid_candidates(filled.oracle, filled.queries, results, k)
    # Removed templates are never proposed again.
    gone = data.template_ids[::2]
    gallery.remove(gone)
    filled.oracle.remove(gone)
    hits = gallery.search(data.vectors, k=5)
    assert not {c.template_id for row in hits for c in row} & set(gone.tolist())
    assert_valid_candidates(filled.oracle, data.vectors, hits, 5)
    assert_valid_candidates(filled.oracle, filled.queries, gallery.search(filled.queries), 10)


# -- alert mode -----------------------------------------------------------------------


def test_alert_returns_only_candidates_at_or_above_threshold(filled: Filled) -> None:
    gallery, queries = filled.gallery, filled.queries
    top = gallery.search(queries, k=MAX_K)
    for threshold in (0.3, 0.5, 0.7):
        results = gallery.search(queries, k=MAX_K, mode=SearchMode.ALERT, threshold=threshold)
        assert_same_results(filled.oracle, queries, results, MAX_K, threshold=threshold)
        for row, full in zip(results, top, strict=True):
            assert row == [c for c in full if c.score >= threshold]
    # A candidate scoring exactly the threshold alerts; one float32 step above, it does not.
    # (The same query batch each time: float rounding may differ between batch shapes.)
    first = gallery.search(queries[:1], k=MAX_K)[0]
    score = first[3].score
    at = gallery.search(queries[:1], k=MAX_K, mode="alert", threshold=score)[0]
    assert at == first[:4]
    above = float(np.nextafter(np.float32(score), np.float32(np.inf)))
    assert gallery.search(queries[:1], k=MAX_K, mode="alert", threshold=above)[0] == first[:3]


def test_alert_keeps_at_most_k(filled: Filled) -> None:
    results = filled.gallery.search(filled.queries, k=2, mode="alert", threshold=-1.0)
    assert results == filled.gallery.search(filled.queries, k=2)


def test_alert_uses_the_gallery_threshold_unless_given(rng: np.random.Generator) -> None:
    gallery = new_gallery(alert_threshold=0.5)
    data = make_persons(rng, 60, DIM)
    gallery.add(data.template_ids, data.person_ids, data.vectors)
    oracle = Oracle(DIM)
    oracle.add(data.template_ids, data.person_ids, data.vectors)
    queries = noisy_copies(rng, data.centres, 0.6)
    default = gallery.search(queries, k=MAX_K, mode="alert")
    assert_same_results(oracle, queries, default, MAX_K, threshold=0.5)
    assert any(default), "some candidates reach 0.5"
    explicit = gallery.search(queries, k=MAX_K, mode="alert", threshold=0.8)
    assert_same_results(oracle, queries, explicit, MAX_K, threshold=0.8)
    assert sum(map(len, explicit)) < sum(map(len, default))


def test_alert_without_any_threshold_is_invalid(filled: Filled) -> None:
    with pytest.raises(InvalidQuery, match="threshold"):
        filled.gallery.search(filled.queries, mode="alert")


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), float("-inf")])
def test_alert_with_non_finite_threshold_is_invalid(filled: Filled, threshold: float) -> None:
    with pytest.raises(InvalidQuery, match="threshold"):
        filled.gallery.search(filled.queries, mode="alert", threshold=threshold)


def test_investigative_mode_ignores_threshold(filled: Filled) -> None:
    gallery = filled.gallery
    assert gallery.search(filled.queries, k=5, threshold=0.99) == gallery.search(
        filled.queries, k=5
    )


# -- model ids ----------------------------------------------------------------------------


def test_other_model_id_is_refused(filled: Filled, rng: np.random.Generator) -> None:
    gallery = filled.gallery
    before = gallery_snapshot(gallery, filled.queries)
    with pytest.raises(GalleryMismatch, match="other-model"):
        gallery.add([1], [1], unit_rows(rng, 1, DIM), model_id="other-model")
    with pytest.raises(GalleryMismatch, match="other-model"):
        gallery.search(filled.queries, model_id="other-model")
    assert gallery_snapshot(gallery, filled.queries) == before
    gallery.add([1], [1], unit_rows(rng, 1, DIM), model_id=MODEL)
    assert len(gallery) == len(filled.oracle) + 1
    assert gallery.search(filled.queries, model_id=MODEL) == gallery.search(filled.queries)


# -- writes ---------------------------------------------------------------------------------


def test_remove_then_search_equals_oracle(filled: Filled, rng: np.random.Generator) -> None:
    gallery, oracle, data = filled.gallery, filled.oracle, filled.data
    # All templates of ten persons, and one template of many others.
    gone_persons = np.unique(data.person_ids)[:10]
    whole = data.template_ids[np.isin(data.person_ids, gone_persons)]
    some = data.template_ids[~np.isin(data.person_ids, gone_persons)][::4]
    removed = np.concatenate([whole, some])
    assert gallery.remove(removed) == len(removed)
    oracle.remove(removed)
    results = gallery.search(filled.queries, k=MAX_K)
    assert_same_results(oracle, filled.queries, results, MAX_K, exact_persons=True)
    returned = {c.template_id for row in results for c in row}
    assert not returned & set(removed.tolist())
    assert not {c.person_id for row in results for c in row} & set(gone_persons.tolist())
    stats = gallery.stats()
    assert (stats.count, stats.persons, stats.slots) == (
        len(oracle),
        len(oracle.persons),
        len(data),
    )
    assert len(gallery) == len(oracle)


def test_removed_template_id_can_be_enrolled_again(
    filled: Filled, rng: np.random.Generator
) -> None:
    gallery, oracle = filled.gallery, filled.oracle
    tid = int(filled.data.template_ids[0])
    assert gallery.remove([tid]) == 1
    oracle.remove([tid])
    fresh = unit_rows(rng, 1, DIM)
    gallery.add([tid], [9_999], fresh)
    oracle.add([tid], [9_999], fresh)
    hit = gallery.search(fresh, k=1)[0][0]
    assert (hit.person_id, hit.template_id) == (9_999, tid)
    assert hit.score == pytest.approx(1.0, abs=1e-6)
    assert_same_results(
        oracle, filled.queries, gallery.search(filled.queries, k=20), 20, exact_persons=True
    )


def test_removing_every_template_empties_the_gallery(filled: Filled) -> None:
    gallery = filled.gallery
    assert gallery.remove(filled.data.template_ids) == len(filled.data)
    assert len(gallery) == 0
    stats = gallery.stats()
    assert (stats.count, stats.persons) == (0, 0)
    assert gallery.search(filled.queries, k=3) == [[] for _ in filled.queries]


def test_stats_describe_the_gallery(filled: Filled) -> None:
    stats = filled.gallery.stats()
    assert stats.model_id == MODEL and stats.dim == DIM and stats.purpose == "watchlist"
    assert stats.count == len(filled.oracle) == len(filled.data)
    assert stats.persons == len(filled.oracle.persons) == 160
    assert stats.slots == len(filled.data)
    assert stats.rebuilding is False
    assert stats.path is None and stats.mapped_bytes == 0
    assert stats.index_bytes > 0 and stats.resident_bytes >= stats.index_bytes


# -- index growth ---------------------------------------------------------------------------


def test_flat_switches_to_ivf_past_flat_max(rng: np.random.Generator, tmp_path: Path) -> None:
    gallery = new_gallery(policy=ivf_policy(flat_max=400))
    oracle = Oracle(DIM)
    data = make_persons(rng, 200, DIM, templates=(2, 4))
    assert len(data) > 450
    queries = np.concatenate([noisy_copies(rng, data.centres[:20], 0.8), unit_rows(rng, 5, DIM)])

    first = slice(0, 350)
    gallery.add(data.template_ids[first], data.person_ids[first], data.vectors[first])
    oracle.add(data.template_ids[first], data.person_ids[first], data.vectors[first])
    assert gallery.wait_for_index(timeout=60)
    assert gallery.stats().index_kind == "flat"
    assert_same_results(oracle, queries, gallery.search(queries, k=10), 10, exact_persons=True)

    rest = slice(350, None)
    gallery.add(data.template_ids[rest], data.person_ids[rest], data.vectors[rest])
    oracle.add(data.template_ids[rest], data.person_ids[rest], data.vectors[rest])
    assert gallery.wait_for_index(timeout=60)
    stats = gallery.stats()
    assert stats.index_kind == "ivf" and not stats.rebuilding
    assert stats.index.startswith("IVF") and f"built for {len(data)}" in stats.index
    assert stats.count == len(data)
    for k in (1, 10, MAX_K):
        assert_same_results(oracle, queries, gallery.search(queries, k=k), k, exact_persons=True)
    gallery.save(tmp_path / "switched")
    ids, live = saved_index_ids(tmp_path / "switched")
    assert ids == live and len(live) == len(data), "the IVF index holds every template once"

    # The IVF index keeps taking writes.
    gone = data.template_ids[::3]
    gallery.remove(gone)
    oracle.remove(gone)
    more = make_persons(rng, 20, DIM, first_template=10_000, first_person=1_000)
    gallery.add(more.template_ids, more.person_ids, more.vectors)
    oracle.add(more.template_ids, more.person_ids, more.vectors)
    assert gallery.stats().index_kind == "ivf"
    both = np.concatenate([queries, noisy_copies(rng, more.centres, 0.8)])
    assert_same_results(oracle, both, gallery.search(both, k=MAX_K), MAX_K, exact_persons=True)
    gallery.save()
    ids, live = saved_index_ids(tmp_path / "switched")
    assert ids == live and len(live) == len(oracle)


def test_ivf_is_rebuilt_when_the_gallery_outgrows_it(rng: np.random.Generator) -> None:
    policy = ivf_policy(flat_max=0).model_copy(update={"regrow_factor": 2.0})
    gallery = new_gallery(16, policy=policy)
    oracle = Oracle(16)
    first = make_persons(rng, 150, 16, templates=(2, 4))
    gallery.add(first.template_ids, first.person_ids, first.vectors)
    oracle.add(first.template_ids, first.person_ids, first.vectors)
    assert gallery.wait_for_index(timeout=60)
    assert f"built for {len(first)})" in gallery.stats().index
    second = make_persons(
        rng, 300, 16, templates=(2, 4), first_template=100_000, first_person=1_000
    )
    gallery.add(second.template_ids, second.person_ids, second.vectors)
    oracle.add(second.template_ids, second.person_ids, second.vectors)
    assert gallery.wait_for_index(timeout=60)
    stats = gallery.stats()
    assert stats.index_kind == "ivf"
    assert f"built for {len(first) + len(second)})" in stats.index
    queries = np.concatenate([noisy_copies(rng, second.centres[:15], 0.8), unit_rows(rng, 5, 16)])
    assert_same_results(oracle, queries, gallery.search(queries, k=20), 20, exact_persons=True)


# -- rebuild --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_rebuild_from_streamed_blocks_equals_add(
    kind: str, rng: np.random.Generator, tmp_path: Path
) -> None:
    policy = IndexPolicy() if kind == "flat" else ivf_policy()
    data = make_persons(rng, 150, DIM, templates=(2, 4))
    queries = np.concatenate([noisy_copies(rng, data.centres[:20], 0.8), unit_rows(rng, 5, DIM)])
    added = new_gallery(policy=policy)
    added.add(data.template_ids, data.person_ids, data.vectors)
    assert added.wait_for_index(timeout=60)

    rebuilt = new_gallery(policy=policy)
    old = make_persons(rng, 30, DIM, first_template=50_000, first_person=50_000)
    rebuilt.add(old.template_ids, old.person_ids, old.vectors)
    progress: list[int] = []
    spill = tmp_path / "spill"
    n = rebuilt.rebuild(_blocks(data, 64), spill_dir=spill, progress=progress.append)
    assert n == len(data) == sum(progress)

    want, got = added.stats(), rebuilt.stats()
    assert (got.count, got.persons, got.slots, got.index_kind) == (
        want.count,
        want.persons,
        want.slots,
        kind,
    )
    assert got.mapped_bytes == len(data) * DIM * 4, "the spilled vectors are memory-mapped"
    p_want, t_want, s_want = added.search_arrays(queries, k=MAX_K)
    p_got, t_got, s_got = rebuilt.search_arrays(queries, k=MAX_K)
    np.testing.assert_array_equal(p_got, p_want)
    np.testing.assert_array_equal(t_got, t_want)
    np.testing.assert_allclose(s_got, s_want, atol=1e-6)
    with pytest.raises(DuplicateTemplate):  # the new content is there, the old one is gone
        rebuilt.add(data.template_ids[:1], [1], data.vectors[:1])
    assert rebuilt.remove(old.template_ids, missing_ok=True) == 0


@pytest.mark.parametrize(
    "poison",
    ["duplicate_across_blocks", "duplicate_within_block", "bad_vectors", "wrong_dim"],
)
def test_failed_rebuild_keeps_the_old_content(
    poison: str, filled: Filled, rng: np.random.Generator, tmp_path: Path
) -> None:
    gallery = filled.gallery
    before = gallery_snapshot(gallery, filled.queries)
    new = make_persons(rng, 40, DIM, first_template=70_000, first_person=70_000)
    blocks = list(_blocks(new, 16))
    tids, pids, vecs = (np.asarray(x) for x in blocks[-1])
    if poison == "duplicate_across_blocks":
        tids = tids.copy()
        tids[-1] = new.template_ids[0]
        expected: type[Exception] = DuplicateTemplate
    elif poison == "duplicate_within_block":
        tids = tids.copy()
        tids[-1] = tids[0]
        expected = DuplicateTemplate
    elif poison == "bad_vectors":
        vecs = vecs * 2.0
        expected = InvalidVectors
    else:
        vecs = unit_rows(rng, len(tids), DIM + 2)
        expected = InvalidVectors
    blocks[-1] = (tids, pids, vecs)
    spill = tmp_path / "spill"
    with pytest.raises(expected):
        gallery.rebuild(iter(blocks), spill_dir=spill)
    assert gallery_snapshot(gallery, filled.queries) == before
    assert_same_results(filled.oracle, filled.queries, gallery.search(filled.queries, k=10), 10)
    assert list(spill.iterdir()) == [], "the partial spill file is deleted"


def test_rebuild_in_memory_without_spill_dir(rng: np.random.Generator) -> None:
    gallery = new_gallery()
    assert gallery.path is None
    data = make_persons(rng, 80, DIM)
    n = gallery.rebuild(_blocks(data, 25))
    assert n == len(data) == len(gallery)
    assert gallery.stats().mapped_bytes == 0
    oracle = Oracle(DIM)
    oracle.add(data.template_ids, data.person_ids, data.vectors)
    queries = noisy_copies(rng, data.centres[:10], 0.8)
    assert_same_results(oracle, queries, gallery.search(queries, k=10), 10, exact_persons=True)
    # Writes keep working on rebuilt content.
    more = make_persons(rng, 5, DIM, first_template=90_000, first_person=90_000)
    gallery.add(more.template_ids, more.person_ids, more.vectors)
    oracle.add(more.template_ids, more.person_ids, more.vectors)
    gallery.remove(data.template_ids[:10])
    oracle.remove(data.template_ids[:10])
    assert_same_results(oracle, queries, gallery.search(queries, k=10), 10, exact_persons=True)


def test_rebuild_from_an_empty_stream_empties_the_gallery(filled: Filled) -> None:
    gallery = filled.gallery
    assert gallery.rebuild(iter(())) == 0
    assert len(gallery) == 0 and gallery.stats().persons == 0
    assert gallery.search(filled.queries[:2], k=5) == [[], []]
