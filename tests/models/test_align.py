from __future__ import annotations

import numpy as np
import pytest

from models.align import ARCFACE_112, apply, complete_landmarks, similarity_transform


def test_similarity_recovers_a_known_transform() -> None:
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -4.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = ARCFACE_112 @ rot.T + shift
    m = similarity_transform(ARCFACE_112, dst)
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-6)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-5)
    np.testing.assert_allclose(apply(m, ARCFACE_112), dst, atol=1e-4)


def test_similarity_never_reflects() -> None:
    mirrored = ARCFACE_112 * np.array([-1.0, 1.0])
    m = similarity_transform(ARCFACE_112, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_similarity_refuses_degenerate_points() -> None:
    with pytest.raises(ValueError):
        similarity_transform(np.zeros((3, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError):
        similarity_transform(ARCFACE_112[:1], ARCFACE_112[:1])


def test_complete_landmarks_fills_mouth_from_template() -> None:
    m = np.array([[2.0, 0.0, 30.0], [0.0, 2.0, 10.0]])
    moved = apply(m, ARCFACE_112)
    full = complete_landmarks(moved[:3], (0, 1, 2))
    np.testing.assert_allclose(full, moved, atol=1e-3)


def test_warp_puts_the_landmarks_on_the_template() -> None:
    from models.align import warp

    # A synthetic image with a bright dot at each of five landmarks of a face that is
    # rotated, scaled and shifted: after the warp the dots sit on the template.
    m = np.array([[1.5, -0.4, 200.0], [0.4, 1.5, 90.0]])
    points = apply(m, ARCFACE_112)
    image = np.zeros((480, 640, 3), dtype=np.uint8)
    for x, y in points:
        image[int(round(y)) - 2 : int(round(y)) + 3, int(round(x)) - 2 : int(round(x)) + 3] = 255
    crop = warp(image, points, ARCFACE_112, 112)
    assert crop.shape == (112, 112, 3)
    for x, y in ARCFACE_112:
        patch = crop[int(y) - 2 : int(y) + 3, int(x) - 2 : int(x) + 3]
        assert patch.max() > 100, (x, y)
    assert crop[:20, :20].max() == 0  # nothing bright away from the landmarks
