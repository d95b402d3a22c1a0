"""What every face engine returns, whatever its backend."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
"""The five landmarks, in this order everywhere. Left and right are as seen in the
image (the subject's right eye is the image's left eye), as insightface orders them."""


@dataclass(frozen=True)
class Face:
    """One detected face, in the pixel coordinates of the image it was found in."""

    bbox: tuple[float, float, float, float]
    """x0, y0, x1, y1."""
    landmarks: F32
    """(5, 2) x, y in :data:`LANDMARK_NAMES` order."""
    score: float
    """The detector's confidence; its scale depends on the detector."""
    estimated: tuple[bool, ...] = (False,) * 5
    """Per landmark: True where the detector does not give it and it was estimated
    from the others (dlib's 5-point model has no mouth corners)."""

    @property
    def width(self) -> float:
        return self.bbox[2] - self.bbox[0]

    @property
    def height(self) -> float:
        return self.bbox[3] - self.bbox[1]
