"""Brute-force reference for gallery searches, and test data with person structure.

The oracle keeps every live template in a dict and scores a query against all of
them in float64, so it is slow and obviously right. :func:`assert_same_results`
compares a gallery's answer with it: scores to ``SCORE_TOL``, and persons exactly
except where two persons' scores are closer than that tolerance (float32 against
float64 arithmetic may order such near-ties either way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt

from matching.gallery import Candidate, Gallery, GalleryConfig
from matching.persistence import read_generation
from matching.policy import IndexPolicy

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

SCORE_TOL = 1e-5
DIM = 32
MODEL = "test-model-v1"


def new_gallery(
    dim: int = DIM,
    *,
    policy: IndexPolicy | None = None,
    path: Path | None = None,
    model_id: str = MODEL,
    purpose: str = "watchlist",
    alert_threshold: float | None = None,
) -> Gallery:
    """An empty gallery (exact index unless ``policy`` says otherwise)."""
    config = GalleryConfig(
        model_id=model_id,
        dim=dim,
        purpose=purpose,
        alert_threshold=alert_threshold,
        policy=policy or IndexPolicy(),
    )
    return Gallery(config, path)


def ivf_policy(flat_max: int = 0, rerank: int = 4096) -> IndexPolicy:
    """An IVF index on small data, probing every list.

    With ``rerank`` at least the gallery size the re-rank covers the whole gallery, so
    IVF results must equal exact search, persons and scores. With a smaller ``rerank``
    the IVF proposes the candidates (check those with :func:`assert_valid_candidates`:
    4-bit codes of 16 or 32 dimensions are far too coarse to reproduce an exact
    ranking).
    """
    return IndexPolicy(
        flat_max=flat_max, nlist_min=8, train_per_list=39, probe_fraction=1.0, rerank=rerank
    )


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> F32:
    rows = rng.standard_normal((n, dim))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows.astype(np.float32)


def noisy_copies(rng: np.random.Generator, centres: F32, noise: float) -> F32:
    """Unit vectors near ``centres`` (cosine about ``1 / sqrt(1 + noise**2)``)."""
    dim = centres.shape[1]
    rows = centres.astype(np.float64) + noise * rng.standard_normal(centres.shape) / np.sqrt(dim)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows.astype(np.float32)


@dataclass
class Enrolment:
    """Templates of several persons: ``(template_ids, person_ids, vectors)`` and centres."""

    template_ids: I64
    person_ids: I64
    vectors: F32
    centres: F32  # row i is the centre of person first_person + i

    def __len__(self) -> int:
        return len(self.template_ids)


def make_persons(
    rng: np.random.Generator,
    n_persons: int,
    dim: int,
    *,
    templates: tuple[int, int] = (1, 4),
    first_template: int = 0,
    first_person: int = 0,
    noise: float = 0.8,
) -> Enrolment:
    """Persons with ``templates[0]..templates[1]`` templates each, in shuffled order."""
    centres = unit_rows(rng, n_persons, dim)
    per = rng.integers(templates[0], templates[1] + 1, size=n_persons)
    owner = np.repeat(np.arange(n_persons), per)
    order = rng.permutation(len(owner))
    owner = owner[order]
    vectors = noisy_copies(rng, centres[owner], noise)
    template_ids = first_template + rng.permutation(len(owner)).astype(np.int64)
    return Enrolment(template_ids, (first_person + owner).astype(np.int64), vectors, centres)


@dataclass
class Oracle:
    """Live templates in a dict; searches by scoring every one in float64."""

    dim: int
    rows: dict[int, tuple[int, npt.NDArray[np.float64]]] = field(default_factory=dict)
    _arrays: tuple[I64, I64, npt.NDArray[np.float64]] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def persons(self) -> set[int]:
        return {person for person, _ in self.rows.values()}

    def add(
        self,
        template_ids: Sequence[int] | I64,
        person_ids: Sequence[int] | I64,
        vectors: npt.ArrayLike,
    ) -> None:
        vecs = np.asarray(vectors, dtype=np.float64).reshape(-1, self.dim)
        vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
        for tid, pid, vec in zip(template_ids, person_ids, vecs, strict=True):
            assert int(tid) not in self.rows
            self.rows[int(tid)] = (int(pid), vec)
        self._arrays = None

    def remove(self, template_ids: Sequence[int] | I64) -> None:
        for tid in template_ids:
            del self.rows[int(tid)]
        self._arrays = None

    def _table(self) -> tuple[I64, I64, npt.NDArray[np.float64]]:
        if self._arrays is None:
            tids = np.array(list(self.rows), dtype=np.int64)
            pids = np.array([self.rows[t][0] for t in tids.tolist()], dtype=np.int64)
            vecs = np.array([self.rows[t][1] for t in tids.tolist()]).reshape(-1, self.dim)
            self._arrays = (tids, pids, vecs)
        return self._arrays

    def template_scores(self, query: npt.ArrayLike) -> dict[int, float]:
        tids, _, vecs = self._table()
        q = np.asarray(query, dtype=np.float64).reshape(self.dim)
        scores = vecs @ (q / np.linalg.norm(q))
        return dict(zip(tids.tolist(), scores.tolist(), strict=True))

    def ranking(self, query: npt.ArrayLike) -> list[Candidate]:
        """Every person once, with their best template, best score first."""
        tids, pids, vecs = self._table()
        q = np.asarray(query, dtype=np.float64).reshape(self.dim)
        scores = vecs @ (q / np.linalg.norm(q))
        order = np.lexsort((-scores, pids))  # by person, best first within a person
        first = np.ones(len(order), dtype=bool)
        first[1:] = pids[order][1:] != pids[order][:-1]
        best = order[first]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [
            Candidate(int(p), int(t), float(s))
            for p, t, s in zip(pids[best], tids[best], scores[best], strict=True)
        ]

    def person_best(self, query: npt.ArrayLike) -> dict[int, tuple[float, int]]:
        """Per person: the best score and the template that gives it."""
        return {c.person_id: (c.score, c.template_id) for c in self.ranking(query)}


def assert_same_results(
    oracle: Oracle,
    queries: npt.ArrayLike,
    results: list[list[Candidate]],
    k: int,
    threshold: float | None = None,
    *,
    exact_persons: bool = False,
) -> None:
    """Check ``results`` (from :meth:`Gallery.search`) against the oracle.

    Each row must hold min(k, persons) candidates (in alert mode: those scoring at or
    above ``threshold``), one per person, ranked by score, each the person's best
    template with its exact score. With ``exact_persons`` the persons and templates
    must also equal the oracle's order exactly (for data without near-ties).
    """
    qs = np.asarray(queries, dtype=np.float32).reshape(-1, oracle.dim)
    assert len(results) == len(qs)
    for row, (query, got) in enumerate(zip(qs, results, strict=True)):
        expected = oracle.ranking(query)
        best = oracle.person_best(query)
        scores = oracle.template_scores(query)
        if threshold is None:
            assert len(got) == min(k, len(expected)), (row, got, expected[:k])
        else:
            sure = sum(c.score >= threshold + SCORE_TOL for c in expected)
            maybe = sum(c.score >= threshold - SCORE_TOL for c in expected)
            assert min(k, sure) <= len(got) <= min(k, maybe), (row, got, expected[:k])
            assert all(c.score >= np.float32(threshold) for c in got), (row, got)
        persons = [c.person_id for c in got]
        assert len(set(persons)) == len(persons), f"row {row}: a person twice: {got}"
        for rank, cand in enumerate(got):
            assert abs(cand.score - expected[rank].score) <= SCORE_TOL, (row, rank, got, expected)
            assert cand.template_id in oracle.rows, (row, cand)
            assert oracle.rows[cand.template_id][0] == cand.person_id, (row, cand)
            assert abs(scores[cand.template_id] - cand.score) <= SCORE_TOL, (row, cand)
            assert abs(best[cand.person_id][0] - cand.score) <= SCORE_TOL, (
                f"row {row}: {cand} is not person {cand.person_id}'s best template "
                f"({best[cand.person_id]})"
            )
        if exact_persons:
            want = expected[: len(got)]
            assert persons == [c.person_id for c in want], (row, got, want)
            assert [c.template_id for c in got] == [c.template_id for c in want], (row, got, want)


def assert_valid_candidates(
    oracle: Oracle, queries: npt.ArrayLike, results: list[list[Candidate]], k: int
) -> None:
    """What must hold when an approximate index proposed the candidates.

    The candidates re-ranked are a subset of the gallery, so the r-th result scores at
    most the oracle's r-th person; every score is the exact score of the template
    returned; persons are distinct and ranked; and the row is still full (the gallery
    widens the search until it has ``k`` persons or has looked at everything).
    """
    qs = np.asarray(queries, dtype=np.float32).reshape(-1, oracle.dim)
    assert len(results) == len(qs)
    for row, (query, got) in enumerate(zip(qs, results, strict=True)):
        expected = oracle.ranking(query)
        scores = oracle.template_scores(query)
        assert len(got) == min(k, len(expected)), (row, got)
        persons = [c.person_id for c in got]
        assert len(set(persons)) == len(persons), f"row {row}: a person twice: {got}"
        assert all(a.score >= b.score for a, b in zip(got, got[1:], strict=False)), (row, got)
        for rank, cand in enumerate(got):
            assert cand.template_id in oracle.rows, (row, cand)
            assert oracle.rows[cand.template_id][0] == cand.person_id, (row, cand)
            assert abs(scores[cand.template_id] - cand.score) <= SCORE_TOL, (row, cand)
            assert cand.score <= expected[rank].score + SCORE_TOL, (row, rank, cand)


def saved_index_ids(directory: Path) -> tuple[list[int], list[int]]:
    """Ids held by the FAISS index of a saved gallery, and its live slots, both sorted.

    Searches cannot show whether an index holds exactly the live templates (an exact
    re-rank hides extra or missing entries), so this reads the saved index itself.
    """
    loaded = read_generation(directory)
    ivf = faiss.try_extract_index_ivf(loaded.index)
    if ivf is None:
        ids = faiss.vector_to_array(loaded.index.id_map).tolist()
    else:
        ids = []
        for lst in range(ivf.nlist):
            size = ivf.invlists.list_size(lst)
            if size:
                ids.extend(faiss.rev_swig_ptr(ivf.invlists.get_ids(lst), size).tolist())
    live = np.nonzero(loaded.slot_templates >= 0)[0].tolist()
    return sorted(int(i) for i in ids), live


def gallery_snapshot(gallery: Gallery, queries: F32, k: int = 10) -> tuple[object, ...]:
    """Everything observable about a gallery's content, to check that it did not change."""
    stats = gallery.stats()
    persons, templates, scores = gallery.search_arrays(queries, k=k)
    return (
        len(gallery),
        stats.count,
        stats.persons,
        stats.slots,
        persons.tolist(),
        templates.tolist(),
        scores.tolist(),
    )


@dataclass
class Filled:
    """A gallery, the oracle holding the same templates, the data and some queries."""

    gallery: Gallery
    oracle: Oracle
    data: Enrolment
    queries: F32


def fill(gallery: Gallery, data: Enrolment, rng: np.random.Generator) -> Filled:
    oracle = Oracle(gallery.dim)
    gallery.add(data.template_ids, data.person_ids, data.vectors)
    oracle.add(data.template_ids, data.person_ids, data.vectors)
    assert gallery.wait_for_index(timeout=60)
    mated = noisy_copies(rng, data.centres[rng.choice(len(data.centres), 20, replace=False)], 0.8)
    queries = np.concatenate([mated, unit_rows(rng, 10, gallery.dim)])
    return Filled(gallery, oracle, data, queries)
