"""Images as engines take them: ``(h, w, 3)`` uint8 RGB, C-contiguous.

Files are decoded with Pillow, which reads JPEG, PNG, WebP, BMP, TIFF, GIF and more,
whatever the file's extension says. :func:`load_rgb` turns whatever a camera, phone or
scanner wrote into that one layout:

* EXIF orientation is applied, so a phone photo comes out upright;
* grey, palette and CMYK images become RGB;
* 16-bit and 32-bit integer images are scaled to 8 bits over the full range of their
  type (``v * 255 / 65535`` for 16 bits), never clipped;
* transparency is flattened onto :data:`ALPHA_BACKGROUND` (white);
* only the first frame of an animated or multi-page file is read.

A file whose header declares more than :data:`MAX_PIXELS` is refused before any pixel
is decoded (Pillow opens files lazily, so the check costs a header read). Every
failure - missing, unreadable, empty, not an image, truncated, too large - is an
:class:`~models.errors.InvalidImage` whose message starts with the file's path.

Large photos: detectors are slow on 12-50 megapixel frames and find faces as well on
a copy whose longer side is one or two thousand pixels. :func:`detect_large` detects on
such a copy (:func:`downscaled`) and maps the faces back (:func:`scale_face`), so the
aligned crops are then cut from the full-resolution original.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError

from models.errors import InvalidImage
from models.types import Face

logger = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]

MAX_PIXELS = 40_000_000
"""Larger images are refused rather than decoded (a decompression bomb, or a frame
no camera here produces)."""

ALPHA_BACKGROUND = (255, 255, 255)
"""Transparent pixels are composited onto white: cut-out portraits and stickers are
drawn to be seen on a light page, and a white surround keeps a dark-haired head's
outline visible to the detector."""


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
    """Read an image file as ``(h, w, 3)`` uint8 RGB, upright (see the module notes).

    Raises :class:`~models.errors.InvalidImage`, its message naming the file and the
    reason, for anything that is not a readable image within :data:`MAX_PIXELS`.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InvalidImage(f"{path}: no such file") from None
    except OSError as exc:
        raise InvalidImage(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if path.is_dir():
        raise InvalidImage(f"{path}: is a directory, not an image file")
    if not path.is_file():
        raise InvalidImage(f"{path}: not a regular file")
    if size == 0:
        raise InvalidImage(f"{path}: empty file (0 bytes)")
    return _decode(path)


def _decode(path: Path) -> U8:
    try:
        with Image.open(path) as im:
            width, height = im.size
            if width < 1 or height < 1:
                raise InvalidImage(f"{path}: image declares size {width}x{height}")
            if width * height > MAX_PIXELS:
                raise InvalidImage(
                    f"{path}: refused, {width}x{height} = {width * height:,} pixels exceeds "
                    f"the limit of {MAX_PIXELS:,} (checked before decoding)"
                )
            try:
                im.load()
            except Exception as exc:  # Pillow's decoders raise OSError, SyntaxError,
                # ValueError, EOFError, struct.error ... on damaged data
                raise InvalidImage(f"{path}: truncated or corrupt image data ({exc})") from exc
            try:
                return as_rgb(_to_rgb(im, path))
            except InvalidImage:
                raise
            except Exception as exc:
                raise InvalidImage(
                    f"{path}: cannot convert a {im.mode} image to RGB ({exc})"
                ) from exc
    except InvalidImage:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow's own guard fires inside open() for sizes far beyond ours.
        raise InvalidImage(
            f"{path}: refused before decoding, larger than {MAX_PIXELS:,} pixels ({exc})"
        ) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage(f"{path}: not an image in any format Pillow reads") from exc
    except PermissionError as exc:
        raise InvalidImage(f"{path}: cannot be read (permission denied)") from exc
    except Exception as exc:  # a header Pillow recognised but could not parse
        raise InvalidImage(f"{path}: corrupt image header ({exc})") from exc


def _to_rgb(im: Image.Image, path: Path) -> U8:
    """An opened, loaded Pillow image as upright RGB uint8."""
    try:
        upright = ImageOps.exif_transpose(im)
    except Exception as exc:  # damaged EXIF: the pixels are still good
        logger.warning("%s: EXIF orientation unreadable (%s), image used as stored", path, exc)
        upright = im
    mode = upright.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _wide_to_rgb(upright)
    if mode == "P" and "transparency" in upright.info:
        upright = upright.convert("RGBA")
    elif mode in ("PA", "La", "RGBa"):
        upright = upright.convert("RGBA")
    if upright.mode in ("RGBA", "LA"):
        rgba = upright.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        upright = Image.alpha_composite(background, rgba)
    arr: U8 = np.asarray(upright.convert("RGB"), dtype=np.uint8)
    return arr


def _wide_to_rgb(im: Image.Image) -> U8:
    """Grey images of more than 8 bits per pixel, scaled to 8 bits.

    Unsigned 16-bit data (and 32-bit data within 0..65535, as older Pillow versions
    returned 16-bit PNGs) maps ``0..65535`` linearly onto ``0..255``, keeping the file's
    own exposure. Floating-point data within 0..1 maps onto 0..255; any other range of
    32-bit or float data is stretched from its minimum to its maximum.
    """
    if im.mode.startswith("I;16"):
        values = np.asarray(im, dtype=np.uint16).astype(np.float64)
        top, low = 65535.0, 0.0
    else:
        values = np.asarray(im, dtype=np.float64)
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if im.mode == "I" and lo >= 0 and hi <= 65535:
            top, low = 65535.0, 0.0
        elif im.mode == "F" and lo >= 0 and hi <= 1:
            top, low = 1.0, 0.0
        else:
            top, low = hi, lo
            logger.info("%s-mode image stretched from %g..%g to 0..255", im.mode, lo, hi)
    span = max(top - low, 1e-12)
    grey = np.clip(np.rint((values - low) * (255.0 / span)), 0, 255).astype(np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


def load_many(paths: Iterable[Path | str]) -> Iterator[tuple[Path, U8 | InvalidImage]]:
    """Read files one at a time, yielding ``(path, image)`` or ``(path, error)``.

    A bad file yields its :class:`~models.errors.InvalidImage` (and is logged) instead
    of stopping the batch; only one decoded image is held at a time.
    """
    for item in paths:
        path = Path(item)
        result: U8 | InvalidImage
        try:
            result = load_rgb(path)
        except InvalidImage as exc:
            logger.warning("skipping %s", exc)
            result = exc
        yield path, result


def downscaled(image: U8, max_side: int) -> tuple[U8, float]:
    """A copy of ``image`` whose longer side is at most ``max_side`` (area-averaged), and
    the factor from its coordinates to the original's (``original = small * factor``,
    ``factor >= 1``). An image already small enough is returned as is, factor 1.0.

    The factor is exact along the longer side; along the shorter one the copy's size is
    rounded to whole pixels, an error below ``factor / 2`` original pixels.
    """
    import cv2

    if max_side < 1:
        raise ValueError(f"max_side must be positive, got {max_side}")
    rgb = as_rgb(image)
    h, w = rgb.shape[:2]
    longer = max(h, w)
    if longer <= max_side:
        return rgb, 1.0
    factor = longer / max_side
    size = (max(1, round(w / factor)), max(1, round(h / factor)))
    small = np.ascontiguousarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA))
    return small.astype(np.uint8, copy=False), factor


def scale_face(face: Face, factor: float) -> Face:
    """``face`` with its box and landmarks multiplied by ``factor`` (score and flags kept):
    from a :func:`downscaled` copy's coordinates to the original's."""
    x0, y0, x1, y1 = face.bbox
    return Face(
        bbox=(x0 * factor, y0 * factor, x1 * factor, y1 * factor),
        landmarks=(face.landmarks * np.float32(factor)).astype(np.float32),
        score=face.score,
        estimated=face.estimated,
    )


class _Detects(Protocol):
    def detect(self, image: object) -> list[Face]: ...


def detect_large(detector: _Detects, image: object, max_side: int = 1600) -> list[Face]:
    """Faces of ``image`` in its own coordinates, found on a copy no larger than
    ``max_side`` on its longer side.

    ``detector`` is anything with ``detect(image) -> list[Face]`` (a
    :class:`~models.engine.FaceEngine` or a detector). Pass the full-resolution image
    and the returned faces to ``engine.align`` / ``engine.embed``, so the crops keep
    every pixel of the original. A face shrinks by the same factor as the image: a
    detector that needs faces of ``m`` pixels then finds only those larger than
    ``m * factor`` in the original, so raise ``max_side`` for crowds far from the camera.
    """
    small, factor = downscaled(as_rgb(image), max_side)
    faces = detector.detect(small)
    if factor == 1.0:
        return faces
    logger.debug("detected %d face(s) at 1/%.2f scale", len(faces), factor)
    return [scale_face(face, factor) for face in faces]
