"""Galleries: face templates of one ``model_id`` and one purpose, searchable by person.

Contract:

* Templates are L2-normalised float32 vectors compared by inner product (cosine).
  See :mod:`matching.validation` for what is refused and why.
* Ids are the database's integer keys: ``template_id`` unique in the gallery,
  ``person_id`` shared by the templates of one person. A search returns, per query,
  a ranked list with **one entry per person**: the best-scoring template wins.
* Scores are always exact inner products, whatever the index kind: approximate
  indexes only propose candidates, which are re-ranked with the stored
  full-precision vectors (see :mod:`matching.policy`).
* Two modes as NIST FRTE defines them: ``investigative`` returns the top ``k``
  (k <= 50) with no threshold, for human review; ``alert`` returns only
  candidates at or above a threshold (see :func:`matching.calibration.calibrate`).
* Thread safety: any number of concurrent searches; ``add``/``remove`` batches are
  atomic for readers (a search sees a batch wholly or not at all). When the gallery
  outgrows its index, the new index is built in a background thread while searches
  and writes go on, and swapped in when ready.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from matching.errors import (
    CorruptGallery,
    DuplicateTemplate,
    GalleryMismatch,
    InvalidQuery,
    UnknownTemplate,
)
from matching.idmap import IdMap
from matching.persistence import generation_dir, read_generation, write_generation
from matching.policy import (
    IndexPlan,
    IndexPolicy,
    index_bytes,
    new_index,
    search_params,
    train_and_fill,
)
from matching.rwlock import RWLock
from matching.store import VectorStore
from matching.validation import check_batch, check_ids, check_vectors

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

MAX_K = 50
_BUILD_BLOCK = 65_536
_SPILL_PREFIX = ".rebuild-"

Progress = Callable[[int], None]


class SearchMode(StrEnum):
    ALERT = "alert"
    INVESTIGATIVE = "investigative"


class Candidate(NamedTuple):
    person_id: int
    template_id: int
    score: float


class GalleryConfig(BaseModel):
    """What a gallery is for and how it indexes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model_id: str = Field(
        min_length=1, max_length=128, description="Embedder and alignment, e.g. dlib-resnet-v1"
    )
    dim: int = Field(ge=2, le=4096, description="Template dimension of that model")
    purpose: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[a-z][a-z0-9_-]*$",
        description="watchlist, inmates, missing, found ...",
    )
    alert_threshold: float | None = Field(
        None, ge=-1.0, le=1.0, description="Default threshold of alert-mode searches"
    )
    policy: IndexPolicy = Field(default_factory=IndexPolicy)


class GalleryStats(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_id: str
    dim: int
    purpose: str
    count: int = Field(description="Live templates")
    persons: int = Field(description="Distinct persons among live templates")
    slots: int = Field(description="Rows in the vector store, removed ones included")
    index: str
    index_kind: str
    rebuilding: bool
    index_bytes: int
    resident_bytes: int = Field(description="Index, id maps and in-memory vectors")
    mapped_bytes: int = Field(description="Saved vectors memory-mapped from disk")
    path: str | None


class _Column:
    """A growable int64 column (slot -> value) followed by a -1 sentinel, so that
    :meth:`at` maps the -1 padding of FAISS results to -1 with one indexing step."""

    def __init__(self, values: I64) -> None:
        self._len = len(values)
        self._data: I64 = np.empty(self._len + 1, dtype=np.int64)
        self._data[: self._len] = values
        self._data[self._len] = -1

    def __len__(self) -> int:
        return self._len

    @property
    def view(self) -> I64:
        return self._data[: self._len]

    def at(self, slots: I64) -> I64:
        """Values at ``slots`` (any shape); -1 where a slot is -1."""
        out: I64 = self._data[: self._len + 1][slots]
        return out

    def extend(self, values: I64) -> None:
        need = self._len + len(values)
        if need + 1 > len(self._data):
            grown = np.empty(max(need + 1, 2 * len(self._data), 1024), dtype=np.int64)
            grown[: self._len] = self._data[: self._len]
            self._data = grown
        self._data[self._len : need] = values
        self._data[need] = -1
        self._len = need


class _State:
    """Everything one search reads; replaced as a whole by rebuild() and load()."""

    def __init__(
        self,
        dim: int,
        store: VectorStore,
        templates: I64,
        persons: I64,
        index: Any,
        plan: IndexPlan,
    ) -> None:
        self.store = store
        self.templates = _Column(templates)  # slot -> template id, -1 once removed
        self.persons = _Column(persons)  # slot -> person id, -1 once removed
        live = np.nonzero(templates >= 0)[0].astype(np.int64)
        self.idmap = IdMap(templates[live], live)
        self.dim = dim
        self.set_index(index, plan)

    def set_index(self, index: Any, plan: IndexPlan) -> None:
        self.index = index
        self.plan = plan
        self.params = search_params(plan)  # read-only after this, shared by all searches

    @property
    def count(self) -> int:
        return len(self.idmap)


# Ranking candidates into persons. Input: per query, candidate person ids (-1 for
# padding) ordered by exact score, best first, and those scores. Output: the first
# (best) candidate of each person, at most k, none below the alert cut, as person ids
# and the column each was taken from (-1 padded); and whether some row might gain
# persons from a deeper fetch (fewer than k found while its last candidate was still
# eligible). Two implementations give the same answer (a property test checks it):
# a plain loop, cheapest for the few queries of live searches, and a vectorised one
# whose fixed cost of a dozen NumPy calls is shared by the rows of a batch.
_FEW_QUERIES = 8

Ranked = tuple[I64, I64, bool]


def _rank_few(persons: I64, scores: F32, k: int, cut: float | None) -> Ranked:
    n = len(persons)
    out_p = np.full((n, k), -1, dtype=np.int64)
    taken = np.full((n, k), -1, dtype=np.int64)
    deeper = False
    for i, (p_row, s_row) in enumerate(zip(persons.tolist(), scores.tolist(), strict=True)):
        seen: set[int] = set()
        found = 0
        for j, (p, s) in enumerate(zip(p_row, s_row, strict=True)):
            if cut is not None and s < cut:
                break
            if p < 0 or p in seen:
                continue
            seen.add(p)
            out_p[i, found] = p
            taken[i, found] = j
            found += 1
            if found == k:
                break
        else:
            deeper = deeper or (bool(s_row) and s_row[-1] > -math.inf and found < k)
    return out_p, taken, deeper


def _rank_many(persons: I64, scores: F32, k: int, cut: float | None) -> Ranked:
    n, m = persons.shape
    if cut is not None:
        persons = np.where(scores >= np.float64(cut), persons, -1)  # exact, as _rank_few
    order = np.argsort(persons, axis=1, kind="stable")  # each person's best entry first
    grouped = np.take_along_axis(persons, order, axis=1)
    first = np.empty((n, m), dtype=bool)
    first[:, 0] = True
    first[:, 1:] = grouped[:, 1:] != grouped[:, :-1]
    first &= grouped >= 0
    keep = np.zeros((n, m), dtype=bool)
    np.put_along_axis(keep, order, first, axis=1)
    rank = np.cumsum(keep, axis=1) - 1
    keep &= rank < k
    rows, cols = np.nonzero(keep)
    out_p = np.full((n, k), -1, dtype=np.int64)
    taken = np.full((n, k), -1, dtype=np.int64)
    out_p[rows, rank[rows, cols]] = persons[rows, cols]
    taken[rows, rank[rows, cols]] = cols
    last = scores[:, -1]
    eligible = last > -np.inf if cut is None else last >= np.float64(cut)
    deeper = bool((eligible & (keep.sum(axis=1) < k)).any())
    return out_p, taken, deeper


def check_model(config: GalleryConfig, model_id: str | None) -> None:
    """Refuse templates or probes of another embedding model than the gallery's."""
    if model_id is not None and model_id != config.model_id:
        raise GalleryMismatch(
            f"templates of model {model_id!r} cannot go into or search a gallery of "
            f"{config.model_id!r}; re-embed them with that model"
        )


def search_args(
    config: GalleryConfig, mode: SearchMode | str, k: int, threshold: float | None
) -> tuple[int, float | None]:
    """The checked ``k`` (a Python int) and score cut of a search: None for an
    investigative search, the threshold (or the gallery's) for an alert search."""
    try:
        mode = SearchMode(mode)
    except ValueError as exc:
        raise InvalidQuery(f"mode must be 'alert' or 'investigative', got {mode!r}") from exc
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= MAX_K:
        raise InvalidQuery(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
    if mode is not SearchMode.ALERT:
        return int(k), None  # FAISS takes a Python int, not a NumPy integer
    cut = threshold if threshold is not None else config.alert_threshold
    if cut is None:
        raise InvalidQuery(
            "alert mode needs a threshold (argument or the gallery's alert_threshold)"
        )
    if not math.isfinite(cut):  # NaN would let every candidate through
        raise InvalidQuery(f"alert threshold must be a finite score, got {cut}")
    return int(k), cut


def candidates_from_arrays(persons: I64, templates: I64, scores: F32) -> list[list[Candidate]]:
    """Per query row, the :class:`Candidate` list of :meth:`Gallery.search_arrays`'s
    padded ``(n, k)`` arrays (padding, person -1, dropped)."""
    return [
        [Candidate(p, t, s) for p, t, s in zip(p_row, t_row, s_row, strict=True) if p >= 0]
        for p_row, t_row, s_row in zip(
            persons.tolist(), templates.tolist(), scores.tolist(), strict=True
        )
    ]


class Gallery:
    """A searchable set of templates; see the module docstring for the contract."""

    def __init__(self, config: GalleryConfig, path: Path | None = None) -> None:
        self.config = config
        self.path = path
        self._lock = RWLock()  # readers: searches; writer: a batch being applied
        self._mutate = threading.Lock()  # one add/remove/rebuild/save at a time
        self._state = self._empty_state()
        self._builder: threading.Thread | None = None
        self._build_error: BaseException | None = None
        self._removed_during_build: list[I64] = []
        self._removed_since_save = False
        self._spill: Path | None = None  # vectors file of the last rebuild, until saved

    # -- construction ---------------------------------------------------------
    def _empty_state(self) -> _State:
        plan = self.config.policy.plan(0, self.config.dim)
        empty = np.empty(0, dtype=np.int64)
        return _State(
            self.config.dim,
            VectorStore(self.config.dim),
            empty,
            empty,
            new_index(plan, self.config.dim),
            plan,
        )

    @property
    def model_id(self) -> str:
        return self.config.model_id

    @property
    def dim(self) -> int:
        return self.config.dim

    def __len__(self) -> int:
        return self._state.count

    # -- writes -----------------------------------------------------------------
    def add(
        self,
        template_ids: Sequence[int] | I64,
        person_ids: Sequence[int] | I64,
        vectors: npt.ArrayLike,
        *,
        model_id: str | None = None,
    ) -> None:
        """Add templates. The whole batch is validated first; nothing is added on error."""
        check_model(self.config, model_id)
        tids, pids, vecs = check_batch(template_ids, person_ids, vectors, self.config.dim)
        if len(vecs) == 0:
            return
        with self._mutate:
            state = self._state
            present = tids[state.idmap.lookup(tids) >= 0]
            if len(present):
                raise DuplicateTemplate(
                    f"template_ids already in the gallery: {present[:5].tolist()}"
                    + (f" and {len(present) - 5} more" if len(present) > 5 else "")
                )
            with self._lock.write():
                slots = state.store.append(vecs)
                state.templates.extend(tids)
                state.persons.extend(pids)
                state.idmap.insert(tids, slots)
                state.index.add_with_ids(vecs, slots)
            self._maybe_grow()

    def remove(self, template_ids: Sequence[int] | I64, *, missing_ok: bool = False) -> int:
        """Remove templates by id and erase their vectors; returns how many were removed.

        Unknown ids raise :class:`UnknownTemplate` (nothing removed) unless ``missing_ok``.
        """
        tids = check_ids(template_ids, what="template_ids")
        tids = np.unique(tids)
        with self._mutate:
            state = self._state
            slots = state.idmap.lookup(tids)
            absent = tids[slots < 0]
            if len(absent) and not missing_ok:
                raise UnknownTemplate(f"template_ids not in the gallery: {absent[:5].tolist()}")
            slots = slots[slots >= 0]
            if len(slots) == 0:
                return 0
            with self._lock.write():
                state.index.remove_ids(slots)
                state.idmap.delete(state.templates.view[slots])
                state.templates.view[slots] = -1
                state.persons.view[slots] = -1
                state.store.zero(slots)
                if self._builder is not None:
                    self._removed_during_build.append(slots)
            self._removed_since_save = True
            return int(len(slots))

    # -- growth -------------------------------------------------------------------
    def _maybe_grow(self) -> None:
        """Called with ``_mutate`` held: start a background rebuild when outgrown."""
        state = self._state
        policy = self.config.policy
        if self._builder is not None or not policy.outgrown(state.plan, state.count, self.dim):
            return
        target = policy.plan(state.count, self.dim)
        logger.info(
            "gallery %s/%s: %d templates outgrow %s; building %s in the background",
            self.config.model_id,
            self.config.purpose,
            state.count,
            state.plan.describe(),
            target.describe(),
        )
        self._removed_during_build = []
        self._build_error = None
        self._builder = threading.Thread(
            target=self._background_build, args=(state, target), name="gallery-index", daemon=True
        )
        self._builder.start()

    def _background_build(self, state: _State, plan: IndexPlan) -> None:
        try:
            with self._lock.read():
                n_slots = len(state.store)
                live = np.nonzero(state.templates.view[:n_slots] >= 0)[0].astype(np.int64)
                sample = self._training_sample(state, live, plan)

            def blocks() -> Iterable[tuple[I64, F32]]:
                for start in range(0, len(live), _BUILD_BLOCK):
                    part = live[start : start + _BUILD_BLOCK]
                    with self._lock.read():
                        rows = state.store.get(part)
                    yield part, rows

            started = time.monotonic()
            index = train_and_fill(plan, self.dim, sample, iter(blocks()))
            with self._mutate, self._lock.write():
                late = np.arange(n_slots, len(state.store), dtype=np.int64)
                late = late[state.templates.view[late] >= 0]
                if len(late):
                    index.add_with_ids(state.store.get(late), late)
                removed = [s[s < n_slots] for s in self._removed_during_build]
                if removed and sum(len(s) for s in removed):
                    index.remove_ids(np.concatenate(removed))
                if self._state is state:
                    state.set_index(index, plan)
                self._removed_during_build = []
                self._builder = None
            logger.info(
                "gallery index %s ready in %.1f s", plan.describe(), time.monotonic() - started
            )
        except BaseException as exc:  # surfaced by wait_for_index(); searches keep the old index
            logger.exception("background index build failed")
            self._build_error = exc
            with self._mutate:
                self._builder = None

    def _training_sample(self, state: _State, live: I64, plan: IndexPlan) -> F32:
        if plan.kind != "ivf":
            return np.empty((0, self.dim), dtype=np.float32)
        size = min(len(live), plan.nlist * self.config.policy.train_per_list)
        rng = np.random.default_rng(len(live))
        picked = np.sort(rng.choice(live, size=size, replace=False))
        return state.store.get(picked)

    def wait_for_index(self, timeout: float | None = None) -> bool:
        """Wait for a background index build; True when none is running afterwards.

        Re-raises the error of a build that failed.
        """
        builder = self._builder
        if builder is not None:
            builder.join(timeout)
        if self._build_error is not None:
            error, self._build_error = self._build_error, None
            raise error
        return self._builder is None

    # -- search -----------------------------------------------------------------
    def search(
        self,
        vectors: npt.ArrayLike,
        k: int = 10,
        mode: SearchMode | str = SearchMode.INVESTIGATIVE,
        threshold: float | None = None,
        *,
        model_id: str | None = None,
    ) -> list[list[Candidate]]:
        """Per query, candidates ranked by exact score, one per person.

        ``investigative``: the top ``k`` (1..50) persons. ``alert``: only those at or
        above ``threshold`` (default: the gallery's ``alert_threshold``), at most ``k``.
        """
        persons, templates, scores = self.search_arrays(
            vectors, k, mode, threshold, model_id=model_id
        )
        return candidates_from_arrays(persons, templates, scores)

    def search_arrays(
        self,
        vectors: npt.ArrayLike,
        k: int = 10,
        mode: SearchMode | str = SearchMode.INVESTIGATIVE,
        threshold: float | None = None,
        *,
        model_id: str | None = None,
    ) -> tuple[I64, I64, F32]:
        """:meth:`search` as ``(person_ids, template_ids, scores)`` arrays of shape
        ``(n, k)``, padded with -1 / -1 / -inf: the batch interface."""
        check_model(self.config, model_id)
        k, cut = search_args(self.config, mode, k, threshold)
        queries = check_vectors(vectors, self.config.dim, what="queries")
        rank = _rank_few if len(queries) <= _FEW_QUERIES else _rank_many
        with self._lock.read():
            state = self._state
            count = state.count
            fetch = min(count, 2 * k)
            while True:
                slots, scores = self._candidates(state, queries, fetch)
                persons = state.persons.at(slots)
                out_p, taken, deeper = rank(persons, scores, k, cut)
                if fetch >= count or not deeper:
                    break
                fetch = min(count, fetch * 4)
            got = taken >= 0
            cols = np.maximum(taken, 0)
            out_t = np.where(got, state.templates.at(np.take_along_axis(slots, cols, 1)), -1)
        out_s = np.where(got, np.take_along_axis(scores, cols, 1), np.float32(-np.inf))
        return out_p, out_t, out_s

    def _candidates(self, state: _State, queries: F32, fetch: int) -> tuple[I64, F32]:
        """Best ``fetch`` slots per query with exact scores, best first (-1 / -inf padded)."""
        n = len(queries)
        if fetch == 0:
            return np.full((n, 1), -1, dtype=np.int64), np.full((n, 1), -np.inf, dtype=np.float32)
        plan = state.plan
        if plan.kind == "flat":
            scores, slots = state.index.search(queries, fetch)
            return slots.astype(np.int64), scores
        depth = max(plan.rerank, fetch)
        if depth >= state.count:
            # The re-rank would cover the whole gallery, so rank all of it exactly: the
            # same answer without the approximate pass, which moreover leaves out a few
            # vectors when asked for (nearly) all of a fast-scan index.
            live = state.idmap.items()[1]
            every: F32 = queries @ state.store.get(live).T
            top = np.argsort(-every, axis=1, kind="stable")[:, :fetch]
            return live[top], np.take_along_axis(every, top, axis=1)
        _, cand = state.index.search(queries, depth, params=state.params)
        return state.store.rerank(queries, cand, fetch)

    # -- bulk -------------------------------------------------------------------
    def rebuild(
        self,
        blocks: Iterable[tuple[Sequence[int] | I64, Sequence[int] | I64, npt.ArrayLike]],
        *,
        spill_dir: Path | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Replace the gallery's content with the templates streamed in ``blocks``.

        Each block is ``(template_ids, person_ids, vectors)``. Vectors are spilled to a
        file in ``spill_dir`` (default: the gallery's directory, else memory) as they
        arrive, so the full-precision set need not fit in RAM; the index is then
        trained on a sample and filled block by block from that file. Searches keep
        using the old content until the new one is swapped in; add/remove wait.
        Returns the number of templates. On error the old content stays.
        """
        spill_root = spill_dir or self.path
        with self._mutate:
            store, tids, pids = self._stream_into_store(blocks, spill_root, progress)
            n = len(tids)
            plan = self.config.policy.plan(n, self.dim)
            slots = np.arange(n, dtype=np.int64)
            fresh = _State(self.dim, store, tids, pids, new_index(plan, self.dim), plan)
            sample = self._training_sample(fresh, slots, plan)

            def fill() -> Iterable[tuple[I64, F32]]:
                for start in range(0, n, _BUILD_BLOCK):
                    part = slots[start : start + _BUILD_BLOCK]
                    yield part, store.get(part)

            index = train_and_fill(plan, self.dim, sample, iter(fill()), progress)
            fresh.set_index(index, plan)
            with self._lock.write():
                self._state = fresh
            self._removed_since_save = True
            logger.info("gallery rebuilt: %d templates, %s", n, plan.describe())
            return n

    def _stream_into_store(
        self,
        blocks: Iterable[tuple[Sequence[int] | I64, Sequence[int] | I64, npt.ArrayLike]],
        spill_root: Path | None,
        progress: Progress | None,
    ) -> tuple[VectorStore, I64, I64]:
        tid_parts: list[I64] = []
        pid_parts: list[I64] = []
        seen = IdMap()
        spill_file = None
        spill_path: Path | None = None
        memory = VectorStore(self.dim)
        rows = 0
        if spill_root is not None:
            spill_root.mkdir(parents=True, exist_ok=True)
            spill_path = spill_root / f"{_SPILL_PREFIX}{uuid.uuid4().hex}.f32"
            spill_file = open(spill_path, "wb")  # closed below, on success or error
        try:
            for template_ids, person_ids, vectors in blocks:
                tids, pids, vecs = check_batch(template_ids, person_ids, vectors, self.dim)
                dup = tids[seen.lookup(tids) >= 0]
                if len(dup):
                    raise DuplicateTemplate(
                        f"template_ids repeated in the stream: {dup[:5].tolist()}"
                    )
                seen.insert(tids, np.arange(rows, rows + len(tids), dtype=np.int64))
                if spill_file is not None:
                    spill_file.write(vecs.tobytes())
                else:
                    memory.append(vecs)
                tid_parts.append(tids)
                pid_parts.append(pids)
                rows += len(vecs)
            if spill_file is not None and spill_path is not None:
                spill_file.close()
                store = VectorStore.open(spill_path, rows, self.dim)
            else:
                store = memory
        except BaseException:
            if spill_file is not None and spill_path is not None:
                spill_file.close()
                spill_path.unlink(missing_ok=True)
            raise
        empty = np.empty(0, dtype=np.int64)
        tids_all = np.concatenate(tid_parts) if tid_parts else empty
        pids_all = np.concatenate(pid_parts) if pid_parts else empty
        self._retire_spill(spill_path)
        return store, tids_all, pids_all

    def _retire_spill(self, new: Path | None) -> None:
        """Forget the previous rebuild's vectors file (safe while mapped: Linux keeps the
        inode until the mapping goes) and remember the new one."""
        if self._spill is not None:
            self._spill.unlink(missing_ok=True)
        self._spill = new

    # -- persistence ----------------------------------------------------------------
    def save(self, path: Path | None = None) -> Path:
        """Write a new generation crash-safely (see :mod:`matching.persistence`)."""
        target = path or self.path
        if target is None:
            raise ValueError("save() needs a path for a gallery created without one")
        with self._mutate:
            with self._lock.read():
                state = self._state
                meta = write_generation(
                    target,
                    {
                        "model_id": self.config.model_id,
                        "dim": self.config.dim,
                        "purpose": self.config.purpose,
                        "count": state.count,
                        "index_kind": state.plan.kind,
                        "index_params": state.plan.model_dump(),
                    },
                    state.store,
                    state.templates.view,
                    state.persons.view,
                    state.index,
                    removed_since_previous=self._removed_since_save,
                )
            # Map the vectors from the file just written, so the in-memory tail is freed.
            saved = generation_dir(target, meta.generation) / "vectors.f32"
            store = VectorStore.open(saved, meta.rows, meta.dim)
            with self._lock.write():
                state.store = store
            self._retire_spill(None)
            self.path = target
            self._removed_since_save = False
            return target

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        expect_model_id: str | None = None,
        expect_dim: int | None = None,
        policy: IndexPolicy | None = None,
        alert_threshold: float | None = None,
        verify: bool = True,
    ) -> Gallery:
        """Open a saved gallery; the vectors stay on disk, memory-mapped."""
        loaded = read_generation(
            path, expect_model_id=expect_model_id, expect_dim=expect_dim, verify=verify
        )
        meta = loaded.meta
        config = GalleryConfig(
            model_id=meta.model_id,
            dim=meta.dim,
            purpose=meta.purpose,
            alert_threshold=alert_threshold,
            policy=policy or IndexPolicy(),
        )
        gallery = cls(config, path)
        try:
            plan = IndexPlan.model_validate(meta.index_params)
        except ValidationError as exc:
            raise CorruptGallery(f"{loaded.path}/meta.json: bad index_params ({exc})") from exc
        if plan.kind != meta.index_kind:
            raise CorruptGallery(
                f"{loaded.path}/meta.json: index_kind {meta.index_kind!r} but index_params "
                f"describe {plan.kind!r}"
            )
        gallery._state = _State(
            meta.dim, loaded.store, loaded.slot_templates, loaded.slot_persons, loaded.index, plan
        )
        if gallery._state.count != meta.count:
            raise CorruptGallery(
                f"{loaded.path}: {gallery._state.count} live templates, metadata says {meta.count}"
            )
        return gallery

    # -- introspection ------------------------------------------------------------
    def stats(self) -> GalleryStats:
        with self._lock.read():
            state = self._state
            live_persons = state.persons.view[state.persons.view >= 0]
            idx_bytes = index_bytes(state.index)
            return GalleryStats(
                model_id=self.config.model_id,
                dim=self.config.dim,
                purpose=self.config.purpose,
                count=state.count,
                persons=int(len(np.unique(live_persons))),
                slots=len(state.store),
                index=state.plan.describe(),
                index_kind=state.plan.kind,
                rebuilding=self._builder is not None,
                index_bytes=idx_bytes,
                resident_bytes=idx_bytes
                + state.idmap.nbytes
                + 16 * len(state.store)
                + state.store.resident_bytes,
                mapped_bytes=state.store.mapped_bytes,
                path=str(self.path) if self.path is not None else None,
            )
