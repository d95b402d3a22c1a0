"""Embedding folders of one-subject photos: the subject's face, the fallbacks when no
face is found, per-file errors and worker processes, on real images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from models.engine import EngineConfig, build_engine
from models.harness import Choice, Found, choose_face, embed_files, find_subject
from models.images import load_rgb
from models.types import Face


def _face(x0: float, y0: float, size: float) -> Face:
    box = (x0, y0, x0 + size, y0 + size)
    nose = np.array([x0 + size / 2, y0 + size / 2], dtype=np.float32)
    return Face(bbox=box, landmarks=np.tile(nose, (5, 1)), score=1.0)


def test_choose_face_by_centre_or_size() -> None:
    small_central, big_corner = _face(90, 90, 20), _face(0, 0, 80)
    faces = [big_corner, small_central]
    assert choose_face(faces, 200, 200, Choice.CENTRE) is small_central
    assert choose_face(faces, 200, 200, Choice.LARGEST) is big_corner
    assert choose_face([], 200, 200, Choice.CENTRE) is None


def _lfw_image(faces_dir: Path) -> Path:
    return next(iter(sorted((faces_dir / "lfw_dev").glob("*/*.jpg"))))


def test_small_faces_are_found_on_an_enlarged_copy(faces_dir: Path) -> None:
    engine = build_engine(EngineConfig.model_validate({"backend": {"type": "dlib", "upsample": 0}}))
    image = load_rgb(_lfw_image(faces_dir))
    assert engine.detect(image), "the full-size face must be found"
    # At 40% the face is below the HOG window without upsampling, but 2x brings it back.
    small = np.asarray(cv2.resize(image, (100, 100), interpolation=cv2.INTER_AREA))
    assert not engine.detect(small)
    face, found = find_subject(engine, small, Choice.CENTRE, central_fallback=True)
    assert found is Found.ENLARGED and face is not None
    x0, y0, x1, y1 = face.bbox
    assert 0 <= x0 < 50 < x1 <= 100 and 0 <= y0 < 50 < y1 <= 100  # small-image coordinates


def test_no_face_falls_back_to_the_central_box_or_nothing(faces_dir: Path) -> None:
    engine = build_engine()
    image = load_rgb(faces_dir / "groups" / "nonface" / "giraffe.jpg")
    face, found = find_subject(engine, image, Choice.CENTRE, central_fallback=True)
    assert found is Found.CENTRAL and face is not None
    h, w = image.shape[:2]
    assert face.bbox == pytest.approx((0.3 * w, 0.3 * h, 0.7 * w, 0.7 * h))
    assert find_subject(engine, image, Choice.CENTRE, central_fallback=False) == (
        None,
        Found.NONE,
    )


def test_batch_keeps_order_and_survives_bad_files(faces_dir: Path, tmp_path: Path) -> None:
    good = sorted((faces_dir / "lfw_dev").glob("*/*.jpg"))[:3]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(good[0].read_bytes()[:200])
    paths = [good[0], broken, good[1], tmp_path / "missing.jpg", good[2]]
    seen: list[Path] = []
    results = embed_files(EngineConfig(), paths, workers=2, on_done=lambda r: seen.append(r.path))
    assert [r.path for r in results] == paths == seen
    assert [r.error is None for r in results] == [True, False, True, False, True]
    assert "missing.jpg" in (results[3].error or "")
    single = embed_files(EngineConfig(), good, workers=1)
    for a, b in zip([results[0], results[2], results[4]], single, strict=True):
        assert a.vector is not None and b.vector is not None
        assert a.found is Found.DETECTED
        np.testing.assert_allclose(a.vector, b.vector, atol=1e-6)  # processes agree
