"""The command map in a real headless Chromium against a real hub process and broker.

An officer-facing walk through the page: sign in with the keyboard, see the tag's
marker move as its fixes are published over MQTT, see the exclusion breach arrive as
an alert (timed from the publish of the first fix inside the zone; the budget is the
NIJ-style 4 minutes), acknowledge the incident, see its status change, play the
track back. Then the role checks: an analyst sees the incident without action
buttons; a caseworker is told the map is not for their role and the page asks the hub
for none of the map's data. Screenshots go to ``tests/artifacts/map.png`` (ignored by
git) and ``docs/map.png`` (the README's picture).

Debian's Chromium is driven through Playwright's Python API (``executable_path``);
nothing is downloaded. The test is skipped, saying why, when /usr/bin/chromium or
Playwright is absent.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devices.protocol import state_topic
from tests.edge.mqtt_helpers import PrivateBroker
from tests.hub import scenario
from tests.hub.served import ServedHub
from tests.hub.test_ingest import FakeDevices, state
from tests.hub.test_serve import PASSWORD

pytestmark = pytest.mark.browser

logger = logging.getLogger(__name__)

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
DOCS = REPO / "docs"
VIEWPORT = {"width": 1280, "height": 800}
ALERT_BUDGET_S = 240.0
DOCS_PNG_MAX_BYTES = 200 * 1024


@pytest.fixture
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium chromium-driver)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    with PrivateBroker(tmp_path / "broker") as running:
        yield running


def _sign_in(page: Any, url: str, username: str) -> None:
    """Sign in with the keyboard only: focus starts on the username field."""
    page.goto(url)
    page.wait_for_selector("#login:not([hidden])")
    page.focus("#username")
    page.keyboard.type(username)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_selector("#session:not([hidden])")


def _fix_text(page: Any, device_id: str) -> str:
    text: str = page.inner_text(f'#devices tr[data-device-id="{device_id}"] td.fix')
    return text


def _canvas(page: Any) -> str:
    data: str = page.evaluate("document.getElementById('map').toDataURL('image/png')")
    return data


def _save_screenshots(png: bytes) -> tuple[Path, Path]:
    """The screenshot as is under tests/artifacts/, and as a palette PNG (small enough
    to commit) under docs/."""
    from PIL import Image

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    DOCS.mkdir(parents=True, exist_ok=True)
    artifact = ARTIFACTS / "map.png"
    artifact.write_bytes(png)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    small = image.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    docs = DOCS / "map.png"
    small.save(docs, format="PNG", optimize=True)
    return artifact, docs


def test_the_map_shows_moving_devices_and_an_exclusion_alert_an_officer_acknowledges(
    tmp_path: Path, broker: PrivateBroker, chromium: Any
) -> None:
    with ServedHub(tmp_path, broker.port) as hub:
        made = scenario.build(hub.http)
        tag = made.device_id
        for name, role in (("ana", "analyst"), ("cara", "caseworker")):
            created = hub.http.post(
                "/api/v1/users", json={"username": name, "role": role, "password": PASSWORD}
            )
            assert created.status_code == 201, created.text
        base = f"http://127.0.0.1:{hub.port}"
        context = chromium.new_context(viewport=VIEWPORT)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on(
            "console", lambda msg: errors.append(msg.text) if msg.type == "error" else None
        )

        with FakeDevices(broker.settings(), [tag]) as devices:
            boot = devices.boots[tag]
            devices.peer.publish(
                state_topic(tag), state(tag, boot, "online"), qos=1, retain=True
            ).result(10)
            # A walk of fixes 15 s apart ending a minute ago (the engine ignores fixes
            # implying more than 70 m/s, so they cannot all be stamped "now").
            walk_start = datetime.now(UTC) - timedelta(minutes=3)
            seq = iter(range(100))

            def send(east_m: float, step: int, **kw: Any) -> tuple[float, float]:
                event = scenario.fix(
                    tag, boot, next(seq), east_m, walk_start + timedelta(seconds=15 * step), **kw
                )
                devices.send(event)
                return event.body.lat, event.body.lon

            send(600, 0, north_m=40, acc=12.0, batt=81)

            _sign_in(page, f"{base}/map", "ops")
            row = f'#devices tr[data-device-id="{tag}"]'
            page.wait_for_selector(f"{row} td.state-online", timeout=20_000)
            assert "81%" in page.inner_text(row)
            page.wait_for_function(
                "() => document.querySelectorAll('#legend li').length >= 6"
            )

            # The tag walks west along the street towards the protected address.
            seen = [_fix_text(page, tag)]
            canvases = [_canvas(page)]
            for step, east in enumerate((500, 420, 340, 280), start=1):
                lat, lon = send(east, step, batt=80)
                page.wait_for_function(
                    "([sel, old]) => { const c = document.querySelector(sel);"
                    " return c && c.textContent !== old; }",
                    arg=[f"{row} td.fix", seen[-1]],
                    timeout=20_000,
                )
                seen.append(_fix_text(page, tag))
                canvases.append(_canvas(page))
                assert f"{lat:.5f}, {lon:.5f}" in seen[-1], seen[-1]
            assert len(set(seen)) == len(seen), seen
            assert len(set(canvases)) == len(canvases), "the map did not redraw the marker"
            assert page.locator("#alerts li").count() == 0

            # The breach: two confident fixes inside the 200 m circle.
            breach_published = time.monotonic()
            for step, east in enumerate((150, 90), start=5):
                send(east, step, batt=80)
            alert = page.wait_for_selector(
                '#alerts li[data-type="exclusion.entered"]',
                timeout=int(ALERT_BUDGET_S * 1000),
            )
            alert_seconds = time.monotonic() - breach_published
            logger.info("breach publish -> alert visible on the map: %.2f s", alert_seconds)
            assert alert_seconds < ALERT_BUDGET_S
            assert alert is not None
            text = alert.inner_text()
            assert "CRITICAL" in text and tag in text, text
            announced = page.inner_text("#announcer")
            assert "exclusion.entered" in announced and tag in announced, announced

            incident = page.wait_for_selector(
                "#incidents li[data-incident-id]", timeout=20_000
            )
            assert incident is not None
            incident_id = incident.get_attribute("data-incident-id")
            item = f'#incidents li[data-incident-id="{incident_id}"]'
            assert page.inner_text(f"{item} .incident-status") == "open"
            # Keyboard: the acknowledge button is a real button that takes focus.
            ack = page.locator(f"{item} button", has_text="Acknowledge")
            ack.focus()
            assert page.evaluate("document.activeElement.textContent") == "Acknowledge"
            page.keyboard.press("Enter")
            page.wait_for_function(
                "(sel) => document.querySelector(sel)?.textContent === 'acknowledged'",
                arg=f"{item} .incident-status",
                timeout=20_000,
            )
            detail = hub.http.get(f"/api/v1/incidents/{incident_id}").json()
            assert detail["status"] == "acknowledged" and detail["acknowledged_by"] == "ops"
            assert page.locator(f"{item} button", has_text="Acknowledge").is_disabled()

            # Track playback of the last hour: every fix sent.
            page.select_option("#track-device", tag)
            page.click("#track-form button[type=submit]")
            page.wait_for_selector("#track-player:not([hidden])", timeout=20_000)
            assert page.inner_text("#track-status").startswith(f"7 fixes of {tag}")
            page.fill("#track-slider", "6")
            page.dispatch_event("#track-slider", "input")
            assert page.inner_text("#track-time").startswith("7/7")
            page.click("#track-close")

            page.click("#zoom-fit")
            page.evaluate("document.getElementById('panels').scrollTop = 0")
            page.wait_for_timeout(300)
            artifact, docs = _save_screenshots(page.screenshot(full_page=False))
            assert artifact.stat().st_size > 10_000
            assert docs.stat().st_size < DOCS_PNG_MAX_BYTES, docs.stat().st_size

        assert errors == [], errors
        page.click("#logout")
        page.wait_for_selector("#login:not([hidden])")

        # An analyst sees the incident but is offered no action on it.
        _sign_in(page, f"{base}/map", "ana")
        page.wait_for_selector(f'#incidents li[data-incident-id="{incident_id}"]', timeout=20_000)
        assert page.locator("#incidents button", has_text="Acknowledge").count() == 0
        assert page.locator("#incidents button", has_text="Timeline").count() >= 1
        page.click("#logout")

        # A caseworker is told the map is not for them, and nothing of it is fetched.
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        _sign_in(page, f"{base}/map", "cara")
        page.wait_for_selector("#no-map:not([hidden])")
        assert page.locator("#workspace").is_hidden()
        page.wait_for_timeout(500)
        api_calls = [u for u in requested if "/api/v1/" in u]
        forbidden = ("/sites", "/zones", "/feed", "/alerts", "/incidents", "/sightings")
        assert not [u for u in api_calls if any(p in u for p in forbidden)], api_calls
        context.close()
        assert hub.stop() == 0, hub.output()
