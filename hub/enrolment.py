"""Enrolment: photos of a person to face templates, and the checks on the way.

An upload is checked as a whole before any face work (:func:`check_upload`): its size
(:data:`MAX_PHOTO_BYTES`), its declared content type and the format its bytes actually
are (:data:`ACCEPTED_FORMATS`); a refusal names the file and the reason. Each photo is
then decoded with :func:`models.images.load_rgb` (orientation, colour modes, the pixel
cap against decompression bombs), and :func:`process_photo` finds its face, measures it
with :mod:`models.quality`, aligns and embeds it. A photo with no face, more than one
face, or a face that fails the quality gate gives its reasons and no template; the
others of the same upload still enrol (:func:`store_templates`).

The API shares one :class:`~models.engine.FaceEngine` per app (built on first use, see
:func:`face_engine_for`) and, since an engine is not thread-safe, one lock per engine
(:func:`engine_lock`); the galleries are the app's :class:`~hub.galleries.GalleryService`
(:func:`galleries_for`).

Who may enrol or read whom depends on the person's category (:data:`WRITERS`,
:data:`READERS`): officers work supervised persons and watchlists, caseworkers missing
and found persons, analysts read the former, admins everything.
"""

from __future__ import annotations

import io
import logging
import tempfile
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image
from sqlalchemy import Engine

from hub import audit
from hub.db.engine import write_session
from hub.db.models import FaceTemplate, Person
from hub.db.users import Role
from hub.galleries import GalleryService
from models.engine import EngineConfig, FaceEngine, build_engine
from models.errors import InvalidImage
from models.images import detect_large, load_rgb
from models.quality import QualityConfig, QualityReport, assess

__all__ = [
    "ACCEPTED_FORMATS",
    "HUB_ENGINE_CONFIG",
    "MAX_PHOTOS",
    "MAX_PHOTO_BYTES",
    "READERS",
    "WRITERS",
    "PhotoResult",
    "UploadRefused",
    "check_upload",
    "decode_photo",
    "engine_lock",
    "face_engine_for",
    "galleries_for",
    "may_read",
    "may_write",
    "process_photo",
    "readable_categories",
    "store_templates",
]

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]

MAX_PHOTO_BYTES = 10 * 2**20
"""Largest photo accepted (10 MiB): a full-resolution phone photo is 3-8 MiB."""

MAX_PHOTOS = 10
"""Photos per enrolment request."""

ACCEPTED_FORMATS: Mapping[str, frozenset[str]] = {
    "JPEG": frozenset({"image/jpeg", "image/jpg", "image/pjpeg"}),
    "PNG": frozenset({"image/png"}),
    "WEBP": frozenset({"image/webp"}),
    "BMP": frozenset({"image/bmp", "image/x-ms-bmp"}),
    "TIFF": frozenset({"image/tiff"}),
}
"""Image formats (Pillow's names) accepted, with the content types that declare them."""

HUB_ENGINE_CONFIG = EngineConfig(flip=True)
"""The hub's engine: dlib (works offline) with the mirror-image average that the
enrolment and accuracy harnesses use (see :class:`~models.engine.EngineConfig`)."""

CROP_JPEG_QUALITY = 90

_SUPERVISION = frozenset({"supervised", "watchlist"})
_REUNION = frozenset({"missing", "found"})
_ALL = _SUPERVISION | _REUNION

WRITERS: Mapping[Role, frozenset[str]] = {
    Role.admin: _ALL,
    Role.officer: _SUPERVISION,
    Role.caseworker: _REUNION,
}
"""Person categories each role may create, enrol and delete."""

READERS: Mapping[Role, frozenset[str]] = {
    Role.admin: _ALL,
    Role.officer: _SUPERVISION,
    Role.analyst: _SUPERVISION,
    Role.caseworker: _REUNION,
}
"""Person categories each role may read and search."""


def may_write(role: Role, category: str) -> bool:
    return category in WRITERS.get(role, frozenset())


def may_read(role: Role, category: str) -> bool:
    return category in READERS.get(role, frozenset())


def readable_categories(role: Role) -> frozenset[str]:
    return READERS.get(role, frozenset())


# -- uploads ---------------------------------------------------------------------------


class UploadRefused(Exception):
    """An upload refused as a whole: ``status_code`` 413 (too large) or 415 (type)."""

    def __init__(self, status_code: int, reason: str) -> None:
        super().__init__(reason)
        self.status_code = status_code
        self.reason = reason


class _DecompressionBomb(Exception):
    """Pillow refused the header: far more pixels than it will decode."""


def _sniff(data: bytes) -> str | None:
    """The format Pillow recognises in ``data`` (header only), or None; raises
    :class:`_DecompressionBomb` when Pillow's own size guard refuses the header."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.format
    except Image.DecompressionBombError as exc:
        raise _DecompressionBomb(str(exc)) from None
    except Exception:  # anything unrecognisable is simply "not an image"
        return None


def check_upload(filename: str, content_type: str | None, data: bytes) -> str:
    """Check one uploaded photo; returns its format or raises :class:`UploadRefused`."""
    if len(data) > MAX_PHOTO_BYTES:
        raise UploadRefused(
            413, f"{filename}: larger than the limit of {MAX_PHOTO_BYTES // 2**20} MiB"
        )
    declared = (content_type or "").split(";")[0].strip().lower()
    accepted = sorted(set().union(*ACCEPTED_FORMATS.values()))
    if declared not in accepted:
        raise UploadRefused(
            415,
            f"{filename}: content type {declared or 'missing'!r} is not accepted "
            f"({', '.join(accepted)})",
        )
    try:
        actual = _sniff(data)
    except _DecompressionBomb:
        # 415 like any other refused content: the bytes are within the size limit.
        raise UploadRefused(415, f"{filename}: image too large (decompression bomb)") from None
    if actual is None or actual not in ACCEPTED_FORMATS:
        raise UploadRefused(
            415,
            f"{filename}: the data is {'not an image' if actual is None else actual}, "
            f"not one of {', '.join(ACCEPTED_FORMATS)}",
        )
    if declared not in ACCEPTED_FORMATS[actual]:
        raise UploadRefused(415, f"{filename}: declared {declared} but the data is {actual}")
    return actual


def decode_photo(filename: str, data: bytes) -> U8:
    """Decode uploaded bytes as :func:`models.images.load_rgb` does a file; raises
    :class:`~models.errors.InvalidImage` whose message names ``filename``."""
    with tempfile.TemporaryDirectory(prefix="lantern-upload-") as tmp:
        path = Path(tmp) / "photo"
        path.write_bytes(data)
        try:
            return load_rgb(path)
        except InvalidImage as exc:
            raise InvalidImage(str(exc).replace(str(path), filename)) from None


# -- faces -----------------------------------------------------------------------------


@dataclass
class PhotoResult:
    """What became of one photo."""

    filename: str
    faces: int = 0
    quality: QualityReport | None = None
    reasons: list[str] = field(default_factory=list)
    vector: F32 | None = None
    crop_jpeg: bytes | None = None
    template_id: int | None = None

    @property
    def accepted(self) -> bool:
        return self.vector is not None and not self.reasons


def chip_jpeg(chip: U8) -> bytes:
    """An aligned crop as JPEG."""
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(chip)).save(out, format="JPEG", quality=CROP_JPEG_QUALITY)
    return out.getvalue()


def process_photo(
    engine: FaceEngine,
    filename: str,
    image: U8,
    *,
    quality: QualityConfig | None = None,
    single_face: bool = True,
) -> PhotoResult:
    """Detect, gate, align and embed the face of one photo. With ``single_face`` a
    photo of several faces is refused; otherwise the largest face is used. The caller
    holds :func:`engine_lock`."""
    result = PhotoResult(filename=filename)
    faces = detect_large(engine, image)
    result.faces = len(faces)
    if not faces:
        result.reasons.append("no face found")
        return result
    if len(faces) > 1:
        if single_face:
            result.reasons.append(
                f"{len(faces)} faces found; the photo must show one person's face only"
            )
            return result
        faces = [max(faces, key=lambda f: f.width * f.height)]
    chips = engine.align(image, faces[:1])
    report = assess(faces[0], chips[0], quality)
    result.quality = report
    if not report.passed:
        result.reasons.extend(report.reasons)
        return result
    result.vector = engine.embed_aligned(chips)[0]
    result.crop_jpeg = chip_jpeg(chips[0])
    return result


def store_templates(
    db: Engine,
    galleries: GalleryService,
    person_id: int,
    results: Sequence[PhotoResult],
    *,
    model_id: str,
    actor: str,
    role: str,
) -> Person | None:
    """Store the accepted photos' templates of ``person_id``, audit the enrolment and
    add the templates to the person's gallery. Sets each stored result's
    ``template_id``. Returns None (and stores nothing) when the person is gone."""
    accepted = [r for r in results if r.accepted and r.vector is not None]
    with write_session(db) as session:
        person = session.get(Person, person_id)
        if person is None:
            return None
        rows: list[FaceTemplate] = []
        for r in accepted:
            assert r.vector is not None
            vector = np.asarray(r.vector, dtype="<f4")
            row = FaceTemplate(
                person_id=person_id,
                model_id=model_id,
                dim=int(vector.shape[0]),
                embedding=vector.tobytes(),
                quality=r.quality.sharpness if r.quality is not None else None,
                source=r.filename[:200],
                crop_jpeg=r.crop_jpeg,
            )
            session.add(row)
            rows.append(row)
        session.flush()
        for r, row in zip(accepted, rows, strict=True):
            r.template_id = row.id
        audit.append(
            session,
            actor=actor,
            role=role,
            action="person.enrol",
            purpose="enrolment",
            case_id=person.case_id,
            target=f"person:{person_id}",
            result=f"{len(rows)} of {len(results)} photos enrolled"
            + (f"; templates {','.join(str(r.id) for r in rows)}" if rows else ""),
        )
        category = person.category
    if accepted:
        try:
            galleries.add(
                category,
                model_id,
                [r.template_id for r in accepted if r.template_id is not None],
                [person_id] * len(accepted),
                np.stack([r.vector for r in accepted if r.vector is not None]),
            )
        except Exception:  # the database holds the templates; a rebuild picks them up
            logger.exception(
                "templates of person %d stored but not added to the gallery", person_id
            )
    return person


# -- per-app shared objects ------------------------------------------------------------

_STATE_LOCK = threading.Lock()
_ENGINE_LOCKS: weakref.WeakKeyDictionary[FaceEngine, threading.Lock] = weakref.WeakKeyDictionary()


def face_engine_for(state: Any) -> FaceEngine:
    """The app's face engine (``state.face_engine``), built with
    :data:`HUB_ENGINE_CONFIG` and kept there on first use."""
    with _STATE_LOCK:
        engine: FaceEngine | None = getattr(state, "face_engine", None)
        if engine is None:
            engine = build_engine(HUB_ENGINE_CONFIG)
            state.face_engine = engine
        return engine


def engine_lock(engine: FaceEngine) -> threading.Lock:
    """The lock that serialises use of ``engine`` (engines are not thread-safe)."""
    with _STATE_LOCK:
        lock = _ENGINE_LOCKS.get(engine)
        if lock is None:
            lock = threading.Lock()
            _ENGINE_LOCKS[engine] = lock
        return lock


def galleries_for(state: Any, db: Engine) -> GalleryService:
    """The app's galleries (``state.galleries``); loaded from the database on first use
    when the app was not given a service."""
    with _STATE_LOCK:
        service: GalleryService | None = getattr(state, "galleries", None)
        if service is None:
            service = GalleryService()
            service.load_from_db(db)
            state.galleries = service
        return service
