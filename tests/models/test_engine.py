"""The FaceEngine over real images: stages compose, batching and mirror averaging do what
they say, and configurations are checked at the boundary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from models.engine import EngineConfig, build_engine
from models.images import load_rgb


@pytest.fixture(scope="module")
def chips_and_images(faces_dir: Path) -> tuple[np.ndarray, list[np.ndarray]]:
    engine = build_engine(EngineConfig(flip=False))
    images = [load_rgb(p) for p in sorted((faces_dir / "lfw_dev").glob("*/*.jpg"))[:5]]
    chips = np.concatenate([engine.align(im, engine.detect(im)[:1]) for im in images])
    assert len(chips) == 5
    return chips, images


def test_flip_averages_the_mirror_image(chips_and_images: tuple[np.ndarray, list]) -> None:
    chips, _ = chips_and_images
    plain = build_engine(EngineConfig(flip=False))
    flipped = build_engine(EngineConfig(flip=True))
    expected = plain.embed_aligned(chips) + plain.embed_aligned(chips[:, :, ::-1].copy())
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    got = flipped.embed_aligned(chips)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # A mirrored face now gets the same vector; without flip it does not.
    np.testing.assert_allclose(flipped.embed_aligned(chips[:, :, ::-1].copy()), got, atol=1e-5)
    assert not np.allclose(
        plain.embed_aligned(chips[:, :, ::-1].copy()), plain.embed_aligned(chips)
    )


@pytest.mark.parametrize("flip", [False, True])
def test_batch_size_does_not_change_vectors(
    chips_and_images: tuple[np.ndarray, list], flip: bool
) -> None:
    chips, _ = chips_and_images
    one = build_engine(EngineConfig(batch_size=1, flip=flip)).embed_aligned(chips)
    many = build_engine(EngineConfig(batch_size=3, flip=flip)).embed_aligned(chips)
    np.testing.assert_allclose(one, many, atol=1e-6)
    assert one.dtype == np.float32 and one.shape == (5, 128)
    np.testing.assert_allclose(np.linalg.norm(one, axis=1), 1.0, atol=1e-5)


def test_embed_many_equals_one_image_at_a_time(chips_and_images: tuple[np.ndarray, list]) -> None:
    _, images = chips_and_images
    engine = build_engine()
    items = [(im, engine.detect(im)) for im in images]
    shared = engine.embed_many(items)
    for (image, faces), vectors in zip(items, shared, strict=True):
        np.testing.assert_allclose(vectors, engine.embed(image, faces), atol=1e-6)
    assert engine.embed_many([]) == []
    assert engine.embed(images[0], []).shape == (0, 128)


def test_configuration_is_checked_at_the_boundary() -> None:
    with pytest.raises(ValidationError, match="type"):
        EngineConfig.model_validate({"backend": {"type": "tensorflow"}})
    with pytest.raises(ValidationError, match="upsample"):
        EngineConfig.model_validate({"backend": {"type": "dlib", "upsample": 9}})
    with pytest.raises(ValidationError, match="extra"):
        EngineConfig.model_validate({"threads": 2, "gpu": True})
    config = EngineConfig.model_validate_json('{"backend": {"type": "dlib", "detector": "cnn"}}')
    assert config.backend.type == "dlib" and config.flip is False


def test_align_reuses_detect_shapes_only_for_the_same_image(faces_dir: Path) -> None:
    from models.dlib_backend import DlibEngine

    image = load_rgb(sorted((faces_dir / "lfw_dev").glob("*/*.jpg"))[0]).copy()
    warm, cold = DlibEngine(), DlibEngine()
    faces = warm.detect(image)
    assert faces
    fits = []
    fit = warm._shape
    warm._shape = lambda img, rect: fits.append(rect) or fit(img, rect)
    np.testing.assert_array_equal(warm.align(image, faces), cold.align(image, faces))
    assert fits == []  # the detector's fit was reused
    # The same buffer with other pixels (a camera reusing its frame) is fitted afresh.
    image[:] = np.roll(image, 9, axis=1)
    np.testing.assert_array_equal(warm.align(image, faces), cold.align(image, faces))
    assert len(fits) == len(faces)
