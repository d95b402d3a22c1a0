"""``lantern faces``: face-engine tools and the accuracy harness."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from models.dlib_backend import DlibConfig, DlibEngine
from models.errors import ModelError
from models.images import load_rgb
from models.types import Face
from models.verification import evaluate, image_path, read_pairs

logger = logging.getLogger(__name__)

app = typer.Typer(
    name="faces",
    help="Face engines: evaluate accuracy on standard protocols (more tools arrive with the "
    "face-engine issue).",
    no_args_is_help=True,
)
eval_app = typer.Typer(help="Accuracy harnesses on real face data.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")

_err = Console(stderr=True)
_out = Console()


def _centre_face(faces: list[Face], width: int, height: int) -> Face | None:
    """The face whose nose is nearest the image centre (LFW centres the labelled person)."""
    if not faces:
        return None
    centre = np.array([width / 2, height / 2], dtype=np.float32)
    return min(faces, key=lambda f: float(np.linalg.norm(f.landmarks[2] - centre)))


def _engine(detector: str, upsample: int) -> DlibEngine:
    try:
        return DlibEngine(DlibConfig.model_validate({"detector": detector, "upsample": upsample}))
    except (ValueError, ModelError) as exc:
        _err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None


def _read(path: Path) -> np.ndarray:
    try:
        return load_rgb(path)
    except ModelError as exc:
        _err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None


@app.command()
def detect(
    image: Annotated[Path, typer.Argument(help="Image file")],
    draw: Annotated[
        Path | None, typer.Option(help="Write a copy with boxes and landmarks (PNG/JPEG)")
    ] = None,
    detector: Annotated[str, typer.Option(help="hog or cnn")] = "hog",
    upsample: Annotated[int, typer.Option(min=0, max=3, help="Detector upsampling")] = 1,
) -> None:
    """Detect faces: print each box, score and five landmarks; optionally draw them."""
    import cv2

    rgb = _read(image)
    faces = _engine(detector, upsample).detect(rgb)
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
            _err.print(f"[bold red]error:[/] cannot write {draw} (unknown extension?)")
            raise typer.Exit(2)


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="First image")],
    b: Annotated[Path, typer.Argument(help="Second image")],
    detector: Annotated[str, typer.Option(help="hog or cnn")] = "hog",
    upsample: Annotated[int, typer.Option(min=0, max=3, help="Detector upsampling")] = 1,
) -> None:
    """Cosine similarity of the largest face in each image (a score, not a decision:
    compare it with a threshold calibrated for the purpose)."""
    engine = _engine(detector, upsample)
    vectors = []
    for path in (a, b):
        rgb = _read(path)
        faces = engine.detect(rgb)
        if not faces:
            _err.print(f"[bold red]error:[/] no face found in {path}")
            raise typer.Exit(2)
        largest = max(faces, key=lambda f: f.width * f.height)
        vectors.append(engine.embed(rgb, [largest])[0])
    _out.print(f"{engine.model_id} cosine similarity: {float(vectors[0] @ vectors[1]):.4f}")


@eval_app.command("lfw")
def eval_lfw(
    root: Annotated[Path, typer.Option(help="Folder of <Name>/<Name>_NNNN.jpg images")],
    pairs: Annotated[Path, typer.Option(help="View-2 pairs file")],
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures here")
    ] = None,
    detector: Annotated[str, typer.Option(help="hog or cnn")] = "hog",
    upsample: Annotated[int, typer.Option(min=0, max=3, help="Detector upsampling")] = 1,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Use only the first N pairs of each half-fold")
    ] = None,
) -> None:
    """LFW View-2 verification: per-fold accuracy at thresholds chosen on the other folds,
    mean ± std, ROC AUC, TAR at FAR 1e-2 and 1e-3, and images with no face found.

    Where the detector finds no face it looks again with one more upsampling; if it
    still finds none the image's central box (the middle 40%, where LFW's alignment
    puts the face) is embedded instead, and the image is counted in ``no_face``.
    """
    try:
        all_pairs = read_pairs(pairs)
    except (ValueError, OSError) as exc:
        _err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    engine = _engine(detector, upsample)
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
    vectors: dict[Path, np.ndarray] = {}
    no_face: list[str] = []
    with Progress(
        TextColumn("embedding"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=_err,
    ) as progress:
        task = progress.add_task("embed", total=len(images))
        for path in images:
            image = _read(path)
            h, w = image.shape[:2]
            face = _centre_face(engine.detect(image), w, h)
            if face is None and upsample < 3:  # small or hard faces: look closer once
                face = _centre_face(engine.detect(image, upsample + 1), w, h)
            if face is None:
                no_face.append(str(path.relative_to(root)))
                box = (0.3 * w, 0.3 * h, 0.7 * w, 0.7 * h)
                face = Face(bbox=box, landmarks=np.zeros((5, 2), np.float32), score=0.0)
            vectors[path] = engine.embed(image, [face])[0]
            progress.advance(task)
    scores = np.array(
        [float(vectors[image_path(root, p.a)] @ vectors[image_path(root, p.b)]) for p in all_pairs]
    )
    same = np.array([p.same for p in all_pairs])
    folds = np.array([p.fold for p in all_pairs], dtype=np.int64)
    report = evaluate(scores, same, folds)
    table = Table(
        title=f"LFW View 2, {engine.model_id}, {len(all_pairs)} pairs, "
        f"{len(np.unique(folds))} folds"
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
        f"TAR@FAR=1e-3 {report.tar_at_far_1e_3:.4f}  images with no face found: {len(no_face)}"
        " (embedded from the central box)"
    )
    if json_path is not None:
        figures = {
            "model_id": engine.model_id,
            "detector": detector,
            "pairs": len(all_pairs),
            "accuracy_mean": report.accuracy_mean,
            "accuracy_std": report.accuracy_std,
            "fold_accuracies": report.fold_accuracies,
            "fold_thresholds": report.fold_thresholds,
            "auc": report.auc,
            "tar_at_far_1e-2": report.tar_at_far_1e_2,
            "tar_at_far_1e-3": report.tar_at_far_1e_3,
            "no_face": len(no_face),
            "no_face_images": no_face,
            "no_face_fallback": "central 40% box embedded",
        }
        json_path.write_text(json.dumps(figures, indent=2) + "\n")
