"""Gallery backends chosen by configuration: FAISS in the process, or Milvus.

``GalleryBackendConfig`` is a discriminated union on ``type``::

    {"type": "faiss", "path": "/var/lib/lantern/galleries/watchlist"}
    {"type": "milvus", "uri": "http://milvus:19530", "token": "...",
     "index_type": "HNSW", "index_params": {"M": 16, "efConstruction": 200}}

:func:`open_gallery` gives a gallery of either kind; both satisfy :class:`GalleryLike`,
the interface callers should type against (mypy checks that both classes do).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from matching.gallery import Candidate, Gallery, GalleryConfig, GalleryStats, Progress, SearchMode
from matching.milvus_gallery import MilvusGallery, MilvusSettings
from matching.persistence import CURRENT

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

__all__ = [
    "BACKEND_CONFIG",
    "FaissBackendConfig",
    "GalleryBackendConfig",
    "GalleryLike",
    "MilvusSettings",
    "open_gallery",
]


class FaissBackendConfig(BaseModel):
    """A FAISS gallery in this process, saved to (and loaded from) a directory."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["faiss"] = "faiss"
    path: Path | None = Field(
        None, description="Directory of the saved gallery; None keeps it in memory only"
    )


GalleryBackendConfig = Annotated[FaissBackendConfig | MilvusSettings, Field(discriminator="type")]
"""Where a gallery lives: ``type`` "faiss" or "milvus" selects the backend."""

BACKEND_CONFIG: TypeAdapter[FaissBackendConfig | MilvusSettings] = TypeAdapter(GalleryBackendConfig)
"""Validates a backend configuration from plain data (a settings file, JSON)."""


class GalleryLike(Protocol):
    """What callers of a gallery may use, whichever backend holds it."""

    @property
    def config(self) -> GalleryConfig: ...

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def __len__(self) -> int: ...

    def add(
        self,
        template_ids: Sequence[int] | I64,
        person_ids: Sequence[int] | I64,
        vectors: npt.ArrayLike,
        *,
        model_id: str | None = None,
    ) -> None: ...

    def remove(self, template_ids: Sequence[int] | I64, *, missing_ok: bool = False) -> int: ...

    def search(
        self,
        vectors: npt.ArrayLike,
        k: int = 10,
        mode: SearchMode | str = SearchMode.INVESTIGATIVE,
        threshold: float | None = None,
        *,
        model_id: str | None = None,
    ) -> list[list[Candidate]]: ...

    def search_arrays(
        self,
        vectors: npt.ArrayLike,
        k: int = 10,
        mode: SearchMode | str = SearchMode.INVESTIGATIVE,
        threshold: float | None = None,
        *,
        model_id: str | None = None,
    ) -> tuple[I64, I64, F32]: ...

    def rebuild(
        self,
        blocks: Iterable[tuple[Sequence[int] | I64, Sequence[int] | I64, npt.ArrayLike]],
        *,
        progress: Progress | None = None,
    ) -> int: ...

    def save(self) -> Path | str: ...

    def wait_for_index(self, timeout: float | None = None) -> bool: ...

    def stats(self) -> GalleryStats: ...


def open_gallery(
    config: GalleryConfig,
    backend: FaissBackendConfig | MilvusSettings,
    *,
    client: Any = None,
) -> Gallery | MilvusGallery:
    """The gallery ``config`` describes, in ``backend``: the saved one when there is one
    (checked against ``config``'s model and dimension), else a new empty one.

    ``client`` (Milvus only) shares one connection between galleries.
    """
    if isinstance(backend, MilvusSettings):
        return MilvusGallery(config, backend, client=client)
    path = backend.path
    if path is not None and (path / CURRENT).exists():
        return Gallery.load(
            path,
            expect_model_id=config.model_id,
            expect_dim=config.dim,
            policy=config.policy,
            alert_threshold=config.alert_threshold,
        )
    return Gallery(config, path)


if TYPE_CHECKING:  # mypy proves that both backends implement the interface

    def _faiss(gallery: Gallery) -> GalleryLike:
        return gallery

    def _milvus(gallery: MilvusGallery) -> GalleryLike:
        return gallery
