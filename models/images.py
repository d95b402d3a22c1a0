"""Images as engines take them: ``(h, w, 3)`` uint8 RGB, C-contiguous."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.errors import InvalidImage

U8 = npt.NDArray[np.uint8]

MAX_PIXELS = 40_000_000
"""Larger images are refused rather than decoded (a decompression bomb, or a frame
no camera here produces)."""


def as_rgb(image: object) -> U8:
    """Check an array and return it as contiguous RGB uint8 (grey and RGBA converted)."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise InvalidImage(f"expected an 8-bit image, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise InvalidImage(f"expected (h, w), (h, w, 3) or (h, w, 4), got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1 or arr.shape[0] * arr.shape[1] > MAX_PIXELS:
        raise InvalidImage(f"image size {arr.shape[1]}x{arr.shape[0]} out of range")
    out: U8 = np.ascontiguousarray(arr[:, :, :3])
    return out


def load_rgb(path: Path) -> U8:
    """Read an image file (JPEG, PNG, ...) as RGB uint8."""
    try:
        import dlib
    except ImportError as exc:  # the reader comes with the default backend
        raise InvalidImage(f"{path}: no image reader (pip install dlib-bin)") from exc
    if not Path(path).is_file():
        raise InvalidImage(f"{path}: no such file")
    try:
        image = dlib.load_rgb_image(str(path))
    except RuntimeError as exc:
        raise InvalidImage(f"{path}: not a readable image ({exc})") from exc
    return as_rgb(image)
