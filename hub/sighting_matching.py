"""Matching of stored face sightings against the galleries of the camera's site.

:class:`MatchingSightingSink` is ingest's :class:`~hub.ingest.SightingSink`: for each
newly stored sighting it finds the stored row, the device's site and the galleries
that site matches against (``site_galleries``), searches each gallery that has
templates of the sighting's ``model_id`` in alert mode, stores the candidates at or
above the threshold as ``sighting_candidates`` (ranked by score over all the site's
galleries), writes one audit row per sighting searched, and hands the candidates to
an optional ``on_matched`` callback. It never raises into ingest: a failure is logged
and the sighting stays stored without candidates.

Thresholds are per embedding model (a score means nothing across models): see
:data:`DEFAULT_ALERT_THRESHOLDS`. A sighting of a model with no threshold is not
searched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from devices.protocol import SightingEvent
from hub import audit
from hub.db.engine import write_session
from hub.db.models import Device, Sighting, SightingCandidate, SiteGallery
from hub.galleries import GalleryService

__all__ = [
    "DEFAULT_ALERT_THRESHOLDS",
    "DEFAULT_K",
    "DLIB_ALERT_THRESHOLD",
    "MATCHING_ACTOR",
    "MatchedCandidate",
    "MatchingSightingSink",
]

logger = logging.getLogger(__name__)

DLIB_ALERT_THRESHOLD = 0.9596
"""Alert threshold of the dlib engine (``dlib-resnet-v1``), in the galleries' units:
cosine similarity of L2-normalised vectors (the inner product ``matching.gallery``
returns). From ``benchmarks/results/identify_dlib.json`` (``lantern faces eval
identify`` on the shared LFW images, 2,190 enrolled persons, enrolment with the
mirror-image average): 0.959572 gives a false-positive identification rate of 0.0095
at the 0.01 target, at the cost of missing 59% of mated searches (FNIR 0.589). dlib's
vectors crowd into a narrow cone, so its familiar Euclidean distance 0.6 (cosine 0.82)
would alert on most strangers in a gallery of that size. Recalibrate for the gallery
sizes and cameras of a deployment."""

DEFAULT_ALERT_THRESHOLDS: Mapping[str, float] = {"dlib-resnet-v1": DLIB_ALERT_THRESHOLD}
"""Alert threshold per ``model_id``."""

DEFAULT_K = 5
"""Candidates kept per gallery searched."""

MATCHING_ACTOR = "hub:matching"


@dataclass(frozen=True)
class MatchedCandidate:
    """A stored candidate of a sighting, as handed to ``on_matched``."""

    person_id: int
    template_id: int
    gallery: str
    model_id: str
    score: float
    rank: int


OnMatched = Callable[[int, Sequence[MatchedCandidate]], None]


class MatchingSightingSink:
    """Matches each newly stored sighting; see the module docstring."""

    def __init__(
        self,
        engine: Engine,
        galleries: GalleryService,
        *,
        k: int = DEFAULT_K,
        threshold: float | Mapping[str, float] = DEFAULT_ALERT_THRESHOLDS,
        on_matched: OnMatched | None = None,
    ) -> None:
        self.engine = engine
        self.galleries = galleries
        self.k = k
        self.thresholds = threshold
        self.on_matched = on_matched

    def threshold_for(self, model_id: str) -> float | None:
        if isinstance(self.thresholds, int | float):
            return float(self.thresholds)
        return self.thresholds.get(model_id)

    def on_sighting(self, event: SightingEvent, received_at: datetime) -> None:
        """Match one newly stored sighting (never raises)."""
        try:
            self.match(event.device_id, event.event_id)
        except Exception:
            logger.exception(
                "matching of sighting %s from %s failed", event.event_id, event.device_id
            )

    def match(self, device_id: str, event_id: str) -> list[MatchedCandidate] | None:
        """Match the stored sighting ``(device_id, event_id)``; returns its candidates,
        or None when it was not searched (unknown sighting, no galleries for the site,
        no threshold or no gallery of its model)."""
        with Session(self.engine) as session:
            row = session.execute(
                select(Sighting.id, Sighting.model_id, Sighting.embedding, Device.site_id)
                .join(Device, Device.device_id == Sighting.device_id)
                .where(Sighting.device_id == device_id, Sighting.event_id == event_id)
            ).first()
            if row is None:
                logger.warning("sighting %s of %s not found; not matched", event_id, device_id)
                return None
            sighting_id, model_id, embedding, site_id = row
            site_galleries = list(
                session.scalars(
                    select(SiteGallery.gallery)
                    .where(SiteGallery.site_id == site_id)
                    .order_by(SiteGallery.gallery)
                )
            )
        if not site_galleries:
            return None
        threshold = self.threshold_for(model_id)
        if threshold is None:
            logger.warning(
                "no alert threshold for model %s; sighting %d not matched", model_id, sighting_id
            )
            return None
        searched = [g for g in site_galleries if model_id in self.galleries.models(g)]
        if not searched:
            logger.debug("no gallery of model %s for site %s", model_id, site_id)
            return None
        vector = np.frombuffer(embedding, dtype="<f4").astype(np.float32)
        vector /= max(float(np.linalg.norm(vector)), 1e-12)  # unit within 1e-3 at ingest
        found: list[tuple[str, int, int, float]] = []
        for gallery in searched:
            for hit in self.galleries.search(gallery, model_id, vector, self.k, threshold)[0]:
                found.append((gallery, hit.person_id, hit.template_id, hit.score))
        found.sort(key=lambda c: -c[3])
        candidates = [
            MatchedCandidate(
                person_id=p, template_id=t, gallery=g, model_id=model_id, score=s, rank=rank
            )
            for rank, (g, p, t, s) in enumerate(found, start=1)
        ]
        with write_session(self.engine) as session:
            existing = session.scalar(
                select(SightingCandidate.id).where(SightingCandidate.sighting_id == sighting_id)
            )
            if existing is not None:
                logger.info("sighting %d already has candidates; left as is", sighting_id)
                return None
            session.add_all(
                SightingCandidate(
                    sighting_id=sighting_id,
                    person_id=c.person_id,
                    template_id=c.template_id,
                    gallery=c.gallery,
                    model_id=c.model_id,
                    score=c.score,
                    rank=c.rank,
                )
                for c in candidates
            )
            audit.append(
                session,
                actor=MATCHING_ACTOR,
                role="system",
                action="sighting.search",
                purpose="watchlist",
                target=f"sighting:{sighting_id}",
                result=f"{len(candidates)} candidates",
            )
        if candidates:
            logger.info(
                "sighting %d from %s: %d candidates, best score %.4f",
                sighting_id,
                device_id,
                len(candidates),
                candidates[0].score,
            )
            if self.on_matched is not None:
                try:
                    self.on_matched(sighting_id, candidates)
                except Exception:
                    logger.exception("on_matched callback failed for sighting %d", sighting_id)
        return candidates
