"""``lantern edge``: run edge agents.

``lantern edge wearable --device-id ID --sim TRACK.geojson`` runs the simulated
wearable as a real agent process: outbox on disk, MQTT to the broker, the hub's
config applied, retained presence. SIGTERM or Ctrl-C shuts it down cleanly (offline
published, outbox closed); SIGKILL loses nothing that was committed.

``lantern edge camera --device-id ID --source RTSP|FILE|DIR|DEVICE`` runs a camera
the same way (:class:`edge.camera.agent.CameraAgent`): frames, detection, quality
gate, tracking, one sighting per face appearance, each committed to the outbox and
published until the hub acks it. A folder or video file, or ``--max-frames``, ends
the frames; the command then waits until the hub has acked everything (or
``--drain-timeout``) and exits. With ``--dry-run`` nothing connects: the events are
printed as JSON lines. The command is registered only where the face engines import.

Exit codes: 0 after a clean stop, 2 for a usage or configuration error (bad track,
unknown device model, invalid profile, missing password variable, a camera source
that cannot be opened), 3 when the outbox cannot be used (corrupt, or in use by
another process), 1 when the camera's frame loop crashed; the message says what to do.
Also runnable as ``python -m edge.cli wearable ...``.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Annotated, TypeVar

import typer

from devices.catalog import BUILTIN_CATALOG, DeviceModel, UnknownModelError
from devices.firmware import (
    ConfigError,
    WearableProfile,
    default_config_dir,
    find_device,
    load_profiles,
    render,
)
from edge.agent import AgentTuning, EdgeAgent
from edge.comms.mqtt import MqttConfigError, MqttSettings, TlsSettings, parse_broker
from edge.outbox import Outbox, OutboxCorrupt, OutboxLocked
from edge.wearable import Track, TrackError, WearableAgent, load_track

__all__ = ["app", "main"]

logger = logging.getLogger(__name__)

A = TypeVar("A", bound=EdgeAgent)

app = typer.Typer(
    name="edge",
    help="Run edge agents with a durable outbox and an MQTT link to the broker: the "
    "simulated wearable (positions, check-ins, alarms) and the camera (sightings).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


# Options every agent command shares (the MQTT link, the outbox, the send loop).
BrokerOpt = Annotated[str, typer.Option(help="Broker as HOST[:PORT].")]
OutboxOpt = Annotated[
    Path | None,
    typer.Option(help="Outbox file (default: ./lantern-edge/<device-id>/outbox.db)."),
]
RecoverOutboxOpt = Annotated[
    bool,
    typer.Option(
        "--recover-outbox",
        help="If the outbox is corrupt, move it aside (<name>.corrupt-<time>) and start "
        "with a new one.",
    ),
]
UsernameOpt = Annotated[str | None, typer.Option(help="Broker username.")]
PasswordEnvOpt = Annotated[
    str | None, typer.Option(help="Environment variable holding the broker password.")
]
TlsCaOpt = Annotated[Path | None, typer.Option(help="CA file: use TLS.")]
TlsCertOpt = Annotated[Path | None, typer.Option(help="Client certificate (mutual TLS).")]
TlsKeyOpt = Annotated[Path | None, typer.Option(help="Client key (mutual TLS).")]
SessionExpiryOpt = Annotated[int, typer.Option(min=0, help="MQTT session expiry, seconds.")]
WindowOpt = Annotated[int, typer.Option(min=1, help="Events in flight at once.")]
ResendAfterOpt = Annotated[
    float, typer.Option(min=0.05, help="Resend an event not acked after this many seconds.")
]
ReconnectMaxOpt = Annotated[
    float, typer.Option(min=0.1, help="Largest reconnect backoff, seconds.")
]
EventLogOpt = Annotated[
    Path | None, typer.Option(help="Append each committed event id to this file.")
]


@app.callback()
def _edge() -> None:
    """Edge agents."""


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _resolve_device(
    device_id: str, model_id: str | None, profile_name: str | None, config_dir: Path
) -> tuple[DeviceModel, WearableProfile]:
    """The device model and starting profile: from ``devices/<id>.yaml`` in the
    config folder when there is one, else from ``--model`` and its default profile."""
    profiles = load_profiles(config_dir / "profiles")
    devices_dir = config_dir / "devices"
    if model_id is None and (devices_dir / f"{device_id}.yaml").is_file():
        device, path = find_device(device_id, devices_dir)
        rendered = render(device, profiles, device_source=str(path))
        model = BUILTIN_CATALOG.get_model(device.model)
        data = rendered.config
    else:
        model = BUILTIN_CATALOG.get_model(model_id or "lantern-ankle-a1")
        name = profile_name or model.default_profile
        loaded = profiles.get(name)
        if loaded is None:
            known = ", ".join(sorted(profiles)) or "none"
            raise ValueError(f"unknown profile {name!r}; known profiles: {known}")
        data = loaded.profile.model_dump(mode="json")
    if data.get("type") != "wearable":
        raise ValueError(
            f"{model.id} is a {model.kind.value}: its profile is a {data.get('type')!r} "
            "profile, not a wearable one"
        )
    return model, WearableProfile.model_validate(data)


@app.command()
def wearable(
    device_id: Annotated[str, typer.Option("--device-id", help="Device id (MQTT client id).")],
    sim: Annotated[
        Path, typer.Option("--sim", help="GeoJSON LineString / FeatureCollection to walk.")
    ],
    broker: BrokerOpt = "127.0.0.1:1883",
    model: Annotated[
        str | None,
        typer.Option(help="Catalog model (default: from the device file, else lantern-ankle-a1)."),
    ] = None,
    profile: Annotated[
        str | None, typer.Option(help="Profile name (default: the model's default profile).")
    ] = None,
    config_dir: Annotated[
        Path | None,
        typer.Option(
            "--config-dir",
            envvar="LANTERN_FIRMWARE_DIR",
            file_okay=False,
            help="Firmware configuration folder (default: the packaged one).",
        ),
    ] = None,
    outbox: OutboxOpt = None,
    recover_outbox: RecoverOutboxOpt = False,
    rate_multiplier: Annotated[
        float,
        typer.Option("--rate-multiplier", min=0.001, max=100_000, help="Speed-up of the sim."),
    ] = 1.0,
    max_events: Annotated[
        int | None, typer.Option(min=0, help="Stop producing after this many events.")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(min=0, help="Stop after this many seconds.")
    ] = None,
    username: UsernameOpt = None,
    password_env: PasswordEnvOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    session_expiry: SessionExpiryOpt = 7 * 86_400,
    window: WindowOpt = 64,
    resend_after: ResendAfterOpt = 15.0,
    reconnect_max: ReconnectMaxOpt = 60.0,
    event_log: EventLogOpt = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the simulated noise.")] = None,
) -> None:
    """Run a simulated wearable that walks TRACK and reports to the broker."""
    try:
        track = load_track(sim)
        folder = config_dir or default_config_dir()
        device_model, start_profile = _resolve_device(device_id, model, profile, folder)
        host, port = parse_broker(broker)
        tls = None
        if tls_ca is not None or tls_cert is not None:
            tls = TlsSettings(ca_file=tls_ca, cert_file=tls_cert, key_file=tls_key)
        settings = MqttSettings(
            host=host,
            port=port,
            client_id=device_id,
            username=username,
            password_env=password_env,
            tls=tls,
            keepalive_s=start_profile.mqtt_keepalive_s,
            session_expiry_s=session_expiry,
            reconnect_min_s=min(0.5, reconnect_max),
            reconnect_max_s=reconnect_max,
        )
        tuning = AgentTuning(window=window, resend_after_s=resend_after)
    except (TrackError, ConfigError, UnknownModelError, MqttConfigError, ValueError) as exc:
        raise _fail(str(exc), 2) from None
    path = outbox or Path("lantern-edge") / device_id / "outbox.db"
    agent = _open_agent(
        lambda: _make_agent(
            device_id,
            device_model,
            start_profile,
            settings,
            path,
            track,
            rate_multiplier,
            max_events,
            seed,
            tuning,
            event_log,
        ),
        path,
        recover_outbox,
    )
    _run_until_signal(agent, duration)


def _make_agent(
    device_id: str,
    model: DeviceModel,
    profile: WearableProfile,
    settings: MqttSettings,
    path: Path,
    track: Track,
    rate: float,
    max_events: int | None,
    seed: int | None,
    tuning: AgentTuning,
    event_log: Path | None,
) -> WearableAgent:
    return WearableAgent(
        device_id=device_id,
        model=model,
        profile=profile,
        mqtt=settings,
        outbox_path=path,
        track=track,
        rate=rate,
        max_events=max_events,
        seed=seed,
        tuning=tuning,
        event_log=event_log,
    )


def _mqtt_settings(
    broker: str,
    client_id: str,
    *,
    username: str | None,
    password_env: str | None,
    tls_ca: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    keepalive_s: int,
    session_expiry_s: int,
    reconnect_max_s: float,
) -> MqttSettings:
    """The link settings of an agent command (``MqttConfigError``/``ValueError``)."""
    host, port = parse_broker(broker)
    tls = None
    if tls_ca is not None or tls_cert is not None:
        tls = TlsSettings(ca_file=tls_ca, cert_file=tls_cert, key_file=tls_key)
    return MqttSettings(
        host=host,
        port=port,
        client_id=client_id,
        username=username,
        password_env=password_env,
        tls=tls,
        keepalive_s=keepalive_s,
        session_expiry_s=session_expiry_s,
        reconnect_min_s=min(0.5, reconnect_max_s),
        reconnect_max_s=reconnect_max_s,
    )


def _open_agent(make: Callable[[], A], path: Path, recover_outbox: bool) -> A:
    """``make()``, moving a corrupt outbox aside first when ``recover_outbox``; exits
    with 3 for an unusable outbox and 2 for a configuration error."""
    try:
        try:
            return make()
        except OutboxCorrupt as exc:
            if not recover_outbox:
                raise
            moved = Outbox.move_aside(path)
            where = moved[0] if moved else path
            logger.warning("outbox was corrupt (%s); moved to %s", exc.reason, where)
            typer.echo(f"outbox moved aside to {where}", err=True)
            return make()
    except (OutboxCorrupt, OutboxLocked) as exc:
        raise _fail(str(exc), 3) from None
    except ValueError as exc:  # ConfigError, CameraConfigError, MqttConfigError
        raise _fail(str(exc), 2) from None


def _run_until_signal(agent: EdgeAgent, duration: float | None = None) -> None:
    """Run ``agent`` on this thread; SIGTERM and SIGINT stop it cleanly."""

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %d: stopping", signum)
        agent.stop()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        agent.run(duration_s=duration)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def camera(
    device_id: Annotated[
        str, typer.Option("--device-id", help="This camera's device id (MQTT client id).")
    ],
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            help="rtsp:// URL, capture device index, folder of images or video file "
            "(default: the profile's source). Kept over profiles the hub pushes.",
        ),
    ] = None,
    profile: Annotated[
        Path | None,
        typer.Option("--profile", help="Camera profile YAML to start with (default: built-in)."),
    ] = None,
    engine: Annotated[
        Path | None,
        typer.Option(
            "--engine", help="Engine configuration JSON (default: dlib, from the profile)."
        ),
    ] = None,
    watchlist: Annotated[
        Path | None, typer.Option("--watchlist", help="Offline watchlist file pushed by the hub.")
    ] = None,
    max_frames: Annotated[
        int | None, typer.Option("--max-frames", min=1, help="Stop after this many frames.")
    ] = None,
    fps: Annotated[
        float | None,
        typer.Option(
            "--fps", min=0.01, max=60, help="Frames processed per second (over any profile)."
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print events as JSON lines instead of publishing."),
    ] = False,
    broker: BrokerOpt = "127.0.0.1:1883",
    model: Annotated[str, typer.Option(help="Catalog model of this camera.")] = "lantern-fixcam-f1",
    outbox: OutboxOpt = None,
    recover_outbox: RecoverOutboxOpt = False,
    drain_timeout: Annotated[
        float,
        typer.Option(
            "--drain-timeout",
            min=0,
            help="When the frames end (folder, file, --max-frames), wait this long at most "
            "for the hub to ack every event before exiting.",
        ),
    ] = 60.0,
    username: UsernameOpt = None,
    password_env: PasswordEnvOpt = None,
    tls_ca: TlsCaOpt = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    session_expiry: SessionExpiryOpt = 7 * 86_400,
    window: WindowOpt = 64,
    resend_after: ResendAfterOpt = 15.0,
    reconnect_max: ReconnectMaxOpt = 60.0,
    event_log: EventLogOpt = None,
) -> None:
    """Run a camera: detect, quality-gate, align, track and embed faces, and publish
    one sighting per face appearance (and watchlist.hit alarms) through the outbox."""
    from devices.protocol import ProtocolError
    from edge.camera import command as camera_command
    from edge.camera.agent import CameraAgent
    from edge.camera.pipeline import CameraConfigError
    from edge.camera.sources import SourceError
    from edge.watchlist import WatchlistError
    from models.errors import ModelError

    if dry_run:
        camera_command.camera(
            device_id=device_id,
            source=source,
            profile=profile,
            engine=engine,
            watchlist=watchlist,
            max_frames=max_frames,
            fps=fps,
            dry_run=True,
        )
        return
    try:
        setup = camera_command.prepare_camera(
            device_id,
            source=source,
            profile_file=profile,
            engine_file=engine,
            watchlist_file=watchlist,
            fps=fps,
        )
        device_model = BUILTIN_CATALOG.get_model(model)
        settings = _mqtt_settings(
            broker,
            device_id,
            username=username,
            password_env=password_env,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            keepalive_s=setup.base.mqtt_keepalive_s,
            session_expiry_s=session_expiry,
            reconnect_max_s=reconnect_max,
        )
        tuning = AgentTuning(window=window, resend_after_s=resend_after)
    except (
        CameraConfigError,
        ConfigError,
        ModelError,
        ProtocolError,
        SourceError,
        WatchlistError,
        UnknownModelError,
        MqttConfigError,
        ValueError,
    ) as exc:
        raise _fail(str(exc), 2) from None
    path = outbox or Path("lantern-edge") / device_id / "outbox.db"

    def make() -> CameraAgent:
        return CameraAgent(
            device_id=device_id,
            model=device_model,
            profile=setup.base,
            mqtt=settings,
            outbox_path=path,
            engines=setup.engines,
            overrides=setup.overrides,
            watchlist=setup.watchlist,
            options=setup.options,
            max_frames=max_frames,
            exit_when_done=True,
            drain_timeout_s=drain_timeout,
            tuning=tuning,
            event_log=event_log,
        )

    agent = _open_agent(make, path, recover_outbox)
    _run_until_signal(agent)
    summary = {
        "camera": agent.camera_stats().summary(),
        "produced": agent.counters.produced,
        "acked": agent.counters.acked,
        "configs_applied": agent.counters.configs_applied,
        "configs_refused": agent.counters.configs_refused,
    }
    typer.echo(json.dumps(summary), err=True)
    if agent.failure is not None:
        raise _fail(agent.failure, 2 if agent.failure_is_config else 1)


def _register_camera() -> None:
    """``lantern edge camera``. It needs the face engines of ``models``; where they
    cannot be imported the command is skipped with a warning, as the root CLI does for
    whole sub-commands."""
    try:
        import edge.camera.agent  # noqa: F401 - only whether it imports
    except ImportError as exc:
        logger.warning("command 'camera' skipped: %s", exc)
        return
    app.command("camera")(camera)


_register_camera()


def main() -> None:
    """``python -m edge.cli``: the ``edge`` commands with INFO logging to stderr."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app(prog_name="edge")


if __name__ == "__main__":
    main()
