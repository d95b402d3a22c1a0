"""A quality gate for detected faces: is this face worth embedding, enrolling or
searching with?

Each face is measured on five counts, each compared with a threshold of
:class:`QualityConfig` (``None`` turns a check off). The defaults and the evidence
behind them are given with :class:`QualityConfig`.

pixel size
    The distance between the eye centres in the image's pixels, and the shorter side
    of the detector's box. Boxes differ between detectors (dlib's HOG box is about
    2.5 inter-ocular distances wide, YuNet's taller), the eye distance does not.

sharpness
    The variance of the Laplacian of the grey aligned crop: the chip
    ``engine.align(image, faces)`` returns. Only its central half is used (the inner
    face: eyes, nose, mouth; not the hair or the black borders a warp leaves at the
    image's edge), resampled to :data:`SHARPNESS_SIZE` pixels square, so the value
    does not depend on the chip's size. A small face blown up into a chip reads as
    blurred, as it should: both lack detail. The value does depend on how much of the
    face a chip shows; the default threshold is set on dlib's 150 px chip (padding
    0.25). ArcFace's 112 px crop shows less around the face and read 1.3-1.45x higher
    on the same LFW faces, so set ``min_sharpness`` accordingly for such an embedder.

yaw (proxy)
    In the frame of the eye line (so roll does not matter), the nose landmark's
    horizontal offset from the eye midpoint divided by the inter-ocular distance,
    ``r``, is 0 for a frontal face. For a head turned by ``yaw``, a nose point
    standing ``k`` inter-ocular distances in front of the eye centres gives
    ``r = k tan(yaw)``, so ``yaw = atan(r / k)``, with :data:`NOSE_DEPTH` ``k = 0.5``
    set by eye on LFW faces: ``r`` = 0.2, 0.3, 0.4 looked like turns of about 20, 30
    and 40 degrees. It is a proxy, good to perhaps 10 degrees: landmark models pull
    the points of turned faces towards a frontal shape, and the nose point differs by
    detector (YuNet's nose tip moved 1.2x as far as dlib's nose base on the same LFW
    faces). Positive: the nose is right of the eye midpoint in the image. Not
    measured (``None``, not checked) when an eye or the nose is itself estimated.

pitch (proxy)
    Where the nose lies between the eye line (0) and the mouth line (1), measured
    perpendicular to the eye line, ``t``. The ArcFace template puts it at
    ``t0 = 0.495`` (:data:`TEMPLATE_NOSE_RATIO`). Nodding moves the nose, which
    stands in front of the eyes and mouth, along that axis:
    ``t = t0 + c tan(pitch)``, with ``c = k / 1.154`` (the nose depth over the
    template's eye-to-mouth distance, 1.154 inter-ocular distances), so
    ``pitch = atan((t - t0) / c)``. Positive: head tilted down (chin in).
    **Only where the mouth corners are measured**: dlib's 5-point model has none and
    its detector estimates them from the template (``Face.estimated``), so ``t`` would
    be the template's own ratio; pitch is then not measured (``None``) and not
    checked. YuNet's nose tip sits low against the template: the median ``t`` was
    0.544 on LFW (a proxy of +6 degrees) and frontal portraits in ``pairs_deepface``
    read up to about +22 degrees, which the default threshold leaves room for.

detector score
    The detector's confidence. Its scale depends on the detector (dlib HOG: an SVM
    margin, 0.04-4 on LFW, median 1.6; YuNet: 0.85-0.95 on LFW, 0.65-0.96 on the
    colour photos), so there is no default threshold: set ``min_score`` for the
    detector in use. YuNet found two dog faces in ``groups/dlib_faces/dogs.jpg``
    (0.65, 0.77) that pass every other check; a YuNet ``min_score`` of 0.8 drops them
    and, on those photos, also a few small, blurred or turned human faces.

Every failed check adds a reason naming the measurement, its value and the threshold,
e.g. ``"inter-ocular distance 12.3 px < 20 px"``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from models.align import ARCFACE_112
from models.types import Face

logger = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]

SHARPNESS_SIZE = 64
"""Side, in pixels, of the square the chip's central half is resampled to before the
Laplacian is taken."""

NOSE_DEPTH = 0.5
"""``k``: how far the nose landmark stands in front of the eye centres, in inter-ocular
distances, as the yaw and pitch proxies assume it (set by eye on LFW, see above)."""

_L, _R, _N, _ML, _MR = ARCFACE_112.astype(np.float64)
_EYE_MID = (_L + _R) / 2
TEMPLATE_NOSE_RATIO = float((_N - _EYE_MID)[1] / ((_ML + _MR) / 2 - _EYE_MID)[1])
"""Where the ArcFace template's nose lies between its eye line (0) and mouth line (1)."""
_TEMPLATE_MOUTH_DROP = float(((_ML + _MR) / 2 - _EYE_MID)[1] / np.linalg.norm(_R - _L))
"""The template's eye-to-mouth distance in inter-ocular distances (about 1.154)."""

Check = Literal["inter_ocular", "box_size", "sharpness", "yaw", "pitch", "score"]


class QualityConfig(BaseModel):
    """Thresholds of the quality gate; ``None`` skips that check.

    How the defaults were chosen (dlib engine, LFW View-2 pairs from ``lfw_dev``, the
    verification threshold the best one on the untouched pairs, 98.6% of genuine
    pairs accepted there):

    * ``min_inter_ocular_px`` 20: with one image of each of 150 genuine and 150
      impostor pairs shrunk (faces mapped from the full-size detection), genuine
      acceptance stayed at 98.6% down to an inter-ocular distance of about 17 px,
      then fell to 97.3% at 13 px, 95.9% at 11 px and 91.9% at 9 px. 20 px keeps a
      margin for embedders less forgiving than dlib's; dlib's HOG detector needs
      upsampling to find faces that small anyway.
    * ``min_box_px`` 40: a backstop for boxes whose landmarks are off; dlib's box is
      about 2.5 inter-ocular distances, so 20 px of eye distance is a 50 px box.
    * ``min_sharpness`` 15: the same pairs with one image blurred (Gaussian sigma 1-4
      px at LFW's ~43 px inter-ocular distance), grouped by measured sharpness:
      genuine acceptance 97-99% at 15 and above, 94.5% at 11-15, 91.8% at 8-11,
      88.3% at 5-8, 79.3% below 5. Of 1,573 unaltered LFW images 0.06% read below 15
      (1.2% below 25). Set on dlib's chip; see the module notes for other chips.
    * ``max_abs_yaw_deg`` 35: 1% of those LFW images read beyond it. dlib's matching
      held up on the few LFW pairs turned further (all 4 genuine pairs past 40
      degrees accepted), so this
      is a policy for enrolment-grade faces more than a measured cliff; the proxy is
      itself good to about 10 degrees.
    * ``max_abs_pitch_deg`` 30: room for YuNet's +6 to +22 degree reading of frontal
      faces; checked only where the mouth corners are detected.
    * ``min_score`` None: scales differ by detector (module notes).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_inter_ocular_px: float | None = Field(
        20.0, ge=0, description="Least distance between the eye centres, image pixels"
    )
    min_box_px: float | None = Field(
        40.0, ge=0, description="Least shorter side of the detector's box, image pixels"
    )
    min_sharpness: float | None = Field(
        15.0,
        ge=0,
        description="Least variance of the Laplacian of the chip's central half at "
        f"{SHARPNESS_SIZE} px (set on dlib's 150 px chip)",
    )
    max_abs_yaw_deg: float | None = Field(
        35.0, gt=0, le=90, description="Largest |yaw| proxy, degrees"
    )
    max_abs_pitch_deg: float | None = Field(
        30.0,
        gt=0,
        le=90,
        description="Largest |pitch| proxy, degrees (checked only with measured mouth corners)",
    )
    min_score: float | None = Field(
        None, description="Least detector score; its scale depends on the detector"
    )


class QualityReport(BaseModel):
    """What was measured on one face, and whether it passed."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    inter_ocular_px: float
    box_min_side_px: float
    sharpness: float = Field(description="Variance of the Laplacian, see the module notes")
    yaw_deg: float | None = Field(
        description="None: eyes coincide, or an eye or the nose landmark is estimated"
    )
    pitch_deg: float | None = Field(
        description="None: mouth corners estimated (dlib) or no eye-to-mouth distance"
    )
    score: float
    passed: bool
    failed: list[Check] = Field(description="The checks that failed, in check order")
    reasons: list[str] = Field(description="One sentence per failed check")
    notes: list[str] = Field(default_factory=list, description="Checks that could not be made")


def sharpness(chip: npt.ArrayLike) -> float:
    """Variance of the Laplacian of the central half of an aligned crop, in grey,
    resampled to :data:`SHARPNESS_SIZE` square (higher is sharper)."""
    import cv2

    arr = np.asarray(chip)
    colour = arr.ndim == 3 and arr.shape[2] in (3, 4)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or colour) or min(arr.shape[:2]) < 4:
        raise ValueError(f"expected an (s, s[, 3]) uint8 chip, got {arr.dtype} {arr.shape}")
    grey = cv2.cvtColor(np.ascontiguousarray(arr[:, :, :3]), cv2.COLOR_RGB2GRAY) if colour else arr
    h, w = grey.shape
    y0, x0 = round(h / 4), round(w / 4)
    centre = np.ascontiguousarray(grey[y0 : h - y0, x0 : w - x0])
    shrinking = min(centre.shape) >= SHARPNESS_SIZE
    resized = cv2.resize(
        centre,
        (SHARPNESS_SIZE, SHARPNESS_SIZE),
        interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR,
    )
    lap = cv2.Laplacian(resized.astype(np.float64), cv2.CV_64F)
    return float(lap.var())


def pose(face: Face) -> tuple[float | None, float | None]:
    """``(yaw, pitch)`` proxies in degrees from the five landmarks (see the module notes).

    Both are ``None`` when the eyes coincide or an eye or the nose is estimated; pitch
    is also ``None`` when either mouth corner is estimated rather than detected (as
    with dlib), or the mouth does not lie below the eye line.
    """
    lm = np.asarray(face.landmarks, dtype=np.float64).reshape(5, 2)
    left, right, nose = lm[0], lm[1], lm[2]
    eyes = right - left
    iod = float(np.linalg.norm(eyes))
    if iod < 1e-6 or any(face.estimated[:3]):
        return None, None
    across = eyes / iod  # along the eye line
    down = np.array([-across[1], across[0]])  # perpendicular, towards the mouth
    mid = (left + right) / 2
    yaw = math.degrees(math.atan2(float((nose - mid) @ across) / iod, NOSE_DEPTH))
    if any(face.estimated[3:5]):
        return yaw, None
    mouth_drop = float(((lm[3] + lm[4]) / 2 - mid) @ down)
    if mouth_drop < 1e-6:
        return yaw, None
    t = float((nose - mid) @ down) / mouth_drop
    c = NOSE_DEPTH / _TEMPLATE_MOUTH_DROP
    pitch = math.degrees(math.atan2(t - TEMPLATE_NOSE_RATIO, c))
    return yaw, pitch


def assess(face: Face, chip: npt.ArrayLike, config: QualityConfig | None = None) -> QualityReport:
    """Measure ``face`` (found in some image) and its aligned ``chip`` (the engine's crop
    of that face) against ``config`` (defaults: :class:`QualityConfig()`)."""
    config = config or QualityConfig()
    lm = np.asarray(face.landmarks, dtype=np.float64).reshape(5, 2)
    iod = float(np.linalg.norm(lm[1] - lm[0]))
    box = float(min(face.width, face.height))
    sharp = sharpness(chip)
    yaw, pitch = pose(face)
    failed: list[Check] = []
    reasons: list[str] = []
    notes: list[str] = []

    def fail(check: Check, reason: str) -> None:
        failed.append(check)
        reasons.append(reason)

    if config.min_inter_ocular_px is not None and iod < config.min_inter_ocular_px:
        fail(
            "inter_ocular",
            f"inter-ocular distance {iod:.1f} px < {config.min_inter_ocular_px:g} px",
        )
    if config.min_box_px is not None and box < config.min_box_px:
        fail("box_size", f"face box shorter side {box:.1f} px < {config.min_box_px:g} px")
    if config.min_sharpness is not None and sharp < config.min_sharpness:
        fail(
            "sharpness",
            f"sharpness (Laplacian variance) {sharp:.1f} < {config.min_sharpness:g}: blurred",
        )
    if config.max_abs_yaw_deg is not None:
        if yaw is None and iod < 1e-6:
            fail("yaw", "yaw not measurable: the eye landmarks coincide")
        elif yaw is None:
            notes.append("yaw not checked: an eye or the nose landmark is estimated")
        elif abs(yaw) > config.max_abs_yaw_deg:
            fail("yaw", f"|yaw| proxy {abs(yaw):.1f} deg > {config.max_abs_yaw_deg:g} deg")
    if config.max_abs_pitch_deg is not None:
        if pitch is None:
            notes.append("pitch not checked: mouth corners estimated or not below the eyes")
        elif abs(pitch) > config.max_abs_pitch_deg:
            fail(
                "pitch",
                f"|pitch| proxy {abs(pitch):.1f} deg > {config.max_abs_pitch_deg:g} deg",
            )
    if config.min_score is not None and face.score < config.min_score:
        fail("score", f"detector score {face.score:.3f} < {config.min_score:g}")
    report = QualityReport(
        inter_ocular_px=iod,
        box_min_side_px=box,
        sharpness=sharp,
        yaw_deg=yaw,
        pitch_deg=pitch,
        score=face.score,
        passed=not failed,
        failed=failed,
        reasons=reasons,
        notes=notes,
    )
    if failed:
        logger.debug("face at %s rejected: %s", face.bbox, "; ".join(reasons))
    return report


class _Aligns(Protocol):
    def align(self, image: object, faces: Sequence[Face]) -> U8: ...


def gate(
    engine: _Aligns,
    image: object,
    faces: Sequence[Face],
    config: QualityConfig | None = None,
) -> list[QualityReport]:
    """One report per face of ``image``, in order: aligns them with ``engine`` (a
    :class:`~models.engine.FaceEngine` or an embedder) and assesses each."""
    if not faces:
        return []
    chips = engine.align(image, faces)
    return [assess(face, chip, config) for face, chip in zip(faces, chips, strict=True)]
