"""The gallery contract suite, run again on the Milvus backend (milvus-lite, one local
instance for the whole session), plus what only a Milvus gallery has.

The contract tests of ``test_gallery`` and the property machine of
``test_gallery_properties`` are imported unchanged; an autouse fixture makes their
``new_gallery`` (and the ``filled`` fixture) build :class:`MilvusGallery` objects. A
FAISS ``ivf_policy`` becomes a Milvus ``IVF_FLAT`` index probing every list, so the
flat / IVF parametrisations carry over. Tests of FAISS internals (index plans and their
growth, spill files, memory-mapped vectors, slots of removed rows) are listed in
``FAISS_ONLY`` with the reason; where such a test also checks the contract, a Milvus
version of it without the FAISS-specific assertion follows below.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import settings

import tests.matching.test_gallery as contract
import tests.matching.test_gallery_properties as properties
from matching import (
    CorruptGallery,
    DuplicateTemplate,
    GalleryConfig,
    GalleryMismatch,
    IndexPolicy,
    InvalidVectors,
)
from matching.backends import BACKEND_CONFIG, FaissBackendConfig, open_gallery
from matching.gallery import MAX_K, Gallery
from matching.milvus_gallery import MilvusGallery, MilvusSettings, collection_alias
from tests.matching.gallery_oracle import (
    DIM,
    MODEL,
    Enrolment,
    Filled,
    Oracle,
    assert_same_results,
    fill,
    gallery_snapshot,
    ivf_policy,
    make_persons,
    noisy_copies,
    unit_rows,
)

# The shared contract tests, collected here a second time (on Milvus).
from tests.matching.test_gallery import (  # noqa: F401
    test_alert_keeps_at_most_k,
    test_alert_returns_only_candidates_at_or_above_threshold,
    test_alert_uses_the_gallery_threshold_unless_given,
    test_alert_with_non_finite_threshold_is_invalid,
    test_alert_without_any_threshold_is_invalid,
    test_approximate_ivf_candidates_are_reranked_exactly,
    test_empty_gallery_returns_no_candidates,
    test_fewer_persons_than_k_pads_with_minus_one,
    test_investigative_mode_ignores_threshold,
    test_k_outside_1_to_50_is_invalid,
    test_numpy_integer_k_is_accepted,
    test_one_entry_per_person_and_the_best_template_wins,
    test_other_model_id_is_refused,
    test_rebuild_from_an_empty_stream_empties_the_gallery,
    test_rebuild_in_memory_without_spill_dir,
    test_removed_template_id_can_be_enrolled_again,
    test_removing_every_template_empties_the_gallery,
    test_scores_are_exact_inner_products,
    test_search_arrays_agrees_with_search,
    test_search_equals_oracle,
    test_single_vector_and_empty_query_batches,
    test_stats_describe_the_gallery,
    test_unknown_mode_is_invalid,
)

FAISS_ONLY = {
    "test_flat_switches_to_ivf_past_flat_max": "FAISS index plan growth and its saved index",
    "test_ivf_is_rebuilt_when_the_gallery_outgrows_it": "FAISS index plan growth",
    "test_rebuild_from_streamed_blocks_equals_add": "spill file and memory-mapped vectors "
    "(Milvus version below)",
    "test_failed_rebuild_keeps_the_old_content": "checks the spill directory "
    "(Milvus version below)",
    "test_remove_then_search_equals_oracle": "slots of removed rows stay in the FAISS store "
    "(Milvus version below)",
}


def test_every_contract_test_runs_on_milvus_or_is_listed_faiss_only() -> None:
    names = {n for n, f in inspect.getmembers(contract, inspect.isfunction) if n.startswith("test")}
    shared = {n for n in globals() if n.startswith("test_") and n in names}
    assert shared | set(FAISS_ONLY) == names and not shared & set(FAISS_ONLY)


# -- the Milvus instance and galleries ------------------------------------------------


@pytest.fixture(scope="session")
def milvus_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One milvus-lite server for the session (it takes about a second to start)."""
    from matching.milvus_gallery import connect

    uri = str(tmp_path_factory.mktemp("milvus") / "galleries.db")
    client = connect(MilvusSettings(uri=uri))
    yield client
    client.close()


def _settings(client: Any, policy: IndexPolicy | None) -> MilvusSettings:
    """Milvus settings in the spirit of a FAISS policy: flat, or IVF probing every list."""
    uri = "unused: the shared client is passed in"
    if policy is None or policy.flat_max != 0:
        return MilvusSettings(uri=uri, collection_prefix=_prefix())
    return MilvusSettings(
        uri=uri,
        collection_prefix=_prefix(),
        index_type="IVF_FLAT",
        index_params={"nlist": policy.nlist_min},
        # milvus-lite trains IVF indexes with 128 lists whatever nlist says (it logs
        # "clustering N points to 128 centroids"), so probing every list takes 128.
        search_params={"nprobe": max(policy.nlist_min, 128)},
        rerank=min(policy.rerank, 16_384),
    )


_made = 0


def _prefix() -> str:
    global _made
    _made += 1
    return f"t{_made}"


class Galleries:
    """Makes Milvus galleries on the shared client and drops them after the test."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.made: list[MilvusGallery] = []

    def new(
        self,
        dim: int = DIM,
        *,
        policy: IndexPolicy | None = None,
        path: Path | None = None,
        model_id: str = MODEL,
        purpose: str = "watchlist",
        alert_threshold: float | None = None,
    ) -> MilvusGallery:
        assert path is None, "a Milvus gallery has no path"
        config = GalleryConfig(
            model_id=model_id,
            dim=dim,
            purpose=purpose,
            alert_threshold=alert_threshold,
            policy=policy or IndexPolicy(),
        )
        gallery = MilvusGallery(config, _settings(self.client, policy), client=self.client)
        self.made.append(gallery)
        return gallery

    def drop_all(self) -> None:
        for gallery in self.made:
            if self.client.has_collection(gallery.alias):
                gallery.drop()
        self.made.clear()


@pytest.fixture(autouse=True)
def galleries(milvus_client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Galleries]:
    """Point the imported contract tests' ``new_gallery`` at Milvus."""
    made = Galleries(milvus_client)
    monkeypatch.setattr(contract, "new_gallery", made.new)
    monkeypatch.setattr(properties, "new_gallery", made.new)
    yield made
    made.drop_all()


@pytest.fixture(params=["flat", "ivf"])
def filled(
    request: pytest.FixtureRequest, rng: np.random.Generator, galleries: Galleries
) -> Filled:
    """As the ``filled`` of conftest.py: 160 persons, Milvus FLAT or IVF_FLAT."""
    kind: str = request.param
    policy = IndexPolicy() if kind == "flat" else ivf_policy()
    data = make_persons(rng, 160, DIM, templates=(2, 4), first_template=1000, first_person=500)
    result = fill(galleries.new(policy=policy), data, rng)  # type: ignore[arg-type]
    assert result.gallery.stats().index_kind == kind
    return result


# -- the property machine on Milvus -----------------------------------------------------


class MilvusGalleryMachine(properties.GalleryMachine):
    """The random add/remove/search machine, with fewer examples (each one a collection)."""

    def teardown(self) -> None:
        gallery = getattr(self, "gallery", None)
        if gallery is not None:
            assert isinstance(gallery, MilvusGallery), "the machine runs on Milvus"
            gallery.drop()


MilvusGalleryMachine.TestCase.settings = settings(
    max_examples=15, stateful_step_count=20, deadline=None
)
TestMilvusGalleryMachine = MilvusGalleryMachine.TestCase


# -- Milvus versions of contract tests with FAISS-specific parts -------------------------


def _blocks(data: Enrolment, size: int) -> Iterator[tuple[object, object, object]]:
    for start in range(0, len(data), size):
        stop = start + size
        yield data.template_ids[start:stop], data.person_ids[start:stop], data.vectors[start:stop]


def test_milvus_remove_then_search_equals_oracle(filled: Filled) -> None:
    gallery, oracle, data = filled.gallery, filled.oracle, filled.data
    gone_persons = np.unique(data.person_ids)[:10]
    whole = data.template_ids[np.isin(data.person_ids, gone_persons)]
    some = data.template_ids[~np.isin(data.person_ids, gone_persons)][::4]
    removed = np.concatenate([whole, some])
    assert gallery.remove(removed) == len(removed)
    oracle.remove(removed)
    results = gallery.search(filled.queries, k=MAX_K)
    assert_same_results(oracle, filled.queries, results, MAX_K, exact_persons=True)
    assert not {c.template_id for row in results for c in row} & set(removed.tolist())
    assert not {c.person_id for row in results for c in row} & set(gone_persons.tolist())
    stats = gallery.stats()
    assert (stats.count, stats.persons, stats.slots) == (
        len(oracle),
        len(oracle.persons),
        len(oracle),
    ), "Milvus reclaims removed rows itself: slots are the live rows"
    assert len(gallery) == len(oracle)


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_milvus_rebuild_from_streamed_blocks_equals_add(
    kind: str, rng: np.random.Generator, galleries: Galleries
) -> None:
    policy = IndexPolicy() if kind == "flat" else ivf_policy()
    data = make_persons(rng, 150, DIM, templates=(2, 4))
    queries = np.concatenate([noisy_copies(rng, data.centres[:20], 0.8), unit_rows(rng, 5, DIM)])
    added = galleries.new(policy=policy)
    added.add(data.template_ids, data.person_ids, data.vectors)
    rebuilt = galleries.new(policy=policy, purpose="found")
    old = make_persons(rng, 30, DIM, first_template=50_000, first_person=50_000)
    rebuilt.add(old.template_ids, old.person_ids, old.vectors)
    old_collection = rebuilt.stats().index.rsplit(" ", 1)[1]
    progress: list[int] = []
    assert rebuilt.rebuild(_blocks(data, 64), progress=progress.append) == len(data)
    assert sum(progress) == len(data)
    want, got = added.stats(), rebuilt.stats()
    assert (got.count, got.persons, got.index_kind) == (want.count, want.persons, kind)
    assert not galleries.client.has_collection(old_collection), "the old collection is dropped"
    p_want, t_want, s_want = added.search_arrays(queries, k=MAX_K)
    p_got, t_got, s_got = rebuilt.search_arrays(queries, k=MAX_K)
    np.testing.assert_array_equal(p_got, p_want)
    np.testing.assert_array_equal(t_got, t_want)
    np.testing.assert_allclose(s_got, s_want, atol=1e-6)
    with pytest.raises(DuplicateTemplate):
        rebuilt.add(data.template_ids[:1], [1], data.vectors[:1])
    assert rebuilt.remove(old.template_ids, missing_ok=True) == 0


@pytest.mark.parametrize("poison", ["duplicate_across_blocks", "bad_vectors", "wrong_dim"])
def test_milvus_failed_rebuild_keeps_the_old_content(
    poison: str, filled: Filled, rng: np.random.Generator, galleries: Galleries
) -> None:
    gallery = filled.gallery
    assert isinstance(gallery, MilvusGallery)
    before = gallery_snapshot(gallery, filled.queries)
    collections = set(galleries.client.list_collections())
    new = make_persons(rng, 40, DIM, first_template=70_000, first_person=70_000)
    blocks = list(_blocks(new, 16))
    tids, pids, vecs = (np.asarray(x) for x in blocks[-1])
    expected: type[Exception] = InvalidVectors
    if poison == "duplicate_across_blocks":
        tids = tids.copy()
        tids[-1] = new.template_ids[0]
        expected = DuplicateTemplate
    elif poison == "bad_vectors":
        vecs = vecs * 2.0
    else:
        vecs = unit_rows(rng, len(tids), DIM + 2)
    blocks[-1] = (tids, pids, vecs)
    with pytest.raises(expected):
        gallery.rebuild(iter(blocks))
    assert gallery_snapshot(gallery, filled.queries) == before
    assert set(galleries.client.list_collections()) == collections, "the new one is dropped"


# -- what only the Milvus gallery has ----------------------------------------------------


def test_save_flushes_and_load_reconnects_to_the_same_content(
    filled: Filled, galleries: Galleries
) -> None:
    gallery = filled.gallery
    assert isinstance(gallery, MilvusGallery)
    assert gallery.save() == gallery.alias
    with pytest.raises(ValueError, match="no path"):
        gallery.save(Path("elsewhere"))
    again = MilvusGallery.load(
        gallery.settings, "watchlist", MODEL, expect_dim=DIM, client=galleries.client
    )
    assert again.dim == DIM and len(again) == len(filled.oracle)
    assert again.search(filled.queries, k=MAX_K) == gallery.search(filled.queries, k=MAX_K)
    again.remove(filled.data.template_ids[:5])  # both objects see the same collection
    assert len(gallery) == len(filled.oracle) - 5


def test_load_refuses_a_missing_gallery_or_another_dimension(
    filled: Filled, galleries: Galleries
) -> None:
    gallery = filled.gallery
    assert isinstance(gallery, MilvusGallery)
    with pytest.raises(CorruptGallery, match="no Milvus collection"):
        MilvusGallery.load(gallery.settings, "missing", MODEL, client=galleries.client)
    with pytest.raises(GalleryMismatch, match="dimension"):
        MilvusGallery.load(
            gallery.settings, "watchlist", MODEL, expect_dim=DIM * 2, client=galleries.client
        )
    other = GalleryConfig(model_id=MODEL, dim=DIM * 2, purpose="watchlist")
    with pytest.raises(GalleryMismatch, match="dimension"):
        MilvusGallery(other, gallery.settings, client=galleries.client)


def test_collection_names_are_valid_and_distinct() -> None:
    a = collection_alias("lantern", "missing-persons", "arcface-r100/v1.2")
    b = collection_alias("lantern", "missing_persons", "arcface-r100/v1.2")
    assert a != b
    for name in (a, b):
        assert name.replace("_", "").isalnum() and len(name) <= 255


def test_open_gallery_selects_the_backend_by_configuration(
    tmp_path: Path, rng: np.random.Generator, milvus_client: Any
) -> None:
    config = GalleryConfig(model_id=MODEL, dim=DIM, purpose="found")
    data = make_persons(rng, 20, DIM)
    faiss_cfg = BACKEND_CONFIG.validate_python({"type": "faiss", "path": str(tmp_path / "g")})
    milvus_cfg = BACKEND_CONFIG.validate_python(
        {"type": "milvus", "uri": "./x.db", "collection_prefix": "open_test"}
    )
    assert isinstance(faiss_cfg, FaissBackendConfig) and isinstance(milvus_cfg, MilvusSettings)
    first = open_gallery(config, faiss_cfg)
    assert isinstance(first, Gallery)
    first.add(data.template_ids, data.person_ids, data.vectors)
    first.save()
    reopened = open_gallery(config, faiss_cfg)
    assert isinstance(reopened, Gallery) and len(reopened) == len(data)
    m = open_gallery(config, milvus_cfg, client=milvus_client)
    assert isinstance(m, MilvusGallery)
    try:
        m.add(data.template_ids, data.person_ids, data.vectors)
        m2 = open_gallery(config, milvus_cfg, client=milvus_client)
        assert len(m2) == len(data)
        oracle = Oracle(DIM)
        oracle.add(data.template_ids, data.person_ids, data.vectors)
        assert_same_results(oracle, data.centres, m2.search(data.centres, k=5), 5)
        ids = [[(c.person_id, c.template_id) for c in row] for row in m2.search(data.centres)]
        assert ids == [
            [(c.person_id, c.template_id) for c in row] for row in reopened.search(data.centres)
        ]
    finally:
        m.drop()
    with pytest.raises(ValueError):
        BACKEND_CONFIG.validate_python({"type": "pinecone"})
