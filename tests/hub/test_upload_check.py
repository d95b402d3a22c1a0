"""The upload check's reasons for photos it refuses on their header."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from hub.enrolment import UploadRefused, check_upload


def _png_claiming(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims ``width`` x ``height`` pixels."""
    out = io.BytesIO()
    Image.new("L", (1, 1)).save(out, format="PNG")
    data = bytearray(out.getvalue())
    # Signature (8 bytes), IHDR length (4), type (4), then width and height.
    data[16:24] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:29]))
    data[29:33] = struct.pack(">I", crc)
    return bytes(data)


def test_a_decompression_bomb_is_refused_as_too_large() -> None:
    with pytest.raises(UploadRefused) as refused:
        check_upload("bomb.png", "image/png", _png_claiming(30_000, 30_000))
    assert refused.value.status_code == 415
    assert refused.value.reason == "bomb.png: image too large (decompression bomb)"


def test_a_small_png_and_text_are_told_apart() -> None:
    assert check_upload("dot.png", "image/png", _png_claiming(1, 1)) == "PNG"
    with pytest.raises(UploadRefused, match="not an image"):
        check_upload("note.png", "image/png", b"just text\n")
