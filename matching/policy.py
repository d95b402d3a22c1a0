"""Which FAISS index a gallery uses, by size, and how it is built and searched.

The policy (numbers from ``benchmarks/bench_matching.py`` on the 2-core reference
machine, 512-d; see ``benchmarks/README.md``):

* up to ``flat_max`` live templates: **exact** ``IndexFlatIP`` (inside an
  ``IndexIDMap`` so slots can be removed). Exact search costs about 0.13 ms per
  1,000 templates a query at 512-d, so 100,000 templates answer in about 13 ms on
  one core, within the latency budget, and exact means no recall loss at all.
* above it: **IVF with 4-bit PQ fast-scan codes** (``IVF{nlist},PQ{dim/8}x4fs``),
  ``nlist`` about ``4 * sqrt(n)`` rounded to a power of two, probing
  ``nprobe = probe_fraction * nlist`` lists, and **exact re-ranking** of the best
  ``rerank`` candidates with the full-precision vectors of the gallery's store.
  The codes take dim/16 bytes a vector (32 at 512-d), so a million templates fit in
  about 50 MB of index; the fast-scan kernels scan them an order of magnitude faster
  than SQ8 codes, which buys the wide probing that random-centre data needs; the
  exact re-rank makes the returned scores exact, so alert thresholds mean the same
  on every index kind. Removal works on this index (``remove_ids`` without a direct
  map; a hashtable direct map is not supported for fast-scan lists).

When the gallery outgrows its plan (flat past ``flat_max``, or IVF past
``regrow_factor`` times the size it was trained for) the gallery builds the new index
in the background and swaps it in; searches go on meanwhile.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, Literal

import faiss
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

IndexKind = Literal["flat", "ivf"]


class IndexPlan(BaseModel):
    """The concrete parameters of one index."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: IndexKind
    nlist: int = Field(0, ge=0)
    nprobe: int = Field(0, ge=0)
    pq_m: int = Field(0, ge=0, description="PQ sub-quantisers (4 bits each)")
    rerank: int = Field(0, ge=0, description="Candidates re-ranked exactly per query")
    built_for: int = Field(0, ge=0, description="Live templates when the plan was made")

    def factory(self, dim: int) -> str:
        if self.kind == "flat":
            return "IDMap,Flat"
        return f"IVF{self.nlist},PQ{self.pq_m}x4fs"

    def describe(self) -> str:
        if self.kind == "flat":
            return "flat (exact)"
        return (
            f"IVF{self.nlist},PQ{self.pq_m}x4fs nprobe={self.nprobe} "
            f"rerank={self.rerank} (built for {self.built_for})"
        )


class IndexPolicy(BaseModel):
    """Index choice by gallery size. Defaults come from the matching benchmark."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    flat_max: int = Field(100_000, ge=0, description="Exact search up to this many live templates")
    lists_per_sqrt: float = Field(4.0, gt=0, description="nlist ~ lists_per_sqrt * sqrt(n)")
    nlist_min: int = Field(64, ge=1)
    nlist_max: int = Field(65_536, ge=1)
    probe_fraction: float = Field(
        1 / 16, gt=0, le=1, description="Share of the lists probed per query"
    )
    rerank: int = Field(128, ge=1, description="Approximate candidates re-ranked exactly per query")
    train_per_list: int = Field(64, ge=39, description="Training sample = nlist * this")
    regrow_factor: float = Field(
        4.0, gt=1, description="Rebuild an IVF once the gallery is this many times larger"
    )

    def plan(self, n: int, dim: int) -> IndexPlan:
        """The plan for a gallery of ``n`` live templates of dimension ``dim``."""
        if n <= self.flat_max or n < self.nlist_min * self.train_per_list or dim % 2:
            return IndexPlan(kind="flat", built_for=n)
        nlist = 2 ** round(math.log2(max(1.0, self.lists_per_sqrt * math.sqrt(n))))
        nlist = int(min(self.nlist_max, max(self.nlist_min, nlist)))
        nlist = max(1, min(nlist, n // self.train_per_list))
        return IndexPlan(
            kind="ivf",
            nlist=nlist,
            nprobe=max(1, min(nlist, round(self.probe_fraction * nlist))),
            pq_m=_pq_m(dim),
            rerank=self.rerank,
            built_for=n,
        )

    def outgrown(self, current: IndexPlan, n: int, dim: int) -> bool:
        """True when a gallery of ``n`` templates should leave ``current`` for a new plan."""
        target = self.plan(n, dim)
        if target.kind != current.kind:
            # Never fall back to flat on shrinking: IVF stays correct, and dropping
            # the trained index would only cost a rebuild later.
            return current.kind == "flat"
        return current.kind == "ivf" and n >= current.built_for * self.regrow_factor


def _pq_m(dim: int) -> int:
    """Sub-quantisers for PQ fast-scan: about dim/8 dimensions each, an even divisor."""
    for m in range(max(2, dim // 8), 1, -1):
        if dim % m == 0 and m % 2 == 0:
            return m
    return 2


def new_index(plan: IndexPlan, dim: int) -> Any:
    """An empty (untrained for IVF) index for ``plan``, inner-product metric."""
    return faiss.index_factory(dim, plan.factory(dim), faiss.METRIC_INNER_PRODUCT)


def train_and_fill(
    plan: IndexPlan,
    dim: int,
    sample: F32,
    blocks: Iterator[tuple[I64, F32]],
    progress: Callable[[int], None] | None = None,
) -> Any:
    """Build an index: train on ``sample`` (IVF only), then add ``(slots, vectors)`` blocks."""
    index = new_index(plan, dim)
    if not index.is_trained:
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    for slots, vectors in blocks:
        if len(slots):
            index.add_with_ids(vectors, slots)
        if progress is not None:
            progress(len(slots))
    return index


def search_params(plan: IndexPlan) -> Any:
    """Per-call search parameters (thread-safe: nothing global is changed)."""
    if plan.kind == "ivf":
        params = faiss.SearchParametersIVF()
        params.nprobe = plan.nprobe
        return params
    return None


def index_bytes(index: Any) -> int:
    """Bytes of the serialised index, a close proxy for its memory."""
    return int(faiss.serialize_index(index).nbytes)
