"""Which FAISS index a gallery uses, by size, and how it is built and searched.

The policy (figures from ``make bench``, 1M x 512-d synthetic templates on the
2-core reference machine; ``benchmarks/README.md`` has the whole sweep):

* while the vectors take at most ``flat_max_bytes`` (64 MiB: 32,768 templates at
  512-d, 131,072 at 128-d; ``flat_max`` overrides it with a count): **exact**
  ``IndexFlatIP`` (inside an ``IndexIDMap`` so slots can be removed). Exact search
  is bound by memory bandwidth: 68 ms at the median, 180 ms at p99, for one query
  over 2 GB on one core, so 64 MiB stay within the 5 ms single-query budget even
  at p99, with no recall loss at all.
* above it: **IVF with 4-bit PQ fast-scan codes** (``IVF{nlist},PQ32x4fs``), ``nlist``
  about ``4 * sqrt(n)`` rounded to a power of two (4096 at 1M), probing one list in
  eight, and **exact re-ranking** of the best ``rerank`` (32) candidates with the
  full-precision vectors of the gallery's store. The codes take 16 bytes a vector
  whatever the dimension: at 128-d (dlib's templates) 4-byte codes (``dim/16``
  sub-quantisers, as at 512-d) gave recall@1 0.748 in ``bench_matching --size M --dim
  128``, 16-byte codes 0.9962. At 512-d this gave recall@1 0.9982 against exact
  search, 0.88 ms median and 1.8 ms p99 a query on one core, and 4,993 queries/s
  batched on two. Probing one list in sixteen gave 0.9905: random-centre data gives a
  coarse quantiser little to work with, so the probe share has to be wide and the
  codes cheap to scan. IVF-Flat and IVF-SQ8 reach the same recall at the same probe
  share, 39 and 18 times slower (116 and 253 queries/s against 4,513 at nprobe 512),
  their codes being 128 and 32 times larger. 4-bit codes are too coarse to rank by
  themselves, but the mate only has to reach the top 32 for the exact re-rank to put
  it first, and the re-rank makes every returned score exact, so alert thresholds mean
  the same on every index kind. Removal works on this index (``remove_ids`` without a
  direct map; a hashtable direct map is not supported for fast-scan lists). HNSW was
  not chosen: it has no removal, and the HNSW libraries measured in the same run
  stayed below 0.91 recall@1 at 1M.

When the gallery outgrows its plan (flat past its limit, or IVF past
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

    def factory(self) -> str:
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
    flat_max_bytes: int = Field(
        64 * 2**20, ge=0, description="Exact search while the vectors take at most this"
    )
    flat_max: int | None = Field(
        None, ge=0, description="Exact search up to this many templates (overrides the bytes)"
    )
    lists_per_sqrt: float = Field(4.0, gt=0, description="nlist ~ lists_per_sqrt * sqrt(n)")
    nlist_min: int = Field(64, ge=1)
    nlist_max: int = Field(65_536, ge=1)
    probe_fraction: float = Field(
        1 / 8, gt=0, le=1, description="Share of the lists probed per query"
    )
    code_bytes: int = Field(
        16, ge=1, description="Bytes of PQ code a template (two 4-bit sub-quantisers a byte)"
    )
    rerank: int = Field(32, ge=1, description="Approximate candidates re-ranked exactly per query")
    train_per_list: int = Field(64, ge=39, description="Training sample = nlist * this")
    regrow_factor: float = Field(
        4.0, gt=1, description="Rebuild an IVF once the gallery is this many times larger"
    )

    def plan(self, n: int, dim: int) -> IndexPlan:
        """The plan for a gallery of ``n`` live templates of dimension ``dim``."""
        flat_max = self.flat_max if self.flat_max is not None else self.flat_max_bytes // (4 * dim)
        if n <= flat_max or n < self.nlist_min * self.train_per_list or dim % 2:
            return IndexPlan(kind="flat", built_for=n)
        nlist = 2 ** round(math.log2(max(1.0, self.lists_per_sqrt * math.sqrt(n))))
        nlist = int(min(self.nlist_max, max(self.nlist_min, nlist)))
        nlist = max(1, min(nlist, n // self.train_per_list))
        return IndexPlan(
            kind="ivf",
            nlist=nlist,
            nprobe=max(1, min(nlist, round(self.probe_fraction * nlist))),
            pq_m=_pq_m(dim, self.code_bytes),
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


def _pq_m(dim: int, code_bytes: int) -> int:
    """Sub-quantisers for PQ fast-scan: two a byte of code, reduced to an even divisor of
    ``dim`` (32 for 128-d and 512-d alike, with the default 16 bytes)."""
    for m in range(max(2, min(dim, 2 * code_bytes)), 1, -1):
        if dim % m == 0 and m % 2 == 0:
            return m
    return 2


def new_index(plan: IndexPlan, dim: int) -> Any:
    """An empty (untrained for IVF) index for ``plan``, inner-product metric."""
    return faiss.index_factory(dim, plan.factory(), faiss.METRIC_INNER_PRODUCT)


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
