"""The insightface engine on real images: the real SCRFD detector from the shared
face data, and a small ArcFace-shaped ONNX graph built here in place of the
recognition weights (which may not be redistributed). insightface's own code is the
reference for routing, preprocessing and alignment."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.engine import EngineConfig, build_engine
from models.errors import BackendUnavailable
from models.images import load_rgb
from models.insightface_backend import InsightFaceConfig, InsightFaceEngine
from tests.models.onnx_graphs import write_arcface_like

SCRFD = "scrfd_2.5g_bnkps.onnx"
YUNET = "face_detection_yunet_2026may.onnx"
TOY = "toy_arcface.onnx"
GROUP = "2008_002506.jpg"  # three people, one head tilted


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def annotated(root: Path) -> Iterator[tuple[str, list[tuple[float, float, float, float]]]]:
    """(file name, annotated x0, y0, x1, y1 boxes) of each image in dlib's testing.xml."""
    for image in ET.parse(root / "testing.xml").getroot().iter("image"):
        boxes = []
        for box in image.iter("box"):
            x, y = float(box.attrib["left"]), float(box.attrib["top"])
            boxes.append((x, y, x + float(box.attrib["width"]), y + float(box.attrib["height"])))
        yield image.attrib["file"], boxes


def make_pack(folder: Path, faces_dir: Path, *, detector: bool, recognition: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if detector:
        (folder / SCRFD).symlink_to(faces_dir / "models" / SCRFD)
    if recognition:
        write_arcface_like(folder / TOY)
    return folder


@pytest.fixture(scope="module")
def pack(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A buffalo-style folder: the real SCRFD detector and the toy recognition graph."""
    return make_pack(tmp_path_factory.mktemp("pack"), faces_dir, detector=True, recognition=True)


@pytest.fixture(scope="module")
def engine(pack: Path) -> InsightFaceEngine:
    return InsightFaceEngine(InsightFaceConfig(model_dir=pack))


@pytest.fixture(scope="module")
def group(faces_dir: Path) -> np.ndarray:
    return load_rgb(faces_dir / "groups" / "dlib_faces" / GROUP)


def test_scrfd_finds_the_annotated_faces_and_no_others(
    faces_dir: Path, engine: InsightFaceEngine
) -> None:
    for path in sorted((faces_dir / "groups" / "nonface").glob("*.jpg")):
        assert engine.detect(load_rgb(path)) == [], path.name
    root = faces_dir / "groups" / "dlib_faces"
    found = total = 0
    for name, boxes in annotated(root):
        faces = engine.detect(load_rgb(root / name))
        assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)
        for face in faces:
            x0, y0, x1, y1 = face.bbox
            lm = face.landmarks
            assert lm.shape == (5, 2) and lm.dtype == np.float32
            assert (lm[:, 0] > x0 - 5).all() and (lm[:, 0] < x1 + 5).all(), name
            assert (lm[:, 1] > y0 - 5).all() and (lm[:, 1] < y1 + 5).all(), name
            assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0], name  # image-left first
            assert face.estimated == (False,) * 5
        total += len(boxes)
        found += sum(any(iou(truth, f.bbox) >= 0.4 for f in faces) for truth in boxes)
    assert total > 0
    assert found / total >= 0.95, f"{found} of {total} annotated faces found"


def test_landmarks_are_eyes_nose_mouth(engine: InsightFaceEngine, group: np.ndarray) -> None:
    faces = engine.detect(group)
    assert len(faces) == 3
    for face in faces:
        lm = face.landmarks
        assert lm[0, 0] < lm[2, 0] < lm[1, 0]  # the nose between the eyes, as seen
        assert lm[2, 1] > lm[:2, 1].max() and lm[3:, 1].min() > lm[2, 1]  # eyes, nose, mouth


def test_embeddings_are_deterministic_unit_vectors(
    engine: InsightFaceEngine, pack: Path, group: np.ndarray
) -> None:
    assert engine.model_id == "insightface-toy_arcface"
    assert (engine.dim, engine.chip_size) == (512, 112)
    faces = engine.detect(group)
    vectors = engine.embed(group, faces)
    assert vectors.shape == (3, 512) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(engine.embed(group, faces), vectors)
    again = InsightFaceEngine(InsightFaceConfig(model_dir=pack, detector_file=SCRFD))
    np.testing.assert_allclose(again.embed(group, again.detect(group)), vectors, atol=1e-6)
    # One call per chip or one for all: the same vectors.
    chips = engine.align(group, faces)
    single = np.concatenate([engine.embed_aligned(chips[i : i + 1]) for i in range(3)])
    np.testing.assert_allclose(single, vectors, atol=1e-5)
    assert engine.embed_aligned(chips[:0]).shape == (0, 512)
    with pytest.raises(ValueError):
        engine.embed_aligned(np.zeros((1, 150, 150, 3), dtype=np.uint8))


def test_a_fixed_batch_graph_gives_the_same_vectors(
    engine: InsightFaceEngine, tmp_path: Path, group: np.ndarray
) -> None:
    write_arcface_like(tmp_path / "fixed.onnx", batch=2)  # same weights, batch of two
    fixed = InsightFaceEngine(
        InsightFaceConfig(model_dir=tmp_path, recognition_file="fixed.onnx"), need_detector=False
    )
    assert fixed.model_id == "insightface-fixed" and fixed.detection_model is None
    chips = engine.align(group, engine.detect(group))  # three crops: batches of 2 and 1
    np.testing.assert_allclose(fixed.embed_aligned(chips), engine.embed_aligned(chips), atol=1e-5)


def test_preprocessing_is_insightfaces(
    engine: InsightFaceEngine, pack: Path, group: np.ndarray
) -> None:
    """Our input to the network is what insightface's ArcFaceONNX.get_feat feeds it:
    it takes BGR crops and swaps them to RGB; ours are RGB already."""
    from insightface.model_zoo import ArcFaceONNX, get_model

    theirs = get_model(str(pack / TOY), providers=["CPUExecutionProvider"])
    assert isinstance(theirs, ArcFaceONNX)
    assert (theirs.input_mean, theirs.input_std) == (127.5, 127.5)
    chips = engine.align(group, engine.detect(group))
    raw = np.asarray(theirs.get_feat([np.ascontiguousarray(c[:, :, ::-1]) for c in chips]))
    expected = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(engine.embed_aligned(chips), expected, atol=1e-5)
    # The check would notice swapped channels: the toy graph is not colour-blind.
    swapped = engine.embed_aligned(np.ascontiguousarray(chips[:, :, :, ::-1]))
    assert np.abs(swapped - expected).max() > 1e-2


@pytest.mark.filterwarnings("ignore::FutureWarning")  # skimage, inside insightface
def test_alignment_matches_insightfaces_norm_crop(
    engine: InsightFaceEngine, group: np.ndarray
) -> None:
    from insightface.utils.face_align import norm_crop

    faces = engine.detect(group)
    chips = engine.align(group, faces)
    assert chips.shape == (3, 112, 112, 3) and chips.dtype == np.uint8
    for face, chip in zip(faces, chips, strict=True):
        reference = norm_crop(group, landmark=face.landmarks, image_size=112)
        diff = np.abs(reference.astype(np.int16) - chip.astype(np.int16))
        assert diff.mean() < 0.05 and diff.max() <= 2


def test_build_engine_uses_the_configured_threads(pack: Path, group: np.ndarray) -> None:
    config = EngineConfig.model_validate(
        {"backend": {"type": "insightface", "model_dir": str(pack)}, "threads": 2}
    )
    assert isinstance(config.backend, InsightFaceConfig)
    face_engine = build_engine(config)
    assert face_engine.model_id == "insightface-toy_arcface" and face_engine.dim == 512
    embedder: Any = face_engine.embedder
    for model in (embedder.detection_model, embedder.recognition_model):
        assert model.session.get_session_options().intra_op_num_threads == 2
    faces = face_engine.detect(group)
    assert len(faces) == 3
    assert face_engine.embed(group, faces).shape == (3, 512)


def test_recognition_only_pack_with_yunet(
    faces_dir: Path, tmp_path: Path, group: np.ndarray
) -> None:
    folder = make_pack(tmp_path / "rec", faces_dir, detector=False, recognition=True)
    with pytest.raises(BackendUnavailable, match="no insightface detector.*yunet"):
        InsightFaceEngine(InsightFaceConfig(model_dir=folder))
    face_engine = build_engine(
        EngineConfig.model_validate(
            {
                "backend": {"type": "insightface", "model_dir": str(folder)},
                "detector": {"type": "yunet", "model_path": str(faces_dir / "models" / YUNET)},
            }
        )
    )
    assert type(face_engine.detector).__name__ == "YuNetDetector"
    faces = face_engine.detect(group)
    assert len(faces) == 3
    vectors = face_engine.embed(group, faces)
    assert vectors.shape == (3, 512)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_detection_only_pack_detects_but_cannot_embed(
    faces_dir: Path, tmp_path: Path, group: np.ndarray
) -> None:
    folder = make_pack(tmp_path / "det", faces_dir, detector=True, recognition=False)
    config = InsightFaceConfig(model_dir=folder)
    with pytest.raises(BackendUnavailable, match=f"no insightface recognition model.*{SCRFD}"):
        build_engine(EngineConfig(backend=config))
    detector = InsightFaceEngine(config, need_recognition=False)
    faces = detector.detect(group)
    assert len(faces) == 3
    with pytest.raises(BackendUnavailable, match="w600k_r50"):
        detector.embed(group, faces)


def test_missing_or_wrong_files_say_what_is_wrong(
    faces_dir: Path, pack: Path, tmp_path: Path
) -> None:
    with pytest.raises(BackendUnavailable, match="model folder not found"):
        InsightFaceEngine(InsightFaceConfig(model_dir=tmp_path / "absent"))
    with pytest.raises(BackendUnavailable, match="no .onnx files"):
        InsightFaceEngine(InsightFaceConfig(model_dir=tmp_path))
    with pytest.raises(BackendUnavailable, match="recognition model file not found"):
        InsightFaceEngine(InsightFaceConfig(model_dir=pack, recognition_file="w600k_r50.onnx"))
    with pytest.raises(BackendUnavailable, match="not a recognition model"):
        InsightFaceEngine(InsightFaceConfig(model_dir=pack, recognition_file=SCRFD))
    # An unreadable file is skipped while searching, and named if nothing else fits.
    folder = make_pack(tmp_path / "junk", faces_dir, detector=True, recognition=False)
    (folder / "a_broken.onnx").write_bytes(b"not a model")
    with pytest.raises(BackendUnavailable, match="unreadable: a_broken.onnx"):
        InsightFaceEngine(InsightFaceConfig(model_dir=folder))
    write_arcface_like(folder / TOY)
    assert InsightFaceEngine(InsightFaceConfig(model_dir=folder)).model_id.endswith(TOY[:-5])


def test_config_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        InsightFaceConfig.model_validate({"model_dir": str(tmp_path), "det_size": 600})
    with pytest.raises(ValueError):
        InsightFaceConfig.model_validate({"model_dir": str(tmp_path), "unknown": 1})
    with pytest.raises(ValueError):
        EngineConfig.model_validate({"backend": {"type": "onnx", "model_dir": str(tmp_path)}})


def test_without_the_runtime_models_still_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "insightface", None)  # as if not installed
    with pytest.raises(BackendUnavailable, match="--no-deps insightface"):
        InsightFaceEngine(InsightFaceConfig(model_dir=tmp_path))
    code = (
        "import sys; sys.modules['insightface'] = sys.modules['onnxruntime'] = None; "
        "import models, models.engine, models.insightface_backend"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)
