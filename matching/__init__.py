"""Matching core: galleries of face templates searched with FAISS.

Knows vectors, not faces or services: the face engines live in ``models`` and the
services in ``hub``/``edge``. See :mod:`matching.gallery` for the contract.
"""

from matching.calibration import Calibration, calibrate
from matching.errors import (
    CalibrationError,
    CorruptGallery,
    DuplicateTemplate,
    GalleryMismatch,
    InvalidIds,
    InvalidQuery,
    InvalidVectors,
    MatchingError,
    UnknownTemplate,
)
from matching.gallery import Candidate, Gallery, GalleryConfig, GalleryStats, SearchMode
from matching.policy import IndexPlan, IndexPolicy

__all__ = [
    "Calibration",
    "CalibrationError",
    "Candidate",
    "CorruptGallery",
    "DuplicateTemplate",
    "Gallery",
    "GalleryConfig",
    "GalleryMismatch",
    "GalleryStats",
    "IndexPlan",
    "IndexPolicy",
    "InvalidIds",
    "InvalidQuery",
    "InvalidVectors",
    "MatchingError",
    "SearchMode",
    "UnknownTemplate",
    "calibrate",
]
