"""What a hub lets its peers search: per peer, per purpose, the galleries, and whether
face crops may be sent back.

In the federation file::

    policy:
      region-a:                      # a peer id
        missing_person: [found]      # purpose -> galleries it may search here
        found_person: [missing]
        crops: true                  # answers to region-a may carry face crops
      region-b:
        criminal_investigation: [watchlist]

A peer without an entry, a purpose without galleries, or a gallery not listed for the
purpose is refused with a reason. Crops are off unless ``crops: true``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DEFAULT_GALLERIES",
    "GalleryName",
    "PeerPolicy",
    "PolicyDecision",
    "Purpose",
    "check_policy",
]

Purpose = Literal["missing_person", "found_person", "criminal_investigation", "watchlist"]
"""Why a match request is made (:data:`hub.db.models.MATCH_PURPOSES`)."""

GalleryName = Literal["supervised", "watchlist", "missing", "found"]
"""A gallery: a person category."""

DEFAULT_GALLERIES: Mapping[str, tuple[str, ...]] = {
    "missing_person": ("found",),
    "found_person": ("missing",),
    "criminal_investigation": ("watchlist",),
    "watchlist": ("watchlist",),
}
"""The galleries a request searches when it names none: a missing person is looked for
among the found persons, a found person among the missing ones."""


class PeerPolicy(BaseModel):
    """What one peer may search here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    missing_person: list[GalleryName] = Field(
        default_factory=list, description="Galleries a missing-person request may search."
    )
    found_person: list[GalleryName] = Field(
        default_factory=list, description="Galleries a found-person request may search."
    )
    criminal_investigation: list[GalleryName] = Field(
        default_factory=list, description="Galleries a criminal investigation may search."
    )
    watchlist: list[GalleryName] = Field(
        default_factory=list, description="Galleries a watchlist request may search."
    )
    crops: bool = Field(default=False, description="Whether answers may carry face crops.")

    def galleries(self, purpose: str) -> list[str]:
        """The galleries ``purpose`` may search (empty: the purpose is not allowed)."""
        value = getattr(self, purpose, None) if purpose in DEFAULT_GALLERIES else None
        return list(value) if isinstance(value, list) else []


@dataclass(frozen=True)
class PolicyDecision:
    """Whether a peer's request may run here, and with crops or not."""

    allowed: bool
    reason: str | None = None
    crops: bool = False


def check_policy(
    policy: Mapping[str, PeerPolicy], peer: str, purpose: str, galleries: Sequence[str]
) -> PolicyDecision:
    """May ``peer`` search ``galleries`` for ``purpose``? Every gallery must be allowed."""
    rules = policy.get(peer)
    if rules is None:
        return PolicyDecision(False, f"no policy for peer {peer}: it may search nothing here")
    allowed = rules.galleries(purpose)
    if not allowed:
        return PolicyDecision(False, f"purpose {purpose} is not allowed for peer {peer}")
    if not galleries:
        return PolicyDecision(False, "no gallery named")
    refused = [g for g in galleries if g not in allowed]
    if refused:
        return PolicyDecision(
            False,
            f"gallery {', '.join(refused)} may not be searched for {purpose} by {peer} "
            f"(allowed: {', '.join(allowed)})",
        )
    return PolicyDecision(True, None, rules.crops)
