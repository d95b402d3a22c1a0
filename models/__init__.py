"""Face engines: detect, align and embed behind one interface.

``detect(image) -> list[Face]`` (bbox, five landmarks in :data:`LANDMARK_NAMES`
order, score) and ``embed(image, faces) -> (n, dim)`` L2-normalised float32, with
``model_id`` naming the embedder and its alignment. Backends: ``dlib`` (the default,
offline); insightface and YuNet arrive with the face-engine issue. Knows faces, not
galleries or services.
"""

from models.dlib_backend import DlibConfig, DlibEngine
from models.errors import BackendUnavailable, InvalidImage, ModelError
from models.types import LANDMARK_NAMES, Face

__all__ = [
    "LANDMARK_NAMES",
    "BackendUnavailable",
    "DlibConfig",
    "DlibEngine",
    "Face",
    "InvalidImage",
    "ModelError",
]
