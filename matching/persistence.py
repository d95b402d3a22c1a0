"""Crash-safe files of a gallery.

A gallery directory holds numbered *generations* and a ``CURRENT`` pointer::

    DIR/CURRENT              "gen-000004"
    DIR/gen-000004/meta.json model_id, dim, counts, index kind, sizes and sha256 of the files
    DIR/gen-000004/vectors.f32  full-precision rows, slot-major (memory-mapped on load)
    DIR/gen-000004/slots.i64    per slot: template id, person id (-1, -1 once removed)
    DIR/gen-000004/index.faiss  the serialised FAISS index

Saving writes a new generation into a temporary directory, fsyncs every file and the
directory, renames it into place, then replaces ``CURRENT`` the same way (write a
temporary file, fsync, rename, fsync the directory). A crash at any point leaves
``CURRENT`` naming a complete generation. The previous generation is kept as a
fallback, except when templates were removed since it was written: then it still
holds vectors that were erased, and it is deleted.

Loading checks sizes and checksums before anything reaches FAISS, so a truncated or
damaged file gives :class:`CorruptGallery` naming the file, never a FAISS assertion.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from matching.errors import CorruptGallery, GalleryMismatch
from matching.store import VectorStore

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CURRENT = "CURRENT"
_GEN_PREFIX = "gen-"
_CHUNK = 1 << 22

I64 = npt.NDArray[np.int64]


class FileDigest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class GalleryMeta(BaseModel):
    """What ``meta.json`` records about one saved generation."""

    model_config = ConfigDict(extra="forbid")
    format_version: int = Field(description="Layout version of the files")
    model_id: str = Field(
        min_length=1, description="Embedder (and alignment) the templates come from"
    )
    dim: int = Field(ge=1, le=8192)
    purpose: str = Field(min_length=1)
    rows: int = Field(ge=0, description="Slots in vectors.f32, removed ones included")
    count: int = Field(ge=0, description="Live templates")
    index_kind: str
    index_params: dict[str, Any] = Field(default_factory=dict)
    generation: int = Field(ge=1)
    saved_at: datetime
    files: dict[str, FileDigest]


@dataclass
class LoadedGeneration:
    meta: GalleryMeta
    store: VectorStore
    slot_templates: I64
    slot_persons: I64
    index: Any
    path: Path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, chunks: Iterable[bytes | memoryview]) -> FileDigest:
    digest = hashlib.sha256()
    size = 0
    with open(path, "wb") as fh:
        for chunk in chunks:
            fh.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    return FileDigest(bytes=size, sha256=digest.hexdigest())


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def generations(directory: Path) -> list[int]:
    """Numbers of the complete generation directories, ascending."""
    found = []
    for entry in directory.glob(f"{_GEN_PREFIX}*"):
        suffix = entry.name[len(_GEN_PREFIX) :]
        if entry.is_dir() and suffix.isdigit():
            found.append(int(suffix))
    return sorted(found)


def current_generation(directory: Path) -> int | None:
    """The generation ``CURRENT`` names, or None for a directory never saved to."""
    pointer = directory / CURRENT
    if not pointer.exists():
        return None
    text = pointer.read_text(encoding="ascii", errors="replace").strip()
    if not text.startswith(_GEN_PREFIX) or not text[len(_GEN_PREFIX) :].isdigit():
        raise CorruptGallery(f"{pointer}: does not name a generation ({text[:40]!r})")
    return int(text[len(_GEN_PREFIX) :])


def generation_dir(directory: Path, number: int) -> Path:
    """Where generation ``number`` of the gallery in ``directory`` lives."""
    return directory / f"{_GEN_PREFIX}{number:06d}"


def write_generation(
    directory: Path,
    meta_fields: dict[str, Any],
    store: VectorStore,
    slot_templates: I64,
    slot_persons: I64,
    index: Any,
    *,
    removed_since_previous: bool,
) -> GalleryMeta:
    """Write a complete new generation and point ``CURRENT`` at it. Returns its metadata."""
    directory.mkdir(parents=True, exist_ok=True)
    previous = current_generation(directory)
    existing = generations(directory)
    number = max([previous or 0, *existing]) + 1
    final = generation_dir(directory, number)
    tmp = directory / f".{final.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        files = {
            "vectors.f32": _write_file(
                tmp / "vectors.f32", (rows.tobytes() for _, rows in store.iter_rows())
            ),
            "slots.i64": _write_file(
                tmp / "slots.i64",
                [np.stack([slot_templates, slot_persons], axis=1).astype("<i8").tobytes()],
            ),
            "index.faiss": _write_file(
                tmp / "index.faiss", [faiss.serialize_index(index).tobytes()]
            ),
        }
        meta = GalleryMeta(
            **meta_fields,
            format_version=FORMAT_VERSION,
            rows=len(store),
            generation=number,
            saved_at=datetime.now(UTC),
            files=files,
        )
        _write_file(tmp / "meta.json", [meta.model_dump_json(indent=2).encode()])
        _fsync_dir(tmp)
        os.rename(tmp, final)
        _fsync_dir(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    pointer_tmp = directory / f".{CURRENT}.tmp-{os.getpid()}"
    _write_file(pointer_tmp, [f"{final.name}\n".encode()])
    os.replace(pointer_tmp, directory / CURRENT)
    _fsync_dir(directory)
    logger.info("saved %s (%d templates, %d slots)", final, meta.count, meta.rows)
    keep = {number} if removed_since_previous or previous is None else {number, previous}
    for old in generations(directory):
        if old not in keep:
            shutil.rmtree(generation_dir(directory, old), ignore_errors=True)
    for stale in directory.glob(f".{_GEN_PREFIX}*.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return meta


def read_generation(
    directory: Path,
    *,
    generation: int | None = None,
    expect_model_id: str | None = None,
    expect_dim: int | None = None,
    verify: bool = True,
) -> LoadedGeneration:
    """Load a generation (``CURRENT``'s by default), checking it before use."""
    if not directory.is_dir():
        raise CorruptGallery(f"{directory}: no such gallery directory")
    number = generation if generation is not None else current_generation(directory)
    if number is None:
        raise CorruptGallery(f"{directory}: not a saved gallery (no {CURRENT} file)")
    path = generation_dir(directory, number)
    others = [g for g in generations(directory) if g != number]
    hint = f"; other generations on disk: {others}" if others else ""
    meta_path = path / "meta.json"
    try:
        meta = GalleryMeta.model_validate_json(meta_path.read_bytes())
    except FileNotFoundError as exc:
        raise CorruptGallery(f"{meta_path}: missing{hint}") from exc
    except (ValidationError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptGallery(f"{meta_path}: unreadable metadata ({exc}){hint}") from exc
    if meta.format_version != FORMAT_VERSION:
        raise GalleryMismatch(
            f"{path}: format version {meta.format_version}, this build reads {FORMAT_VERSION}"
        )
    if expect_model_id is not None and meta.model_id != expect_model_id:
        raise GalleryMismatch(
            f"{path}: written for model_id {meta.model_id!r}, expected {expect_model_id!r}; "
            "templates from different models are never compared"
        )
    if expect_dim is not None and meta.dim != expect_dim:
        raise GalleryMismatch(f"{path}: dimension {meta.dim}, expected {expect_dim}")
    expected_sizes = {
        "vectors.f32": meta.rows * meta.dim * 4,
        "slots.i64": meta.rows * 16,
    }
    for name, digest in meta.files.items():
        file = path / name
        if not file.exists():
            raise CorruptGallery(f"{file}: missing{hint}")
        size = file.stat().st_size
        if size != digest.bytes or size != expected_sizes.get(name, size):
            raise CorruptGallery(
                f"{file}: {size} bytes, expected {digest.bytes} (truncated or damaged){hint}"
            )
        if verify and _hash_file(file) != digest.sha256:
            raise CorruptGallery(f"{file}: checksum mismatch (damaged){hint}")
    if set(meta.files) != {"vectors.f32", "slots.i64", "index.faiss"}:
        raise CorruptGallery(f"{meta_path}: unexpected file list {sorted(meta.files)}{hint}")
    slots = np.fromfile(path / "slots.i64", dtype="<i8").reshape(-1, 2).astype(np.int64)
    try:
        index = faiss.read_index(str(path / "index.faiss"))
    except RuntimeError as exc:  # only reachable with verify=False
        raise CorruptGallery(f"{path / 'index.faiss'}: FAISS cannot read it ({exc}){hint}") from exc
    is_ivf = faiss.try_extract_index_ivf(index) is not None
    if index.d != meta.dim or index.ntotal != meta.count or is_ivf != (meta.index_kind == "ivf"):
        raise CorruptGallery(
            f"{path / 'index.faiss'}: {'an IVF' if is_ivf else 'a flat'} index of {index.ntotal} "
            f"vectors of dimension {index.d}, but meta.json says {meta.index_kind}, "
            f"{meta.count} templates of dimension {meta.dim}{hint}"
        )
    store = VectorStore.open(path / "vectors.f32", meta.rows, meta.dim)
    return LoadedGeneration(
        meta=meta,
        store=store,
        slot_templates=np.ascontiguousarray(slots[:, 0]),
        slot_persons=np.ascontiguousarray(slots[:, 1]),
        index=index,
        path=path,
    )
