"""The YuNet detector (OpenCV ``FaceDetectorYN``): fast, with five landmarks.

Usable with any embedder that takes a :class:`~models.types.Face` (the dlib engine
re-fits its own shape inside the box). The ONNX model file is configured, never
downloaded; OpenCV Zoo publishes it under the MIT licence.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from models.errors import BackendUnavailable
from models.images import as_rgb
from models.types import Face

logger = logging.getLogger(__name__)


class YuNetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["yunet"] = "yunet"
    model_path: Path = Field(description="face_detection_yunet_*.onnx")
    score_threshold: float = Field(0.6, ge=0.0, le=1.0)
    nms_threshold: float = Field(0.3, ge=0.0, le=1.0)
    top_k: int = Field(5000, ge=1)


class YuNetDetector:
    """One instance per thread (the OpenCV detector keeps its input size)."""

    def __init__(self, config: YuNetConfig) -> None:
        try:
            import cv2
        except ImportError as exc:
            raise BackendUnavailable(
                "the yunet detector needs OpenCV: pip install opencv-python-headless"
            ) from exc
        if not config.model_path.is_file():
            raise BackendUnavailable(f"yunet model file not found: {config.model_path}")
        self.config = config
        self._cv2 = cv2
        self._net = cv2.FaceDetectorYN.create(
            str(config.model_path),
            "",
            (320, 320),
            config.score_threshold,
            config.nms_threshold,
            config.top_k,
        )

    def detect(self, image: object) -> list[Face]:
        """Faces in an RGB (or grey) uint8 image, best score first."""
        rgb = as_rgb(image)
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        self._net.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, rows = self._net.detect(bgr)
        faces = []
        for row in [] if rows is None else rows:
            x, y, w, h = (float(v) for v in row[:4])
            faces.append(
                Face(
                    bbox=(x, y, x + w, y + h),
                    landmarks=np.asarray(row[4:14], dtype=np.float32).reshape(5, 2),
                    score=float(row[14]),
                )
            )
        return sorted(faces, key=lambda f: -f.score)
