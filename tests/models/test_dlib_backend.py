"""The dlib engine on real images: no faces where there are none, the annotated
faces found, the same person closer than different people."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.dlib_backend import DlibConfig
from models.errors import InvalidImage
from models.images import as_rgb, load_rgb


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def test_no_faces_in_nonface_images(faces_dir: Path, dlib_engine: Any) -> None:
    for path in sorted((faces_dir / "groups" / "nonface").glob("*.jpg")):
        assert dlib_engine.detect(load_rgb(path)) == [], path.name


def test_finds_the_annotated_faces(faces_dir: Path, dlib_engine: Any) -> None:
    root = faces_dir / "groups" / "dlib_faces"
    found = total = 0
    for image in ET.parse(root / "testing.xml").getroot().iter("image"):
        faces = dlib_engine.detect(load_rgb(root / image.attrib["file"]))
        for box in image.iter("box"):
            x, y = float(box.attrib["left"]), float(box.attrib["top"])
            truth = (x, y, x + float(box.attrib["width"]), y + float(box.attrib["height"]))
            total += 1
            found += any(iou(truth, f.bbox) >= 0.4 for f in faces)
    assert total > 0
    assert found / total >= 0.9, f"{found} of {total} annotated faces found"


def test_landmarks_lie_in_the_face(faces_dir: Path, dlib_engine: Any) -> None:
    image = load_rgb(faces_dir / "groups" / "dlib_faces" / "2008_002506.jpg")
    faces = dlib_engine.detect(image)
    assert len(faces) == 3
    for face in faces:
        x0, y0, x1, y1 = face.bbox
        lm = face.landmarks
        assert lm.shape == (5, 2)
        assert (lm[:, 0] > x0 - 5).all() and (lm[:, 0] < x1 + 5).all()
        assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # left before right, as seen
        assert lm[2, 1] > lm[:2, 1].max() and lm[3:, 1].min() > lm[2, 1]  # eyes, nose, mouth
        assert face.estimated == (False, False, False, True, True)


def test_same_person_scores_above_different_people(faces_dir: Path, dlib_engine: Any) -> None:
    lfw = faces_dir / "lfw_dev"
    lines = (lfw / "pairs.txt").read_text().splitlines()[1:]
    same = [line.split("\t") for line in lines[:300] if len(line.split("\t")) == 3][:20]
    diff = [line.split("\t") for line in lines[300:600] if len(line.split("\t")) == 4][:20]

    def vector(name: str, number: str) -> np.ndarray:
        image = load_rgb(lfw / name / f"{name}_{int(number):04d}.jpg")
        faces = dlib_engine.detect(image)
        assert faces, f"no face in {name} {number}"
        # The face nearest the centre: LFW images are centred on the labelled person.
        centre = np.array(image.shape[1::-1]) / 2
        best = min(faces, key=lambda f: float(np.linalg.norm(f.landmarks[2] - centre)))
        vec: np.ndarray = dlib_engine.embed(image, [best])[0]
        return vec

    same_scores = [float(vector(n, a) @ vector(n, b)) for n, a, b in same]
    diff_scores = [float(vector(a, i) @ vector(b, j)) for a, i, b, j in diff]
    # Every pair on the right side of one threshold would be 100%; dlib reaches ~98.6%
    # on these folds, so allow at most two errors at the best threshold.
    scores = np.array(same_scores + diff_scores)
    labels = np.array([1] * len(same_scores) + [0] * len(diff_scores))
    best = max(float(np.mean((scores >= t) == labels)) for t in scores)
    assert best >= 0.95, (same_scores, diff_scores)
    assert np.mean(same_scores) > np.mean(diff_scores) + 0.05


def test_embeddings_are_unit_vectors(faces_dir: Path, dlib_engine: Any) -> None:
    image = load_rgb(faces_dir / "groups" / "dlib_faces" / "2008_002506.jpg")
    vectors = dlib_engine.embed(image, dlib_engine.detect(image))
    assert vectors.shape == (3, 128) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_bad_images_and_config_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidImage):
        as_rgb(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(InvalidImage):
        as_rgb(np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(InvalidImage):
        load_rgb(tmp_path / "missing.jpg")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    with pytest.raises(InvalidImage):
        load_rgb(junk)
    with pytest.raises(ValueError):
        DlibConfig.model_validate({"type": "dlib", "upsample": 9})
    with pytest.raises(ValueError):
        DlibConfig.model_validate({"type": "dlib", "unknown": 1})


def test_yunet_finds_the_annotated_faces_and_no_others(faces_dir: Path) -> None:
    from models.yunet import YuNetConfig, YuNetDetector

    detector = YuNetDetector(
        YuNetConfig(model_path=faces_dir / "models" / "face_detection_yunet_2026may.onnx")
    )
    for path in sorted((faces_dir / "groups" / "nonface").glob("*.jpg")):
        assert detector.detect(load_rgb(path)) == [], path.name
    root = faces_dir / "groups" / "dlib_faces"
    found = total = 0
    for image in ET.parse(root / "testing.xml").getroot().iter("image"):
        faces = detector.detect(load_rgb(root / image.attrib["file"]))
        for face in faces:  # image-left eye and mouth corner first, eyes above nose
            lm = face.landmarks
            assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
        for box in image.iter("box"):
            x, y = float(box.attrib["left"]), float(box.attrib["top"])
            truth = (x, y, x + float(box.attrib["width"]), y + float(box.attrib["height"]))
            total += 1
            found += any(iou(truth, f.bbox) >= 0.4 for f in faces)
    assert found / total >= 0.95, f"{found} of {total}"


def test_yunet_without_its_model_file_says_so(tmp_path: Path) -> None:
    from models.errors import BackendUnavailable
    from models.yunet import YuNetConfig, YuNetDetector

    with pytest.raises(BackendUnavailable, match="not found"):
        YuNetDetector(YuNetConfig(model_path=tmp_path / "missing.onnx"))
