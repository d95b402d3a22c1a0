"""Face engines: detect, align and embed behind one interface.

``detect(image) -> list[Face]`` (bbox, five landmarks in :data:`LANDMARK_NAMES`
order, score) and ``embed(image, faces) -> (n, dim)`` L2-normalised float32, with
``model_id`` naming the embedder and its alignment. Backends: ``dlib`` (the default,
offline) and ``insightface`` (operator-supplied ONNX packs); the YuNet detector can
stand in for either backend's own. Build one with :func:`build_engine` from an
:class:`EngineConfig`. Knows faces, not galleries or services.
"""

from models.dlib_backend import DlibConfig, DlibEngine
from models.engine import EngineConfig, FaceEngine, build_engine
from models.errors import BackendUnavailable, InvalidImage, ModelError
from models.insightface_backend import InsightFaceConfig
from models.types import LANDMARK_NAMES, Face
from models.yunet import YuNetConfig

__all__ = [
    "LANDMARK_NAMES",
    "BackendUnavailable",
    "DlibConfig",
    "DlibEngine",
    "EngineConfig",
    "Face",
    "FaceEngine",
    "InsightFaceConfig",
    "InvalidImage",
    "ModelError",
    "YuNetConfig",
    "build_engine",
]
