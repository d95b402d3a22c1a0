"""Embed many image files, one subject per image, in worker processes: what the
accuracy harnesses (and enrolment of photo folders) are built on.

Per file: read, detect, choose the subject's face (nearest the centre, as in curated
datasets, or the largest), embed. Where the detector finds nothing it looks again on
a 2x enlarged copy (small faces); where that finds nothing too, the file's central
box is embedded if ``central_fallback`` is set (the subject of a curated, cropped
photo is there) and the file is reported as such. A file that cannot be read is
reported with its reason and the batch goes on.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.engine import EngineConfig, FaceEngine, build_engine
from models.errors import ModelError
from models.images import load_rgb, scale_face
from models.types import Face

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]

CENTRAL_BOX = (0.3, 0.3, 0.7, 0.7)
"""Fractions of width and height: the box embedded when no face is found."""


class Choice(StrEnum):
    CENTRE = "centre"
    LARGEST = "largest"


class Found(StrEnum):
    DETECTED = "detected"
    ENLARGED = "enlarged"
    """Found only on the 2x enlarged copy."""
    CENTRAL = "central"
    """No face found; the central box was embedded."""
    NONE = "none"
    """No face found and no fallback: no vector."""


@dataclass(frozen=True)
class Embedded:
    path: Path
    vector: F32 | None
    found: Found
    error: str | None = None
    """Why the file could not be used (unreadable), or None."""


def choose_face(faces: Sequence[Face], width: int, height: int, choice: Choice) -> Face | None:
    """The subject's face: nearest the image centre (by the nose) or the largest box."""
    if not faces:
        return None
    if choice is Choice.LARGEST:
        return max(faces, key=lambda f: f.width * f.height)
    centre = np.array([width / 2, height / 2], dtype=np.float32)
    return min(faces, key=lambda f: float(np.linalg.norm(f.landmarks[2] - centre)))


def find_subject(
    engine: FaceEngine, image: U8, choice: Choice, central_fallback: bool
) -> tuple[Face | None, Found]:
    """The face to embed for a one-subject image and how it was found."""
    import cv2

    h, w = image.shape[:2]
    face = choose_face(engine.detect(image), w, h, choice)
    if face is not None:
        return face, Found.DETECTED
    big = np.asarray(cv2.resize(image, (2 * w, 2 * h), interpolation=cv2.INTER_LINEAR))
    found = [scale_face(f, 0.5) for f in engine.detect(big)]
    face = choose_face(found, w, h, choice)
    if face is not None:
        return face, Found.ENLARGED
    if not central_fallback:
        return None, Found.NONE
    fx0, fy0, fx1, fy1 = CENTRAL_BOX
    box = (fx0 * w, fy0 * h, fx1 * w, fy1 * h)
    return Face(bbox=box, landmarks=np.zeros((5, 2), np.float32), score=0.0), Found.CENTRAL


_worker: tuple[FaceEngine, Choice, bool] | None = None


def _init(config: EngineConfig, choice: Choice, central_fallback: bool) -> None:
    global _worker
    logging.getLogger("models").setLevel(logging.WARNING)
    _worker = (build_engine(config), choice, central_fallback)


def _embed_one(path: Path) -> Embedded:
    assert _worker is not None, "worker not initialised"
    engine, choice, central_fallback = _worker
    try:
        image = load_rgb(path)
    except ModelError as exc:
        return Embedded(path, None, Found.NONE, str(exc))
    face, found = find_subject(engine, image, choice, central_fallback)
    if face is None:
        return Embedded(path, None, found)
    return Embedded(path, engine.embed(image, [face])[0], found)


def embed_files(
    config: EngineConfig,
    paths: Sequence[Path],
    *,
    workers: int = 1,
    choice: Choice = Choice.CENTRE,
    central_fallback: bool = True,
    on_done: Callable[[Embedded], None] | None = None,
) -> list[Embedded]:
    """One :class:`Embedded` per path, in order. ``workers`` processes each build their
    own engine from ``config`` (dlib holds the interpreter lock, so processes, not
    threads, use more cores)."""
    results = []
    for item in _iterate(config, paths, workers, choice, central_fallback):
        results.append(item)
        if on_done is not None:
            on_done(item)
    return results


def _iterate(
    config: EngineConfig,
    paths: Sequence[Path],
    workers: int,
    choice: Choice,
    central_fallback: bool,
) -> Iterator[Embedded]:
    if workers <= 1 or len(paths) < 2:
        _init(config, choice, central_fallback)
        yield from (_embed_one(p) for p in paths)
        return
    chunk = max(1, min(32, len(paths) // (workers * 8)))
    # Spawned, not forked: the parent may already run OpenMP or progress threads.
    with ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init,
        initargs=(config, choice, central_fallback),
    ) as pool:
        yield from pool.map(_embed_one, paths, chunksize=chunk)
