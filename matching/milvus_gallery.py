"""A gallery kept in a Milvus collection, with the contract of :class:`matching.gallery.Gallery`.

For a region whose gallery outgrows one machine: the vectors live in Milvus (a cluster,
or milvus-lite in a local file for tests and small sites) and this class gives them the
same interface, the same errors and the same answers as the FAISS gallery:

* L2-normalised float32 templates compared by inner product (the collection's metric
  is ``IP``). Template ids are the INT64 primary key, person ids a scalar field.
* Scores are exact: whatever the index proposes, each candidate's score is recomputed
  here from its stored full-precision vector, and candidates are ranked by that score.
* Person-level ranking is the FAISS gallery's own code (best template per person, top
  ``k`` persons, widening the fetch until ``k`` persons are found; alert mode cuts at
  the threshold).
* Milvus does not refuse a repeated primary key, so ``add`` looks the ids up first and
  raises :class:`DuplicateTemplate` itself; ``remove`` likewise raises
  :class:`UnknownTemplate` for ids it does not hold.

Persistence is Milvus's: every write is durable once Milvus acknowledges it.
:meth:`MilvusGallery.save` flushes the collection (seals its growing segments) and
takes no path; :meth:`MilvusGallery.load` connects to the existing collection after
checking the metadata recorded in its properties (model, dimension, purpose).

Naming: the gallery is an *alias* ``<prefix>__<purpose>__<model>__<hash>`` pointing to
a physical collection ``<alias>__g<random>``. :meth:`MilvusGallery.rebuild` streams into
a fresh collection, switches the alias to it and drops the old one, so searches see the
old content until the new one is complete, and a failed rebuild leaves the old content.

Concurrency: within one process, searches run concurrently and an ``add``/``remove``
batch is atomic for them (the same reader/writer lock as the FAISS gallery). Between
processes Milvus gives no batch atomicity, and two processes adding the same template id
at the same moment could both pass the duplicate check: let one process (the hub) write.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pymilvus import DataType, MilvusClient

from matching.errors import (
    CorruptGallery,
    DuplicateTemplate,
    GalleryMismatch,
    UnknownTemplate,
)
from matching.gallery import (
    _FEW_QUERIES,
    Candidate,
    GalleryConfig,
    GalleryStats,
    Progress,
    SearchMode,
    _rank_few,
    _rank_many,
    candidates_from_arrays,
    check_model,
    search_args,
)
from matching.idmap import IdMap
from matching.policy import IndexPolicy
from matching.rwlock import RWLock
from matching.validation import check_batch, check_ids, check_vectors

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

FORMAT = "lantern-gallery/1"
META_KEY = "lantern.gallery"
MAX_TOPK = 16_384  # Milvus refuses a larger limit (offset + limit) on one search
_BATCH = 2_000  # rows per insert / ids per look-up
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

ScalarParam = int | float | str


class MilvusSettings(BaseModel):
    """Where the gallery's collections live and how they are indexed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["milvus"] = "milvus"
    uri: str = Field(
        "./galleries.db",
        min_length=1,
        description="A milvus-lite file path (e.g. ./galleries.db) or a server URL "
        "(http://host:19530, https://... for TLS)",
    )
    token: SecretStr | None = Field(
        None, description="'user:password' or an API key, when the server requires one"
    )
    db_name: str = Field("", description="Milvus database; empty for the default one")
    collection_prefix: str = Field(
        "lantern",
        min_length=1,
        max_length=64,
        pattern=_NAME.pattern,
        description="First part of every collection name, to share a cluster safely",
    )
    index_type: str = Field(
        "FLAT",
        pattern=r"^[A-Z][A-Z0-9_]*$",
        description="Milvus index type: FLAT, IVF_FLAT, IVF_SQ8, IVF_PQ, HNSW, DISKANN ...",
    )
    index_params: dict[str, ScalarParam] = Field(
        default_factory=dict, description="Build parameters, e.g. {'nlist': 1024} or {'M': 16}"
    )
    search_params: dict[str, ScalarParam] = Field(
        default_factory=dict, description="Search parameters, e.g. {'nprobe': 32} or {'ef': 128}"
    )
    rerank: int = Field(
        0,
        ge=0,
        le=MAX_TOPK,
        description="Candidates taken from the index per query before the exact re-rank "
        "(at least twice k); raise it for compressed indexes (IVF_SQ8, IVF_PQ)",
    )
    consistency_level: Literal["Strong", "Bounded", "Session", "Eventually"] = Field(
        "Strong",
        description="Strong: a search sees every acknowledged write (what the contract needs)",
    )
    timeout: float | None = Field(30.0, gt=0, description="Seconds per Milvus call")


def connect(settings: MilvusSettings) -> Any:
    """A client for ``settings`` (milvus-lite starts its local server for a file uri)."""
    kwargs: dict[str, Any] = {"uri": settings.uri}
    if settings.token is not None:
        kwargs["token"] = settings.token.get_secret_value()
    if settings.db_name:
        kwargs["db_name"] = settings.db_name
    if settings.timeout is not None:
        kwargs["timeout"] = settings.timeout
    return MilvusClient(**kwargs)


def collection_alias(prefix: str, purpose: str, model_id: str) -> str:
    """The alias naming the gallery of ``(purpose, model_id)``: readable and unique."""
    digest = hashlib.sha256(f"{purpose}\0{model_id}".encode()).hexdigest()[:10]
    model = re.sub(r"[^A-Za-z0-9_]", "_", model_id)[:64]
    return f"{prefix}__{purpose.replace('-', '_')}__{model}__{digest}"


def _index_kind(index_type: str) -> str:
    kind = index_type.lower()
    return "ivf" if kind.startswith("ivf") else kind


def _bytes_per_vector(index_type: str, params: dict[str, Any], dim: int) -> float:
    """Rough size of one vector in the index (for stats; Milvus reports no sizes)."""
    kind = index_type.upper()
    if kind == "IVF_SQ8":
        return float(dim)
    if kind == "IVF_PQ":
        return float(int(params.get("m", dim // 2)) * int(params.get("nbits", 8))) / 8.0
    if kind == "HNSW":
        return 4.0 * dim + 8.0 * int(params.get("M", 16))
    return 4.0 * dim


class MilvusGallery:
    """A searchable set of templates in Milvus; see the module docstring."""

    def __init__(
        self,
        config: GalleryConfig,
        settings: MilvusSettings,
        *,
        client: Any = None,
    ) -> None:
        """Open the gallery's collection, creating it when absent.

        An existing collection must have been made for the same model, dimension and
        purpose (:class:`GalleryMismatch` otherwise); its content is kept.
        """
        self.config = config
        self.settings = settings
        self.path = None  # no local files: the content lives in Milvus
        self._client = client if client is not None else connect(settings)
        self._owns_client = client is None
        self._lock = RWLock()
        self._mutate = threading.Lock()
        self.alias = collection_alias(settings.collection_prefix, config.purpose, config.model_id)
        if self._client.has_collection(self.alias, timeout=settings.timeout):
            self._collection = self._resolve()
            self._check_meta(self._read_meta(), config.model_id, config.dim, config.purpose)
            self._client.load_collection(self._collection, timeout=settings.timeout)
        else:
            self._collection = self._create()
            self._client.create_alias(self._collection, self.alias, timeout=settings.timeout)
            logger.info("created Milvus gallery %s (%s)", self.alias, self._collection)

    # -- collections ------------------------------------------------------------
    def _create(self) -> str:
        """A new empty, loaded collection (not yet under the alias); returns its name."""
        name = f"{self.alias}__g{uuid.uuid4().hex[:12]}"
        client, timeout = self._client, self.settings.timeout
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("template_id", DataType.INT64, is_primary=True)
        schema.add_field("person_id", DataType.INT64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.config.dim)
        meta = {
            "format": FORMAT,
            "model_id": self.config.model_id,
            "dim": self.config.dim,
            "purpose": self.config.purpose,
        }
        client.create_collection(
            name,
            schema=schema,
            consistency_level=self.settings.consistency_level,
            properties={META_KEY: json.dumps(meta, sort_keys=True)},
            timeout=timeout,
        )
        try:
            index = client.prepare_index_params()
            index.add_index(
                field_name="vector",
                index_type=self.settings.index_type,
                metric_type="IP",
                params=dict(self.settings.index_params),
            )
            # An index on an empty collection is ready at once: do not poll for it.
            client.create_index(name, index, sync=False, timeout=timeout)
            client.load_collection(name, timeout=timeout)
        except BaseException:
            client.drop_collection(name, timeout=timeout)
            raise
        return name

    def _resolve(self) -> str:
        described = self._client.describe_alias(self.alias, timeout=self.settings.timeout)
        return str(described["collection_name"])

    def _read_meta(self) -> dict[str, Any]:
        info = self._client.describe_collection(self._collection, timeout=self.settings.timeout)
        raw = (info.get("properties") or {}).get(META_KEY)
        if raw is None:
            raise CorruptGallery(
                f"Milvus collection {self._collection}: no {META_KEY} property; "
                "not a collection made by this gallery"
            )
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise CorruptGallery(f"Milvus collection {self._collection}: bad {META_KEY}") from exc
        if not isinstance(meta, dict):
            raise CorruptGallery(f"Milvus collection {self._collection}: bad {META_KEY}")
        field_dim = next(
            (
                int((f.get("params") or {}).get("dim", -1))
                for f in info.get("fields", [])
                if f.get("name") == "vector"
            ),
            None,
        )
        if field_dim != meta.get("dim"):
            raise CorruptGallery(
                f"Milvus collection {self._collection}: vector field of dimension "
                f"{field_dim}, metadata says {meta.get('dim')}"
            )
        return meta

    def _check_meta(
        self, meta: dict[str, Any], model_id: str | None, dim: int | None, purpose: str | None
    ) -> None:
        where = f"Milvus collection {self._collection}"
        if meta.get("format") != FORMAT:
            raise GalleryMismatch(f"{where}: format {meta.get('format')!r}, expected {FORMAT!r}")
        if model_id is not None and meta.get("model_id") != model_id:
            raise GalleryMismatch(
                f"{where} holds templates of model {meta.get('model_id')!r}, not {model_id!r}"
            )
        if dim is not None and meta.get("dim") != dim:
            raise GalleryMismatch(f"{where} has dimension {meta.get('dim')}, not {dim}")
        if purpose is not None and meta.get("purpose") != purpose:
            raise GalleryMismatch(f"{where} is for {meta.get('purpose')!r}, not {purpose!r}")

    # -- interface shared with Gallery ----------------------------------------------
    @property
    def model_id(self) -> str:
        return self.config.model_id

    @property
    def dim(self) -> int:
        return self.config.dim

    def __len__(self) -> int:
        return self._count(self._collection)

    def _count(self, collection: str) -> int:
        rows = self._client.query(
            collection, filter="", output_fields=["count(*)"], timeout=self.settings.timeout
        )
        return int(rows[0]["count(*)"])

    def _present(self, collection: str, tids: I64) -> I64:
        """Those of ``tids`` that the collection holds."""
        found: list[int] = []
        for start in range(0, len(tids), _BATCH):
            part = tids[start : start + _BATCH].tolist()
            rows = self._client.query(
                collection,
                filter=f"template_id in {part}",
                output_fields=["template_id"],
                timeout=self.settings.timeout,
            )
            found.extend(int(r["template_id"]) for r in rows)
        return np.array(sorted(found), dtype=np.int64)

    def _insert(self, collection: str, tids: I64, pids: I64, vecs: F32) -> None:
        for start in range(0, len(tids), _BATCH):
            stop = start + _BATCH
            rows = [
                {"template_id": t, "person_id": p, "vector": v}
                for t, p, v in zip(
                    tids[start:stop].tolist(),
                    pids[start:stop].tolist(),
                    vecs[start:stop],
                    strict=True,
                )
            ]
            self._client.insert(collection, rows, timeout=self.settings.timeout)

    def add(
        self,
        template_ids: Sequence[int] | I64,
        person_ids: Sequence[int] | I64,
        vectors: npt.ArrayLike,
        *,
        model_id: str | None = None,
    ) -> None:
        """Add templates. The whole batch is validated first; nothing is added on error."""
        check_model(self.config, model_id)
        tids, pids, vecs = check_batch(template_ids, person_ids, vectors, self.config.dim)
        if len(vecs) == 0:
            return
        with self._mutate:
            present = self._present(self._collection, tids)
            if len(present):
                raise DuplicateTemplate(
                    f"template_ids already in the gallery: {present[:5].tolist()}"
                    + (f" and {len(present) - 5} more" if len(present) > 5 else "")
                )
            with self._lock.write():
                try:
                    self._insert(self._collection, tids, pids, vecs)
                except BaseException:
                    # A later chunk failed: take back the earlier ones, all or nothing.
                    self._client.delete(self._collection, ids=tids.tolist())
                    raise

    def remove(self, template_ids: Sequence[int] | I64, *, missing_ok: bool = False) -> int:
        """Remove templates by id (Milvus deletes their vectors); returns how many.

        Unknown ids raise :class:`UnknownTemplate` (nothing removed) unless ``missing_ok``.
        """
        tids = np.unique(check_ids(template_ids, what="template_ids"))
        if len(tids) == 0:
            return 0
        with self._mutate:
            present = self._present(self._collection, tids)
            absent = np.setdiff1d(tids, present)
            if len(absent) and not missing_ok:
                raise UnknownTemplate(f"template_ids not in the gallery: {absent[:5].tolist()}")
            if len(present) == 0:
                return 0
            with self._lock.write():
                for start in range(0, len(present), _BATCH):
                    part = present[start : start + _BATCH].tolist()
                    self._client.delete(self._collection, ids=part, timeout=self.settings.timeout)
            return int(len(present))

    def wait_for_index(self, timeout: float | None = None) -> bool:
        """Wait until Milvus has indexed every row; True when it has.

        Searches are correct meanwhile (Milvus searches unindexed rows exhaustively).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = self._client.describe_index(
                self._collection, "vector", timeout=self.settings.timeout
            )
            if int(info.get("pending_index_rows", 0)) == 0:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    # -- search -----------------------------------------------------------------------
    def search(
        self,
        vectors: npt.ArrayLike,
        k: int = 10,
        mode: SearchMode | str = SearchMode.INVESTIGATIVE,
        threshold: float | None = None,
        *,
        model_id: str | None = None,
    ) -> list[list[Candidate]]:
        """Per query, candidates ranked by exact score, one per person (as Gallery.search)."""
        persons, templates, scores = self.search_arrays(
            vectors, k, mode, threshold, model_id=model_id
        )
        return candidates_from_arrays(persons, templates, scores)

    def search_arrays(
        self,
        vectors: npt.ArrayLike,
        k: int = 10,
        mode: SearchMode | str = SearchMode.INVESTIGATIVE,
        threshold: float | None = None,
        *,
        model_id: str | None = None,
    ) -> tuple[I64, I64, F32]:
        """:meth:`search` as ``(person_ids, template_ids, scores)`` arrays of shape
        ``(n, k)``, padded with -1 / -1 / -inf."""
        check_model(self.config, model_id)
        k, cut = search_args(self.config, mode, k, threshold)
        queries = check_vectors(vectors, self.config.dim, what="queries")
        rank = _rank_few if len(queries) <= _FEW_QUERIES else _rank_many
        with self._lock.read():
            count = self._count(self._collection) if len(queries) else 0
            fetch = min(count, 2 * k, MAX_TOPK)
            while True:
                persons, tids, scores = self._candidates(queries, fetch, count)
                out_p, taken, deeper = rank(persons, scores, k, cut)
                if fetch >= min(count, MAX_TOPK) or not deeper:
                    break
                fetch = min(count, fetch * 4, MAX_TOPK)
            if deeper and fetch < count:
                logger.warning(
                    "gallery %s: fewer than %d persons among the best %d templates; "
                    "the answer may be short",
                    self.alias,
                    k,
                    MAX_TOPK,
                )
        got = taken >= 0
        cols = np.maximum(taken, 0)
        out_t = np.where(got, np.take_along_axis(tids, cols, 1), -1).astype(np.int64)
        out_s = np.where(got, np.take_along_axis(scores, cols, 1), np.float32(-np.inf))
        return out_p, out_t, out_s.astype(np.float32)

    def _candidates(self, queries: F32, fetch: int, count: int) -> tuple[I64, I64, F32]:
        """Best ``fetch`` templates per query, by exact score, best first: person ids,
        template ids and scores, padded with -1 / -1 / -inf."""
        n = len(queries)
        width = max(fetch, 1)
        persons = np.full((n, width), -1, dtype=np.int64)
        tids = np.full((n, width), -1, dtype=np.int64)
        scores = np.full((n, width), -np.inf, dtype=np.float32)
        if fetch == 0:
            return persons, tids, scores
        depth = min(max(fetch, self.settings.rerank), count, MAX_TOPK)
        hits = self._client.search(
            self._collection,
            data=[q for q in queries],
            limit=depth,
            output_fields=["person_id", "vector"],
            search_params={"metric_type": "IP", "params": dict(self.settings.search_params)},
            anns_field="vector",
            timeout=self.settings.timeout,
        )
        for i, row in enumerate(hits):
            if not row:
                continue
            t = np.array([h["id"] if "id" in h else h["template_id"] for h in row], np.int64)
            p = np.array([h["entity"]["person_id"] for h in row], dtype=np.int64)
            v = np.array([h["entity"]["vector"] for h in row], dtype=np.float32)
            s: F32 = v @ queries[i]  # exact scores from the stored vectors
            order = np.lexsort((t, -s))[:fetch]  # best first; ties by template id
            m = len(order)
            persons[i, :m], tids[i, :m], scores[i, :m] = p[order], t[order], s[order]
        return persons, tids, scores

    # -- bulk -----------------------------------------------------------------------------
    def rebuild(
        self,
        blocks: Iterable[tuple[Sequence[int] | I64, Sequence[int] | I64, npt.ArrayLike]],
        *,
        spill_dir: object = None,
        progress: Progress | None = None,
    ) -> int:
        """Replace the gallery's content with the templates streamed in ``blocks``.

        Blocks go straight into a new collection (``spill_dir`` is accepted for the
        interface and unused: nothing is kept locally); when the stream ends, the alias
        is switched to it and the old collection dropped. Searches use the old content
        until then; add/remove wait. On error the new collection is dropped and the old
        content stays. Returns the number of templates.
        """
        with self._mutate:
            fresh = self._create()
            try:
                seen = IdMap()
                rows = 0
                for template_ids, person_ids, vectors in blocks:
                    tids, pids, vecs = check_batch(template_ids, person_ids, vectors, self.dim)
                    dup = tids[seen.lookup(tids) >= 0]
                    if len(dup):
                        raise DuplicateTemplate(
                            f"template_ids repeated in the stream: {dup[:5].tolist()}"
                        )
                    seen.insert(tids, np.arange(rows, rows + len(tids), dtype=np.int64))
                    self._insert(fresh, tids, pids, vecs)
                    rows += len(tids)
                    if progress is not None:
                        progress(len(tids))
                self._client.flush(fresh, timeout=self.settings.timeout)
            except BaseException:
                self._client.drop_collection(fresh, timeout=self.settings.timeout)
                raise
            old = self._collection
            with self._lock.write():
                self._client.alter_alias(fresh, self.alias, timeout=self.settings.timeout)
                self._collection = fresh
            self._client.drop_collection(old, timeout=self.settings.timeout)
            logger.info("Milvus gallery %s rebuilt: %d templates in %s", self.alias, rows, fresh)
            return rows

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: object = None) -> str:
        """Flush the collection (seal its segments in Milvus's storage); returns its alias.

        Every acknowledged write is already durable in Milvus; this only makes it
        compact and indexed. A Milvus gallery has no files, so ``path`` must be None.
        """
        if path is not None:
            raise ValueError("a Milvus gallery lives in its collection; save() takes no path")
        with self._mutate:
            self._client.flush(self._collection, timeout=self.settings.timeout)
        return self.alias

    @classmethod
    def load(
        cls,
        settings: MilvusSettings,
        purpose: str,
        model_id: str,
        *,
        expect_dim: int | None = None,
        policy: IndexPolicy | None = None,
        alert_threshold: float | None = None,
        client: Any = None,
    ) -> MilvusGallery:
        """Connect to the existing gallery of ``(purpose, model_id)``.

        :class:`CorruptGallery` when there is none or its metadata is unreadable,
        :class:`GalleryMismatch` when it was made for another model or dimension.
        """
        client = client if client is not None else connect(settings)
        alias = collection_alias(settings.collection_prefix, purpose, model_id)
        if not client.has_collection(alias, timeout=settings.timeout):
            raise CorruptGallery(f"no Milvus collection {alias} at {settings.uri}")
        collection = str(client.describe_alias(alias, timeout=settings.timeout)["collection_name"])
        probe = cls.__new__(cls)
        probe._client, probe.settings, probe._collection = client, settings, collection
        meta = probe._read_meta()
        probe._check_meta(meta, model_id, expect_dim, purpose)
        config = GalleryConfig(
            model_id=model_id,
            dim=int(meta["dim"]),
            purpose=purpose,
            alert_threshold=alert_threshold,
            policy=policy or IndexPolicy(),
        )
        return cls(config, settings, client=client)

    def drop(self) -> None:
        """Delete the gallery from Milvus: its collection and alias (for erasure and tests)."""
        with self._mutate, self._lock.write():
            self._client.drop_alias(self.alias, timeout=self.settings.timeout)
            self._client.drop_collection(self._collection, timeout=self.settings.timeout)

    def close(self) -> None:
        """Close the client when this gallery opened it."""
        if self._owns_client:
            self._client.close()

    # -- introspection ------------------------------------------------------------------
    def stats(self) -> GalleryStats:
        """As Gallery.stats. ``slots`` equals ``count`` (Milvus compacts removed rows
        itself); index and resident sizes are estimates of what the Milvus query nodes
        hold; nothing is mapped locally."""
        with self._lock.read():
            collection = self._collection
            count = self._count(collection)
            persons: set[int] = set()
            iterator = self._client.query_iterator(
                collection, batch_size=_BATCH, filter="", output_fields=["person_id"]
            )
            try:
                while batch := iterator.next():
                    persons.update(int(r["person_id"]) for r in batch)
            finally:
                iterator.close()
            info = self._client.describe_index(collection, "vector", timeout=self.settings.timeout)
        index_type = str(info.get("index_type", self.settings.index_type))
        params = {k: v for k, v in info.items() if k in ("nlist", "m", "nbits", "M")}
        params = params or dict(self.settings.index_params)
        idx_bytes = int(count * (_bytes_per_vector(index_type, params, self.dim) + 8))
        described = ", ".join(f"{k}={v}" for k, v in sorted(params.items()))
        return GalleryStats(
            model_id=self.config.model_id,
            dim=self.config.dim,
            purpose=self.config.purpose,
            count=count,
            persons=len(persons),
            slots=count,
            index=f"Milvus {index_type}({described}) in {collection}",
            index_kind=_index_kind(index_type),
            rebuilding=int(info.get("pending_index_rows", 0)) > 0,
            index_bytes=idx_bytes,
            resident_bytes=idx_bytes + 16 * count,
            mapped_bytes=0,
            path=None,
        )
