"""``lantern federation``: a hub's signing keys and a look at its peers.

``keygen --out DIR`` writes a new Ed25519 key pair: ``DIR/hub.key`` (the private key,
base64, mode 0600: keep it on this hub only, name it as ``private_key_file``) and
``DIR/hub.pub`` (the public key, base64: give it to every peer, which lists it as this
hub's ``public_key``). Existing files are not overwritten.

``peers`` reads the federation file (``--file`` or ``LANTERN_FEDERATION_FILE``), checks
it as the hub would, prints this hub's id, public key and policy, and tries each
peer's health endpoint to show whether it is reachable.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import httpx
import typer

from devices.signing import generate_private_key, private_key_to_b64, public_key_to_b64
from hub.federation.peers import FederationConfigError, load_federation_settings

__all__ = ["app"]

logger = logging.getLogger(__name__)

FEDERATION_FILE_ENV = "LANTERN_FEDERATION_FILE"

app = typer.Typer(
    help="Federation between region hubs: make this hub's signing keys (keygen), check "
    "its federation file and reach its peers (peers).",
    no_args_is_help=True,
)


@app.callback()
def _federation() -> None:
    """Federation between region hubs (a group of commands)."""


@app.command()
def keygen(
    out: Annotated[Path, typer.Option("--out", help="Directory for hub.key (0600) and hub.pub.")],
    name: Annotated[str, typer.Option(help="File name stem.")] = "hub",
) -> None:
    """Write a new Ed25519 key pair: OUT/NAME.key (private, mode 0600) and OUT/NAME.pub
    (public, for the peers' federation files). Refuses to overwrite either."""
    out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out / f"{name}.key", out / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            typer.echo(f"error: {path} exists; not overwritten", err=True)
            raise typer.Exit(code=1)
    key = generate_private_key()
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(private_key_to_b64(key) + "\n")
    public = public_key_to_b64(key.public_key())
    public_path.write_text(public + "\n", encoding="ascii")
    typer.echo(f"private key: {private_path} (keep it on this hub, mode 0600)")
    typer.echo(f"public key:  {public_path}")
    typer.echo(f"public_key: {public}")


@app.command()
def peers(
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help=f"Federation file; default ${FEDERATION_FILE_ENV}.",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for each peer's health endpoint.")
    ] = 3.0,
) -> None:
    """Check the federation file, show this hub's id, key and policy, and whether each
    peer answers on its health endpoint (exit 1 if the file is unusable)."""
    path = file or (
        Path(os.environ[FEDERATION_FILE_ENV]) if os.environ.get(FEDERATION_FILE_ENV) else None
    )
    if path is None:
        typer.echo(f"error: no federation file: pass --file or set {FEDERATION_FILE_ENV}", err=True)
        raise typer.Exit(code=2)
    try:
        settings = load_federation_settings(path)
    except FederationConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=1) from None
    public = public_key_to_b64(settings.signing_key().public_key())
    typer.echo(f"hub {settings.hub_id}  public key {public}")
    typer.echo(f"request timeout {settings.request_timeout_s:g} s")
    if not settings.peers:
        typer.echo("no peers")
    for peer in settings.peers:
        try:
            response = httpx.get(f"{peer.url}/api/v1/health", timeout=timeout)
            reach = "reachable" if response.status_code == 200 else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            reach = f"unreachable ({type(exc).__name__})"
        rules = settings.policy.get(peer.hub_id)
        if rules is None:
            allowed = "may search nothing here"
        else:
            granted = [
                f"{purpose}: {', '.join(rules.galleries(purpose))}"
                for purpose in (
                    "missing_person",
                    "found_person",
                    "criminal_investigation",
                    "watchlist",
                )
                if rules.galleries(purpose)
            ]
            allowed = "; ".join(granted) or "may search nothing here"
            allowed += "; crops allowed" if rules.crops else "; no crops"
        typer.echo(f"peer {peer.hub_id}  {peer.url}  {reach}  [{allowed}]")
