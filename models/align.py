"""Face alignment as pure functions over module-level templates.

A template is the five landmarks (see :data:`models.types.LANDMARK_NAMES`) of a
canonical face in the pixel frame of an aligned crop.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)
"""The 112 x 112 five-point template ArcFace models are trained on (published with
insightface's recognition code)."""


def similarity_transform(src: npt.ArrayLike, dst: npt.ArrayLike) -> F64:
    """The least-squares similarity (rotation, uniform scale, translation) taking the
    points ``src`` to ``dst``, as a 2 x 3 matrix ``M`` with ``dst ~ M @ [x, y, 1]``.

    Closed form of Umeyama (1991) without reflection. Needs at least two distinct
    points; raises ValueError otherwise.
    """
    s = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    d = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if s.shape != d.shape or len(s) < 2:
        raise ValueError(f"need matching point sets of at least 2 points, got {s.shape}, {d.shape}")
    mu_s, mu_d = s.mean(axis=0), d.mean(axis=0)
    sc, dc = s - mu_s, d - mu_d
    var_s = float((sc**2).sum()) / len(s)
    if var_s <= 1e-12:
        raise ValueError("source points coincide")
    cov = dc.T @ sc / len(s)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        fix[1, 1] = -1.0
    rot = u @ fix @ vt
    scale = float(np.trace(np.diag(sig) @ fix)) / var_s
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def apply(m: F64, points: npt.ArrayLike) -> F32:
    """Apply a 2 x 3 affine matrix to (n, 2) points."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    out: F32 = (p @ m[:, :2].T + m[:, 2]).astype(np.float32)
    return out


def complete_landmarks(known: npt.ArrayLike, which: tuple[int, ...]) -> F32:
    """All five landmarks from the ``known`` ones (their indices in ``which``): the
    missing ones are the template's, carried by the similarity that best maps the
    template's known points onto the detected ones."""
    pts = np.asarray(known, dtype=np.float32).reshape(-1, 2)
    m = similarity_transform(ARCFACE_112[list(which)], pts)
    full = apply(m, ARCFACE_112)
    full[list(which)] = pts
    return full


def warp(
    image: npt.NDArray[np.uint8], landmarks: npt.ArrayLike, template: F32, size: int
) -> npt.NDArray[np.uint8]:
    """The ``size`` x ``size`` crop whose landmarks best match ``template`` (given for a
    crop of that size): a similarity warp with bilinear sampling, borders black."""
    import cv2  # OpenCV is a runtime dependency; imported here to keep this module light

    m = similarity_transform(landmarks, template)
    out = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)
    return np.asarray(out, dtype=np.uint8)
