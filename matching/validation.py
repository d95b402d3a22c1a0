"""Input checks shared by the gallery, persistence and the CLI.

Policy on normalisation: templates and probes must already be L2-normalised (every
embedder in ``models`` returns unit vectors). A vector whose norm differs from 1 by
more than ``NORM_TOLERANCE`` is refused, because a wrong norm almost always means a
wrong model output or a vector of another kind; vectors within the tolerance are
renormalised exactly so float rounding never drifts into scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from matching.errors import DuplicateTemplate, InvalidIds, InvalidVectors

NORM_TOLERANCE = 1e-3
_SHOWN = 5  # how many offending rows an error message lists

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


def _rows(mask: npt.NDArray[np.bool_]) -> str:
    rows = np.nonzero(mask)[0]
    shown = ", ".join(str(int(r)) for r in rows[:_SHOWN])
    more = f" and {len(rows) - _SHOWN} more" if len(rows) > _SHOWN else ""
    return f"rows {shown}{more}"


def check_vectors(vectors: object, dim: int, *, what: str = "vectors") -> F32:
    """Return ``vectors`` as a C-contiguous ``(n, dim)`` float32 array of unit rows.

    A single vector of shape ``(dim,)`` is accepted as one row.
    Raises :class:`InvalidVectors` naming the problem otherwise.
    """
    if (
        isinstance(vectors, np.ndarray)
        and vectors.dtype == np.float32
        and vectors.ndim == 2
        and vectors.shape[1] == dim
    ):
        # The hot path of every search: two passes over the data, no copies but the result.
        norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
        if bool((np.abs(norms - np.float32(1.0)) <= NORM_TOLERANCE).all()):
            fast: F32 = np.ascontiguousarray(vectors / norms[:, None])
            return fast
    try:
        arr = np.asarray(vectors)
    except (TypeError, ValueError) as exc:  # ragged input and the like
        raise InvalidVectors(f"{what}: not an array of numbers ({exc})") from exc
    if arr.dtype.kind not in "fiu":
        raise InvalidVectors(f"{what}: expected numbers, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise InvalidVectors(f"{what}: expected a 2-d array (n, {dim}), got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise InvalidVectors(
            f"{what}: dimension {arr.shape[1]} does not match the gallery's dimension {dim}"
        )
    with np.errstate(over="ignore"):  # values beyond float32 become inf, refused below
        out = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.asarray(np.isfinite(out).all(axis=1))
    if not finite.all():
        raise InvalidVectors(f"{what}: non-finite values (NaN or inf) in {_rows(~finite)}")
    norms64 = np.linalg.norm(out.astype(np.float64), axis=1)
    bad = np.abs(norms64 - 1.0) > NORM_TOLERANCE
    if bad.any():
        first = float(norms64[np.nonzero(bad)[0][0]])
        raise InvalidVectors(
            f"{what}: not L2-normalised in {_rows(bad)} (first norm {first:.6g}); "
            "templates and probes must be unit vectors from the embedder"
        )
    # A new array: ``out`` may be the caller's own (even read-only, memory-mapped from
    # a file), which is never changed here.
    unit: F32 = out / norms64.astype(np.float32)[:, None]
    return unit


def check_ids(ids: object, n: int | None = None, *, what: str = "template_ids") -> I64:
    """Return ``ids`` as a 1-d int64 array (of length ``n`` when given).

    Ids are the database's integer keys; they must be non-negative integers.
    """
    if isinstance(ids, Sequence) and not isinstance(ids, (str, bytes)):
        if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in ids):
            raise InvalidIds(f"{what}: ids must be integers")
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise InvalidIds(f"{what}: expected a 1-d sequence, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise InvalidIds(f"{what}: ids must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise InvalidIds(f"{what}: ids must fit in a signed 64-bit integer")
    out = arr.astype(np.int64)
    if out.size and int(out.min()) < 0:
        raise InvalidIds(f"{what}: ids must be non-negative, found {int(out.min())}")
    if n is not None and len(out) != n:
        raise InvalidIds(f"{what}: {len(out)} ids for {n} vectors")
    return out


def check_unique(ids: I64, *, what: str = "template_ids") -> None:
    """Raise :class:`DuplicateTemplate` if ``ids`` repeats a value."""
    uniq, counts = np.unique(ids, return_counts=True)
    if len(uniq) != len(ids):
        dups = uniq[counts > 1][:_SHOWN].tolist()
        raise DuplicateTemplate(f"{what}: repeated within the batch: {dups}")


def check_batch(
    template_ids: Sequence[int] | I64,
    person_ids: Sequence[int] | I64,
    vectors: npt.ArrayLike,
    dim: int,
) -> tuple[I64, I64, F32]:
    """A batch of templates to add, checked as a whole: ``(template_ids, person_ids,
    vectors)`` of equal length, vectors of ``dim`` and unit norm, template ids unique."""
    vecs = check_vectors(vectors, dim)
    tids = check_ids(template_ids, len(vecs), what="template_ids")
    pids = check_ids(person_ids, len(vecs), what="person_ids")
    check_unique(tids)
    return tids, pids, vecs
