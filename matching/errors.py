"""Domain errors of the matching core.

Every problem a caller can cause (bad vectors, wrong model, unknown ids, a damaged
file) is raised as one of these, with a message naming the problem, before any of
it reaches FAISS, whose own checks abort with assertions or crash the process.
"""

from __future__ import annotations


class MatchingError(Exception):
    """Base class of every error raised by ``matching``."""


class InvalidVectors(MatchingError):
    """Vectors of the wrong shape, dtype, dimension, with non-finite values or not unit-length."""


class InvalidIds(MatchingError):
    """Template or person ids that are malformed, duplicated or of the wrong length."""


class DuplicateTemplate(InvalidIds):
    """A template id that is already in the gallery, or repeated within one batch."""


class UnknownTemplate(InvalidIds):
    """A template id that the gallery does not hold."""


class InvalidQuery(MatchingError):
    """A search request that cannot be answered as asked (k out of range, missing threshold)."""


class GalleryMismatch(MatchingError):
    """A saved gallery written for another ``model_id``, dimension or format version."""


class CorruptGallery(MatchingError):
    """A saved gallery whose files are missing, truncated or fail their checksum."""


class CalibrationError(MatchingError):
    """Score samples that cannot give a threshold (empty, non-finite, bad target)."""
