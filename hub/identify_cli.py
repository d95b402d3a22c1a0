"""``lantern faces eval identify``: 1:N identification figures of a face engine searched
through the hub's gallery (registered into ``lantern faces eval`` as an entry point, so
``models`` never imports the gallery)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hub.identification import DEFAULT_FPIRS, evaluate_identification, split_people
from models.cli import (
    DEFAULT_WORKERS,
    DetectorOpt,
    EngineOpt,
    FlipOpt,
    UpsampleOpt,
    WorkersOpt,
    YuNetOpt,
    embed_with_progress,
    engine_config,
    fail,
    open_engine,
)
from models.harness import Found

logger = logging.getLogger(__name__)

_out = Console()

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


def _people(root: Path, limit: int | None) -> dict[str, list[str]]:
    if not root.is_dir():
        raise fail(f"{root} is not a folder of <person>/<image> files")
    people = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        names = sorted(
            f.name for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
        )
        if names:
            people[folder.name] = names
        if limit is not None and len(people) >= limit:
            break
    if not people:
        raise fail(f"no <person>/<image> files under {root}")
    return people


def identify(
    root: Annotated[Path, typer.Option(help="Folder of <person>/<image> files (LFW's layout)")],
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the figures here")
    ] = None,
    k: Annotated[int, typer.Option(min=1, max=50, help="Rank for the rank-k rate")] = 10,
    people: Annotated[
        int | None, typer.Option(min=2, help="Use only the first N people (sorted by name)")
    ] = None,
    detector: DetectorOpt = "hog",
    upsample: UpsampleOpt = 1,
    yunet_model: YuNetOpt = None,
    engine_file: EngineOpt = None,
    flip: FlipOpt = True,
    workers: WorkersOpt = DEFAULT_WORKERS,
) -> None:
    """1:N identification (NIST FRTE terms): people with two or more images enrol their
    first and search with the others (mated); people with one image alternate between
    gallery distractors and non-mated searches. Reports rank-1 and rank-k identification
    rates, and the calibrated alert threshold with the FNIR at FPIR 0.01 and 0.003.
    """
    folders = _people(root, people)
    config = engine_config(detector, upsample, yunet_model, engine_file, flip)
    model_id = open_engine(config).model_id
    split = split_people(folders)
    keys = sorted(split.enrolled + split.distractors + split.mated + split.nonmated)
    results = embed_with_progress(config, [root / p / n for p, n in keys], workers)
    vectors = {}
    unreadable = no_face = 0
    for key, result in zip(keys, results, strict=True):
        if result.error is not None:
            unreadable += 1
            logger.warning("left out: %s", result.error)
        elif result.vector is not None:
            vectors[key] = result.vector
        no_face += result.found is Found.CENTRAL
    try:
        report = evaluate_identification(model_id, vectors, split, k=k, fpirs=DEFAULT_FPIRS)
    except ValueError as exc:
        raise fail(f"{root}: {exc}") from None
    table = Table(title=f"1:N identification, {model_id}, gallery of {report.gallery_persons}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("mated searches", str(report.mated_searches))
    table.add_row("non-mated searches", str(report.nonmated_searches))
    table.add_row("rank-1 identification rate", f"{report.rank1:.4f}")
    table.add_row(f"rank-{k} identification rate", f"{report.rank_k:.4f}")
    for cal in report.calibrations:
        note = "" if cal.resolved else " (sample too small for this FPIR)"
        table.add_row(
            f"FNIR at FPIR {cal.target_fpir:g}{note}",
            f"{cal.fnir:.4f} (threshold {cal.threshold:.4f}, FPIR {cal.fpir:.4f})",
        )
    table.add_row("images with no face found (central box embedded)", str(no_face))
    table.add_row("unreadable images left out", str(unreadable))
    _out.print(table)
    alert = report.calibrations[0]
    _out.print(
        f"alert threshold for FPIR {alert.target_fpir:g}: {alert.threshold:.4f} "
        f"(FNIR {alert.fnir:.4f}); every result is a candidate for a person to review"
    )
    if json_path is not None:
        figures = report.model_dump(mode="json") | {
            "engine": config.model_dump(mode="json"),
            "alert_threshold": alert.threshold,
            "no_face": no_face,
            "unreadable": unreadable,
        }
        json_path.write_text(json.dumps(figures, indent=2) + "\n")
