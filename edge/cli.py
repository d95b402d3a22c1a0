"""``lantern edge``: run edge agents.

``lantern edge wearable --device-id ID --sim TRACK.geojson`` runs the simulated
wearable as a real agent process: outbox on disk, MQTT to the broker, the hub's
config applied, retained presence. SIGTERM or Ctrl-C shuts it down cleanly (offline
published, outbox closed); SIGKILL loses nothing that was committed.

Exit codes: 0 after a clean stop, 2 for a usage or configuration error (bad track,
unknown device model, invalid profile, missing password variable), 3 when the outbox
cannot be used (corrupt, or in use by another process); the message says what to do.
Also runnable as ``python -m edge.cli wearable ...``.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated

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
from edge.agent import AgentTuning
from edge.comms.mqtt import MqttConfigError, MqttSettings, TlsSettings, parse_broker
from edge.outbox import Outbox, OutboxCorrupt, OutboxLocked
from edge.wearable import Track, TrackError, WearableAgent, load_track

__all__ = ["app", "main"]

logger = logging.getLogger(__name__)

app = typer.Typer(
    name="edge",
    help="Run edge agents: the simulated wearable (positions, check-ins, alarms) as a "
    "real agent with a durable outbox and an MQTT link to the broker.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


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
    broker: Annotated[str, typer.Option(help="Broker as HOST[:PORT].")] = "127.0.0.1:1883",
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
    outbox: Annotated[
        Path | None,
        typer.Option(help="Outbox file (default: ./lantern-edge/<device-id>/outbox.db)."),
    ] = None,
    recover_outbox: Annotated[
        bool,
        typer.Option(
            "--recover-outbox",
            help="If the outbox is corrupt, move it aside (<name>.corrupt-<time>) and start "
            "with a new one.",
        ),
    ] = False,
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
    username: Annotated[str | None, typer.Option(help="Broker username.")] = None,
    password_env: Annotated[
        str | None, typer.Option(help="Environment variable holding the broker password.")
    ] = None,
    tls_ca: Annotated[Path | None, typer.Option(help="CA file: use TLS.")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="Client certificate (mutual TLS).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Client key (mutual TLS).")] = None,
    session_expiry: Annotated[int, typer.Option(min=0, help="MQTT session expiry, seconds.")] = 7
    * 86_400,
    window: Annotated[int, typer.Option(min=1, help="Events in flight at once.")] = 64,
    resend_after: Annotated[
        float, typer.Option(min=0.05, help="Resend an event not acked after this many seconds.")
    ] = 15.0,
    reconnect_max: Annotated[
        float, typer.Option(min=0.1, help="Largest reconnect backoff, seconds.")
    ] = 60.0,
    event_log: Annotated[
        Path | None, typer.Option(help="Append each committed event id to this file.")
    ] = None,
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
    try:
        agent = _make_agent(
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
        )
    except OutboxCorrupt as exc:
        if not recover_outbox:
            raise _fail(str(exc), 3) from None
        moved = Outbox.move_aside(path)
        logger.warning(
            "outbox was corrupt (%s); moved to %s", exc.reason, moved[0] if moved else "?"
        )
        typer.echo(f"outbox moved aside to {moved[0] if moved else path}", err=True)
        try:
            agent = _make_agent(
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
            )
        except (OutboxCorrupt, OutboxLocked) as again:
            raise _fail(str(again), 3) from None
    except OutboxLocked as exc:
        raise _fail(str(exc), 3) from None
    except (ConfigError, MqttConfigError, ValueError) as exc:
        raise _fail(str(exc), 2) from None

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %d: stopping", signum)
        agent.stop()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        agent.run(duration_s=duration)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


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


def _register_camera() -> None:
    """``lantern edge camera`` (edge/camera/command.py). It needs the face engines of
    ``models``; where they cannot be imported the command is skipped with a warning,
    as the root CLI does for whole sub-commands. It publishes nowhere yet (dry runs):
    wiring it to this agent's outbox and link is still to do."""
    try:
        from edge.camera.command import camera
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
