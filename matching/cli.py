"""``lantern match``: build, search and inspect galleries from ``.npy`` files.

Inputs are NumPy ``.npy`` files: vectors ``(n, dim)`` float32 (L2-normalised), ids
``(n,)`` integers. Files are memory-mapped and streamed in blocks, so a build never
needs the whole input in memory.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import faiss
import numpy as np
import numpy.typing as npt
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from matching.calibration import calibrate
from matching.errors import MatchingError
from matching.gallery import Gallery, GalleryConfig, SearchMode
from matching.persistence import current_generation
from matching.policy import IndexPolicy

logger = logging.getLogger(__name__)

app = typer.Typer(
    name="match",
    help=(
        "Face-template galleries: build one from .npy files, search it, show its stats, "
        "calibrate alert thresholds. Vectors must be L2-normalised float32 rows of one "
        "model; every result is a candidate for a person to confirm."
    ),
    no_args_is_help=True,
)

_out = Console()
_err = Console(stderr=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _load_npy(path: Path, what: str) -> npt.NDArray[Any]:
    try:
        arr: npt.NDArray[Any] = np.load(path, mmap_mode="r", allow_pickle=False)
        return arr
    except FileNotFoundError:
        raise _fail(f"{what}: no such file {path}") from None
    except (ValueError, OSError) as exc:
        raise _fail(f"{what}: {path} is not a readable .npy array ({exc})") from None


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        faiss.omp_set_num_threads(threads)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=_err,
        transient=False,
    )


@app.command()
def build(
    out: Annotated[Path, typer.Argument(help="Gallery directory to write")],
    vectors: Annotated[Path, typer.Option(help=".npy of (n, dim) L2-normalised float32 vectors")],
    model_id: Annotated[
        str, typer.Option(help="Embedder that made the vectors, e.g. dlib-resnet-v1")
    ],
    purpose: Annotated[str, typer.Option(help="watchlist, inmates, missing, found ...")],
    template_ids: Annotated[
        Path | None, typer.Option(help=".npy of n integer template ids (default 0..n-1)")
    ] = None,
    person_ids: Annotated[
        Path | None, typer.Option(help=".npy of n integer person ids (default: template ids)")
    ] = None,
    block: Annotated[int, typer.Option(min=1, help="Templates read per block")] = 65_536,
    flat_max: Annotated[
        int | None, typer.Option(help="Exact search up to this many templates (policy default)")
    ] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="FAISS threads")] = None,
    replace: Annotated[bool, typer.Option(help="Overwrite an existing gallery at OUT")] = False,
) -> None:
    """Build a gallery from .npy files (streamed in blocks) and save it crash-safely."""
    _set_threads(threads)
    vecs = _load_npy(vectors, "--vectors")
    if vecs.ndim != 2:
        raise _fail(f"--vectors: expected a 2-d array (n, dim), got shape {vecs.shape}")
    n, dim = vecs.shape
    tids = _load_npy(template_ids, "--template-ids") if template_ids else np.arange(n)
    pids = _load_npy(person_ids, "--person-ids") if person_ids else tids
    for name, ids in (("--template-ids", tids), ("--person-ids", pids)):
        if ids.shape != (n,):
            raise _fail(f"{name}: shape {ids.shape} does not match {n} vectors")
    try:
        exists = not replace and out.exists() and current_generation(out) is not None
    except MatchingError as exc:  # a damaged gallery is still one
        raise _fail(f"{exc}; {out} holds a damaged gallery") from None
    if exists:
        raise _fail(f"{out} already holds a gallery; pass --replace to overwrite it")
    policy = IndexPolicy() if flat_max is None else IndexPolicy(flat_max=flat_max)
    try:
        config = GalleryConfig(model_id=model_id, dim=dim, purpose=purpose, policy=policy)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    gallery = Gallery(config, out)
    with _progress() as progress:
        reading = progress.add_task("reading", total=n)
        indexing = progress.add_task("indexing", total=n)

        def blocks() -> Iterator[tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]]:
            for start in range(0, n, block):
                stop = min(start + block, n)
                yield tids[start:stop], pids[start:stop], vecs[start:stop]
                progress.advance(reading, stop - start)

        try:
            gallery.rebuild(
                blocks(), spill_dir=out, progress=lambda done: progress.advance(indexing, done)
            )
            gallery.save()
        except MatchingError as exc:
            raise _fail(str(exc)) from None
    stats = gallery.stats()
    _err.print(f"built {out}: {stats.count} templates, {stats.persons} persons, {stats.index}")


@app.command()
def search(
    gallery_dir: Annotated[Path, typer.Argument(help="Gallery directory")],
    queries: Annotated[Path, typer.Option(help=".npy of (n, dim) L2-normalised probe vectors")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=50, help="Candidates per probe")] = 10,
    mode: Annotated[
        SearchMode,
        typer.Option(help="investigative: top-k, no threshold; alert: only >= threshold"),
    ] = SearchMode.INVESTIGATIVE,
    threshold: Annotated[float | None, typer.Option(help="Alert threshold (alert mode)")] = None,
    model_id: Annotated[
        str | None, typer.Option(help="Model of the probes; refused if the gallery's differs")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
    threads: Annotated[int | None, typer.Option(min=1, help="FAISS threads")] = None,
) -> None:
    """Search probes against a gallery: ranked candidates, one per person, exact scores."""
    _set_threads(threads)
    probes = _load_npy(queries, "--queries")
    try:
        gallery = Gallery.load(gallery_dir, expect_model_id=model_id)
        results = gallery.search(np.asarray(probes), k=k, mode=mode, threshold=threshold)
    except MatchingError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        for i, row in enumerate(results):
            line = {"query": i, "candidates": [c._asdict() for c in row]}
            sys.stdout.write(json.dumps(line) + "\n")
        return
    table = Table(title=f"{gallery_dir} — {mode.value}, k={k} (candidates, not identities)")
    for col in ("query", "rank", "person_id", "template_id", "score"):
        table.add_column(col, justify="right")
    for i, row in enumerate(results):
        if not row:
            table.add_row(str(i), "-", "-", "-", "-")
        for rank, cand in enumerate(row, 1):
            table.add_row(
                str(i), str(rank), str(cand.person_id), str(cand.template_id), f"{cand.score:.4f}"
            )
    _out.print(table)


@app.command()
def stats(
    gallery_dir: Annotated[Path, typer.Argument(help="Gallery directory")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table")] = False,
) -> None:
    """Show a saved gallery's model, size, index kind and memory."""
    try:
        info = Gallery.load(gallery_dir).stats()
    except MatchingError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        sys.stdout.write(info.model_dump_json(indent=2) + "\n")
        return
    table = Table(title=str(gallery_dir), show_header=False)
    for key, value in info.model_dump().items():
        table.add_row(key, str(value))
    _out.print(table)


@app.command(name="calibrate")
def calibrate_cmd(
    mated: Annotated[Path, typer.Option(help=".npy of the mate's score for each mated search")],
    nonmated: Annotated[Path, typer.Option(help=".npy of the top score of each non-mated search")],
    target_fpir: Annotated[float, typer.Option(help="Target false-positive identification rate")],
) -> None:
    """Alert threshold for a target FPIR, and the FNIR at it (NIST FRTE definitions)."""
    try:
        result = calibrate(
            np.asarray(_load_npy(mated, "--mated")),
            np.asarray(_load_npy(nonmated, "--nonmated")),
            target_fpir,
        )
    except MatchingError as exc:
        raise _fail(str(exc)) from None
    sys.stdout.write(result.model_dump_json(indent=2) + "\n")
