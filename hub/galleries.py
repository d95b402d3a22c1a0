"""The hub's searchable galleries: one :class:`matching.gallery.Gallery` per
``(gallery, model_id)``, where the gallery is a person category (``supervised``,
``watchlist``, ``missing``, ``found``) and ``model_id`` the embedder of the templates.

The database's ``face_templates`` are the truth; the galleries are an index over them,
rebuilt from them at start-up (:meth:`GalleryService.load_from_db`) and kept in step as
templates are enrolled (:meth:`GalleryService.add`) or deleted
(:meth:`GalleryService.remove_templates`). Template ids are the gallery ids and person
ids the gallery's person ids, so a search answers one candidate per person: that
person's best template.

With a ``cache_dir`` (``<data_dir>/galleries``), :meth:`GalleryService.save` writes each
gallery under ``<cache_dir>/<gallery>/<model_id>/`` (crash-safe generations, see
:mod:`matching.persistence`) next to a small ``db-state.json`` that records which
templates it holds (count, largest id, sum of ids). At start-up a saved gallery is
loaded only when that record still matches the database; otherwise it is rebuilt.

:meth:`GalleryService.erase_templates` is the erasure path (reunion retention and
erasure requests): it removes templates from every gallery held and from every copy
saved under ``cache_dir``.

All methods are thread-safe: searches run concurrently; adds and removes are atomic for
searches (see :class:`~matching.gallery.Gallery`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from hub.db.models import PERSON_CATEGORIES, FaceTemplate, Person
from matching.errors import MatchingError
from matching.gallery import Gallery, GalleryConfig, SearchMode
from matching.persistence import current_generation, generation_dir, generations
from matching.policy import IndexPolicy

__all__ = [
    "DB_STATE_FILE",
    "ErasureResult",
    "GalleryCount",
    "GalleryHit",
    "GalleryKey",
    "GalleryService",
    "TemplateSetState",
    "gallery_dir",
    "template_vectors",
]

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]

DB_STATE_FILE = "db-state.json"
"""Name of the record, next to a saved gallery, of the templates it was saved with."""

_BLOCK = 4096
"""Templates read from the database per block while rebuilding."""

GalleryKey = tuple[str, str]
"""``(gallery, model_id)``."""

Progress = Callable[[str, str, int], None]
"""Called as ``progress(gallery, model_id, templates_so_far)`` while rebuilding."""


@dataclass(frozen=True)
class GalleryHit:
    """One candidate of a search: a person, their best template and its score."""

    person_id: int
    template_id: int
    score: float
    """Cosine similarity (inner product of L2-normalised vectors), -1..1."""
    rank: int
    """1 for the best candidate of the query."""


@dataclass(frozen=True)
class GalleryCount:
    """What one gallery holds after a load or rebuild."""

    gallery: str
    model_id: str
    templates: int
    persons: int
    source: str
    """``"cache"`` (loaded from a saved copy) or ``"database"`` (rebuilt)."""


@dataclass(frozen=True)
class ErasureResult:
    """What :meth:`GalleryService.erase_templates` did."""

    removed: int
    """Template vectors removed, summed over the galleries (memory and saved copies)."""
    saved: list[Path]
    """Gallery directories written again without them."""


class TemplateSetState(BaseModel):
    """Fingerprint of a gallery's templates: equal fingerprints, equal template sets
    (ids only grow, so a deletion followed by an enrolment changes the sum and maximum)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    count: int = Field(ge=0, description="Templates")
    max_id: int = Field(description="Largest template id, -1 when empty")
    id_sum: int = Field(description="Sum of the template ids")


def gallery_dir(cache_dir: Path, gallery: str, model_id: str) -> Path:
    """Where a gallery is saved; characters a file name cannot hold are replaced."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", model_id)
    return cache_dir / gallery / safe


def template_vectors(rows: Sequence[bytes], dim: int) -> F32:
    """Stored embeddings (little-endian float32) as an ``(n, dim)`` array."""
    if not rows:
        return np.empty((0, dim), dtype=np.float32)
    flat = np.frombuffer(b"".join(rows), dtype="<f4").astype(np.float32)
    return flat.reshape(len(rows), dim)


def _db_state(session: Session, gallery: str, model_id: str) -> TemplateSetState:
    row = session.execute(
        select(func.count(FaceTemplate.id), func.max(FaceTemplate.id), func.sum(FaceTemplate.id))
        .join(Person, Person.id == FaceTemplate.person_id)
        .where(Person.category == gallery, FaceTemplate.model_id == model_id)
    ).one()
    count, max_id, id_sum = row
    return TemplateSetState(
        count=int(count or 0),
        max_id=int(max_id) if max_id is not None else -1,
        id_sum=int(id_sum or 0),
    )


class GalleryService:
    """The hub's galleries; see the module docstring."""

    def __init__(self, *, cache_dir: Path | None = None, policy: IndexPolicy | None = None) -> None:
        self.cache_dir = cache_dir
        self.policy = policy or IndexPolicy()
        self._galleries: dict[GalleryKey, Gallery] = {}
        self._lock = threading.Lock()  # guards the dict, not the galleries

    # -- lookup -----------------------------------------------------------------------
    def keys(self) -> list[GalleryKey]:
        """Every ``(gallery, model_id)`` held, sorted."""
        with self._lock:
            return sorted(self._galleries)

    def get(self, gallery: str, model_id: str) -> Gallery | None:
        with self._lock:
            return self._galleries.get((gallery, model_id))

    def models(self, gallery: str) -> list[str]:
        """The model ids that ``gallery`` has templates (or a gallery) of."""
        with self._lock:
            return sorted(m for g, m in self._galleries if g == gallery)

    def _new(self, gallery: str, model_id: str, dim: int) -> Gallery:
        path = gallery_dir(self.cache_dir, gallery, model_id) if self.cache_dir else None
        config = GalleryConfig(model_id=model_id, dim=dim, purpose=gallery, policy=self.policy)
        return Gallery(config, path)

    def _get_or_create(self, gallery: str, model_id: str, dim: int) -> Gallery:
        if gallery not in PERSON_CATEGORIES:
            raise ValueError(f"unknown gallery {gallery!r}; one of {', '.join(PERSON_CATEGORIES)}")
        with self._lock:
            found = self._galleries.get((gallery, model_id))
            if found is None:
                found = self._new(gallery, model_id, dim)
                self._galleries[(gallery, model_id)] = found
            return found

    # -- writes -------------------------------------------------------------------------
    def add(
        self,
        gallery: str,
        model_id: str,
        template_ids: Sequence[int],
        person_ids: Sequence[int],
        vectors: npt.ArrayLike,
    ) -> None:
        """Add enrolled templates (already committed to the database)."""
        vecs = np.asarray(vectors, dtype=np.float32)
        if vecs.ndim != 2:
            raise ValueError(f"vectors must be (n, dim), got shape {vecs.shape}")
        target = self._get_or_create(gallery, model_id, int(vecs.shape[1]))
        target.add(template_ids, person_ids, vecs, model_id=model_id)

    def remove_templates(self, template_ids: Sequence[int]) -> int:
        """Remove templates from every gallery that holds them; returns how many went."""
        if not template_ids:
            return 0
        with self._lock:
            galleries = list(self._galleries.values())
        return sum(g.remove(list(template_ids), missing_ok=True) for g in galleries)

    # -- search -----------------------------------------------------------------------
    def search(
        self,
        gallery: str,
        model_id: str,
        vectors: npt.ArrayLike,
        k: int = 10,
        threshold: float | None = None,
    ) -> list[list[GalleryHit]]:
        """Per query vector, up to ``k`` persons ranked by their best template's score.

        ``threshold`` None: an investigative search (the top ``k`` whatever their
        score); else an alert search (only scores at or above it). A gallery with no
        templates of ``model_id`` answers an empty list per query.
        """
        queries = np.asarray(vectors, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        target = self.get(gallery, model_id)
        if target is None or len(target) == 0:
            return [[] for _ in range(len(queries))]
        mode = SearchMode.INVESTIGATIVE if threshold is None else SearchMode.ALERT
        found = target.search(queries, k, mode, threshold, model_id=model_id)
        return [
            [
                GalleryHit(c.person_id, c.template_id, float(c.score), rank)
                for rank, c in enumerate(row, start=1)
            ]
            for row in found
        ]

    # -- bulk ---------------------------------------------------------------------------
    def load_from_db(
        self, engine: Engine, *, use_cache: bool = True, progress: Progress | None = None
    ) -> list[GalleryCount]:
        """(Re)build every gallery from ``face_templates``, or load a saved copy that
        still matches the database. Galleries whose templates are all gone are dropped."""
        with Session(engine) as session:
            groups = session.execute(
                select(Person.category, FaceTemplate.model_id, func.min(FaceTemplate.dim))
                .join(Person, Person.id == FaceTemplate.person_id)
                .group_by(Person.category, FaceTemplate.model_id)
                .order_by(Person.category, FaceTemplate.model_id)
            ).all()
        counts: list[GalleryCount] = []
        fresh: dict[GalleryKey, Gallery] = {}
        for category, model_id, dim in groups:
            gallery, source = self._load_one(
                engine, category, model_id, int(dim), use_cache, progress
            )
            fresh[(category, model_id)] = gallery
            stats = gallery.stats()
            counts.append(GalleryCount(category, model_id, stats.count, stats.persons, source))
            logger.info(
                "gallery %s/%s: %d templates of %d persons (%s)",
                category,
                model_id,
                stats.count,
                stats.persons,
                source,
            )
        with self._lock:
            self._galleries = fresh
        return counts

    def _load_one(
        self,
        engine: Engine,
        category: str,
        model_id: str,
        dim: int,
        use_cache: bool,
        progress: Progress | None,
    ) -> tuple[Gallery, str]:
        if use_cache and self.cache_dir is not None:
            cached = self._load_cached(engine, category, model_id, dim)
            if cached is not None:
                return cached, "cache"
        gallery = self._new(category, model_id, dim)
        done = 0

        def report(n: int) -> None:
            if progress is not None:
                progress(category, model_id, n)

        def blocks() -> Iterator[tuple[list[int], list[int], F32]]:
            nonlocal done
            with Session(engine) as session:
                stmt = (
                    select(FaceTemplate.id, FaceTemplate.person_id, FaceTemplate.embedding)
                    .join(Person, Person.id == FaceTemplate.person_id)
                    .where(
                        Person.category == category,
                        FaceTemplate.model_id == model_id,
                        FaceTemplate.dim == dim,
                    )
                    .order_by(FaceTemplate.id)
                    .execution_options(yield_per=_BLOCK)
                )
                for part in session.execute(stmt).partitions(_BLOCK):
                    tids = [int(r[0]) for r in part]
                    pids = [int(r[1]) for r in part]
                    vecs = template_vectors([bytes(r[2]) for r in part], dim)
                    done += len(tids)
                    report(done)
                    yield tids, pids, vecs

        gallery.rebuild(blocks())
        return gallery, "database"

    def _load_cached(
        self, engine: Engine, category: str, model_id: str, dim: int
    ) -> Gallery | None:
        assert self.cache_dir is not None
        directory = gallery_dir(self.cache_dir, category, model_id)
        state_file = directory / DB_STATE_FILE
        if not state_file.is_file():
            return None
        try:
            saved = TemplateSetState.model_validate_json(state_file.read_bytes())
            with Session(engine) as session:
                current = _db_state(session, category, model_id)
            if saved != current:
                logger.info(
                    "saved gallery %s is stale (%s, database %s); rebuilding",
                    directory,
                    saved,
                    current,
                )
                return None
            gallery = Gallery.load(
                directory, expect_model_id=model_id, expect_dim=dim, policy=self.policy
            )
            if len(gallery) != current.count:
                logger.warning(
                    "saved gallery %s holds %d templates, expected %d; rebuilding",
                    directory,
                    len(gallery),
                    current.count,
                )
                return None
            return gallery
        except (OSError, ValidationError, MatchingError) as exc:
            logger.warning("saved gallery %s unusable (%s); rebuilding", directory, exc)
            return None

    def save(self, engine: Engine) -> list[Path]:
        """Write every gallery under ``cache_dir`` with the record of the templates it
        holds (read from ``engine``). Returns the directories written."""
        if self.cache_dir is None:
            raise ValueError("this gallery service has no cache_dir to save to")
        return [
            self._save_one(engine, category, model_id, gallery)
            for (category, model_id), gallery in sorted(self._snapshot().items())
        ]

    def _save_one(self, engine: Engine, category: str, model_id: str, gallery: Gallery) -> Path:
        assert self.cache_dir is not None
        directory = gallery_dir(self.cache_dir, category, model_id)
        directory.mkdir(parents=True, exist_ok=True)
        gallery.save(directory)
        with Session(engine) as session:
            state = _db_state(session, category, model_id)
        if state.count != len(gallery):
            # Enrolled or deleted meanwhile: no record, so the next start rebuilds.
            (directory / DB_STATE_FILE).unlink(missing_ok=True)
            logger.info("gallery %s changed while saving; left to rebuild", directory)
        else:
            _write_json(directory / DB_STATE_FILE, state.model_dump())
        return directory

    def erase_templates(self, engine: Engine, template_ids: Sequence[int]) -> ErasureResult:
        """Erase templates (already deleted from the database) from every gallery:
        those held in memory and, with a ``cache_dir``, every file saved under it.

        A held gallery that lost templates (or whose saved copy still holds them) is
        saved again at once; a saved gallery that is not held (a model this process
        has not loaded) is opened, cleared of the templates and saved, and its
        ``db-state.json`` dropped so the next start rebuilds it from the database.
        Finally every saved generation that still lists one of the templates (an older
        generation kept as a fallback) is deleted, so no file under ``cache_dir``
        keeps the erased vectors."""
        ids = np.unique(np.asarray([int(t) for t in template_ids], dtype=np.int64))
        if len(ids) == 0:
            return ErasureResult(removed=0, saved=[])
        held = self._snapshot()
        removed = 0
        touched: set[GalleryKey] = set()
        for key, gallery in sorted(held.items()):
            n = gallery.remove(ids.tolist(), missing_ok=True)
            if n:
                removed += n
                touched.add(key)
        saved: list[Path] = []
        if self.cache_dir is None or not self.cache_dir.is_dir():
            return ErasureResult(removed=removed, saved=saved)
        held_dirs = {gallery_dir(self.cache_dir, c, m).resolve(): (c, m) for c, m in held}
        directories = sorted(d for d in self.cache_dir.glob("*/*") if d.is_dir())
        for directory in directories:
            holders = _generations_holding(directory, ids)
            held_key = held_dirs.get(directory.resolve())
            if held_key is not None:
                if held_key in touched or holders:
                    category, model_id = held_key
                    saved.append(self._save_one(engine, category, model_id, held[held_key]))
                continue
            current = _current_or_none(directory)
            if current is None or current not in holders:
                continue
            try:
                stored = Gallery.load(directory, policy=self.policy)
            except (OSError, MatchingError) as exc:
                logger.warning("saved gallery %s unusable (%s); deleting it", directory, exc)
                shutil.rmtree(directory, ignore_errors=True)
                continue
            removed += stored.remove(ids.tolist(), missing_ok=True)
            (directory / DB_STATE_FILE).unlink(missing_ok=True)
            stored.save(directory)
            saved.append(directory)
        for directory in directories:
            current = _current_or_none(directory)
            for number in _generations_holding(directory, ids):
                if number == current:
                    logger.error("saved gallery %s still holds erased templates", directory)
                    continue
                shutil.rmtree(generation_dir(directory, number), ignore_errors=True)
        logger.info("erased %d templates from the galleries; %d saved again", removed, len(saved))
        return ErasureResult(removed=removed, saved=saved)

    def _snapshot(self) -> dict[GalleryKey, Gallery]:
        with self._lock:
            return dict(self._galleries)


def _current_or_none(directory: Path) -> int | None:
    try:
        return current_generation(directory)
    except MatchingError:
        return None


def _generations_holding(directory: Path, ids: npt.NDArray[np.int64]) -> list[int]:
    """The saved generations of a gallery directory whose slots list any of ``ids``
    (an unreadable slots file counts as holding them)."""
    out: list[int] = []
    for number in generations(directory):
        slots_file = generation_dir(directory, number) / "slots.i64"
        try:
            slots = np.fromfile(slots_file, dtype="<i8")
        except OSError:
            continue
        if len(slots) % 2 or np.isin(slots.reshape(-1, 2)[:, 0], ids).any():
            out.append(number)
    return out


def _write_json(path: Path, content: dict[str, object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(content, sort_keys=True) + "\n")
    os.replace(tmp, path)
