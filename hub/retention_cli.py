"""``lantern hub purge-expired``: erase the reunion cases whose retention ran out.

Run it daily (cron or a systemd timer) while the hub is **stopped**, or from the
running hub's own clock: a running hub holds its galleries in memory and would save
the erased vectors again on stop. It loads the galleries from ``<data_dir>/galleries``
(or rebuilds them), erases every expired case (see :mod:`hub.retention`) and leaves
no saved gallery file holding their vectors.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated

import typer

from hub.cli_options import DatabaseUrl, DataDir, resolve_database_url
from hub.db.engine import make_engine
from hub.db.models import utcnow
from hub.galleries import GalleryService
from hub.gallery_cli import galleries_dir
from hub.retention import expired_cases
from hub.retention import purge_expired as purge

__all__ = ["purge_expired"]

logger = logging.getLogger(__name__)


def purge_expired(
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
    now: Annotated[
        datetime | None,
        typer.Option(
            "--now",
            help="Erase what expired by this time (UTC if no zone given); default now.",
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"],
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the expired cases, erase nothing.")
    ] = False,
) -> None:
    """Erase the photos, templates and records of closed reunion cases whose
    retention period ended, and their vectors from every gallery (audited
    ``reunion.erase``, purpose retention_expiry)."""
    url = resolve_database_url(database_url, data_dir)
    when = utcnow() if now is None else (now if now.tzinfo else now.replace(tzinfo=utcnow().tzinfo))
    engine = make_engine(url)
    try:
        if dry_run:
            ids = expired_cases(engine, when)
            for person_id in ids:
                typer.echo(f"would erase person:{person_id}")
            typer.echo(f"{len(ids)} expired cases")
            return
        galleries = GalleryService(cache_dir=galleries_dir(data_dir))
        galleries.load_from_db(engine)
        done = purge(engine, galleries, when)
    finally:
        engine.dispose()
    for erasure in done:
        typer.echo(
            f"erased person:{erasure.person_id} ({erasure.case_id}): {erasure.templates} "
            f"templates, {erasure.gallery_vectors} gallery vectors"
            + ("" if erasure.galleries_ok else "; galleries NOT updated, rebuild them")
        )
    logger.info("%d expired cases erased", len(done))
    typer.echo(f"{len(done)} expired cases erased")
