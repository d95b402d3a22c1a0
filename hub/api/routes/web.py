"""The command map: ``GET /map`` (the page) and ``GET /map/{asset}`` (its script and
style), and ``GET /api/v1/map/config`` (the page's settings, any signed-in role).

The page and its assets sit outside ``/api`` and need no token: they hold no data. The
page signs in through ``POST /api/v1/auth/token``, keeps the token in the tab's
``sessionStorage`` and calls the API and the live feed with it, so each request is
checked against the caller's role like any other client's. The assets are package
data of :mod:`hub.web`; they are served with a Content-Security-Policy that admits
scripts, styles and connections of this origin only (plus images of the configured
tile server, if any), so the page cannot load anything from elsewhere.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, HTTPException, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field

from hub.api.deps import API_PREFIX, AuthUser, SettingsDep, require
from hub.db.users import Role

__all__ = ["ASSETS", "MapConfig", "router", "tile_url"]

logger = logging.getLogger(__name__)

router = APIRouter(tags=["map"])

ASSETS: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "map.css": "text/css; charset=utf-8",
}
"""The files of :mod:`hub.web` that are served, with their media types; no other name
is looked up (no path from the request reaches the file system)."""

AnyRole = Annotated[AuthUser, Depends(require(*Role))]


class MapConfig(BaseModel):
    """What the map page needs to know about this hub."""

    model_config = ConfigDict(extra="forbid")

    tile_url: str | None = Field(
        description="Raster tile URL template with {z}, {x}, {y}; null: draw no tiles."
    )


def tile_url(template: str | None) -> str | None:
    """The configured tile template if it is usable (http or https, with {z}, {x} and
    {y}), else None (logged)."""
    if not template:
        return None
    scheme = urlsplit(template).scheme
    if scheme not in ("http", "https") or not all(k in template for k in ("{z}", "{x}", "{y}")):
        logger.warning("map_tile_url ignored: need an http(s) URL with {z}, {x} and {y}")
        return None
    return template


def _policy(template: str | None) -> str:
    images = "'self' data: blob:"
    if template:
        parts = urlsplit(template)
        images += f" {parts.scheme}://{parts.netloc}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        f"img-src {images}; connect-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    )


def _serve(name: str, template: str | None) -> Response:
    data = resources.files("hub.web").joinpath(name).read_bytes()
    return Response(
        content=data,
        media_type=ASSETS[name],
        headers={
            "Content-Security-Policy": _policy(template),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        },
    )


@router.get("/map", include_in_schema=False)
def map_page(settings: SettingsDep) -> Response:
    """The command map page (no token needed: it signs in itself)."""
    return _serve("index.html", tile_url(settings.map_tile_url))


@router.get("/map/{asset}", include_in_schema=False)
def map_asset(
    asset: Annotated[str, Path(max_length=32, description="Asset file name.")],
    settings: SettingsDep,
) -> Response:
    """The page's script and style sheet."""
    if asset not in ASSETS or asset == "index.html":
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such asset")
    return _serve(asset, tile_url(settings.map_tile_url))


@router.get(
    f"{API_PREFIX}/map/config",
    response_model=MapConfig,
    summary="The command map's settings",
)
def map_config(_caller: AnyRole, settings: SettingsDep) -> MapConfig:
    """Settings the map page reads after signing in (the raster tile template)."""
    return MapConfig(tile_url=tile_url(settings.map_tile_url))
