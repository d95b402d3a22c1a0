"""``lantern hub rebuild-galleries``: rebuild every gallery from the database and save
it under ``<data_dir>/galleries`` for the hub to load at start-up."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

from hub.cli_options import DatabaseUrl, DataDir, resolve_database_url
from hub.db.engine import make_engine
from hub.galleries import GalleryService

__all__ = ["galleries_dir", "rebuild_galleries"]

logger = logging.getLogger(__name__)

_PROGRESS_EVERY = 10_000


def galleries_dir(data_dir: Path | None) -> Path:
    """``<data_dir>/galleries``; the data directory defaults as the database does
    (``LANTERN_DATA_DIR``, else ./data)."""
    base = data_dir if data_dir is not None else Path(os.environ.get("LANTERN_DATA_DIR", "./data"))
    return base / "galleries"


def rebuild_galleries(database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Rebuild every gallery (person category x embedding model) from the face
    templates in the database and save it under DATA_DIR/galleries."""
    url = resolve_database_url(database_url, data_dir)
    target = galleries_dir(data_dir)
    engine = make_engine(url)
    last: dict[tuple[str, str], int] = {}

    def progress(gallery: str, model_id: str, done: int) -> None:
        key = (gallery, model_id)
        if done - last.get(key, 0) >= _PROGRESS_EVERY:
            last[key] = done
            typer.echo(f"  {gallery}/{model_id}: {done} templates read")

    try:
        service = GalleryService(cache_dir=target)
        counts = service.load_from_db(engine, use_cache=False, progress=progress)
        written = service.save(engine)
    finally:
        engine.dispose()
    for count in counts:
        typer.echo(
            f"{count.gallery}/{count.model_id}: {count.templates} templates of "
            f"{count.persons} persons"
        )
    if not counts:
        typer.echo("no face templates in the database; nothing to build")
    logger.info("%d galleries saved under %s", len(written), target)
    typer.echo(f"{len(written)} galleries saved under {target}")
