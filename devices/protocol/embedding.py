"""Face embeddings on the wire: the model_id -> dimension table and base64 float32.

An embedding travels as the standard base64 (RFC 4648 section 4, with padding) of its
float32 values in little-endian order: 512 values are 2,732 characters, against
5-10 KB as a JSON array, and decoding is exact.

The protocol must know each model's dimension to refuse a vector of the wrong
length, but ``devices`` may not import ``models``; so it keeps its own small table,
:data:`EMBEDDING_DIMS`. Keys are exact model ids or patterns with ``*`` (any
characters); an exact key wins over a pattern, and a longer pattern over a shorter.
Extend it by configuration, not by editing this file: build an
:class:`EmbeddingDims` with :meth:`EmbeddingDims.with_entries` (or
:meth:`EmbeddingDims.parse` of ``"model=dim,..."`` from a setting) and pass it as
``dims=`` to :func:`devices.protocol.decode`. For example an insightface pack whose
recognition model is not 512-d needs ``{"insightface-mypack": 256}``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from devices.protocol.errors import ProtocolError

__all__ = [
    "DEFAULT_EMBEDDING_DIMS",
    "EMBEDDING_DIMS",
    "MAX_EMBEDDING_DIM",
    "MODEL_ID_RE",
    "NORM_TOLERANCE",
    "EmbeddingDims",
    "decode_embedding",
    "encode_embedding",
]

F32 = npt.NDArray[np.float32]

MAX_EMBEDDING_DIM = 4096
NORM_TOLERANCE = 1e-3
"""A sighting's embedding must have an L2 norm within this of 1."""

MODEL_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
"""A model id, e.g. ``dlib-resnet-v1`` or ``insightface-w600k_r50``."""

_PATTERN_RE = re.compile(r"[A-Za-z0-9*][A-Za-z0-9._+*-]{0,127}")

EMBEDDING_DIMS: Mapping[str, int] = MappingProxyType(
    {
        "dlib-resnet-v1": 128,
        "insightface-*": 512,
    }
)
"""Known embedding dimensions: dlib's ResNet descriptor is 128-d; insightface packs
(ArcFace recognition models such as buffalo_l's ``w600k_r50``) are 512-d as a rule."""


@dataclass(frozen=True)
class EmbeddingDims:
    """A model_id -> dimension table with ``*`` patterns. Immutable."""

    entries: Mapping[str, int] = field(default_factory=lambda: dict(EMBEDDING_DIMS))
    _patterns: tuple[tuple[re.Pattern[str], int], ...] = field(
        init=False, repr=False, compare=False, default=()
    )

    def __post_init__(self) -> None:
        checked: dict[str, int] = {}
        for key, dim in self.entries.items():
            if not isinstance(key, str) or not _PATTERN_RE.fullmatch(key):
                raise ValueError(f"bad model id or pattern {key!r}")
            if isinstance(dim, bool) or not isinstance(dim, int):
                raise ValueError(f"dimension of {key!r} must be an int, not {dim!r}")
            if not 1 <= dim <= MAX_EMBEDDING_DIM:
                raise ValueError(f"dimension of {key!r} must be 1..{MAX_EMBEDDING_DIM}")
            checked[key] = dim
        object.__setattr__(self, "entries", MappingProxyType(checked))
        patterns = sorted(
            (key for key in checked if "*" in key),
            key=lambda key: (-len(key.replace("*", "")), key),
        )
        compiled = tuple(
            (re.compile(".*".join(re.escape(part) for part in key.split("*"))), checked[key])
            for key in patterns
        )
        object.__setattr__(self, "_patterns", compiled)

    def dim(self, model_id: str) -> int | None:
        """The dimension of ``model_id``, or None if the table does not know it."""
        exact = self.entries.get(model_id)
        if exact is not None:
            return exact
        for pattern, dim in self._patterns:
            if pattern.fullmatch(model_id):
                return dim
        return None

    def with_entries(self, more: Mapping[str, int]) -> EmbeddingDims:
        """A new table: this one with ``more`` added (``more`` wins on equal keys)."""
        return EmbeddingDims({**self.entries, **more})

    @classmethod
    def parse(cls, spec: str, base: EmbeddingDims | None = None) -> EmbeddingDims:
        """Parse ``"model=dim,pattern*=dim"`` (a setting or CLI option) onto ``base``
        (default: the built-in table). Raises ``ValueError`` with the bad item."""
        more: dict[str, int] = {}
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            key, sep, value = item.partition("=")
            if not sep or not value.strip().isdigit():
                raise ValueError(f"{item!r} is not model_id=dim")
            more[key.strip()] = int(value)
        return (base or DEFAULT_EMBEDDING_DIMS).with_entries(more)


DEFAULT_EMBEDDING_DIMS = EmbeddingDims()
"""The built-in table, :data:`EMBEDDING_DIMS`."""


def encode_embedding(vector: npt.ArrayLike) -> str:
    """Base64 of a 1-D vector as little-endian float32.

    The vector is not normalised here; a sighting requires it to be L2-normalised
    already. Raises ``ValueError`` for a vector that is not 1-D, empty, longer than
    :data:`MAX_EMBEDDING_DIM` or not finite.
    """
    array = np.asarray(vector)
    if array.ndim != 1 or not 1 <= array.size <= MAX_EMBEDDING_DIM:
        raise ValueError(
            f"embedding must be 1-D with 1..{MAX_EMBEDDING_DIM} values, got shape {array.shape}"
        )
    values = array.astype("<f4")
    if not np.isfinite(values).all():
        raise ValueError("embedding has NaN or infinite values (in float32)")
    return base64.b64encode(values.tobytes()).decode("ascii")


def decode_embedding(text: str, dim: int | None = None) -> F32:
    """The float32 vector of a base64 embedding, checked for length and finiteness.

    ``dim``, when given, is the length required. Raises :class:`ProtocolError`
    (``invalid``) for bad base64, a byte count that is not a multiple of 4, a wrong
    length or NaN/infinite values.
    """
    if not isinstance(text, str):
        raise ProtocolError("invalid", "embedding must be a base64 string")
    if len(text) > (MAX_EMBEDDING_DIM * 4 + 2) // 3 * 4:
        raise ProtocolError(
            "invalid",
            f"embedding of {len(text)} base64 characters is over {MAX_EMBEDDING_DIM} values",
        )
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ProtocolError("invalid", f"embedding is not valid base64 ({exc})") from None
    if len(raw) % 4 or not raw:
        raise ProtocolError(
            "invalid", f"embedding has {len(raw)} bytes, not a whole number of float32 values"
        )
    vector = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if dim is not None and vector.size != dim:
        raise ProtocolError("invalid", f"embedding has {vector.size} values, expected {dim}")
    if not np.isfinite(vector).all():
        raise ProtocolError("invalid", "embedding has NaN or infinite values")
    return vector
