"""``lantern edge camera``: run the camera pipeline on a source.

The command is a plain function for ``edge/cli.py`` to register
(``app.command("camera")(camera)``). Without ``--dry-run`` it needs somewhere to
publish: :func:`make_camera_command` takes an opener that yields the sink and
envelope factory for a device (the agent's outbox), and returns the command bound to
it; :data:`camera` itself has none and asks for ``--dry-run``.

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
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from devices.firmware import CameraProfile, ConfigError, DetectorSettings, load_profile
from devices.protocol import ProtocolError, validate_device_id
from edge.camera.events import EventFactory, JsonLinesSink, LocalEventFactory, SightingSink
from edge.camera.pipeline import CameraConfigError, CameraPipeline, CameraStats, PipelineOptions
from edge.camera.sources import CameraSource, SourceError, open_source, parse_source
from edge.watchlist import Watchlist, WatchlistError, load_watchlist
from models.dlib_backend import DlibConfig
from models.engine import EngineConfig, FaceEngine, build_engine
from models.errors import ModelError

__all__ = [
    "PublisherOpener",
    "camera",
    "detector_label",
    "engine_config_for",
    "load_camera_profile",
    "make_camera_command",
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


def run_camera(
    engine: FaceEngine,
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
            validate_device_id(device_id)
            loaded = load_camera_profile(profile) if profile is not None else None
            if source is not None:
                chosen: CameraSource = parse_source(source)
            elif loaded is not None:
                chosen = loaded.source
            else:
                raise _fail("give --source or a --profile with a source")
            detector = loaded.detector if loaded is not None else DetectorSettings()
            config = engine_config_for(detector, engine)
            face_engine = build_engine(config)
            if loaded is None:
                settings = CameraProfile(source=chosen, model_id=face_engine.model_id)
            else:
                settings = loaded.model_copy(update={"source": chosen})
            offline = None
            if watchlist is not None:
                if not settings.offline_watchlist.enabled:
                    logger.warning("the profile disables the offline watchlist; using --watchlist")
                offline = load_watchlist(
                    watchlist,
                    model_id=face_engine.model_id,
                    dim=face_engine.dim,
                    max_entries=settings.offline_watchlist.max_entries,
                )
            publisher: AbstractContextManager[tuple[SightingSink, EventFactory]]
            if dry_run or open_publisher is None:
                publisher = _dry_run(device_id)
            else:
                publisher = open_publisher(device_id, settings)
            options = PipelineOptions(detector_name=detector_label(config))
            with publisher as (sink, make_event):
                stats = run_camera(
                    face_engine,
                    settings,
                    sink=sink,
                    make_event=make_event,
                    watchlist=offline,
                    options=options,
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
