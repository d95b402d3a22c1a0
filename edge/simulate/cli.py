"""``lantern devices simulate`` and ``ack-all``: simulated devices against a real broker.

The ``lantern devices`` group belongs to :mod:`devices.devices_cli`; this module's
:data:`app` offers its two commands to it through the ``lantern.devices.commands``
entry points (and can still be run on its own, as the tests do).

``lantern devices simulate`` runs a fleet of simulated wearables (:mod:`edge.simulate.runner`)
on one asyncio loop, shows its progress on stderr and prints, as the last line of
stdout, ``sent=<n> acked=<n> outstanding=<n>``. ``lantern devices ack-all`` (hidden;
for load runs and demos without a hub) acks every event it sees
(:mod:`edge.simulate.acker`).

Exit codes: 0 after a run, 1 when no device could connect, 2 for bad options (site
file, mix, rate, broker address, descriptor limit, missing password variable).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.text import Text

from devices.simulation import DEMO_SITES, SiteError, SiteMap, demo_site, load_site_map
from edge.comms.mqtt import MqttConfigError, MqttSettings, parse_broker
from edge.simulate.acker import AckAll
from edge.simulate.runner import (
    FdLimitError,
    FleetPlan,
    FleetRunner,
    PlanError,
    Progress,
    RunResult,
    ensure_fd_limit,
    parse_mix,
    plan_fleet,
)

__all__ = ["app", "load_site"]

logger = logging.getLogger(__name__)

DEFAULT_SITE = "kereru-flats"

app = typer.Typer(
    name="devices",
    help="Simulated devices against an MQTT broker: a fleet of wearables that report "
    "positions, alarms and telemetry as real ones would.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _devices() -> None:
    """Simulated devices."""


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def load_site(value: str) -> SiteMap:
    """A demo site by name (``kereru-flats``, ``totara-downs``) or a GeoJSON site file;
    :class:`SiteError` says what is wrong."""
    if value in DEMO_SITES:
        return demo_site(value)
    path = Path(value)
    if not path.is_file():
        raise SiteError(
            f"{value}: no such site file, and not a demo site ({', '.join(DEMO_SITES)})"
        )
    return load_site_map(path)


def _describe(plan: FleetPlan, broker: str, duration: float | None, connect_rate: float) -> str:
    rates, site = plan.rate, plan.site
    scenarios = ", ".join(f"{name} {n}" for name, n in sorted(plan.scenarios.items()))
    if rates.scaled:
        rate = (
            f"{rates.rate:g} events/s: each device reports a position every "
            f"{rates.interval_s:.3g} s instead of {rates.profile_interval_s:g} s "
            f"(natural rate {rates.natural_rate:.3g} events/s); real-time clock"
        )
    else:
        rate = (
            f"{rates.rate:.3g} events/s, the natural rate: a position every "
            f"{rates.interval_s:g} s per device; real-time clock"
        )
    ids = plan.device_ids
    run = "until interrupted" if duration is None else f"for {duration:g} s"
    return "\n".join(
        (
            f"simulating {plan.count} wearables on {site.id} ({site.name}); profile "
            f"{site.wearable_profile}, model {site.wearable_model}, seed {plan.seed}",
            f"  scenarios: {scenarios}",
            f"  rate: {rate}",
            f"  broker {broker}; ids {ids[0]} .. {ids[-1]}; connecting {connect_rate:g}/s; "
            f"reporting {run}",
        )
    )


def _progress_text(p: Progress) -> str:
    if p.phase == "connecting":
        return f"connecting {p.connected}/{p.devices}"
    return (
        f"{p.phase} {p.elapsed_s:6.1f} s  connected {p.connected}/{p.devices}  "
        f"sent {p.sent}  acked {p.acked}  outstanding {p.outstanding}  "
        f"rate {p.rate:.0f}/s (target {p.target_rate:.4g})  unsent {p.unsent}  "
        f"lag {p.lag_s:.3f} s"
    )


class _Display:
    """Progress on stderr: a live line on a terminal, else a line every ``every_s``
    seconds and at each change of phase."""

    def __init__(self, console: Console, every_s: float = 10.0) -> None:
        self.console = console
        self.every_s = every_s
        self._live: Live | None = None
        if console.is_terminal:
            self._live = Live(Text(""), console=console, auto_refresh=False, transient=False)
            self._live.start()
        self._last_line = -float("inf")
        self._last_phase = ""

    def __call__(self, progress: Progress) -> None:
        text = _progress_text(progress)
        if self._live is not None:
            self._live.update(Text(text), refresh=True)
            return
        now = time.monotonic()
        if progress.phase != self._last_phase or now - self._last_line >= self.every_s:
            self.console.print(text, highlight=False, soft_wrap=True)
            self._last_line = now
            self._last_phase = progress.phase

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


async def _run(runner: FleetRunner, display: _Display) -> RunResult:
    loop = asyncio.get_running_loop()
    handled = (signal.SIGINT, signal.SIGTERM)
    for sig in handled:
        loop.add_signal_handler(sig, runner.request_stop)
    try:
        return await runner.run(display)
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


_SIMULATE_HELP = "\n\n".join(
    (
        "Run COUNT simulated wearables against the broker, one MQTT connection each, on "
        "one asyncio loop.",
        "Each device connects as its device id, publishes a retained online state (offline "
        "as its will and when it stops), listens on its own ack topic and reports what its "
        "scenario makes.",
        "The last line of stdout is 'sent=N acked=N outstanding=N': sent counts events the "
        "broker acknowledged (PUBACK), acked those the hub then acked (stored or rejected), "
        "outstanding = sent - acked, held in memory. A simulated device has no outbox: an "
        "event it could not publish is counted as unsent and never retried.",
        "Ctrl-C or SIGTERM stops reporting, waits up to --drain seconds for acks, publishes "
        "offline and disconnects; a second Ctrl-C skips the wait.",
    )
)


@app.command(help=_SIMULATE_HELP)
def simulate(
    count: Annotated[
        int, typer.Option(min=1, max=100_000, help="Number of simulated wearables.")
    ] = 1000,
    site: Annotated[
        str,
        typer.Option(
            help=f"A GeoJSON site file, or a demo site: {', '.join(DEMO_SITES)}.",
        ),
    ] = DEFAULT_SITE,
    rate: Annotated[
        float | None,
        typer.Option(
            help="Events per second across the fleet: each device reports a position every "
            "COUNT/RATE seconds instead of its profile's interval (real-time clock). "
            "Default: the profile's interval.",
        ),
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(min=0, help="Seconds of reporting; default until Ctrl-C or SIGTERM."),
    ] = None,
    mix: Annotated[
        str | None,
        typer.Option(
            help="Scenario mix as NAME=WEIGHT pairs, e.g. walk=0.7,exclusion_breach=0.1,sos=0.2 "
            "(default: every scenario the site can play).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the fleet: scenarios, routes, noise.")] = 0,
    broker: Annotated[str, typer.Option(help="Broker as HOST[:PORT].")] = "127.0.0.1:1883",
    id_prefix: Annotated[
        str | None,
        typer.Option(help="Device ids are PREFIX-0001 ...; default sim-<site id>."),
    ] = None,
    username_prefix: Annotated[
        str,
        typer.Option(help="Broker username = this prefix + the device id (default: the id)."),
    ] = "",
    password_env: Annotated[
        str | None,
        typer.Option(help="Environment variable holding the broker password of every device."),
    ] = None,
    connect_rate: Annotated[
        float,
        typer.Option(min=1, max=100_000, help="New connections per second at the start."),
    ] = 200.0,
    connect_timeout: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            help="Seconds to wait for every device to connect before reporting starts "
            "(those not connected by then keep trying); default 15 + 2 x COUNT/CONNECT_RATE.",
        ),
    ] = None,
    drain: Annotated[
        float,
        typer.Option(min=0, help="Seconds to wait for outstanding acks after reporting stops."),
    ] = 5.0,
    session_expiry: Annotated[
        int, typer.Option(min=0, help="MQTT session expiry of each device, seconds.")
    ] = 300,
    json_output: Annotated[
        bool, typer.Option("--json", help="Also print the final figures as JSON on stdout.")
    ] = False,
) -> None:
    """Plan the fleet, run it, print the figures (the help is :data:`_SIMULATE_HELP`)."""
    console = Console(stderr=True, soft_wrap=True)
    try:
        site_map = load_site(site)
        weights = parse_mix(mix) if mix is not None else None
        plan = plan_fleet(site_map, count, mix=weights, seed=seed, id_prefix=id_prefix, rate=rate)
        host, port = parse_broker(broker)
        settings = MqttSettings(
            host=host,
            port=port,
            password_env=password_env,
            keepalive_s=plan.profile.mqtt_keepalive_s,
            session_expiry_s=session_expiry,
            reconnect_min_s=0.5,
            reconnect_max_s=10.0,
        )
        settings.password()
        ensure_fd_limit(count)
    except (SiteError, PlanError, MqttConfigError, FdLimitError, ValueError) as exc:
        raise _fail(str(exc)) from None
    console.print(_describe(plan, broker, duration, connect_rate), highlight=False)
    runner = FleetRunner(
        plan,
        settings,
        duration_s=duration,
        drain_s=drain,
        connect_rate=connect_rate,
        connect_timeout_s=connect_timeout,
        username_prefix=username_prefix,
    )
    display = _Display(console)
    try:
        result = asyncio.run(_run(runner, display))
    finally:
        display.close()
    console.print(
        f"reported for {result.run_s:.1f} s: {result.achieved_rate:.1f} events/s sent "
        f"(target {result.target_rate:g}); {result.unsent} unsent, {result.telemetry} "
        f"telemetry, {result.rejected} rejected, max lag {result.max_lag_s:.3f} s",
        highlight=False,
    )
    if json_output:
        typer.echo(json.dumps(result.as_dict(), sort_keys=True))
    typer.echo(result.final_line())
    if result.connected_max == 0:
        typer.echo(f"error: no device could connect to {broker}", err=True)
        raise typer.Exit(1)


@app.command("ack-all", hidden=True)
def ack_all(
    broker: Annotated[str, typer.Option(help="Broker as HOST[:PORT].")] = "127.0.0.1:1883",
    duration: Annotated[
        float | None, typer.Option(min=0, help="Seconds to run; default until Ctrl-C.")
    ] = None,
    shared: Annotated[
        bool,
        typer.Option(help="Join the hub's shared subscription ($share/hub/...) or see all."),
    ] = True,
    client_id: Annotated[str, typer.Option(help="MQTT client id.")] = "lantern-ack-all",
    username: Annotated[str | None, typer.Option(help="Broker username.")] = None,
    password_env: Annotated[
        str | None, typer.Option(help="Environment variable holding the broker password.")
    ] = None,
    flush_every: Annotated[
        float, typer.Option(min=0.001, max=10, help="Seconds between batches of acks.")
    ] = 0.05,
) -> None:
    """Ack every event on the broker, as the hub would after storing it (for load runs
    and demos without a hub). Prints received/acked/rejected counts when stopped."""
    console = Console(stderr=True, soft_wrap=True)
    try:
        host, port = parse_broker(broker)
        settings = MqttSettings(
            host=host,
            port=port,
            username=username,
            password_env=password_env,
            session_expiry_s=0,
            reconnect_min_s=0.2,
            reconnect_max_s=5.0,
        )
        settings.password()
    except (MqttConfigError, ValueError) as exc:
        raise _fail(str(exc)) from None
    acker = AckAll(settings, client_id=client_id, shared=shared, flush_every_s=flush_every)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if acker.start(10.0):
            console.print(f"ack-all: acking {acker.subscription} on {broker}", highlight=False)
        else:
            console.print(f"ack-all: not subscribed yet on {broker}; still trying")
        deadline = None if duration is None else time.monotonic() + duration
        while not stop.is_set():
            left = 10.0 if deadline is None else min(10.0, deadline - time.monotonic())
            if left <= 0 or stop.wait(left):
                break
            s = acker.stats
            console.print(
                f"ack-all: received {s.received}, acked {s.acked}, rejected {s.rejected}",
                highlight=False,
            )
    finally:
        acker.close(5.0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    s = acker.stats
    typer.echo(
        f"received={s.received} acked={s.acked} rejected={s.rejected} "
        f"unreadable={s.unreadable} acks_sent={s.acks_sent} acks_failed={s.acks_failed}"
    )
