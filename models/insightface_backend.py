"""The ``insightface`` face engine: SCRFD detection and an ArcFace-style ONNX embedder.

Models come from a folder laid out like insightface's ``buffalo_l`` pack (for example
``det_10g.onnx`` and ``w600k_r50.onnx``); nothing is ever downloaded. Unless the
configuration names the files, each ``*.onnx`` in the folder is loaded, in name
order, through ``insightface.model_zoo.get_model``, which tells a detector from a
recognition model by the graph's inputs and outputs; the first of each kind is kept
and the others (landmark, gender/age models of a full pack) are dropped.

Detection is insightface's own SCRFD code, run on onnxruntime's CPU provider with
:attr:`EngineConfig.threads <models.engine.EngineConfig.threads>` intra-op threads;
its five keypoints are already in :data:`~models.types.LANDMARK_NAMES` order.
Alignment is ours (:func:`models.align.warp` onto the ArcFace template), and so is
the embedder's input: RGB, channels first, ``(x - mean) / std`` with the mean and
standard deviation insightface derives for the model (127.5 and 127.5 unless the
graph normalises its input itself), the output L2-normalised.

A pack with no detector works when the engine is given another detector (YuNet);
a pack with no recognition model can detect but not embed.

insightface's pretrained weights are licensed for non-commercial research only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from models.align import ARCFACE_112, warp
from models.errors import BackendUnavailable
from models.images import as_rgb
from models.types import Face

logger = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]

INSTALL = "pip install -e '.[insightface]' && pip install --no-deps insightface==2.1"
"""How to install the runtime: insightface itself without its dependencies, since it
asks for ``opencv-python`` while this project uses ``opencv-python-headless``."""

_PACK = "a detector such as det_10g.onnx and a recognition model such as w600k_r50.onnx"


class InsightFaceConfig(BaseModel):
    """Configuration of the insightface engine."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["insightface"] = "insightface"
    model_dir: Path = Field(description=f"Folder of ONNX models, like buffalo_l: {_PACK}")
    detector_file: str | None = Field(
        None,
        description="Detector file name in model_dir (or a path); found by loading "
        "each *.onnx when unset",
    )
    recognition_file: str | None = Field(
        None,
        description="Recognition file name in model_dir (or a path); found by loading "
        "each *.onnx when unset",
    )
    det_size: int = Field(
        640, ge=64, le=2048, multiple_of=32, description="Square detector input, in pixels"
    )
    det_thresh: float = Field(0.5, ge=0.0, le=1.0, description="Drop faces scoring below this")
    nms_thresh: float = Field(0.4, ge=0.0, le=1.0, description="Overlap merged by NMS")


def _runtime() -> tuple[Any, Any]:
    """The ``onnxruntime`` and ``insightface.model_zoo`` modules, or BackendUnavailable."""
    try:
        import onnxruntime
        from insightface import model_zoo
    except ImportError as exc:
        raise BackendUnavailable(
            f"the insightface backend needs insightface and onnxruntime ({exc}): {INSTALL}"
        ) from exc
    return onnxruntime, model_zoo


def _session_options(onnxruntime: Any, threads: int) -> Any:
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # errors only: initializer-name warnings are noise
    return opts


class InsightFaceEngine:
    """Detect with SCRFD, align to ArcFace's template and embed with an ONNX model.

    ``need_detector`` / ``need_recognition`` say which models the caller will use:
    a needed one that is missing raises BackendUnavailable here, and a detector that
    is not needed is not loaded. Not thread-safe: one instance per thread.
    """

    def __init__(
        self,
        config: InsightFaceConfig,
        *,
        threads: int = 1,
        need_detector: bool = True,
        need_recognition: bool = True,
    ) -> None:
        self.config = config
        onnxruntime, model_zoo = _runtime()
        if not config.model_dir.is_dir():
            raise BackendUnavailable(
                f"insightface model folder not found: {config.model_dir} (it should hold {_PACK})"
            )
        self._load_kwargs = {
            "providers": ["CPUExecutionProvider"],
            "sess_options": _session_options(onnxruntime, threads),
        }
        self._model_zoo = model_zoo
        self.detector_path: Path | None = None
        self.detection_model: Any = None
        """insightface's SCRFD object, when a detector is loaded."""
        self.recognition_path: Path | None = None
        self.recognition_model: Any = None
        """insightface's ArcFaceONNX object, when a recognition model is loaded."""
        self._unreadable: dict[str, str] = {}
        self._find_models(need_detector)

        missing = [
            role
            for role, needed, model in (
                ("detector", need_detector, self.detection_model),
                ("recognition", need_recognition, self.recognition_model),
            )
            if needed and model is None
        ]
        if missing:
            raise BackendUnavailable(self._missing_message(" or ".join(missing)))

        if self.detection_model is not None:
            self.detection_model.prepare(
                0,  # a non-negative id: keep the providers given above
                det_thresh=config.det_thresh,
                nms_thresh=config.nms_thresh,
                input_size=(config.det_size, config.det_size),
            )
        if self.recognition_model is not None:
            self._setup_recognition(self.recognition_model)
        logger.info(
            "insightface engine: detector %s, recognition %s, %d thread(s)",
            self.detector_path.name if self.detector_path else None,
            self.recognition_path.name if self.recognition_path else None,
            threads,
        )

    # -- loading ---------------------------------------------------------------------

    def _load(self, path: Path) -> Any:
        """insightface's model object for an ONNX file (None if it routes nowhere)."""
        try:
            return self._model_zoo.get_model(str(path), **self._load_kwargs)
        except Exception as exc:  # onnxruntime raises its own, undocumented, types
            raise BackendUnavailable(f"cannot load insightface model {path}: {exc}") from exc

    def _explicit(self, name: str, task: str) -> tuple[Path, Any]:
        path = self.config.model_dir / name
        if not path.is_file():
            raise BackendUnavailable(f"insightface {task} model file not found: {path}")
        model = self._load(path)
        found = getattr(model, "taskname", None)
        if found != task:
            raise BackendUnavailable(
                f"{path} is not a {task} model (insightface reads it as {found or 'unknown'})"
            )
        return path, model

    def _find_models(self, need_detector: bool) -> None:
        """Load the configured files, then route the folder's other ``*.onnx`` files
        (in name order) for the roles still open. An unreadable file met while
        searching is skipped and named in the error if nothing suitable is found."""
        cfg = self.config
        if cfg.recognition_file is not None:
            self.recognition_path, self.recognition_model = self._explicit(
                cfg.recognition_file, "recognition"
            )
        if cfg.detector_file is not None and need_detector:
            self.detector_path, self.detection_model = self._explicit(
                cfg.detector_file, "detection"
            )
        want_detector = need_detector and cfg.detector_file is None
        want_recognition = cfg.recognition_file is None
        for path in sorted(cfg.model_dir.glob("*.onnx")):
            if not (want_detector or want_recognition):
                break
            if path in (self.detector_path, self.recognition_path):
                continue
            try:
                model = self._load(path)
            except BackendUnavailable as exc:
                logger.warning("insightface: skipping %s: %s", path.name, exc)
                self._unreadable[path.name] = str(exc.__cause__ or exc)
                continue
            task = getattr(model, "taskname", None)
            if task == "detection" and want_detector:
                self.detector_path, self.detection_model = path, model
                want_detector = False
            elif task == "recognition" and want_recognition:
                self.recognition_path, self.recognition_model = path, model
                want_recognition = False
            else:
                logger.debug("insightface: %s (%s) not used", path.name, task)
        if self.detection_model is not None and not self.detection_model.use_kps:
            raise BackendUnavailable(
                f"{self.detector_path} gives no facial keypoints; use a keypoint model "
                "(det_10g.onnx, or an scrfd_*_kps / *_bnkps one)"
            )

    def _missing_message(self, role: str) -> str:
        names = sorted(p.name for p in self.config.model_dir.glob("*.onnx"))
        found = ", ".join(names) if names else "no .onnx files"
        if self._unreadable:
            found += "; unreadable: " + "; ".join(f"{n}: {e}" for n, e in self._unreadable.items())
        hint = (
            " (or configure another detector, e.g. yunet, in the engine)"
            if role.startswith("detector")
            else ""
        )
        return (
            f"no insightface {role} model in {self.config.model_dir} (found: {found}); "
            f"it should hold {_PACK}{hint}"
        )

    def _setup_recognition(self, model: Any) -> None:
        inp = model.session.get_inputs()[0]
        height, width = inp.shape[2], inp.shape[3]
        if height != width or not isinstance(height, int) or height % 112:
            raise BackendUnavailable(
                f"{self.recognition_path}: input {inp.shape} is not a square multiple of 112"
            )
        self._size = height
        self._template = (ARCFACE_112 * np.float32(height / 112)).astype(np.float32)
        self._input_name = str(inp.name)
        self._output_name = str(model.session.get_outputs()[0].name)
        self._mean = np.float32(model.input_mean)
        self._scale = np.float32(1.0 / float(model.input_std))
        batch = inp.shape[0]
        self._fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        out_dim = model.session.get_outputs()[0].shape[-1]
        if not isinstance(out_dim, int):  # a dynamic output: ask the model once
            probe = np.zeros((1, height, height, 3), dtype=np.uint8)
            out_dim = int(self._run(probe).shape[1])
        self._dim = int(out_dim)

    def _recognition(self) -> Any:
        if self.recognition_model is None:
            raise BackendUnavailable(self._missing_message("recognition"))
        return self.recognition_model

    # -- the Embedder interface ------------------------------------------------------

    @property
    def model_id(self) -> str:
        """``insightface-<recognition file stem>``, e.g. ``insightface-w600k_r50``."""
        self._recognition()
        assert self.recognition_path is not None
        return f"insightface-{self.recognition_path.stem}"

    @property
    def dim(self) -> int:
        self._recognition()
        return self._dim

    @property
    def chip_size(self) -> int:
        """The side of the aligned crop the model takes (112 for ArcFace models)."""
        self._recognition()
        return self._size

    def detect(self, image: object) -> list[Face]:
        """Faces in an RGB (or grey) uint8 image, best score first."""
        if self.detection_model is None:
            raise BackendUnavailable(self._missing_message("detector"))
        rgb = as_rgb(image)
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # insightface's detector reads BGR
        size = self.config.det_size
        boxes, points = self.detection_model.detect(bgr, input_size=(size, size), max_num=0)
        faces = [
            Face(
                bbox=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
                landmarks=np.asarray(kps, dtype=np.float32).reshape(5, 2),
                score=float(b[4]),
            )
            for b, kps in zip(boxes, points, strict=True)
        ]
        return sorted(faces, key=lambda f: -f.score)

    def align(self, image: object, faces: Sequence[Face]) -> U8:
        """``(len(faces), s, s, 3)`` RGB crops, each face's five landmarks carried onto
        the ArcFace template by a similarity transform."""
        self._recognition()
        rgb = as_rgb(image)
        out = np.empty((len(faces), self._size, self._size, 3), dtype=np.uint8)
        for i, face in enumerate(faces):
            out[i] = warp(rgb, face.landmarks, self._template, self._size)
        return out

    def embed_aligned(self, chips: U8) -> F32:
        """``(n, dim)`` L2-normalised vectors of aligned RGB crops in one network call (in
        calls of the model's own batch size if its graph fixes one)."""
        self._recognition()
        s = self._size
        if chips.ndim != 4 or chips.shape[1:] != (s, s, 3) or chips.dtype != np.uint8:
            raise ValueError(f"expected (n, {s}, {s}, 3) uint8 chips, got {chips.shape}")
        if len(chips) == 0:
            return np.empty((0, self._dim), dtype=np.float32)
        step = self._fixed_batch or len(chips)
        raw = np.concatenate([self._run(chips[i : i + step]) for i in range(0, len(chips), step)])
        norms = np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)
        out: F32 = np.ascontiguousarray(raw / norms, dtype=np.float32)
        return out

    def embed(self, image: object, faces: Sequence[Face]) -> F32:
        """``(len(faces), dim)`` L2-normalised vectors of ``faces`` in ``image``."""
        return self.embed_aligned(self.align(image, faces))

    def _run(self, chips: U8) -> F32:
        """Raw network outputs for RGB chips: NCHW float32, ``(x - mean) * (1 / std)``;
        a short batch is padded with black crops for a graph with a fixed batch size."""
        n = len(chips)
        if self._fixed_batch is not None and n < self._fixed_batch:
            pad = np.zeros((self._fixed_batch - n, *chips.shape[1:]), dtype=np.uint8)
            chips = np.concatenate([chips, pad])
        blob = (chips.astype(np.float32) - self._mean) * self._scale
        blob = np.ascontiguousarray(blob.transpose(0, 3, 1, 2))
        session = self._recognition().session
        (out,) = session.run([self._output_name], {self._input_name: blob})
        result: F32 = np.asarray(out, dtype=np.float32).reshape(len(chips), -1)[:n]
        return result
