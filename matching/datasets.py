"""Seeded synthetic face-template data with identity structure.

One module shared by the tests and the benchmarks, so both measure the same thing.

Model: every identity ``i`` has a centre ``c_i`` drawn uniformly on the unit sphere
(isotropic Gaussian, normalised). A *sample* of identity ``i`` is
``normalise(c_i + s * g / sqrt(dim))`` with ``g ~ N(0, I)`` and a per-sample noise
level ``s`` drawn uniformly from ``[noise_low, noise_high]``. Two samples of the same
identity then have cosine similarity close to ``1 / sqrt((1 + s1^2)(1 + s2^2))``;
with the defaults (0.4 .. 0.9) a probe's best mated score averages about 0.73 (5th
percentile about 0.63 at 512-d), the range ArcFace-style embeddings of a quality-gated
camera face against an enrolment photo show, while different identities score around
0 with standard deviation ``1 / sqrt(dim)``. Wider noise makes mated scores lower and
approximate search harder (at 0.6 .. 1.1 the mean best mated score is about 0.61).

The gallery holds ``templates_per_person`` samples for each of ``n_persons``
identities (identity ``p`` is person ``p``; template ids are dense
``p * templates_per_person + j``). *Mated* queries are fresh samples of gallery
identities; *non-mated* queries are samples of identities numbered from
``n_persons`` upwards, which the gallery never contains.

Random centres in 512-d are harder for approximate indexes than real face
embeddings (they have no cluster structure for a coarse quantiser to exploit), so
this is the pessimistic case.

Everything is generated block by block from seeds derived from ``(seed, stream,
block)``, so a gallery of any size can be streamed without holding it in memory,
and the same arguments always give the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

_BLOCK = 8192  # identities per generation block
_CENTRES, _TEMPLATE_NOISE, _QUERY_PICK, _QUERY_NOISE = 0, 1, 2, 3


def l2_normalise(x: npt.NDArray[np.floating]) -> F32:
    """Return float32 rows scaled to unit L2 norm (rows of zeros stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.maximum(norms, np.float32(1e-12), out=norms)
    out: F32 = (x / norms).astype(np.float32, copy=False)
    return out


@dataclass(frozen=True)
class Queries:
    """A query set: vectors, the person each mated query belongs to (-1 if non-mated)."""

    vectors: F32
    persons: I64

    @property
    def mated(self) -> npt.NDArray[np.bool_]:
        return self.persons >= 0


@dataclass(frozen=True)
class SyntheticFaces:
    """Seeded synthetic gallery and queries; see the module docstring for the model."""

    dim: int
    n_persons: int
    templates_per_person: int = 2
    n_mated: int = 1000
    n_nonmated: int = 1000
    noise_low: float = 0.4
    noise_high: float = 0.9
    seed: int = 1234

    @property
    def n_templates(self) -> int:
        return self.n_persons * self.templates_per_person

    # -- generation primitives -------------------------------------------------
    def _rng(self, stream: int, block: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.dim, stream, block])

    def _centre_block(self, block: int) -> F32:
        return l2_normalise(self._rng(_CENTRES, block).standard_normal((_BLOCK, self.dim)))

    def centres(self, identities: I64) -> F32:
        """Centres of the given identities (any ids >= 0, gallery or not)."""
        identities = np.asarray(identities, dtype=np.int64)
        out = np.empty((len(identities), self.dim), dtype=np.float32)
        blocks = identities // _BLOCK
        for block in np.unique(blocks):
            rows = np.nonzero(blocks == block)[0]
            out[rows] = self._centre_block(int(block))[identities[rows] % _BLOCK]
        return out

    def _samples(self, centres: F32, rng: np.random.Generator) -> F32:
        n = len(centres)
        scale = rng.uniform(self.noise_low, self.noise_high, size=(n, 1)).astype(np.float32)
        noise = rng.standard_normal((n, self.dim), dtype=np.float32)
        noise *= scale / np.float32(np.sqrt(self.dim))
        return l2_normalise(centres + noise)

    # -- the gallery -----------------------------------------------------------
    def _template_block(self, gblock: int) -> F32:
        """All templates of one generation block, identity-major."""
        centres = np.repeat(self._centre_block(gblock), self.templates_per_person, axis=0)
        return self._samples(centres, self._rng(_TEMPLATE_NOISE, gblock))

    def iter_gallery(self, block_persons: int = _BLOCK) -> Iterator[tuple[I64, I64, F32]]:
        """Yield ``(template_ids, person_ids, vectors)`` blocks covering the whole gallery.

        Blocks hold about ``block_persons`` persons (rounded to the generation block,
        so the values never depend on it).
        """
        tpp = self.templates_per_person
        per_yield = max(1, block_persons // _BLOCK)
        n_blocks = -(-self.n_persons // _BLOCK)
        for first in range(0, n_blocks, per_yield):
            parts = [
                self._template_block(b) for b in range(first, min(first + per_yield, n_blocks))
            ]
            lo = first * _BLOCK
            hi = min(self.n_persons, lo + len(parts) * _BLOCK)
            vectors = np.concatenate(parts)[: (hi - lo) * tpp]
            template_ids = np.arange(lo * tpp, hi * tpp, dtype=np.int64)
            yield template_ids, template_ids // tpp, vectors

    def gallery(self) -> tuple[I64, I64, F32]:
        """The whole gallery in memory: ``(template_ids, person_ids, vectors)``."""
        parts = list(self.iter_gallery())
        return (
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]),
        )

    # -- queries -----------------------------------------------------------------
    def queries(self) -> Queries:
        """Mated queries first, then non-mated ones."""
        pick = self._rng(_QUERY_PICK, 0)
        mated = pick.choice(self.n_persons, size=min(self.n_mated, self.n_persons), replace=False)
        nonmated = self.n_persons + np.arange(self.n_nonmated, dtype=np.int64)
        identities = np.concatenate([np.sort(mated).astype(np.int64), nonmated])
        vectors = self._samples(self.centres(identities), self._rng(_QUERY_NOISE, 0))
        persons = np.where(identities < self.n_persons, identities, -1).astype(np.int64)
        return Queries(vectors=vectors, persons=persons)
