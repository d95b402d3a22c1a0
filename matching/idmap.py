"""A compact int64 → int64 map on sorted arrays (16 bytes an entry).

Maps template ids (the database's keys) to gallery slots. A Python dict would cost
about 100 bytes an entry, a fifth of the whole memory budget of a large gallery;
sorted arrays with vectorised ``searchsorted`` look-ups cost 16 and are fast for the
batch operations the gallery does. Inserting or deleting a batch is O(n) memory
moves (a few milliseconds at a million entries).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]


class IdMap:
    """Sorted keys with parallel values. Not thread-safe: the gallery's lock guards it."""

    def __init__(self, keys: I64 | None = None, values: I64 | None = None) -> None:
        if keys is None or values is None:
            self._keys: I64 = np.empty(0, dtype=np.int64)
            self._values: I64 = np.empty(0, dtype=np.int64)
        else:
            order = np.argsort(keys, kind="stable")
            self._keys = np.ascontiguousarray(keys[order], dtype=np.int64)
            self._values = np.ascontiguousarray(values[order], dtype=np.int64)

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, keys: I64) -> I64:
        """Values for ``keys``; -1 where a key is absent."""
        if len(self._keys) == 0:
            return np.full(len(keys), -1, dtype=np.int64)
        pos = np.searchsorted(self._keys, keys)
        pos_c = np.minimum(pos, len(self._keys) - 1)
        found = self._keys[pos_c] == keys
        return np.where(found, self._values[pos_c], -1).astype(np.int64)

    def insert(self, keys: I64, values: I64) -> None:
        """Add absent ``keys`` (the caller has checked they are absent and unique)."""
        order = np.argsort(keys, kind="stable")
        keys, values = keys[order], values[order]
        pos = np.searchsorted(self._keys, keys)
        self._keys = np.insert(self._keys, pos, keys)
        self._values = np.insert(self._values, pos, values)

    def delete(self, keys: I64) -> None:
        """Remove present ``keys`` (the caller has checked they are present)."""
        pos = np.searchsorted(self._keys, keys)
        self._keys = np.delete(self._keys, pos)
        self._values = np.delete(self._values, pos)

    def items(self) -> tuple[I64, I64]:
        """Keys (sorted) and their values; read-only views."""
        return self._keys, self._values

    @property
    def nbytes(self) -> int:
        return int(self._keys.nbytes + self._values.nbytes)
