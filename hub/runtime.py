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
  it (:class:`hub.feed.FeedObserver`), which also carries the supervision alerts;
* the retention clock: every :data:`RETENTION_SWEEP_S` seconds (and at start) closed
  reunion cases past their retention end are erased, vectors included
  (:func:`hub.retention.purge_expired`), so a running hub never writes erased vectors
  back to disk.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy import Engine

from hub.configpush import ConfigPublisher
from hub.federation.peers import federation_for
from hub.feed import FeedBroker, FeedObserver
from hub.galleries import GalleryService
from hub.retention import purge_expired
from hub.sighting_matching import MatchingSightingSink
from hub.supervision.service import SupervisionService

__all__ = ["HubRuntime"]

logger = logging.getLogger(__name__)

RETENTION_SWEEP_S = 3600.0
"""How often the running hub erases reunion cases whose retention ended."""


@dataclass
class HubRuntime:
    """Shared services of one hub process (see the module docstring)."""

    engine: Engine
    galleries: GalleryService
    sightings: MatchingSightingSink
    supervision: SupervisionService
    feed: FeedBroker
    observer: FeedObserver
    _stop: threading.Event = field(default_factory=threading.Event)
    _sweeper: threading.Thread | None = None

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
        """Start the supervision clock and the retention sweep."""
        self.supervision.start()
        self._stop.clear()
        self._sweeper = threading.Thread(target=self._sweep, name="retention", daemon=True)
        self._sweeper.start()

    def _sweep(self) -> None:
        while True:
            try:
                erased = purge_expired(self.engine, self.galleries)
            except Exception:
                logger.exception("retention sweep failed; trying again later")
            else:
                if erased:
                    logger.info("retention: %d expired reunion cases erased", len(erased))
            if self._stop.wait(RETENTION_SWEEP_S):
                return

    def install(self, app: FastAPI, publisher: ConfigPublisher | None) -> None:
        """Give the API this process's galleries, feed and config publisher, and load
        the federation file of its settings, if any."""
        app.state.galleries = self.galleries
        app.state.feed = self.feed
        app.state.supervision = self.supervision
        app.state.config_publisher = publisher
        # Federation (a peer's signed searches, outgoing match requests) when the
        # settings name a federation file; read now so a bad file stops the start.
        federation = federation_for(app.state)
        if federation is not None:
            logger.info(
                "federation: hub %s with peers %s",
                federation.hub_id,
                ", ".join(federation.peer_ids()) or "none",
            )

    def close(self) -> None:
        """Stop the supervision clock (its state is saved) and save the galleries so
        the next start can load them instead of rebuilding."""
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(30)
        self.supervision.stop()
        try:
            paths = self.galleries.save(self.engine)
        except Exception:
            logger.exception("saving the galleries failed; the next start rebuilds them")
            return
        logger.info("galleries saved (%d)", len(paths))
