"""What hubs send each other: the signed search request and its signed answer.

The probe travels as the standard base64 of its little-endian float32 rows (1 to
:data:`MAX_PROBES` unit vectors of ``dim`` values); candidates carry the answering
hub's reference of a person (``person:<id>``), never a name or another identity claim.
"""

from __future__ import annotations

import base64
import binascii
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hub.federation.policy import GalleryName, Purpose
from matching.gallery import MAX_K

__all__ = [
    "MAX_PROBES",
    "SEARCH_PATH",
    "WireCandidate",
    "WireSearchAnswer",
    "WireSearchRequest",
    "decode_probe",
    "encode_probe",
    "probe_rows",
]

F32 = npt.NDArray[np.float32]

SEARCH_PATH = "/api/v1/federation/search"
"""Where a hub answers its peers' search requests (and what the signature names)."""

MAX_PROBES = 5
"""Probe templates per request (one per probe photo)."""

MAX_DIM = 4096


def encode_probe(vectors: F32) -> str:
    return base64.b64encode(np.ascontiguousarray(vectors, dtype="<f4").tobytes()).decode("ascii")


def decode_probe(text: str, dim: int) -> F32:
    """The ``(n, dim)`` rows of an encoded probe; ``ValueError`` if malformed."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("probe is not base64") from None
    if not raw or len(raw) % (4 * dim):
        raise ValueError(f"probe is not a whole number of float32 rows of {dim} values")
    rows = np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(-1, dim)
    if not 1 <= len(rows) <= MAX_PROBES:
        raise ValueError(f"probe has {len(rows)} rows; 1 to {MAX_PROBES} allowed")
    if not np.all(np.isfinite(rows)):
        raise ValueError("probe holds NaN or infinite values")
    norms = np.linalg.norm(rows, axis=1)
    if np.any(np.abs(norms - 1.0) > 1e-3):
        raise ValueError("probe rows must be unit vectors (L2-normalised)")
    return rows


def probe_rows(blob: bytes) -> F32:
    """The rows of a stored probe (``match_requests.probe``): unit vectors, so their
    count is the squared norm of the whole blob, which gives the dimension."""
    flat = np.frombuffer(blob, dtype="<f4").astype(np.float32)
    count = round(float(np.dot(flat, flat)))
    if count < 1 or len(flat) % count:
        raise ValueError("stored probe is not a set of unit vectors")
    return flat.reshape(count, len(flat) // count)


class WireSearchRequest(BaseModel):
    """A signed request of a peer hub to search this hub's galleries."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(
        pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        description="The request's id (a UUID), the same on both hubs.",
    )
    origin_hub: str = Field(min_length=1, max_length=64, description="The requesting hub.")
    requester: str = Field(
        min_length=1, max_length=200, description="Who asked, at the requesting hub."
    )
    case_id: str = Field(min_length=1, max_length=100, description="The case it is made for.")
    legal_basis: str = Field(min_length=1, max_length=300, description="The legal basis.")
    purpose: Purpose = Field(description="Why the search is made.")
    galleries: list[GalleryName] = Field(
        min_length=1, max_length=4, description="The galleries to search here."
    )
    k: int = Field(ge=1, le=MAX_K, description="Candidates wanted.")
    model_id: str = Field(min_length=1, max_length=64, description="Model of the probe.")
    dim: int = Field(ge=1, le=MAX_DIM, description="Values per probe template.")
    probe: str = Field(
        min_length=1,
        max_length=MAX_PROBES * MAX_DIM * 8,
        description="Base64 of the probe templates, little-endian float32 unit rows.",
    )

    @field_validator("galleries")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("galleries must be distinct")
        return value

    @model_validator(mode="after")
    def _probe_shape(self) -> WireSearchRequest:
        decode_probe(self.probe, self.dim)
        return self

    def vectors(self) -> F32:
        return decode_probe(self.probe, self.dim)


class WireCandidate(BaseModel):
    """A person held by the answering hub whose face resembles the probe."""

    model_config = ConfigDict(extra="forbid")

    candidate_ref: str = Field(
        min_length=1, max_length=120, description="The answering hub's reference: person:<id>."
    )
    gallery: GalleryName = Field(description="The gallery the person is in.")
    model_id: str = Field(min_length=1, max_length=64, description="Model of the scores.")
    score: float = Field(ge=-1.0001, le=1.0001, description="Cosine similarity, best probe.")
    rank: int = Field(ge=1, description="1 for the most similar.")
    flags: list[str] = Field(default_factory=list, description="Reasons for care: child, age_gap.")
    crop_jpeg: str | None = Field(
        default=None, description="Base64 JPEG of the face, only if policy allows."
    )


class WireSearchAnswer(BaseModel):
    """The answering hub's signed answer: candidates, or a refusal with its reason."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(description="The request answered.")
    hub_id: str = Field(description="The answering hub.")
    status: Literal["answered", "refused"] = Field(description="Answered or refused.")
    reason: str | None = Field(default=None, description="Why it was refused.")
    candidates: list[WireCandidate] = Field(
        default_factory=list, description="Ranked candidates, best first."
    )
