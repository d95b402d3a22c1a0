"""The command map's page: ``index.html``, ``app.js`` and ``map.css``, package data
served by :mod:`hub.api.routes.web` at ``/map``. Plain JavaScript with no build step
and nothing fetched from elsewhere, so the page works offline."""
