"""``lantern demo``: a broker, the hub, the demo sites, simulated wearables and a camera,
all from one command, stopped together.

Order of a run (each step prints a progress line):

1. the broker (:func:`hub.demo.broker.start_broker`): a private Mosquitto when it is
   installed, else the embedded MQTT 5 broker; anonymous, on loopback only;
2. ``lantern hub serve`` as a child process on SQLite under the data folder, with a
   freshly generated ``LANTERN_JWT_SECRET``; a demo admin and a demo officer with
   random passwords; the admin's bearer token is printed once;
3. the demo sites through the API (:mod:`hub.demo.loader`) and the watchlist,
   enrolled from photos that ship inside installed packages (scikit-image's
   astronaut, insightface's sample portrait);
4. the simulated wearables (:mod:`edge.simulate.runner`), one MQTT connection each,
   on a real-time clock, each playing a scenario chosen so alerts come early: a strap
   opened within seconds, a silence, an exclusion breach, leaving the compound, a
   curfew window that starts within two minutes, a subject too close to a protected person;
5. a camera agent per site (``lantern edge camera``) replaying a folder of frames
   made from the packaged images, one pass after another.

It runs until SIGINT/SIGTERM or ``duration`` seconds, then stops the camera, the
simulators, the hub (SIGTERM, waited for) and the broker, and returns 0. A hub that
does not start, or dies, ends the demo with 1.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType

import cv2
import numpy as np

from devices.simulation import SiteMap, WearableSimulator, demo_site, site_profile
from devices.simulation.scenarios import (
    AlarmStep,
    RouteSpec,
    ScenarioSpec,
    SilenceStep,
    preset,
)
from edge.comms.mqtt import MqttSettings
from edge.simulate.runner import FleetPlan, FleetRunner, plan_rate
from hub.demo.broker import BrokerKind, DemoBroker, start_broker
from hub.demo.loader import (
    CAMERA_MODEL,
    Api,
    ApiError,
    DemoDevice,
    camera_id,
    enrol_watchlist,
    load_site,
)

__all__ = ["DemoOptions", "demo_devices", "package_images", "run_demo"]

logger = logging.getLogger(__name__)

REPORT_EVERY_S = 5.0
"""Seconds between a simulated wearable's positions (faster than a real one, so the
map moves)."""

_OFFICER = "officer"
_ADMIN = "demo-admin"


@dataclass(frozen=True)
class DemoOptions:
    """What ``lantern demo`` was asked for."""

    duration_s: float | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path | None = None
    sites: tuple[str, ...] = ("kereru-flats", "totara-downs")
    devices: int = 8
    broker: BrokerKind = "auto"


def _say(message: str) -> None:
    """A progress line for the person running the demo (stdout, flushed)."""
    sys.stdout.write(f"[demo] {message}\n")
    sys.stdout.flush()
    logger.info("%s", message)


# -- what the wearables do ----------------------------------------------------------------


def demo_devices(site: SiteMap, count: int) -> list[DemoDevice]:
    """``count`` wearables for ``site``: scenarios that show each kind of alert early,
    then ordinary walkers. Ids are ``<site>-NN``."""
    walk = RouteSpec(track="walk", mode="pingpong")
    brisk = (1.8, 2.2)
    specs: list[tuple[ScenarioSpec, bool, bool]] = []  # (scenario, subject, protected)
    tamper = ScenarioSpec(
        name="strap_tamper_early",
        description="Walks; the strap is opened within seconds and refitted minutes later.",
        route=walk,
        steps=[AlarmStep(alarm="strap.tamper", at_s=(5, 12), clear_after_s=(180, 300))],
    )
    breach = ScenarioSpec(
        name="exclusion_breach_early",
        description="Heads straight for an exclusion zone at a brisk pace.",
        route=RouteSpec(track="exclusion_breach", mode="loop", start="beginning",
                        speed_mps=brisk),
    )  # fmt: skip
    leave = ScenarioSpec(
        name="leave_inclusion_early",
        description="Heads straight out of the inclusion zone at a brisk pace.",
        route=RouteSpec(track="leave_inclusion", mode="loop", start="beginning",
                        speed_mps=brisk),
    )  # fmt: skip
    silent = ScenarioSpec(
        name="silent_early",
        description="Walks, then stops reporting altogether 15-25 s in, for 10-15 minutes.",
        route=walk,
        steps=[SilenceStep(at_s=(15, 25), duration_s=(600, 900), mode="off")],
    )
    if site.home is not None:  # a community site: a protected person and a curfew
        specs.append((preset("walk"), False, True))
        specs.append((preset("walk").model_copy(update={"name": "walk_near_victim"}), True,
                      False))  # fmt: skip
        specs.append((tamper, True, False))
        specs.append((breach, True, False))
        specs.append((preset("curfew_violation"), True, False))
        specs.append((silent, True, False))
        specs.append((leave, True, False))
    else:
        specs.append((tamper, True, False))
        specs.append((breach, True, False))
        specs.append((silent, True, False))
        specs.append((leave, True, False))
        specs.append((preset("sos").model_copy(
            update={"steps": [AlarmStep(alarm="sos", at_s=(30, 45),
                                        clear_after_s=(120, 240))]}), True, False))
        specs.append((preset("indoor_outdoor"), True, False))  # fmt: skip
    while len(specs) < count:
        specs.append((preset("walk"), True, False))
    specs = specs[:count]
    ids = [f"{site.id}-{n:02d}" for n in range(1, len(specs) + 1)]
    protected = next((ids[i] for i, s in enumerate(specs) if s[2]), None)
    devices: list[DemoDevice] = []
    for device_id, (spec, subject, _) in zip(ids, specs, strict=True):
        near = protected if spec.name == "walk_near_victim" else None
        devices.append(DemoDevice(device_id, spec, subject=subject, proximity_to=near))
    return devices


@dataclass(frozen=True)
class _DemoPlan(FleetPlan):
    """A fleet plan whose devices play the demo's own scenarios."""

    specs: tuple[ScenarioSpec, ...] = ()

    def build(self, start: datetime) -> list[WearableSimulator]:
        return [
            WearableSimulator(device_id, self.site, spec, profile=self.profile, start=start,
                              seed=self.seed)
            for device_id, spec in zip(self.device_ids, self.specs, strict=True)
        ]  # fmt: skip


def _plan(site: SiteMap, devices: list[DemoDevice]) -> _DemoPlan:
    base = site_profile(site)
    rate = plan_rate(len(devices), base, len(devices) / REPORT_EVERY_S)
    counts: dict[str, int] = {}
    for device in devices:
        counts[device.scenario.name] = counts.get(device.scenario.name, 0) + 1
    return _DemoPlan(
        site=site,
        profile=rate.apply(base),
        rate=rate,
        count=len(devices),
        mix=None,
        seed=0,
        id_prefix=None,
        device_ids=tuple(d.device_id for d in devices),
        scenarios=counts,
        specs=tuple(d.scenario for d in devices),
    )


class _Fleets:
    """The simulated wearables of every site, on one asyncio loop in a thread."""

    def __init__(self, plans: list[_DemoPlan], host: str, port: int) -> None:
        self.runners = [
            FleetRunner(
                plan,
                MqttSettings(
                    host=host,
                    port=port,
                    keepalive_s=plan.profile.mqtt_keepalive_s,
                    session_expiry_s=300,
                    reconnect_min_s=0.5,
                    reconnect_max_s=5.0,
                ),
                drain_s=3.0,
            )
            for plan in plans
        ]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="demo-devices", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            results = await asyncio.gather(
                *(r.run() for r in self.runners), return_exceptions=True
            )
            for result in results:
                if isinstance(result, BaseException):
                    logger.error("a simulated fleet failed: %r", result)
                else:
                    logger.info("fleet: %s", result.final_line())

        asyncio.run(main())

    def stop(self, timeout: float = 20.0) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            for runner in self.runners:
                try:
                    loop.call_soon_threadsafe(runner.request_stop)
                except RuntimeError:  # the loop ended meanwhile
                    pass
        self._thread.join(timeout)

    def sent(self) -> int:
        return sum(r.tally.sent for r in self.runners)


# -- the camera ---------------------------------------------------------------------------


def _package_dir(module: str) -> Path | None:
    """Folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def package_images() -> dict[str, Path]:
    """Sample images that ship inside installed packages, by role: ``astronaut``
    (scikit-image), ``portrait`` and ``group`` (insightface); missing ones left out."""
    found: dict[str, Path] = {}
    skimage_data = _package_dir("skimage.data")
    if skimage_data is not None and (skimage_data / "astronaut.png").is_file():
        found["astronaut"] = skimage_data / "astronaut.png"
    insightface = _package_dir("insightface")
    if insightface is not None:
        images = insightface / "data" / "images"
        if (images / "Tom_Hanks_54745.png").is_file():
            found["portrait"] = images / "Tom_Hanks_54745.png"
        if (images / "t1.jpg").is_file():
            found["group"] = images / "t1.jpg"
    return found


def _camera_frames(folder: Path, images: dict[str, Path]) -> Path:
    """A folder of frames: each packaged image for 3 frames, then 11 empty frames (so
    each appearance ends as its own track), by symbolic links to the images."""
    folder.mkdir(parents=True, exist_ok=True)
    blank = folder.parent / "blank.png"
    cv2.imwrite(str(blank), np.full((480, 640, 3), 96, np.uint8))
    n = 0
    for role in ("astronaut", "portrait", "group"):
        image = images.get(role)
        if image is None:
            continue
        for target in [image] * 3 + [blank] * 11:
            link = folder / f"frame_{n:04d}{target.suffix}"
            link.unlink(missing_ok=True)
            link.symlink_to(target)
            n += 1
    return folder


class _Cameras:
    """A camera agent per site, replaying the frames folder pass after pass (one agent
    at a time, so the face models do not compete for the CPU)."""

    def __init__(
        self, sites: list[str], frames: Path, port: int, folder: Path, env: dict[str, str]
    ) -> None:
        self.sites = sites
        self.frames = frames
        self.port = port
        self.folder = folder
        self.env = env
        self.passes = 0
        self._stop = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._run, name="demo-cameras", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for site_id in self.sites:
                if self._stop.is_set():
                    return
                self._one_pass(site_id)
            self._stop.wait(5.0)

    def _one_pass(self, site_id: str) -> None:
        device_id = camera_id(site_id)
        log = self.folder / f"{device_id}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "devices.cli", "-v", "edge", "camera",
                 "--device-id", device_id, "--source", str(self.frames),
                 "--broker", f"127.0.0.1:{self.port}",
                 "--outbox", str(self.folder / f"{device_id}.outbox"), "--model", CAMERA_MODEL,
                 "--drain-timeout", "15"],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
            )  # fmt: skip
        self._process = process
        while process.poll() is None:
            if self._stop.wait(0.2):
                break
        code = process.poll()
        if code is None:
            process.terminate()
            try:
                code = process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait(timeout=5)
        self.passes += 1
        if code not in (0, -signal.SIGTERM):
            logger.warning("camera %s exited with %s; see %s", device_id, code, log)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


# -- the hub ------------------------------------------------------------------------------


class HubFailed(RuntimeError):
    """The hub did not start or stopped on its own."""


def _healthy(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/api/v1/health", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class _Hub:
    def __init__(self, options: DemoOptions, data_dir: Path, broker: DemoBroker) -> None:
        self.options = options
        self.data_dir = data_dir
        self.base_url = f"http://{options.host}:{options.port}"
        self.log = data_dir / "hub.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LANTERN_")}
        self.env["LANTERN_JWT_SECRET"] = secrets.token_urlsafe(48)
        self.broker = broker
        self.process: subprocess.Popen[bytes] | None = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def start(self, timeout: float = 60.0) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "devices.cli", "-v", "hub", "serve",
                 "--data-dir", str(self.data_dir / "hub"),
                 "--http", f"{self.options.host}:{self.options.port}",
                 "--mqtt", f"mqtt://{self.broker.host}:{self.broker.port}",
                 "--client-id", "lantern-demo-hub"],
                stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HubFailed(
                    f"the hub exited with {self.process.returncode}:\n{self.output()}"
                )
            if _healthy(self.base_url):
                return
            time.sleep(0.2)
        raise HubFailed(f"the hub did not answer on {self.base_url} in {timeout:g} s")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> int | None:
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.terminate()
            try:
                return process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                logger.warning("the hub did not stop within 30 s; killing it")
                process.kill()
        return process.wait(timeout=10)


def _create_users(data_dir: Path) -> tuple[str, str]:
    """The demo admin and officer, with random passwords (returned in that order)."""
    from hub.auth import create_user
    from hub.db.engine import make_engine
    from hub.db.users import Role

    engine = make_engine(f"sqlite:///{data_dir / 'hub' / 'lantern.db'}")
    passwords = (secrets.token_urlsafe(18), secrets.token_urlsafe(18))
    try:
        for username, role, password in (
            (_ADMIN, Role.admin, passwords[0]),
            (_OFFICER, Role.officer, passwords[1]),
        ):
            create_user(engine, username=username, role=role, password=password,
                        actor="lantern-demo", actor_role="cli")  # fmt: skip
    finally:
        engine.dispose()
    return passwords


# -- the run ------------------------------------------------------------------------------


@dataclass
class _Running:
    """What has been started, so it can be stopped in reverse order."""

    broker: DemoBroker | None = None
    hub: _Hub | None = None
    fleets: _Fleets | None = None
    cameras: _Cameras | None = None

    def stop(self) -> None:
        if self.cameras is not None:
            _say("stopping the cameras")
            self.cameras.stop()
        if self.fleets is not None:
            _say(f"stopping the simulated devices ({self.fleets.sent()} events sent)")
            self.fleets.stop()
        if self.hub is not None:
            _say("stopping the hub")
            code = self.hub.stop()
            if code not in (None, 0):
                logger.warning("the hub exited with %s; see %s", code, self.hub.log)
        if self.broker is not None:
            _say(f"stopping the broker ({self.broker.kind})")
            self.broker.stop()


def run_demo(options: DemoOptions) -> int:
    """Run the demo (see the module docstring); the exit code."""
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal %d: stopping the demo", signum)
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    data_dir = options.data_dir or Path(tempfile.mkdtemp(prefix="lantern-demo-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    running = _Running()
    try:
        _say(f"data folder {data_dir}")
        running.broker = broker = start_broker(options.broker, data_dir / "broker")
        how = "private Mosquitto" if broker.kind == "mosquitto" else "embedded MQTT 5 broker"
        _say(f"broker: {how} on {broker.host}:{broker.port} (anonymous, loopback only)")

        sites = [demo_site(s) for s in options.sites]
        devices = {site.id: demo_devices(site, options.devices) for site in sites}
        plans = [_plan(site, devices[site.id]) for site in sites]  # checked before the hub

        running.hub = hub = _Hub(options, data_dir, broker)
        _say(f"starting the hub on {hub.base_url} (SQLite under {data_dir / 'hub'})")
        hub.start()
        admin_password, officer_password = _create_users(data_dir)
        api = Api(hub.base_url)
        token = api.login(_ADMIN, admin_password)
        _say(f"admin bearer token (valid 30 minutes, shown once): {token}")
        _say(f"officer login: {_OFFICER} / {officer_password}")

        images = package_images()
        watchlist = {
            label: images[role]
            for role, label in (("astronaut", "Demo watchlist: astronaut"),
                                ("portrait", "Demo watchlist: portrait"))
            if role in images
        }  # fmt: skip
        for site in sites:
            loaded = load_site(api, site, devices[site.id])
            _say(
                f"loaded {site.id} ({site.name}): {len(loaded.zones)} zones, "
                f"{len(loaded.persons)} supervised persons, {len(loaded.secrets)} devices, "
                f"{len(loaded.rules)} rules"
                + ("" if loaded.site_map else " (site map API not available: skipped)")
            )
        if watchlist:
            enrol_watchlist(api, watchlist)
            _say(f"watchlist enrolled from packaged photos: {', '.join(watchlist)}")
        else:
            _say("no packaged sample photos (scikit-image, insightface): no watchlist")

        running.fleets = fleets = _Fleets(plans, broker.host, broker.port)
        fleets.start()
        _say(
            f"simulated devices: {sum(p.count for p in plans)} wearables reporting every "
            f"{REPORT_EVERY_S:g} s"
        )
        if images:
            frames = _camera_frames(data_dir / "camera" / "frames", images)
            running.cameras = cameras = _Cameras(
                [s.id for s in sites], frames, broker.port, data_dir / "camera", hub.env
            )
            cameras.start()
            _say(f"camera agents replaying {', '.join(p.name for p in images.values())}")
        else:
            _say("no packaged sample images: no camera")

        _say(f"map: {hub.base_url}/map  (API docs: {hub.base_url}/api/v1/docs)")
        _say(
            "running until Ctrl-C"
            if options.duration_s is None
            else f"running for {options.duration_s:g} s"
        )
        deadline = None if options.duration_s is None else time.monotonic() + options.duration_s
        while not stop.is_set():
            left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if left <= 0 or stop.wait(left):
                break
            if not hub.alive():
                raise HubFailed(f"the hub stopped on its own:\n{hub.output()}")
        _say("stopping")
        return 0
    except HubFailed as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    except (ApiError, RuntimeError, OSError, ValueError) as exc:
        sys.stderr.write(f"error: the demo could not start: {exc}\n")
        return 1
    finally:
        running.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _say(f"stopped; the data is kept in {data_dir}")
