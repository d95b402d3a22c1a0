"""Full-precision template vectors addressed by slot.

The store is the gallery's source of exact scores: approximate indexes return
candidate slots and the gallery re-ranks them with these vectors. It is a list of
segments: the vectors of the last saved generation, memory-mapped copy-on-write
(pages are read on demand and evictable, and nothing written here reaches the file),
followed by one in-memory tail that grows as templates are added. Removed slots are
zeroed at once, so an erased template leaves no usable vector in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


class VectorStore:
    """Append-only rows of ``dim`` float32 values. The gallery's lock guards it."""

    def __init__(self, dim: int, base: F32 | None = None) -> None:
        self.dim = dim
        self._base: F32 = base if base is not None else np.empty((0, dim), dtype=np.float32)
        self._tail: F32 = np.empty((0, dim), dtype=np.float32)
        self._tail_len = 0

    @classmethod
    def open(cls, path: Path, rows: int, dim: int) -> VectorStore:
        """Map a raw float32 file of ``rows`` × ``dim`` copy-on-write."""
        if rows == 0:
            return cls(dim)
        base = np.memmap(path, dtype=np.float32, mode="c", shape=(rows, dim))
        return cls(dim, np.asarray(base))

    def __len__(self) -> int:
        return len(self._base) + self._tail_len

    @property
    def resident_bytes(self) -> int:
        """Bytes held in process memory (the mapped base is page cache, not counted)."""
        return int(self._tail.nbytes)

    @property
    def mapped_bytes(self) -> int:
        return int(self._base.nbytes)

    def append(self, vectors: F32) -> I64:
        """Append rows and return their slots."""
        n = len(vectors)
        first = len(self)
        need = self._tail_len + n
        if need > len(self._tail):
            grown = np.empty((max(need, 2 * len(self._tail), 1024), self.dim), dtype=np.float32)
            grown[: self._tail_len] = self._tail[: self._tail_len]
            self._tail = grown
        self._tail[self._tail_len : need] = vectors
        self._tail_len = need
        return np.arange(first, first + n, dtype=np.int64)

    def get(self, slots: I64) -> F32:
        """Rows for ``slots`` (any shape); the result has shape ``slots.shape + (dim,)``."""
        flat = slots.reshape(-1)
        nb = len(self._base)
        if self._tail_len == 0 or (len(flat) and int(flat.max()) < nb):
            out = self._base[flat]
        elif nb == 0:
            out = self._tail[flat]
        else:
            out = np.empty((len(flat), self.dim), dtype=np.float32)
            in_base = flat < nb
            out[in_base] = self._base[flat[in_base]]
            out[~in_base] = self._tail[flat[~in_base] - nb]
        return out.reshape(*slots.shape, self.dim)

    def rerank(self, queries: F32, slots: I64, k: int) -> tuple[I64, F32]:
        """Exact re-rank: per query, the ``k`` best of its candidate ``slots`` (an (n, m)
        matrix, -1 padded) by inner product with the stored rows, best first, padded
        with -1 / -inf. Reads the rows in place (no gathered copy) when they lie in one
        contiguous segment, which is the case except after adding to a loaded gallery
        and before saving it."""
        n, m = slots.shape
        slots = np.ascontiguousarray(slots, dtype=np.int64)
        rows = self._contiguous()
        if rows is None:
            exact: F32 = np.einsum("nmd,nd->nm", self.get(np.maximum(slots, 0)), queries)
            exact[slots < 0] = -np.inf
            order = np.argsort(-exact, axis=1)[:, :k]
            picked = np.arange(n)[:, None], order
            return slots[picked], exact[picked]
        best = np.empty((n, k), dtype=np.int64)
        scores = np.empty((n, k), dtype=np.float32)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        faiss.knn_inner_products_by_idx(  # type: ignore[attr-defined]
            faiss.swig_ptr(queries),
            faiss.swig_ptr(rows),
            faiss.swig_ptr(slots),
            self.dim,
            n,
            len(rows),
            m,
            k,
            faiss.swig_ptr(scores),
            faiss.swig_ptr(best),
            m,  # leading dimension of ``slots``
        )
        scores[best < 0] = -np.inf  # FAISS pads with -FLT_MAX
        return best, scores

    def _contiguous(self) -> F32 | None:
        """All rows as one C-contiguous array, when they are in one segment."""
        rows = self._base if self._tail_len == 0 else self._tail if len(self._base) == 0 else None
        return rows if rows is not None and rows.flags.c_contiguous else None

    def zero(self, slots: I64) -> None:
        """Overwrite removed rows with zeros (copy-on-write for the mapped part)."""
        nb = len(self._base)
        in_base = slots < nb
        if in_base.any():
            self._base[slots[in_base]] = 0.0
        if (~in_base).any():
            self._tail[slots[~in_base] - nb] = 0.0

    def iter_rows(self, block: int = 65536) -> Iterator[tuple[int, F32]]:
        """Yield ``(first_slot, rows)`` blocks over every slot, in order."""
        for start in range(0, len(self), block):
            stop = min(start + block, len(self))
            yield start, self.get(np.arange(start, stop, dtype=np.int64))
