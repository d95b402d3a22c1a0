"""``lantern demo``: the demo site on embedded defaults (see :mod:`hub.demo.run`)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from devices.simulation.site import DEMO_SITES

__all__ = ["app"]

app = typer.Typer(
    help="The demo site on embedded defaults: a broker, the hub, two demo sites, "
    "simulated wearables and a camera; prints the map's URL and an admin token.",
    add_completion=False,
)


class SiteChoice(StrEnum):
    """Which demo site(s) to load."""

    kereru_flats = "kereru-flats"
    totara_downs = "totara-downs"
    both = "both"


class BrokerChoice(StrEnum):
    """Which broker to run."""

    auto = "auto"
    mosquitto = "mosquitto"
    embedded = "embedded"


def _parse_http(value: str) -> tuple[str, int]:
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise typer.BadParameter(f"expected HOST:PORT, got {value!r}", param_hint="--http")
    return host, int(port_text)


@app.callback(invoke_without_command=True)
def demo(
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration", min=1, help="Stop after this many seconds (default: at Ctrl-C)."
        ),
    ] = None,
    http: Annotated[
        str, typer.Option("--http", help="HOST:PORT of the hub's API and map.")
    ] = "127.0.0.1:8080",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            file_okay=False,
            help="Folder of the demo's database, logs and broker (default: a new temporary "
            "folder, printed).",
            show_default=False,
        ),
    ] = None,
    site: Annotated[
        SiteChoice, typer.Option("--site", help="Demo site(s) to load.")
    ] = SiteChoice.both,
    devices: Annotated[
        int, typer.Option("--devices", min=1, max=200, help="Simulated wearables per site.")
    ] = 8,
    broker: Annotated[
        BrokerChoice,
        typer.Option(
            "--broker",
            help="auto: a private Mosquitto when installed, else the embedded broker.",
        ),
    ] = BrokerChoice.auto,
) -> None:
    """Run the demo until Ctrl-C or --duration; exit 0, or 1 if the hub cannot start."""
    from hub.demo.run import DemoOptions, run_demo

    host, port = _parse_http(http)
    sites = DEMO_SITES if site is SiteChoice.both else (site.value,)
    options = DemoOptions(
        duration_s=duration,
        host=host,
        port=port,
        data_dir=data_dir,
        sites=tuple(sites),
        devices=devices,
        broker=broker.value,
    )
    raise typer.Exit(run_demo(options))
