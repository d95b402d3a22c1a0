"""Sites (admin writes; officers and analysts read): list, read, create.

A site id follows :data:`devices.catalog.SITE_ID_PATTERN` (it appears in site files of
the firmware configuration folder); the time zone is an IANA name known to this
machine's zone database. Creating a site is audited (``site.create``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from hub import audit
from hub.api.deps import AuthUser, DbSession, EngineDep, PageParams, paginate, require
from hub.api.schemas import Page, SiteCreate, SitePublic
from hub.db.engine import write_session
from hub.db.models import Site
from hub.db.users import Role

router = APIRouter(prefix="/sites", tags=["sites"])

Reader = Annotated[AuthUser, Depends(require(Role.admin, Role.officer, Role.analyst))]
Admin = Annotated[AuthUser, Depends(require(Role.admin))]


@router.get("", response_model=Page[SitePublic], summary="List sites")
def list_sites(_caller: Reader, session: DbSession, page: PageParams) -> Page[SitePublic]:
    """Sites by id, a page at a time."""
    return paginate(session, select(Site), page, SitePublic.model_validate, Site.site_id)


@router.get(
    "/{site_id}",
    response_model=SitePublic,
    summary="Read a site",
    responses={404: {"description": "No such site."}},
)
def get_site(site_id: str, _caller: Reader, session: DbSession) -> SitePublic:
    """One site by id."""
    site = session.get(Site, site_id)
    if site is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such site")
    return SitePublic.model_validate(site)


@router.post(
    "",
    response_model=SitePublic,
    status_code=status.HTTP_201_CREATED,
    summary="Create a site",
    responses={409: {"description": "A site with this id exists."}},
)
def post_site(body: SiteCreate, caller: Admin, engine: EngineDep) -> SitePublic:
    """Create a site (audited as ``site.create``)."""
    try:
        with write_session(engine) as session:
            if session.get(Site, body.site_id) is not None:
                raise HTTPException(status.HTTP_409_CONFLICT, detail="site exists")
            site = Site(site_id=body.site_id, name=body.name, timezone=body.timezone)
            session.add(site)
            session.flush()
            audit.append(
                session,
                actor=caller.username,
                role=caller.role.value,
                action="site.create",
                target=f"site:{body.site_id}",
                result=f"timezone={body.timezone}",
            )
            public = SitePublic.model_validate(site)
    except IntegrityError as exc:  # created meanwhile by another request
        raise HTTPException(status.HTTP_409_CONFLICT, detail="site exists") from exc
    return public
