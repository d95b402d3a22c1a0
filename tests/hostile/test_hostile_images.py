"""Hostile images through the models' loader (``models.images.load_rgb``, limit
``MAX_PIXELS`` = 40 MP checked on the header before decoding) and through the
enrolment upload (``POST /api/v1/persons/{id}/photos``: size, content type and
sniffed format checked by ``hub.enrolment.check_upload``, then decoded by
``decode_photo``, i.e. ``load_rgb``).

Each image is decoded in a fresh subprocess whose peak resident memory
(``ru_maxrss``) is measured and bounded; the process is itself bounded in time.
``tests/models/test_images.py`` already covers formats, EXIF, modes, a 1x1 image,
a CMYK JPEG and huge headers for the loader alone; here the same kinds of files (and
real decompression bombs) are measured for memory and sent through the upload route.
Figures go to ``tests/artifacts/reliability/hostile-images.json``.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import Engine

from hub.api import create_app
from hub.db.engine import make_engine
from hub.db.users import Role
from hub.enrolment import HUB_ENGINE_CONFIG, MAX_PHOTO_BYTES
from models.engine import FaceEngine, build_engine
from models.images import MAX_PIXELS
from tests.hostile.conftest import Figures
from tests.hub.test_api import _add_user, _login, _settings

pytestmark = [pytest.mark.hostile, pytest.mark.usefixtures("watchdog")]

DECODE_GROWTH_LIMIT_MIB = 512
"""How much one decode may raise its process's peak memory above what the imports
left. The imports alone (numpy, Pillow, OpenCV, ONNX Runtime) peak at 200-800 MiB
depending on the machine and on a fresh or warm installation, which says nothing about
the image, so they are not counted. The largest image allowed (a 36 MP bomb of a few
kilobytes) adds about 260 MiB; a bomb refused on its header adds nothing; a
30,000 x 30,000 image decoded in full would need more than 2.5 GiB."""

REFUSED_EXTRA_MIB = 32
"""A bomb refused on its header may cost no more than this over decoding a 1x1 image."""

DECODE_TIMEOUT_S = 60


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A 1-bit grey PNG whose header says ``width`` x ``height`` and whose pixel data
    is all zeros: a decompression bomb of a few kilobytes."""
    row = b"\x00" + bytes((width + 7) // 8)
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", body)
        + _chunk(b"IEND", b"")
    )


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` and carries almost no data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def _encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def _portrait() -> Image.Image:
    return Image.radial_gradient("L").convert("RGB").resize((320, 400))


def _cases(face: bytes | None) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, content type declared on upload)."""
    jpeg = _encoded(_portrait(), "JPEG", quality=90)
    png = _encoded(_portrait(), "PNG")
    cases = {
        "truncated_jpeg": (jpeg[: len(jpeg) // 3], "image/jpeg"),
        "truncated_png": (png[: len(png) // 2], "image/png"),
        "png_header_30000x30000": (png_header_only(30_000, 30_000), "image/png"),
        "bomb_png_30000x30000": (png_claiming(30_000, 30_000), "image/png"),
        "bomb_png_20000x20000": (png_claiming(20_000, 20_000), "image/png"),
        "bomb_png_8000x8000_over_limit": (png_claiming(8_000, 8_000), "image/png"),
        "bomb_png_6000x6000_under_limit": (png_claiming(6_000, 6_000), "image/png"),
        "png_declared_as_jpeg": (png, "image/jpeg"),
        "text_declared_as_png": (b"just some text, not an image\n" * 10, "image/png"),
        "jpeg_as_octet_stream": (jpeg, "application/octet-stream"),
        "one_pixel_png": (_encoded(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), "image/png"),
        "cmyk_jpeg": (_encoded(_portrait().convert("CMYK"), "JPEG"), "image/jpeg"),
        "over_10_mib": (jpeg + bytes(MAX_PHOTO_BYTES), "image/jpeg"),
    }
    if face is not None:
        photo = Image.open(io.BytesIO(face)).convert("CMYK")
        cases["cmyk_jpeg_of_a_face"] = (_encoded(photo, "JPEG", quality=95), "image/jpeg")
    return cases


# name -> what load_rgb must do: "refused" (InvalidImage) or "decoded"
LOADER_EXPECTED = {
    "truncated_jpeg": "refused",
    "truncated_png": "refused",
    "png_header_30000x30000": "refused",
    "bomb_png_30000x30000": "refused",
    "bomb_png_20000x20000": "refused",
    "bomb_png_8000x8000_over_limit": "refused",
    "bomb_png_6000x6000_under_limit": "decoded",
    "png_declared_as_jpeg": "decoded",
    "text_declared_as_png": "refused",
    "jpeg_as_octet_stream": "decoded",
    "one_pixel_png": "decoded",
    "cmyk_jpeg": "decoded",
    "cmyk_jpeg_of_a_face": "decoded",
}

_DECODE = """
import json, resource, sys, time
from pathlib import Path
from models.errors import InvalidImage
from models.images import load_rgb
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
try:
    image = load_rgb(Path(sys.argv[1]))
    outcome, detail = "decoded", list(image.shape)
except InvalidImage as exc:
    outcome, detail = "refused", str(exc)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
json.dump({"outcome": outcome, "detail": detail, "peak_kib": peak, "imports_kib": before,
           "seconds": time.monotonic() - started}, sys.stdout)
"""


def _decode_in_subprocess(path: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _DECODE, str(path)],
        capture_output=True,
        timeout=DECODE_TIMEOUT_S,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.fixture(scope="module")
def face_photo(faces_dir: Path) -> bytes | None:
    path = faces_dir / "lfw_dev" / "Colin_Powell" / "Colin_Powell_0001.jpg"
    return path.read_bytes() if path.is_file() else None


def test_the_loader_refuses_or_decodes_within_bounded_memory(
    tmp_path: Path, face_photo: bytes | None, figures: Figures
) -> None:
    results: dict[str, Any] = {}
    for name, (data, _) in _cases(face_photo).items():
        if name not in LOADER_EXPECTED:
            continue
        path = tmp_path / f"{name}.img"
        path.write_bytes(data)
        got = _decode_in_subprocess(path)
        peak_mib = got["peak_kib"] / 1024
        results[name] = {
            "bytes": len(data),
            "outcome": got["outcome"],
            "detail": got["detail"],
            "peak_mib": round(peak_mib, 1),
            "after_imports_mib": round(got["imports_kib"] / 1024, 1),
        }
        assert got["outcome"] == LOADER_EXPECTED[name], (name, got["detail"])
        if got["outcome"] == "refused":
            assert str(path) in got["detail"] and len(got["detail"]) > len(str(path)) + 5
        growth_mib = peak_mib - got["imports_kib"] / 1024
        results[name]["decode_growth_mib"] = round(growth_mib, 1)
        assert growth_mib < DECODE_GROWTH_LIMIT_MIB, (name, peak_mib, growth_mib)
    figures.record("images", "loader", results)
    figures.record("images", "max_pixels", MAX_PIXELS)
    figures.record("images", "decode_growth_limit_mib", DECODE_GROWTH_LIMIT_MIB)
    # The bombs over the limit cost no more than a 1x1 image (refused on the header).
    control = results["one_pixel_png"]["peak_mib"]
    for name in ("bomb_png_30000x30000", "bomb_png_20000x20000", "bomb_png_8000x8000_over_limit"):
        assert results[name]["peak_mib"] < control + REFUSED_EXTRA_MIB, (results[name], control)


@pytest.fixture(scope="module")
def face_engine() -> FaceEngine:
    return build_engine(HUB_ENGINE_CONFIG)


@pytest.fixture
def sqlite_engine(sqlite_template: Path, tmp_path: Path) -> Iterator[Engine]:
    path = tmp_path / "lantern.db"
    path.write_bytes(sqlite_template.read_bytes())
    engine = make_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


@pytest.fixture
def client(sqlite_engine: Engine, face_engine: FaceEngine) -> Iterator[TestClient]:
    app: FastAPI = create_app(_settings(sqlite_engine), sqlite_engine)
    app.state.face_engine = face_engine
    with TestClient(app) as test_client:
        yield test_client


# name -> (HTTP status, photo accepted as a template?) of the upload route
ROUTE_EXPECTED: dict[str, tuple[int, bool | None]] = {
    "truncated_jpeg": (200, False),
    "truncated_png": (200, False),
    # Pillow's own bomb guard fires while the format is sniffed: 415 "not an image".
    "png_header_30000x30000": (415, None),
    "bomb_png_30000x30000": (415, None),
    "bomb_png_20000x20000": (415, None),
    "bomb_png_8000x8000_over_limit": (200, False),
    "bomb_png_6000x6000_under_limit": (200, False),
    "png_declared_as_jpeg": (415, None),
    "text_declared_as_png": (415, None),
    "jpeg_as_octet_stream": (415, None),
    "one_pixel_png": (200, False),
    "cmyk_jpeg": (200, False),
    "over_10_mib": (413, None),
    "cmyk_jpeg_of_a_face": (200, True),
}


def test_the_enrolment_upload_refuses_with_a_reason(
    sqlite_engine: Engine, client: TestClient, face_photo: bytes | None, figures: Figures
) -> None:
    _add_user(sqlite_engine, "officer-user", Role.officer)
    headers = _login(client, "officer-user")
    created = client.post(
        "/api/v1/persons",
        json={"category": "watchlist", "display_name": "Test Person", "case_id": "C-9"},
        headers=headers,
    )
    assert created.status_code == 201, created.text
    url = f"/api/v1/persons/{created.json()['id']}/photos"
    results: dict[str, Any] = {}
    for name, (data, kind) in _cases(face_photo).items():
        status, accepted = ROUTE_EXPECTED[name]
        files = [("photos", (f"{name}.jpg", data, kind))]
        response = client.post(url, files=files, headers=headers)
        body = response.json()
        assert response.status_code == status, (name, response.text[:500])
        if status == 200:
            (photo,) = body["photos"]
            assert photo["accepted"] is accepted, (name, photo)
            if not accepted:
                assert photo["reasons"] and all(r.strip() for r in photo["reasons"]), photo
            reason = "; ".join(photo["reasons"]) or "accepted"
        else:
            assert isinstance(body["detail"], str) and name in body["detail"], body
            reason = body["detail"]
        results[name] = {"status": response.status_code, "accepted": accepted, "reason": reason}
    figures.record("images", "enrolment_route", results)
