"""Image files as they come from cameras, phones and the web: every format and pixel
layout read as upright 8-bit RGB, every bad file refused with a message naming it, and
large photos detected on a small copy with the faces mapped back."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from models.errors import InvalidImage
from models.images import (
    ALPHA_BACKGROUND,
    MAX_PIXELS,
    detect_large,
    downscaled,
    load_many,
    load_rgb,
    scale_face,
)
from models.types import Face

U8 = np.ndarray


@pytest.fixture(scope="module")
def face_rgb(faces_dir: Path) -> U8:
    """A real colour face photo, shrunk to 400 px high to keep the files small."""
    full = load_rgb(faces_dir / "people_small" / "face_recognition_examples" / "obama.jpg")
    small, _ = downscaled(full, 400)
    return small


def mean_abs(a: U8, b: U8) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def check_rgb(image: U8) -> None:
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize(
    ("suffix", "options", "lossless"),
    [
        (".png", {}, True),
        (".bmp", {}, True),
        (".tif", {}, True),
        (".tif", {"compression": "tiff_lzw"}, True),
        (".webp", {"lossless": True}, True),
        (".webp", {"quality": 90}, False),
        (".jpg", {"quality": 95}, False),
    ],
)
def test_each_format_round_trips(
    tmp_path: Path, face_rgb: U8, suffix: str, options: dict[str, Any], lossless: bool
) -> None:
    path = tmp_path / f"face{suffix}"
    Image.fromarray(face_rgb).save(path, **options)
    loaded = load_rgb(path)
    check_rgb(loaded)
    if lossless:
        np.testing.assert_array_equal(loaded, face_rgb)
    else:
        assert mean_abs(loaded, face_rgb) < 3.0


def test_format_comes_from_the_content_not_the_name(tmp_path: Path, face_rgb: U8) -> None:
    path = tmp_path / "really_a_png.jpg"
    Image.fromarray(face_rgb).save(path, format="PNG")
    np.testing.assert_array_equal(load_rgb(path), face_rgb)


@pytest.mark.parametrize(
    ("orientation", "stored_turns"),
    [(6, 1), (8, -1), (3, 2)],  # np.rot90 turns (counter-clockwise) of the stored pixels
)
def test_exif_orientation_is_applied(
    tmp_path: Path, face_rgb: U8, orientation: int, stored_turns: int
) -> None:
    # A camera held sideways stores the sensor's pixels turned and says so in EXIF.
    stored = np.ascontiguousarray(np.rot90(face_rgb, stored_turns))
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"rotated_{orientation}.jpg"
    Image.fromarray(stored).save(path, quality=95, exif=exif)
    assert Image.open(path).getexif()[0x0112] == orientation

    loaded = load_rgb(path)
    assert loaded.shape == face_rgb.shape
    assert mean_abs(loaded, face_rgb) < 3.0
    wrong = np.rot90(face_rgb, 2)  # same shape, a mistake would show
    assert mean_abs(loaded, wrong) > 20.0


def test_upright_faces_are_found_in_an_exif_rotated_photo(
    tmp_path: Path, face_rgb: U8, dlib_engine: Any
) -> None:
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(face_rgb, 1))).save(path, exif=exif)
    faces = dlib_engine.detect(load_rgb(path))
    assert len(faces) == 1
    lm = faces[0].landmarks
    assert lm[0, 0] < lm[1, 0] and lm[2, 1] > lm[:2, 1].max()  # eyes level, nose below


def test_grey_images_become_three_equal_channels(tmp_path: Path, face_rgb: U8) -> None:
    grey = np.asarray(Image.fromarray(face_rgb).convert("L"))
    for name in ("grey.png", "grey.jpg"):
        Image.fromarray(grey).save(tmp_path / name)
        loaded = load_rgb(tmp_path / name)
        check_rgb(loaded)
        assert (loaded[:, :, 0] == loaded[:, :, 1]).all()
        assert (loaded[:, :, 1] == loaded[:, :, 2]).all()
        assert mean_abs(loaded[:, :, 0], grey) < 2.0


def test_bilevel_images_load(tmp_path: Path, face_rgb: U8) -> None:
    path = tmp_path / "fax.png"
    Image.fromarray(face_rgb).convert("1").save(path)
    loaded = load_rgb(path)
    assert set(np.unique(loaded).tolist()) == {0, 255}


def test_16_bit_grey_is_scaled_over_its_full_range(tmp_path: Path, face_rgb: U8) -> None:
    grey = np.asarray(Image.fromarray(face_rgb).convert("L"))
    wide = grey.astype(np.uint16) * 257  # 0..255 -> 0..65535
    path = tmp_path / "grey16.png"
    Image.fromarray(wide).save(path)
    assert Image.open(path).mode in ("I;16", "I")  # Pillow versions differ
    loaded = load_rgb(path)
    check_rgb(loaded)
    np.testing.assert_array_equal(loaded[:, :, 0], grey)  # exact: v * 255 / 65535

    ramp = np.tile(np.linspace(0, 65535, 512).astype(np.uint16), (4, 1))
    Image.fromarray(ramp).save(path)
    row = load_rgb(path)[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255  # not clipped at 255 of 65535
    assert (np.diff(row) >= 0).all() and len(np.unique(row)) == 256

    # A 12-bit sensor's values keep their place in the 16-bit range: dark, not stretched.
    Image.fromarray(grey.astype(np.uint16) * 16).save(path)
    assert load_rgb(path).max() == round(int(grey.max()) * 16 * 255 / 65535)


def test_32_bit_integer_tiff_within_16_bits_scales_like_16_bit(tmp_path: Path) -> None:
    values = np.array([[0, 257, 65535, 32896]], dtype=np.int32)
    path = tmp_path / "wide.tif"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I"
    assert load_rgb(path)[0, :, 0].tolist() == [0, 1, 255, 128]


def test_transparency_is_composited_on_white(tmp_path: Path, face_rgb: U8) -> None:
    assert ALPHA_BACKGROUND == (255, 255, 255)
    h, w = face_rgb.shape[:2]
    alpha = np.full((h, w), 255, dtype=np.uint8)
    alpha[:, : w // 4] = 0  # transparent strip
    alpha[:, w // 4 : w // 2] = 128  # half transparent
    rgba = np.dstack([face_rgb, alpha])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    loaded = load_rgb(tmp_path / "rgba.png")
    assert (loaded[:, : w // 4] == 255).all()
    np.testing.assert_array_equal(loaded[:, w // 2 :], face_rgb[:, w // 2 :])
    half = face_rgb[:, w // 4 : w // 2].astype(float) * 128 / 255 + 255 * 127 / 255
    assert np.abs(loaded[:, w // 4 : w // 2] - half).max() <= 1.5

    grey = np.asarray(Image.fromarray(face_rgb).convert("L"))
    Image.fromarray(np.dstack([grey, alpha]), "LA").save(tmp_path / "la.png")
    loaded = load_rgb(tmp_path / "la.png")
    assert (loaded[:, : w // 4] == 255).all()
    np.testing.assert_array_equal(loaded[:, w // 2 :, 1], grey[:, w // 2 :])


def test_palette_images_with_and_without_transparency(tmp_path: Path, face_rgb: U8) -> None:
    pal = Image.fromarray(face_rgb).quantize(64)
    pal.save(tmp_path / "pal.png")
    expected = np.asarray(pal.convert("RGB"))
    np.testing.assert_array_equal(load_rgb(tmp_path / "pal.png"), expected)
    assert mean_abs(expected, face_rgb) < 10.0

    index = np.asarray(pal)
    hole = int(index[0, 0])  # the top-left colour becomes transparent
    pal.save(tmp_path / "pal_t.png", transparency=hole)
    pal.save(tmp_path / "pal_t.gif", transparency=hole)
    for name in ("pal_t.png", "pal_t.gif"):
        loaded = load_rgb(tmp_path / name)
        assert (loaded[index == hole] == 255).all(), name
        np.testing.assert_array_equal(loaded[index != hole], expected[index != hole])


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path, face_rgb: U8) -> None:
    path = tmp_path / "print.jpg"
    Image.fromarray(face_rgb).convert("CMYK").save(path, quality=95)
    assert Image.open(path).mode == "CMYK"
    loaded = load_rgb(path)
    check_rgb(loaded)
    assert mean_abs(loaded, face_rgb) < 4.0


def test_a_one_pixel_image_loads_and_has_no_face(tmp_path: Path, dlib_engine: Any) -> None:
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (10, 20, 30)).save(path)
    loaded = load_rgb(path)
    assert loaded.shape == (1, 1, 3) and loaded[0, 0].tolist() == [10, 20, 30]
    assert dlib_engine.detect(loaded) == []


def refused(path: Path, *words: str) -> str:
    with pytest.raises(InvalidImage) as info:
        load_rgb(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    for word in words:
        assert word in message, message
    return message


def test_bad_files_are_refused_with_their_name_and_reason(tmp_path: Path, face_rgb: U8) -> None:
    good = tmp_path / "good.jpg"
    Image.fromarray(face_rgb).save(good, quality=90)
    data = good.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    refused(cut, "truncated")
    corrupt = tmp_path / "corrupt.png"
    Image.fromarray(face_rgb).save(corrupt)
    png = bytearray(corrupt.read_bytes())
    png[200:400] = bytes(200)  # zeroes in the middle of the compressed data
    corrupt.write_bytes(bytes(png))
    refused(corrupt, "corrupt")
    empty = tmp_path / "empty.jpg"
    empty.touch()
    refused(empty, "empty file")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo\n")
    refused(text, "not an image")
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    refused(folder, "directory")
    refused(tmp_path / "missing.jpg", "no such file")


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header declares ``width`` x ``height`` RGB with a valid CRC, followed
    by a few bytes of image data: what an attacker sends to make a server allocate."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(bytes(1000))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("side", [20_000, 7_000])
def test_huge_headers_are_refused_before_decoding(tmp_path: Path, side: int) -> None:
    # 20000^2 trips Pillow's own bomb guard inside open(); 7000^2 = 49 Mpx is under
    # Pillow's but over ours. Both must be refused without decoding a pixel.
    assert side * side > MAX_PIXELS
    path = tmp_path / f"bomb_{side}.png"
    png_header_only(path, side, side)
    assert path.stat().st_size < 2000
    start = time.perf_counter()
    message = refused(path, "refused", f"{MAX_PIXELS:,}")
    assert time.perf_counter() - start < 1.0
    if side == 7_000:
        assert "7000x7000" in message and "before decoding" in message


def test_a_batch_survives_its_bad_files(tmp_path: Path, face_rgb: U8) -> None:
    good = tmp_path / "a.png"
    Image.fromarray(face_rgb).save(good)
    junk = tmp_path / "b.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe0 broken")
    missing = tmp_path / "c.jpg"
    results = list(load_many([good, str(junk), missing, good]))
    assert [p for p, _ in results] == [good, junk, missing, good]
    kinds = [type(r) for _, r in results]
    assert kinds == [np.ndarray, InvalidImage, InvalidImage, np.ndarray]
    assert str(junk) in str(results[1][1]) and "no such file" in str(results[2][1])


def test_every_pairs_deepface_photo_loads(faces_dir: Path) -> None:
    paths = sorted((faces_dir / "pairs_deepface").glob("*.jpg"))
    assert len(paths) >= 60
    for path, image in load_many(paths):
        assert isinstance(image, np.ndarray), image
        check_rgb(image)
        with Image.open(path) as im:  # the size the header declares, upright
            w, h = im.size
            if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                w, h = h, w
        assert image.shape[:2] == (h, w), path.name
    # One of them is a WebP file named .jpg.
    assert Image.open(faces_dir / "pairs_deepface" / "img47.jpg").format == "WEBP"


def test_downscaled_keeps_small_images_and_reports_the_factor() -> None:
    image = np.zeros((300, 800, 3), dtype=np.uint8)
    same, factor = downscaled(image, 800)
    assert same.shape == image.shape and factor == 1.0
    small, factor = downscaled(image, 200)
    assert small.shape == (75, 200, 3) and factor == 4.0
    with pytest.raises(ValueError):
        downscaled(image, 0)


def test_scale_face_scales_box_and_landmarks_only() -> None:
    face = Face(
        bbox=(1.0, 2.0, 3.0, 4.0),
        landmarks=np.arange(10, dtype=np.float32).reshape(5, 2),
        score=0.7,
        estimated=(False, False, False, True, True),
    )
    big = scale_face(face, 2.5)
    assert big.bbox == (2.5, 5.0, 7.5, 10.0)
    np.testing.assert_allclose(big.landmarks, face.landmarks * 2.5)
    assert big.landmarks.dtype == np.float32
    assert big.score == 0.7 and big.estimated == face.estimated


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_faces_found_on_a_small_copy_map_back_onto_a_large_photo(
    faces_dir: Path, dlib_engine: Any
) -> None:
    original = load_rgb(faces_dir / "people_small" / "face_recognition_examples" / "obama.jpg")
    h, w = original.shape[:2]
    scale = 4000 / max(h, w)
    big = cv2.resize(original, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)
    assert max(big.shape[:2]) == 4000

    faces = detect_large(dlib_engine, big, max_side=1000)
    assert len(faces) == 1
    face = faces[0]
    x0, y0, x1, y1 = face.bbox
    assert x1 - x0 > 500  # in the big photo's coordinates

    # The same face detected directly in the big photo, on a crop around it (the whole
    # 4000 px frame would take the HOG detector many seconds).
    pad = 0.5 * (x1 - x0)
    cx0, cy0 = int(max(0, x0 - pad)), int(max(0, y0 - pad))
    region = big[cy0 : int(min(big.shape[0], y1 + pad)), cx0 : int(min(big.shape[1], x1 + pad))]
    direct = dlib_engine.detect(np.ascontiguousarray(region), upsample=0)
    assert len(direct) == 1
    dx0, dy0, dx1, dy1 = direct[0].bbox
    assert box_iou(face.bbox, (dx0 + cx0, dy0 + cy0, dx1 + cx0, dy1 + cy0)) > 0.7
    eye_shift = face.landmarks[:2] - (direct[0].landmarks[:2] + [cx0, cy0])
    iod = float(np.linalg.norm(face.landmarks[1] - face.landmarks[0]))
    assert float(np.abs(eye_shift).max()) < 0.1 * iod

    # Crops are cut from the big photo: the same person as on the original.
    on_big = dlib_engine.embed(big, faces)[0]
    on_original = dlib_engine.embed(original, dlib_engine.detect(original))[0]
    assert float(on_big @ on_original) > 0.95
