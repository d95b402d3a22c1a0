"""Loading the demo sites into a running hub, through its public API only.

:class:`Api` is a small JSON client on the standard library (the hub's runtime needs
no HTTP client package). :func:`load_site` creates, for one shipped site map
(:mod:`devices.simulation.site`): the site, its zones (the map's ``zone`` features and
the curfew home as a circle), the site map itself when the hub offers
``PUT /sites/{id}/map``, a supervised person and a registered wearable per simulated
device, the rules that bind them, and a camera with the site's watchlists.
:func:`enrol_watchlist` enrols the demo watchlist from photos that ship inside
installed packages.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import secrets
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from devices.simulation.scenarios import ScenarioSpec
from devices.simulation.site import SiteMap

__all__ = [
    "CAMERA_MODEL",
    "Api",
    "ApiError",
    "DemoDevice",
    "LoadedSite",
    "camera_id",
    "enrol_watchlist",
    "load_site",
]

logger = logging.getLogger(__name__)

CAMERA_MODEL = "lantern-bodycam-b1"
"""Catalog model of the demo's cameras: its profile detects with dlib, which every
install has (the fixed camera's SCRFD needs model files the demo does not ship)."""


class ApiError(RuntimeError):
    """The hub answered a request with an unexpected status."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status


class Api:
    """JSON over HTTP to the hub at ``base_url`` (``http://HOST:PORT``)."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _send(
        self, method: str, path: str, data: bytes | None, content_type: str | None
    ) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"{self.base_url}/api/v1{path}", data=data, method=method
        )
        if content_type is not None:
            request.add_header("Content-Type", content_type)
        if self.token is not None:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode("utf-8", errors="replace")
        return status, body

    def call(
        self, method: str, path: str, body: Any = None, *, ok: tuple[int, ...] = (200, 201)
    ) -> Any:
        """Send ``body`` as JSON; the decoded answer, or :class:`ApiError`."""
        data = json.dumps(body).encode() if body is not None else None
        status, answer = self._send(method, path, data, "application/json" if data else None)
        if status not in ok:
            raise ApiError(method, path, status, json.dumps(answer))
        return answer

    def try_call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send ``body`` as JSON; the status and the decoded answer, whatever they are."""
        data = json.dumps(body).encode() if body is not None else None
        return self._send(method, path, data, "application/json" if data else None)

    def login(self, username: str, password: str) -> str:
        """Exchange a password for a bearer token (and use it from now on)."""
        form = urllib.parse.urlencode({"username": username, "password": password}).encode()
        status, answer = self._send(
            "POST", "/auth/token", form, "application/x-www-form-urlencoded"
        )
        if status != 200 or not isinstance(answer, dict):
            raise ApiError("POST", "/auth/token", status, json.dumps(answer))
        token = str(answer["access_token"])
        self.token = token
        return token

    def upload(self, path: str, field_name: str, files: list[Path]) -> Any:
        """POST files as ``multipart/form-data`` under one field name."""
        boundary = f"lantern-demo-{secrets.token_hex(12)}"
        parts: list[bytes] = []
        for file in files:
            mime = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{field_name}"; '
                f'filename="{file.name}"\r\nContent-Type: {mime}\r\n\r\n'.encode()
                + file.read_bytes()
                + b"\r\n"
            )
        data = b"".join(parts) + f"--{boundary}--\r\n".encode()
        status, answer = self._send(
            "POST", path, data, f"multipart/form-data; boundary={boundary}"
        )
        if status not in (200, 201):
            raise ApiError("POST", path, status, json.dumps(answer))
        return answer


@dataclass(frozen=True)
class DemoDevice:
    """A simulated wearable of the demo and what it plays."""

    device_id: str
    scenario: ScenarioSpec
    subject: bool = True
    """A supervised person wears it (False: the protected person's own device)."""
    proximity_to: str | None = None
    """Device id of the protected person this subject must keep away from."""


@dataclass
class LoadedSite:
    """What :func:`load_site` created."""

    site_id: str
    zones: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    persons: dict[str, int] = field(default_factory=dict)
    """Supervised person id by device id."""
    secrets: dict[str, str] = field(default_factory=dict)
    """Broker secret of each registered device (shown once by the hub)."""
    site_map: bool = False
    """Whether the site map was stored (``PUT /sites/{id}/map``)."""


def camera_id(site_id: str) -> str:
    """The device id of a site's demo camera."""
    return f"cam-{site_id}"[:64]


def _zone_kind(site: SiteMap, name: str, kind: str) -> str:
    """The hub's zone kind for a site-map zone."""
    if kind == "inclusion":
        return "perimeter" if site.kind == "prison" else "county"
    if "victim" in name:
        return "victim"
    if "school" in name:
        return "school"
    return "other"


def _register(api: Api, loaded: LoadedSite, device_id: str, model: str, site_id: str) -> None:
    answer = api.call(
        "POST", "/devices", {"device_id": device_id, "model": model, "site_id": site_id}
    )
    loaded.secrets[device_id] = str(answer["secret"])


def load_site(
    api: Api, site: SiteMap, devices: list[DemoDevice], *, now: datetime | None = None
) -> LoadedSite:
    """Create ``site`` and everything of its demo in the hub (see the module docstring)."""
    now = now or datetime.now(UTC)
    loaded = LoadedSite(site.id)
    meta = site.document.lantern
    api.call("POST", "/sites", {"site_id": site.id, "name": site.name, "timezone": meta.timezone})

    # Zones: the map's geofences, and the curfew home as a circle.
    inclusion: list[str] = []
    exclusion: list[str] = []
    for feature in site.document.features:
        props = feature.properties
        if props.role != "zone":
            continue
        zone_id = f"{site.id}-{props.name}"[:64]
        kind = getattr(props, "kind", "inclusion")
        api.call(
            "POST",
            "/zones",
            {
                "type": "Feature",
                "id": zone_id,
                "geometry": feature.geometry.model_dump(mode="json"),
                "properties": {
                    "name": props.name,
                    "kind": _zone_kind(site, props.name, kind),
                    "site_id": site.id,
                },
            },
        )
        (inclusion if kind == "inclusion" else exclusion).append(zone_id)
        loaded.zones.append(zone_id)
    home_zone: str | None = None
    if site.home is not None:
        home_zone = f"{site.id}-home"
        api.call(
            "POST",
            "/zones",
            {
                "type": "Feature",
                "id": home_zone,
                "geometry": {"type": "Point", "coordinates": [site.home.lon, site.home.lat]},
                "properties": {
                    "name": f"{site.home.name} (curfew address)",
                    "kind": "residence",
                    "site_id": site.id,
                    "radius_m": site.home.radius_m,
                },
            },
        )
        loaded.zones.append(home_zone)

    # The site map (outline, buildings) for the map page, when the hub has the route.
    status, answer = api.try_call("PUT", f"/sites/{site.id}/map", site.geojson())
    if status in (200, 201, 204):
        loaded.site_map = True
    elif status in (404, 405):
        logger.info("the hub has no site-map API (PUT /sites/%s/map: %d); skipped", site.id, status)
    else:
        logger.warning("site map of %s refused (HTTP %d): %s", site.id, status, answer)

    # Wearables, their wearers and the rules that bind them.
    valid_from = now.isoformat()
    common = {"severity": "serious", "valid_from": valid_from, "dwell_s": 10}
    for device in devices:
        _register(api, loaded, device.device_id, site.wearable_model, site.id)
        if not device.subject:
            continue
        person = api.call(
            "POST",
            "/persons",
            {
                "category": "supervised",
                "display_name": f"Demo subject {device.device_id} ({device.scenario.name})",
                "external_ref": f"demo-{device.device_id}"[:100],
                "site_id": site.id,
            },
        )
        person_id = int(person["id"])
        loaded.persons[device.device_id] = person_id
        rules: list[tuple[str, dict[str, Any], str]] = [
            ("incl", {"kind": "inclusion", "zone_ids": inclusion}, "serious"),
            ("silence", {"kind": "silence", "max_silence_s": 90}, "serious"),
        ]
        if exclusion:
            rules.append(("excl", {"kind": "exclusion", "zone_ids": exclusion}, "critical"))
        if home_zone is not None and site.home is not None:
            rules.append(("curfew", _curfew(site, home_zone, now), "serious"))
        if device.proximity_to is not None:
            rules.append(
                (
                    "prox",
                    {
                        "kind": "proximity",
                        "other_device_id": device.proximity_to,
                        "min_distance_m": 1000,
                    },
                    "critical",
                )
            )
        for suffix, params, severity in rules:
            rule_id = f"{device.device_id}-{suffix}"[:64]
            api.call(
                "POST",
                "/rules",
                {
                    **common,
                    "id": rule_id,
                    "person_id": person_id,
                    "device_id": device.device_id,
                    "params": params,
                    "severity": severity,
                },
            )
            loaded.rules.append(rule_id)

    # The site's camera, matching against the watchlist gallery.
    _register(api, loaded, camera_id(site.id), CAMERA_MODEL, site.id)
    api.call("PUT", f"/sites/{site.id}/watchlists", {"galleries": ["watchlist"]})
    logger.info(
        "site %s loaded: %d zones, %d devices, %d rules",
        site.id,
        len(loaded.zones),
        len(loaded.secrets),
        len(loaded.rules),
    )
    return loaded


def _curfew(site: SiteMap, zone_id: str, now: datetime) -> dict[str, Any]:
    """The site home's nightly curfew, plus a demo window that starts within the next two
    minutes and lasts an hour (in the site's time zone), so a curfew alert shows early."""
    assert site.home is not None
    local = now.astimezone(site.timezone)
    start = (local + timedelta(minutes=2)).replace(second=0, microsecond=0)
    end = start + timedelta(hours=1)
    every_day = list(range(7))
    return {
        "kind": "curfew",
        "zone_id": zone_id,
        "timezone": site.document.lantern.timezone,
        "windows": [
            {
                "days": every_day,
                "start": site.home.curfew_start.strftime("%H:%M"),
                "end": site.home.curfew_end.strftime("%H:%M"),
            },
            {"days": [start.weekday()], "start": start.strftime("%H:%M"),
             "end": end.strftime("%H:%M")},
        ],
        "grace_s": 30,
    }  # fmt: skip


def enrol_watchlist(api: Api, photos: dict[str, Path]) -> dict[str, int]:
    """A watchlist person per photo (display name -> photo), enrolled from it; their
    ids by name. A photo the hub refuses is logged and its person kept without face."""
    enrolled: dict[str, int] = {}
    for name, photo in photos.items():
        person = api.call(
            "POST", "/persons", {"category": "watchlist", "display_name": name}
        )
        person_id = int(person["id"])
        result = api.upload(f"/persons/{person_id}/photos", "photos", [photo])
        logger.info("watchlist %r (person %d) from %s: %s", name, person_id, photo.name, result)
        enrolled[name] = person_id
    return enrolled
