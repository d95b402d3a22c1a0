"""Setting a camera up, and the pipeline-only ``camera`` command.

:func:`prepare_camera` turns the command line (``--source``, ``--profile``,
``--engine``, ``--watchlist``, ``--fps``) into a :class:`CameraSetup`: the profile,
the command-line values kept over any profile (:class:`CameraOverrides`), the engine
and the offline watchlist. ``lantern edge camera`` (``edge/cli.py``) uses it to build
the publishing agent (:class:`edge.camera.agent.CameraAgent`) and, with
``--dry-run``, runs :data:`camera` instead.

:func:`make_camera_command` returns a command that runs the pipeline on the calling
thread and publishes through an opener that yields the sink and envelope factory for
a device; :data:`camera` has no opener and only does ``--dry-run`` (events printed as
JSON lines on stdout).

Which engine
    ``--engine FILE`` is an :class:`~models.engine.EngineConfig` as JSON (the format of
    ``lantern faces --engine``); model files are device-local paths, so they live
    there, not in the profile. Without it the profile's ``detector.type`` picks dlib's
    HOG or CNN detector with dlib's embedder; ``yunet`` and ``scrfd`` need the file.
    Either way the engine's ``model_id`` must be the profile's, or the command stops.

Which profile
    ``--profile FILE`` is a camera profile (YAML, as in ``firmware_configs/profiles``);
    ``--source`` replaces its ``source``. Without a profile the defaults of
    :class:`~devices.firmware.CameraProfile` apply, with the engine's ``model_id``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from devices.firmware import CameraProfile, ConfigError, DetectorSettings, load_profile
from devices.protocol import ProtocolError, validate_device_id
from edge.camera.events import EventFactory, JsonLinesSink, LocalEventFactory, SightingSink
from edge.camera.pipeline import (
    CameraConfigError,
    CameraPipeline,
    CameraStats,
    Engine,
    PipelineOptions,
)
from edge.camera.sources import CameraSource, SourceError, open_source, parse_source
from edge.watchlist import Watchlist, WatchlistError, load_watchlist
from models.dlib_backend import DlibConfig
from models.engine import EngineConfig, build_engine
from models.errors import ModelError

__all__ = [
    "CameraOverrides",
    "CameraSetup",
    "EngineChoice",
    "PublisherOpener",
    "camera",
    "detector_label",
    "engine_config_for",
    "load_camera_profile",
    "make_camera_command",
    "prepare_camera",
    "run_camera",
]

logger = logging.getLogger(__name__)

PublisherOpener = Callable[
    [str, CameraProfile], AbstractContextManager[tuple[SightingSink, EventFactory]]
]
"""``open(device_id, profile)``: a context giving the sink and envelope factory to use."""

_err = Console(stderr=True)


def load_camera_profile(path: Path) -> CameraProfile:
    """A camera profile file; :class:`CameraConfigError` for another family."""
    profile = load_profile(path)
    if not isinstance(profile, CameraProfile):
        raise CameraConfigError(f"{path}: a {profile.type!r} profile, not a camera profile")
    return profile


def engine_config_for(detector: DetectorSettings, engine_file: Path | None = None) -> EngineConfig:
    """The engine to run: ``engine_file`` (EngineConfig JSON) when given, else dlib with
    the profile's dlib detector."""
    if engine_file is not None:
        try:
            return EngineConfig.model_validate_json(engine_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise CameraConfigError(f"{engine_file}: cannot be read ({exc})") from exc
        except ValueError as exc:
            raise CameraConfigError(f"{engine_file}: not an engine configuration: {exc}") from exc
    if detector.type == "dlib_hog":
        return EngineConfig(backend=DlibConfig(detector="hog"))
    if detector.type == "dlib_cnn":
        return EngineConfig(backend=DlibConfig(detector="cnn"))
    raise CameraConfigError(
        f"the {detector.type} detector needs its model files on this device: give an "
        "engine configuration with --engine FILE"
    )


def detector_label(config: EngineConfig) -> str:
    """The detector's name as sightings report it (``quality.detector``)."""
    if config.detector is not None:
        return config.detector.type
    backend = config.backend
    if isinstance(backend, DlibConfig):
        return f"dlib-{backend.detector}"
    return "scrfd"


@dataclass(frozen=True)
class CameraOverrides:
    """Settings given on the command line, kept over the profile and over any profile
    the hub pushes later (the hub knows neither the device's paths nor its streams)."""

    source: CameraSource | None = None
    fps: float | None = None

    def apply(self, profile: CameraProfile) -> CameraProfile:
        """``profile`` with these settings in place of its own."""
        update: dict[str, Any] = {}
        if self.source is not None:
            update["source"] = self.source
        if self.fps is not None:
            update["fps"] = self.fps
        if not update:
            return profile
        return CameraProfile.model_validate({**dict(profile), **update})


class EngineChoice:
    """The face engine for a profile: the configuration given with ``--engine`` if
    any, else dlib with the profile's dlib detector (:func:`engine_config_for`). Each
    configuration is built once and kept; building and looking up may happen on
    different threads, using an engine on one thread at a time."""

    def __init__(
        self,
        fixed: EngineConfig | None = None,
        *,
        build: Callable[[EngineConfig], Engine] = build_engine,
    ) -> None:
        self.fixed = fixed
        self._build = build
        self._built: dict[str, Engine] = {}
        self._lock = threading.Lock()

    def config_for(self, profile: CameraProfile) -> EngineConfig:
        """The engine configuration ``profile`` runs with; :class:`CameraConfigError`
        for a detector that needs model files and no ``--engine`` was given."""
        return self.fixed if self.fixed is not None else engine_config_for(profile.detector)

    def add(self, config: EngineConfig, engine: Engine) -> None:
        """Keep an engine already built for ``config``."""
        with self._lock:
            self._built[config.model_dump_json()] = engine

    def engine_for(self, profile: CameraProfile) -> tuple[EngineConfig, Engine]:
        """The configuration and engine for ``profile``, built on first use
        (:class:`~models.errors.ModelError` if that fails)."""
        config = self.config_for(profile)
        key = config.model_dump_json()
        with self._lock:
            engine = self._built.get(key)
            if engine is None:
                engine = self._build(config)
                self._built[key] = engine
        return config, engine


@dataclass(frozen=True)
class CameraSetup:
    """What a camera runs, from its command line (see :func:`prepare_camera`)."""

    base: CameraProfile
    """The profile file's (or the defaults, with the engine's model), before overrides."""
    overrides: CameraOverrides
    profile: CameraProfile
    """``base`` with the overrides: what runs until the hub pushes another profile."""
    engines: EngineChoice
    engine_config: EngineConfig
    engine: Engine
    watchlist: Watchlist | None
    options: PipelineOptions


def prepare_camera(
    device_id: str,
    *,
    source: str | None = None,
    profile_file: Path | None = None,
    engine_file: Path | None = None,
    watchlist_file: Path | None = None,
    fps: float | None = None,
) -> CameraSetup:
    """Check the command line and build what it names: profile, engine, watchlist.

    Raises :class:`CameraConfigError`, :class:`~devices.firmware.ConfigError`,
    :class:`~models.errors.ModelError`, :class:`~devices.protocol.ProtocolError` (a bad
    device id), :class:`SourceError` or :class:`WatchlistError`.
    """
    validate_device_id(device_id)
    loaded = load_camera_profile(profile_file) if profile_file is not None else None
    chosen: CameraSource | None = parse_source(source) if source is not None else None
    if chosen is None and loaded is None:
        raise CameraConfigError("give --source or a --profile with a source")
    overrides = CameraOverrides(source=chosen, fps=fps)
    fixed = engine_config_for(DetectorSettings(), engine_file) if engine_file is not None else None
    engines = EngineChoice(fixed)
    detector = loaded.detector if loaded is not None else DetectorSettings()
    config = fixed if fixed is not None else engine_config_for(detector)
    engine = build_engine(config)
    engines.add(config, engine)
    if loaded is None:
        assert chosen is not None
        base = CameraProfile(source=chosen, model_id=engine.model_id)
    else:
        base = loaded
    settings = overrides.apply(base)
    offline = None
    if watchlist_file is not None:
        if not settings.offline_watchlist.enabled:
            logger.warning("the profile disables the offline watchlist; using --watchlist")
        offline = load_watchlist(
            watchlist_file,
            model_id=engine.model_id,
            dim=engine.dim,
            max_entries=settings.offline_watchlist.max_entries,
        )
    options = PipelineOptions(detector_name=detector_label(config))
    return CameraSetup(base, overrides, settings, engines, config, engine, offline, options)


def run_camera(
    engine: Engine,
    profile: CameraProfile,
    *,
    sink: SightingSink,
    make_event: EventFactory,
    watchlist: Watchlist | None = None,
    options: PipelineOptions | None = None,
    max_frames: int | None = None,
    stop: threading.Event | None = None,
    first_track_id: int = 1,
) -> CameraStats:
    """Open the profile's source and run the pipeline over it until it ends,
    ``max_frames`` frames are processed or ``stop`` is set."""
    pipeline = CameraPipeline(
        engine,
        profile,
        sink=sink,
        make_event=make_event,
        watchlist=watchlist,
        options=options,
        first_track_id=first_track_id,
    )
    source = open_source(profile.source, fps=profile.fps)
    return pipeline.run(source, max_frames=max_frames, stop=stop)


def _fail(message: str) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(2)


@contextmanager
def _dry_run(device_id: str) -> Iterator[tuple[SightingSink, EventFactory]]:
    yield JsonLinesSink(typer.echo), LocalEventFactory(device_id)


SourceOpt = Annotated[
    str | None,
    typer.Option(
        "--source",
        help="rtsp:// URL, capture device index, folder of images or video file "
        "(default: the profile's source)",
    ),
]
DeviceIdOpt = Annotated[str, typer.Option("--device-id", help="This camera's device id")]
ProfileOpt = Annotated[
    Path | None, typer.Option("--profile", help="Camera profile YAML (default: built-in defaults)")
]
EngineFileOpt = Annotated[
    Path | None,
    typer.Option("--engine", help="Engine configuration JSON (default: dlib, from the profile)"),
]
WatchlistOpt = Annotated[
    Path | None, typer.Option("--watchlist", help="Offline watchlist file pushed by the hub")
]
MaxFramesOpt = Annotated[
    int | None, typer.Option("--max-frames", min=1, help="Stop after this many processed frames")
]
FpsOpt = Annotated[
    float | None,
    typer.Option("--fps", min=0.01, max=60, help="Frames processed per second (over the profile)"),
]
DryRunOpt = Annotated[
    bool,
    typer.Option("--dry-run", help="Print events as JSON lines on stdout instead of publishing"),
]


def make_camera_command(open_publisher: PublisherOpener | None = None) -> Callable[..., None]:
    """The ``camera`` command, publishing through ``open_publisher`` (None: dry runs only)."""

    def camera(
        device_id: DeviceIdOpt,
        source: SourceOpt = None,
        profile: ProfileOpt = None,
        engine: EngineFileOpt = None,
        watchlist: WatchlistOpt = None,
        max_frames: MaxFramesOpt = None,
        fps: FpsOpt = None,
        dry_run: DryRunOpt = False,
    ) -> None:
        """Turn a camera's frames into sightings: detect, quality-gate, align, track,
        and send one sighting per face appearance (plus watchlist.hit alarms for
        candidates on the offline watchlist)."""
        if not dry_run and open_publisher is None:
            raise _fail(
                "publishing goes through the edge agent's outbox, which this command is "
                "not wired to; use --dry-run to print the events instead"
            )
        try:
            setup = prepare_camera(
                device_id,
                source=source,
                profile_file=profile,
                engine_file=engine,
                watchlist_file=watchlist,
                fps=fps,
            )
            publisher: AbstractContextManager[tuple[SightingSink, EventFactory]]
            if dry_run or open_publisher is None:
                publisher = _dry_run(device_id)
            else:
                publisher = open_publisher(device_id, setup.profile)
            with publisher as (sink, make_event):
                stats = run_camera(
                    setup.engine,
                    setup.profile,
                    sink=sink,
                    make_event=make_event,
                    watchlist=setup.watchlist,
                    options=setup.options,
                    max_frames=max_frames,
                )
        except (
            CameraConfigError,
            ConfigError,
            ModelError,
            ProtocolError,
            SourceError,
            WatchlistError,
        ) as exc:
            raise _fail(str(exc)) from None
        _err.print(json.dumps(stats.summary()), highlight=False, soft_wrap=True)

    return camera


camera = make_camera_command()
"""The command without a publisher: ``--dry-run`` only."""
