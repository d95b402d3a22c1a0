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
