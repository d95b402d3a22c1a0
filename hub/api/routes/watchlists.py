"""Which galleries the sightings of a site are matched against (its watchlists).

Admins, officers and analysts read them; only admins replace them (audited
``site.watchlists.set``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from hub import audit
from hub.api.deps import AuthUser, DbSession, EngineDep, require
from hub.db.engine import write_session
from hub.db.models import Site, SiteGallery
from hub.db.users import Role

__all__ = ["SiteWatchlists", "WatchlistsUpdate", "router"]

router = APIRouter(prefix="/sites", tags=["watchlists"])

Reader = Annotated[AuthUser, Depends(require(Role.admin, Role.officer, Role.analyst))]
Admin = Annotated[AuthUser, Depends(require(Role.admin))]

GalleryName = Literal["supervised", "watchlist", "missing", "found"]


class WatchlistsUpdate(BaseModel):
    """The complete set of galleries a site matches against."""

    model_config = ConfigDict(extra="forbid")

    galleries: list[GalleryName] = Field(
        max_length=4, description="Galleries (person categories); empty stops matching."
    )

    @field_validator("galleries")
    @classmethod
    def _unique(cls, value: list[GalleryName]) -> list[GalleryName]:
        if len(set(value)) != len(value):
            raise ValueError("galleries must not repeat")
        return value


class SiteWatchlists(BaseModel):
    """The galleries a site's sightings are matched against."""

    model_config = ConfigDict(extra="forbid")

    site_id: str = Field(description="The site.")
    galleries: list[GalleryName] = Field(description="Galleries, sorted by name.")


def _galleries(session: Session, site_id: str) -> list[GalleryName]:
    rows = session.scalars(
        select(SiteGallery.gallery)
        .where(SiteGallery.site_id == site_id)
        .order_by(SiteGallery.gallery)
    )
    return [g for g in rows]  # type: ignore[misc]  # the table's check constraint


def _no_site() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail="no such site")


@router.get(
    "/{site_id}/watchlists",
    response_model=SiteWatchlists,
    summary="Read a site's watchlists",
    responses={404: {"description": "No such site."}},
)
def get_watchlists(site_id: str, _caller: Reader, session: DbSession) -> SiteWatchlists:
    """The galleries the site's sightings are matched against."""
    if session.get(Site, site_id) is None:
        raise _no_site()
    return SiteWatchlists(site_id=site_id, galleries=_galleries(session, site_id))


@router.put(
    "/{site_id}/watchlists",
    response_model=SiteWatchlists,
    summary="Replace a site's watchlists",
    responses={404: {"description": "No such site."}},
)
def put_watchlists(
    site_id: str, body: WatchlistsUpdate, caller: Admin, engine: EngineDep
) -> SiteWatchlists:
    """Replace the galleries the site matches against (audited); applies to the
    sightings that arrive from then on."""
    with write_session(engine) as session:
        if session.get(Site, site_id) is None:
            raise _no_site()
        before = _galleries(session, site_id)
        session.execute(delete(SiteGallery).where(SiteGallery.site_id == site_id))
        session.add_all(SiteGallery(site_id=site_id, gallery=g) for g in body.galleries)
        session.flush()
        after = _galleries(session, site_id)
        audit.append(
            session,
            actor=caller.username,
            role=caller.role.value,
            action="site.watchlists.set",
            purpose="configuration",
            target=f"site:{site_id}",
            result=f"{','.join(before) or '-'} -> {','.join(after) or '-'}",
        )
    return SiteWatchlists(site_id=site_id, galleries=after)
