"""``lantern protocol``: the wire protocol for people: JSON Schemas and a decoder.

``lantern protocol schema --out DIR`` writes one JSON Schema file per message (see
``devices.protocol.schemas``). ``lantern protocol decode --topic T FILE`` checks a
captured payload as the hub would and prints the decoded message, or the error code
and reason the hub would quarantine it with (exit status 1).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console

from devices.protocol import (
    EmbeddingDims,
    EventEnvelope,
    ProtocolError,
    decode,
    encode,
    parse_timestamp,
)
from devices.protocol.schemas import message_schemas
from devices.signing import load_public_keys, verify

logger = logging.getLogger(__name__)

app = typer.Typer(
    name="protocol",
    help="The MQTT wire protocol: write JSON Schemas, check captured payloads.",
    no_args_is_help=True,
)

_err = Console(stderr=True)
_out = Console()


def _fail(message: str, code: int = 2) -> typer.Exit:
    _err.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    return typer.Exit(code)


@app.command("schema")
def schema_command(
    out: Annotated[
        Path, typer.Option("--out", help="Directory to write the *.schema.json files into")
    ],
) -> None:
    """Write the JSON Schema (draft 2020-12) of every message into DIR."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(f"cannot create {out}: {exc.strerror or exc}") from None
    if not out.is_dir():
        raise _fail(f"{out} is not a directory")
    if not os.access(out, os.W_OK | os.X_OK):
        raise _fail(f"{out} is not writable")
    schemas = message_schemas()
    for name, schema in schemas.items():
        target = out / name
        text = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        try:
            with tempfile.NamedTemporaryFile(
                "w", encoding="utf-8", dir=out, prefix=f".{name}.", delete=False
            ) as handle:
                handle.write(text)
            os.replace(handle.name, target)
        except OSError as exc:
            raise _fail(f"cannot write {target}: {exc.strerror or exc}") from None
        logger.info("wrote %s (%d bytes)", target, len(text))
    _err.print(f"wrote {len(schemas)} schema files to {out}", highlight=False)


@app.command("decode")
def decode_command(
    file: Annotated[
        Path,
        typer.Argument(help="Payload file (the raw MQTT payload bytes); - for stdin"),
    ],
    topic: Annotated[str, typer.Option("--topic", "-t", help="Topic it was published on")],
    now: Annotated[
        str | None,
        typer.Option(help="Receiver clock as RFC 3339 (default: now), for captured payloads"),
    ] = None,
    dims: Annotated[
        str | None,
        typer.Option(help="Extra embedding dims, model_id=dim[,pattern*=dim]"),
    ] = None,
    key: Annotated[
        list[str] | None,
        typer.Option(
            "--key", help="KID=BASE64 public key to verify an event's signature (repeatable)"
        ),
    ] = None,
) -> None:
    """Check a payload as the hub would; print the message, or the refusal and exit 1."""
    clock: datetime | None = None
    if now is not None:
        try:
            clock = parse_timestamp(now)
        except ValueError as exc:
            raise _fail(f"--now: {exc}") from None
    table: EmbeddingDims | None = None
    if dims:
        try:
            table = EmbeddingDims.parse(dims)
        except ValueError as exc:
            raise _fail(f"--dims: {exc}") from None
    public_keys = _keys(key) if key else None
    payload = _read(file)
    try:
        decoded = decode(topic, payload, now=clock, dims=table)
        if public_keys is not None:
            if not isinstance(decoded.message, EventEnvelope):
                raise _fail("--key given, but only events carry signatures")
            verify(decoded.message, public_keys)
    except ProtocolError as exc:
        where = f" (field {exc.field})" if exc.field else ""
        _err.print(f"[red]refused[/red] {exc.code}: {exc.reason}{where}", highlight=False)
        raise typer.Exit(1) from None
    info = decoded.topic
    summary = f"ok: {info.kind}" + (f"/{info.name}" if info.name else "")
    summary += f" from {info.device_id}, {decoded.size} bytes, schema {decoded.schema}"
    if decoded.upgraded_from:
        summary += f" (upgraded from {decoded.upgraded_from})"
    _err.print(summary, highlight=False)
    text = json.dumps(json.loads(encode(decoded.message)), indent=2, ensure_ascii=False)
    _out.print(text, highlight=False, markup=False, soft_wrap=True)


_MAX_FILE_BYTES = 16 << 20


def _read(file: Path) -> bytes:
    """The payload bytes of a file (or stdin), refusing files far beyond any cap."""
    try:
        if str(file) == "-":
            data = sys.stdin.buffer.read(_MAX_FILE_BYTES + 1)
        else:
            if file.stat().st_size > _MAX_FILE_BYTES:
                raise _fail(f"{file} is over {_MAX_FILE_BYTES} bytes: not a payload")
            data = file.read_bytes()
    except OSError as exc:
        raise _fail(f"cannot read {file}: {exc.strerror or exc}") from None
    if len(data) > _MAX_FILE_BYTES:
        raise _fail(f"stdin is over {_MAX_FILE_BYTES} bytes: not a payload")
    return data


def _keys(items: list[str]) -> dict[str, Ed25519PublicKey]:
    """``KID=BASE64`` options as public keys by key id."""
    pairs: dict[str, str] = {}
    for item in items:
        kid, sep, value = item.partition("=")
        if not sep:
            raise _fail(f"--key {item!r} is not KID=BASE64")
        pairs[kid] = value
    try:
        return load_public_keys(pairs)
    except ValueError as exc:
        raise _fail(f"--key: {exc}") from None
