"""``lantern faces``: face-engine tools and the accuracy harness."""

from __future__ import annotations

import json
import logging
import os
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from models.engine import EngineConfig, FaceEngine, build_engine
from models.errors import ModelError
from models.harness import Choice, Embedded, Found, choose_face, embed_files
from models.images import load_rgb
from models.verification import evaluate, image_path, read_pairs

logger = logging.getLogger(__name__)

app = typer.Typer(
    name="faces",
    help="Face engines: detect and compare faces, and measure accuracy on standard "
    "protocols. Scores are for a person to judge against a calibrated threshold.",
    no_args_is_help=True,
)
eval_app = typer.Typer(help="Accuracy harnesses on real face data.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")

EVAL_GROUP = "lantern.faces.eval"
"""Entry-point group through which other packages add ``lantern faces eval`` commands."""

DEFAULT_WORKERS = min(4, os.cpu_count() or 1)

_err = Console(stderr=True)
_out = Console()


DetectorOpt = Annotated[
    str, typer.Option(help="hog or cnn (dlib's own), or yunet (needs --yunet-model)")
]
UpsampleOpt = Annotated[int, typer.Option(min=0, max=3, help="dlib detector upsampling")]
YuNetOpt = Annotated[Path | None, typer.Option(help="YuNet .onnx file, for --detector yunet")]
EngineOpt = Annotated[
    Path | None,
    typer.Option(
        "--engine",
        help="JSON file of a full engine configuration (backend, detector, threads); "
        "overrides --detector/--upsample/--yunet-model",
    ),
]


FlipOpt = Annotated[
    bool,
    typer.Option(
        "--flip/--no-flip",
        help="Average each face's vector with its mirror image's (more accurate, twice the "
        "embedding time)",
    ),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print an error for a person and return the exit to raise."""
    _err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def engine_config(
    detector: str,
    upsample: int,
    yunet_model: Path | None,
    engine_file: Path | None,
    flip: bool = False,
) -> EngineConfig:
    """The engine the common command-line options describe."""
    try:
        if engine_file is not None:
            return EngineConfig.model_validate_json(engine_file.read_text(encoding="utf-8"))
        if detector == "yunet":
            if yunet_model is None:
                raise fail("--detector yunet needs --yunet-model PATH")
            return EngineConfig.model_validate(
                {"detector": {"type": "yunet", "model_path": yunet_model}, "flip": flip}
            )
        return EngineConfig.model_validate(
            {
                "backend": {"type": "dlib", "detector": detector, "upsample": upsample},
                "flip": flip,
            }
        )
    except OSError as exc:
        raise fail(f"cannot read {engine_file}: {exc}") from None
    except ValueError as exc:
        raise fail(f"bad engine configuration: {exc}") from None


def open_engine(config: EngineConfig) -> FaceEngine:
    try:
        return build_engine(config)
    except ModelError as exc:
        raise fail(str(exc)) from None


def _read(path: Path) -> np.ndarray:
    try:
        return load_rgb(path)
    except ModelError as exc:
        raise fail(str(exc)) from None


def progress(what: str) -> Progress:
    """A progress bar on stderr for long work."""
    return Progress(
        TextColumn(what),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=_err,
    )


def register_eval_plugins() -> None:
    """Add the evaluations other packages register in :data:`EVAL_GROUP` (the 1:N
    identification harness lives with the gallery it searches, outside ``models``)."""
    for ep in entry_points(group=EVAL_GROUP):
        try:
            eval_app.command(ep.name)(ep.load())
        except Exception as exc:  # a missing optional package must not break the rest
            logger.warning("faces eval %s unavailable: %s", ep.name, exc)


@app.command()
def detect(
    image: Annotated[Path, typer.Argument(help="Image file")],
    draw: Annotated[
        Path | None, typer.Option(help="Write a copy with boxes and landmarks (PNG/JPEG)")
    ] = None,
    detector: DetectorOpt = "hog",
    upsample: UpsampleOpt = 1,
    yunet_model: YuNetOpt = None,
    engine_file: EngineOpt = None,
) -> None:
    """Detect faces: print each box, score and five landmarks; optionally draw them."""
    import cv2

    rgb = _read(image)
    engine = open_engine(engine_config(detector, upsample, yunet_model, engine_file))
    faces = engine.detect(rgb)
    table = Table(title=f"{image}: {len(faces)} face(s)")
    for col in ("#", "box x0,y0,x1,y1", "score", "landmarks (estimated marked *)"):
        table.add_column(col)
    for i, face in enumerate(faces):
        marks = " ".join(
            f"{x:.0f},{y:.0f}{'*' if est else ''}"
            for (x, y), est in zip(face.landmarks.tolist(), face.estimated, strict=True)
        )
        table.add_row(str(i), ",".join(f"{v:.0f}" for v in face.bbox), f"{face.score:.3f}", marks)
    _out.print(table)
    if draw is not None:
        canvas = np.ascontiguousarray(rgb[:, :, ::-1])
        for i, face in enumerate(faces):
            x0, y0, x1, y1 = (int(round(v)) for v in face.bbox)
            cv2.rectangle(canvas, (x0, y0), (x1, y1), (0, 255, 0), 2)
            cv2.putText(
                canvas, str(i), (x0, max(0, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 255, 0), 1
            )
            for (x, y), est in zip(face.landmarks.tolist(), face.estimated, strict=True):
                colour = (0, 165, 255) if est else (0, 0, 255)
                cv2.circle(canvas, (int(round(x)), int(round(y))), 2, colour, -1)
        if not cv2.imwrite(str(draw), canvas):
            raise fail(f"cannot write {draw} (unknown extension?)")


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="First image")],
    b: Annotated[Path, typer.Argument(help="Second image")],
    detector: DetectorOpt = "hog",
    upsample: UpsampleOpt = 1,
    yunet_model: YuNetOpt = None,
    engine_file: EngineOpt = None,
    flip: FlipOpt = True,
) -> None:
    """Cosine similarity of the largest face in each image (a score, not a decision:
    compare it with a threshold calibrated for the purpose)."""
    engine = open_engine(engine_config(detector, upsample, yunet_model, engine_file, flip))
    vectors = []
    for path in (a, b):
        rgb = _read(path)
        face = choose_face(engine.detect(rgb), rgb.shape[1], rgb.shape[0], Choice.LARGEST)
        if face is None:
            raise fail(f"no face found in {path}")
        vectors.append(engine.embed(rgb, [face])[0])
    _out.print(f"{engine.model_id} cosine similarity: {float(vectors[0] @ vectors[1]):.4f}")


WorkersOpt = Annotated[
    int,
    typer.Option(min=1, max=64, help="Worker processes, each with its own engine"),
]


def embed_with_progress(
    config: EngineConfig, paths: list[Path], workers: int, what: str = "embedding"
) -> list[Embedded]:
    """Embed one subject per file with a progress bar (a line every 10% when stderr is
    not a terminal, e.g. in CI logs); errors are per file."""
    total = len(paths)
    done = 0
    step = max(1, total // 10)

    with progress(what) as bar:
        task = bar.add_task(what, total=total)

        def advance(_: Embedded) -> None:
            nonlocal done
            done += 1
            bar.advance(task)
            if not _err.is_terminal and (done % step == 0 or done == total):
                _err.print(f"{what}: {done}/{total}")

        return embed_files(config, paths, workers=workers, on_done=advance)


@eval_app.command("lfw")
def eval_lfw(
    root: Annotated[Path, typer.Option(help="Folder of <Name>/<Name>_NNNN.jpg images")],
    pairs: Annotated[Path, typer.Option(help="View-2 pairs file")],
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures here")
    ] = None,
    detector: DetectorOpt = "hog",
    upsample: UpsampleOpt = 1,
    yunet_model: YuNetOpt = None,
    engine_file: EngineOpt = None,
    flip: FlipOpt = True,
    workers: WorkersOpt = DEFAULT_WORKERS,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Use only the first N pairs of each half-fold")
    ] = None,
) -> None:
    """LFW View-2 verification: per-fold accuracy at thresholds chosen on the other folds,
    mean ± std, ROC AUC, TAR at FAR 1e-2 and 1e-3, and images with no face found.

    The face nearest the image centre is the subject. Where the detector finds no face it
    looks again on a 2x enlarged copy; if it still finds none the image's central box
    (the middle 40%, where LFW's alignment puts the face) is embedded instead, and the
    image is counted in ``no_face``.
    """
    try:
        all_pairs = read_pairs(pairs)
    except (ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    config = engine_config(detector, upsample, yunet_model, engine_file, flip)
    model_id = open_engine(config).model_id  # fail early, before any worker starts
    if limit is not None:
        counts: dict[tuple[int, bool], int] = {}
        kept = []
        for p in all_pairs:
            key = (p.fold, p.same)
            if counts.get(key, 0) < limit:
                counts[key] = counts.get(key, 0) + 1
                kept.append(p)
        all_pairs = kept
    images = sorted({image_path(root, who) for p in all_pairs for who in (p.a, p.b)})
    results = embed_with_progress(config, images, workers)
    unreadable = [r for r in results if r.error is not None]
    if unreadable:
        raise fail(f"{len(unreadable)} image(s) could not be read, e.g. {unreadable[0].error}")
    vectors = {r.path: r.vector for r in results if r.vector is not None}
    no_face = [str(r.path.relative_to(root)) for r in results if r.found is Found.CENTRAL]
    enlarged = sum(r.found is Found.ENLARGED for r in results)
    scores = np.array(
        [float(vectors[image_path(root, p.a)] @ vectors[image_path(root, p.b)]) for p in all_pairs]
    )
    same = np.array([p.same for p in all_pairs])
    folds = np.array([p.fold for p in all_pairs], dtype=np.int64)
    report = evaluate(scores, same, folds)
    table = Table(
        title=f"LFW View 2, {model_id}, {len(all_pairs)} pairs, {len(np.unique(folds))} folds"
    )
    table.add_column("fold")
    table.add_column("threshold", justify="right")
    table.add_column("accuracy", justify="right")
    for k, (t, a) in enumerate(zip(report.fold_thresholds, report.fold_accuracies, strict=True)):
        table.add_row(str(k + 1), f"{t:.4f}", f"{a:.4f}")
    table.add_row("mean ± std", "", f"{report.accuracy_mean:.4f} ± {report.accuracy_std:.4f}")
    _out.print(table)
    _out.print(
        f"AUC {report.auc:.4f}  TAR@FAR=1e-2 {report.tar_at_far_1e_2:.4f}  "
        f"TAR@FAR=1e-3 {report.tar_at_far_1e_3:.4f}\n"
        f"{len(images)} images: {enlarged} faces found only on a 2x enlarged copy, "
        f"{len(no_face)} with no face found (their central box embedded)"
    )
    if json_path is not None:
        figures = {
            "model_id": model_id,
            "engine": config.model_dump(mode="json"),
            "pairs": len(all_pairs),
            "images": len(images),
            "accuracy_mean": report.accuracy_mean,
            "accuracy_std": report.accuracy_std,
            "fold_accuracies": report.fold_accuracies,
            "fold_thresholds": report.fold_thresholds,
            "auc": report.auc,
            "tar_at_far_1e-2": report.tar_at_far_1e_2,
            "tar_at_far_1e-3": report.tar_at_far_1e_3,
            "found_enlarged": enlarged,
            "no_face": len(no_face),
            "no_face_images": no_face,
            "no_face_fallback": "central 40% box embedded",
        }
        json_path.write_text(json.dumps(figures, indent=2) + "\n")


register_eval_plugins()
