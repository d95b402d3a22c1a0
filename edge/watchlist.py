"""The offline watchlist: a small gallery the hub pushes to a camera, searched on the
device so a hit raises an alarm even while the link to the hub is down.

The file
    One JSON object (UTF-8), :class:`WatchlistDocument`::

        {"format": "lantern.watchlist/1", "version": 7, "model_id": "dlib-resnet-v1",
         "dim": 128, "threshold": 0.93, "created_at": "2025-01-01T00:00:00Z",
         "entries": [{"person_ref": "wl-0042", "embedding": "<base64 float32>"}, ...],
         "sha256": "<hex>", "kid": "hub-1", "sig": "<base64 Ed25519>"}

    ``person_ref`` is the hub's opaque reference to a watchlist person (no name: the
    camera does not need one, and a stolen camera should not give one away); a person
    may have several entries. Embeddings are base64 of little-endian float32,
    L2-normalised, as in sightings. ``sha256`` is the SHA-256 of the canonical JSON
    (:func:`devices.protocol.canonical_json`) of the document without ``sha256``,
    ``kid`` and ``sig``: it catches a damaged or truncated file, and is what a
    ``cmd/sync_watchlist`` names. ``sig``, when present, is an Ed25519 signature by
    the hub's key ``kid`` over ``b"lantern-watchlist/1\\n"`` followed by those same
    canonical bytes; a device given the hub's public keys refuses an unsigned or
    wrongly signed file. Build files with :func:`build_document` and
    :func:`write_document` (the hub's side; until the format moves to ``devices``, the
    hub needs a copy of these few lines, as edge and hub never import each other).

Refusals
    Loading checks, in order: the file's size, JSON (duplicate keys, NaN refused), the
    model, the hash, the signature, the ``model_id`` (it must equal the engine's:
    vectors of different models are never compared) and the dimension, then every
    vector. Each failure is a :class:`WatchlistError` (``WatchlistMismatch`` for a
    model or dimension that is not the engine's) whose message says what is wrong.

Matching
    :class:`Watchlist` holds the entries in a :class:`matching.Gallery` and searches
    it in alert mode at the file's ``threshold``: :meth:`Watchlist.match` gives the
    best person at or above it, or None. A hit is a *candidate* for a person to
    review, never an identification; :func:`hit_alarm` words the ``watchlist.hit``
    alarm so.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from devices.protocol import (
    AlarmBody,
    ProtocolError,
    canonical_json,
    decode_embedding,
    encode_embedding,
    loads_object,
)
from matching import Gallery, GalleryConfig, MatchingError, SearchMode

__all__ = [
    "MAX_FILE_BYTES",
    "SIGNATURE_CONTEXT",
    "WATCHLIST_FORMAT",
    "Watchlist",
    "WatchlistDocument",
    "WatchlistEntry",
    "WatchlistError",
    "WatchlistHit",
    "WatchlistMismatch",
    "build_document",
    "document_bytes",
    "hit_alarm",
    "load_watchlist",
    "write_document",
]

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]

WATCHLIST_FORMAT = "lantern.watchlist/1"
SIGNATURE_CONTEXT = b"lantern-watchlist/1\n"
"""Prefix of the signed bytes, so a hub key's watchlist signature means nothing else."""

MAX_FILE_BYTES = 64 * 1024 * 1024
"""Largest watchlist file read: 100,000 templates of 512-d fit with room to spare."""

_REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
_KID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
_SIG_RE = re.compile(r"[A-Za-z0-9+/]{85}[AQgw]==")
_UNHASHED = frozenset({"sha256", "kid", "sig"})


class WatchlistError(ValueError):
    """A watchlist file that cannot be used; the message says why."""


class WatchlistMismatch(WatchlistError):
    """A watchlist made for another embedding model (or dimension) than the engine's."""


class WatchlistEntry(BaseModel):
    """One template of one watchlist person."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    person_ref: str = Field(
        pattern=_REF_PATTERN, description="The hub's opaque reference to the person"
    )
    embedding: str = Field(
        max_length=(4096 * 4 + 2) // 3 * 4,
        description="Base64 of the L2-normalised vector as little-endian float32",
    )


class WatchlistDocument(BaseModel):
    """A watchlist file as the hub writes it (see the module notes)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    format: Literal["lantern.watchlist/1"] = Field(description="File format and version")
    version: int = Field(ge=0, le=2**63 - 1, description="Increases with every new list")
    model_id: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$",
        description="Embedding model of every vector; must equal the camera engine's",
    )
    dim: int = Field(ge=2, le=4096, description="Dimension of every vector")
    threshold: float = Field(
        ge=-1.0, le=1.0, description="Alert threshold: least cosine score of a hit"
    )
    created_at: AwareDatetime | None = Field(
        None, strict=False, description="When the hub made it (RFC 3339)"
    )
    entries: list[WatchlistEntry] = Field(description="Templates; several per person allowed")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="See the module notes")
    kid: str | None = Field(None, pattern=_KID_PATTERN, description="Signing key id")
    sig: str | None = Field(None, description="Base64 Ed25519 signature")


def _content(doc: WatchlistDocument) -> bytes:
    """The canonical bytes that are hashed and signed."""
    return canonical_json(doc.model_dump(mode="json", exclude=set(_UNHASHED), exclude_none=True))


def document_bytes(doc: WatchlistDocument) -> bytes:
    """The file's bytes: the canonical JSON of the whole document."""
    return canonical_json(doc.model_dump(mode="json", exclude_none=True))


def build_document(
    *,
    model_id: str,
    entries: Sequence[tuple[str, npt.ArrayLike]],
    threshold: float,
    version: int,
    created_at: datetime | None = None,
    private_key: Ed25519PrivateKey | None = None,
    kid: str | None = None,
) -> WatchlistDocument:
    """A watchlist of ``(person_ref, vector)`` entries, hashed, and signed when a
    ``private_key`` (with its ``kid``) is given. Vectors are L2-normalised here."""
    if (private_key is None) != (kid is None):
        raise ValueError("private_key and kid go together")
    if not entries:
        raise ValueError("a watchlist needs at least one entry")
    vectors = [np.asarray(v, dtype=np.float64).ravel() for _, v in entries]
    dims = {len(v) for v in vectors}
    if len(dims) > 1:
        raise ValueError(f"entries have different dimensions: {sorted(dims)}")
    dim = dims.pop()
    encoded = [
        WatchlistEntry(
            person_ref=ref, embedding=encode_embedding(v / max(float(np.linalg.norm(v)), 1e-12))
        )
        for (ref, _), v in zip(entries, vectors, strict=True)
    ]
    draft = WatchlistDocument(
        format="lantern.watchlist/1",
        version=version,
        model_id=model_id,
        dim=dim,
        threshold=threshold,
        created_at=created_at or datetime.now(UTC),
        entries=encoded,
        sha256="0" * 64,
    )
    content = _content(draft)
    signed: dict[str, str] = {}
    if private_key is not None and kid is not None:
        sig = private_key.sign(SIGNATURE_CONTEXT + content)
        signed = {"kid": kid, "sig": base64.b64encode(sig).decode("ascii")}
    return draft.model_copy(update={"sha256": hashlib.sha256(content).hexdigest(), **signed})


def write_document(path: Path, doc: WatchlistDocument) -> Path:
    """Write ``doc`` to ``path`` atomically (a temporary file renamed over it), so a
    device reading while the hub's push lands sees the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(document_bytes(doc))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass(frozen=True)
class WatchlistHit:
    """The best watchlist person at or above the threshold: a candidate, not an identity."""

    person_ref: str
    score: float
    threshold: float
    version: int


class Watchlist:
    """A verified watchlist in a searchable gallery. Searches are thread-safe."""

    def __init__(self, doc: WatchlistDocument, vectors: F32) -> None:
        self.document = doc
        self.refs = sorted({e.person_ref for e in doc.entries})
        person_index = {ref: i for i, ref in enumerate(self.refs)}
        self._gallery = Gallery(
            GalleryConfig(
                model_id=doc.model_id,
                dim=doc.dim,
                purpose="watchlist",
                alert_threshold=doc.threshold,
            )
        )
        try:
            self._gallery.add(
                np.arange(len(vectors), dtype=np.int64),
                np.array([person_index[e.person_ref] for e in doc.entries], dtype=np.int64),
                vectors,
                model_id=doc.model_id,
            )
        except MatchingError as exc:
            raise WatchlistError(f"watchlist v{doc.version}: {exc}") from exc

    @property
    def model_id(self) -> str:
        return self.document.model_id

    @property
    def version(self) -> int:
        return self.document.version

    @property
    def threshold(self) -> float:
        return self.document.threshold

    @property
    def sha256(self) -> str:
        return self.document.sha256

    def __len__(self) -> int:
        return len(self.document.entries)

    def match(self, vector: npt.ArrayLike, *, model_id: str) -> WatchlistHit | None:
        """The best person scoring at least the threshold against ``vector`` (an
        L2-normalised embedding of ``model_id``, which must be the watchlist's)."""
        if model_id != self.model_id:
            raise WatchlistMismatch(
                f"a {model_id} vector cannot be searched in a {self.model_id} watchlist"
            )
        persons, _, scores = self._gallery.search_arrays(
            np.asarray(vector, dtype=np.float32).reshape(1, -1),
            k=1,
            mode=SearchMode.ALERT,
            model_id=model_id,
        )
        if persons[0, 0] < 0:
            return None
        return WatchlistHit(
            person_ref=self.refs[int(persons[0, 0])],
            score=float(scores[0, 0]),
            threshold=self.threshold,
            version=self.version,
        )


def _fail(path: Path, message: str) -> WatchlistError:
    return WatchlistError(f"{path}: {message}")


def load_watchlist(
    path: Path,
    *,
    model_id: str,
    dim: int | None = None,
    max_entries: int | None = None,
    expected_sha256: str | None = None,
    public_keys: Mapping[str, Ed25519PublicKey] | None = None,
) -> Watchlist:
    """Read, verify and index a watchlist file for an engine of ``model_id`` (and
    ``dim``, when given).

    ``max_entries`` is the profile's ``offline_watchlist.max_entries``;
    ``expected_sha256`` the hash a ``cmd/sync_watchlist`` named; with
    ``public_keys`` (the hub's, by key id) the file must carry a valid signature by
    one of them. Raises :class:`WatchlistError` (see the module notes).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise _fail(path, f"{size:,} bytes is over the limit of {MAX_FILE_BYTES:,}")
        raw = path.read_bytes()
    except OSError as exc:
        raise _fail(path, f"cannot be read ({exc.strerror or exc})") from exc
    try:
        data = loads_object(raw)
    except ProtocolError as exc:
        raise _fail(path, f"not a watchlist: {exc.reason}") from None
    if data.get("format") != WATCHLIST_FORMAT:
        raise _fail(path, f"format {data.get('format')!r} is not {WATCHLIST_FORMAT!r}")
    try:
        doc = WatchlistDocument.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise _fail(path, f"invalid: {where}: {first['msg']}") from None

    content = _content(doc)
    actual = hashlib.sha256(content).hexdigest()
    if actual != doc.sha256:
        raise _fail(
            path,
            f"sha256 {doc.sha256[:12]}... does not match its content "
            f"({actual[:12]}...): damaged or altered",
        )
    if expected_sha256 is not None and expected_sha256 != doc.sha256:
        raise _fail(
            path,
            f"sha256 {doc.sha256[:12]}... is not the expected "
            f"{expected_sha256[:12]}... (version {doc.version})",
        )
    if public_keys is not None:
        _verify_signature(path, doc, content, public_keys)
    elif doc.sig is not None:
        logger.info("%s: signed by %s, not verified (no hub keys configured)", path, doc.kid)

    if doc.model_id != model_id:
        raise WatchlistMismatch(
            f"{path}: watchlist v{doc.version} holds {doc.model_id} templates but this "
            f"camera embeds with {model_id}; vectors of different models are never "
            "compared: the hub must send a watchlist re-embedded with this model"
        )
    if dim is not None and doc.dim != dim:
        raise WatchlistMismatch(f"{path}: dimension {doc.dim} is not the engine's {dim}")
    if max_entries is not None and len(doc.entries) > max_entries:
        raise _fail(
            path,
            f"{len(doc.entries):,} entries is over this camera's max_entries of {max_entries:,}",
        )
    if not doc.entries:
        raise _fail(path, "no entries")

    vectors = np.empty((len(doc.entries), doc.dim), dtype=np.float32)
    for i, entry in enumerate(doc.entries):
        try:
            vectors[i] = decode_embedding(entry.embedding, doc.dim)
        except ProtocolError as exc:
            raise _fail(path, f"entries[{i}] ({entry.person_ref}): {exc.reason}") from None
    watchlist = Watchlist(doc, vectors)
    logger.info(
        "watchlist v%d loaded from %s: %d templates of %d persons, %s, threshold %.3f",
        doc.version,
        path,
        len(doc.entries),
        len(watchlist.refs),
        doc.model_id,
        doc.threshold,
    )
    return watchlist


def _verify_signature(
    path: Path,
    doc: WatchlistDocument,
    content: bytes,
    public_keys: Mapping[str, Ed25519PublicKey],
) -> None:
    if doc.sig is None or doc.kid is None:
        raise _fail(path, "not signed, and this camera accepts only signed watchlists")
    key = public_keys.get(doc.kid)
    if key is None:
        known = ", ".join(sorted(public_keys)) or "none"
        raise _fail(path, f"signed by unknown key {doc.kid!r} (known: {known})")
    if not _SIG_RE.fullmatch(doc.sig):
        raise _fail(path, "sig is not a base64 Ed25519 signature")
    try:
        key.verify(base64.b64decode(doc.sig, validate=True), SIGNATURE_CONTEXT + content)
    except (InvalidSignature, binascii.Error):
        raise _fail(path, f"signature by {doc.kid!r} does not verify") from None


def hit_alarm(hit: WatchlistHit, *, sighting_event_id: str) -> AlarmBody:
    """The ``watchlist.hit`` alarm for a hit on the sighting ``sighting_event_id``.

    The alarm names the candidate's reference and score in ``detail`` and points at
    the sighting (which carries the embedding and, where allowed, the crop) through
    ``related_event_id``; its ``alarm_id`` is derived from that sighting, so a replay
    of the same sighting's alarm is the same alarm.
    """
    detail = (
        f"candidate {hit.person_ref} score {hit.score:.3f} >= {hit.threshold:.3f} "
        f"(offline watchlist v{hit.version}); for human review, not an identification"
    )
    return AlarmBody(
        type="watchlist.hit",
        state="active",
        alarm_id=f"wl:{sighting_event_id}",
        related_event_id=sighting_event_id,
        detail=detail[:200],
    )
