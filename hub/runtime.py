"""The services one ``lantern hub serve`` process shares between ingest and the API.

Ingest and the API run in one process and must see the same state: a template
enrolled through the API has to be in the gallery the next sighting is matched
against, and a position stored by ingest has to reach the feed's WebSocket clients.
:class:`HubRuntime` builds those shared objects once and hands them to both sides:

* the galleries (:class:`hub.galleries.GalleryService`), loaded on start from the
  cache under ``<data_dir>/galleries`` when it matches the database, else rebuilt
  from the ``face_templates`` table, and saved again on a clean stop;
* the sighting sink (:class:`hub.sighting_matching.MatchingSightingSink`) that
  matches each new sighting against its site's galleries;
* the supervision service (:class:`hub.supervision.service.SupervisionService`):
  ingest's position and alarm sink, with its clock thread for curfews, silence and
  SLA escalations; the API reloads it when zones or rules change;
* the live feed (:class:`hub.feed.FeedBroker`) and the ingest observer that fills
  it (:class:`hub.feed.FeedObserver`), which also carries the supervision alerts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy import Engine

from hub.configpush import ConfigPublisher
from hub.feed import FeedBroker, FeedObserver
from hub.galleries import GalleryService
from hub.sighting_matching import MatchingSightingSink
from hub.supervision.service import SupervisionService

__all__ = ["HubRuntime"]

logger = logging.getLogger(__name__)


@dataclass
class HubRuntime:
    """Shared services of one hub process (see the module docstring)."""

    engine: Engine
    galleries: GalleryService
    sightings: MatchingSightingSink
    supervision: SupervisionService
    feed: FeedBroker
    observer: FeedObserver

    @classmethod
    def build(cls, engine: Engine, data_dir: Path) -> HubRuntime:
        """Load the galleries and the supervision state; make the sinks, the feed and
        its observer on ``engine``. Nothing runs until :meth:`start`."""
        galleries = GalleryService(cache_dir=data_dir / "galleries")
        counts = galleries.load_from_db(engine)
        logger.info("galleries loaded: %s", counts or "none enrolled")
        feed = FeedBroker()
        observer = FeedObserver(engine, feed)
        return cls(
            engine=engine,
            galleries=galleries,
            sightings=MatchingSightingSink(engine, galleries),
            supervision=SupervisionService(engine, on_alert=observer.on_alert),
            feed=feed,
            observer=observer,
        )

    def start(self) -> None:
        """Start the supervision clock."""
        self.supervision.start()

    def install(self, app: FastAPI, publisher: ConfigPublisher | None) -> None:
        """Give the API this process's galleries, feed and config publisher."""
        app.state.galleries = self.galleries
        app.state.feed = self.feed
        app.state.supervision = self.supervision
        app.state.config_publisher = publisher

    def close(self) -> None:
        """Stop the supervision clock (its state is saved) and save the galleries so
        the next start can load them instead of rebuilding."""
        self.supervision.stop()
        try:
            paths = self.galleries.save(self.engine)
        except Exception:
            logger.exception("saving the galleries failed; the next start rebuilds them")
            return
        logger.info("galleries saved (%d)", len(paths))
