"""The root ``lantern`` command line.

The root sits in ``devices`` because ``devices`` is the shared base that every side
installs: an edge box, a hub and an analyst's laptop all have it, so ``lantern`` is
always there. The root imports no other package directly. Each package registers its
own sub-command as an entry point in the ``lantern.commands`` group (name ->
``"module:typer_app"``), and :func:`register_subcommands` adds whatever is installed.
A sub-command whose module cannot be imported, typically because an optional
dependency is missing on this machine, is logged as a warning and skipped, so one
side's missing dependency never breaks the other commands.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib.metadata import EntryPoint, PackageNotFoundError, entry_points, version
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

__all__ = [
    "COMMAND_GROUP",
    "DISTRIBUTION",
    "app",
    "configure_logging",
    "distribution_version",
    "main",
    "register_subcommands",
]

logger = logging.getLogger(__name__)

DISTRIBUTION = "lantern-platform"
"""The distribution whose version ``--version`` reports."""

COMMAND_GROUP = "lantern.commands"
"""Entry-point group through which packages register ``lantern`` sub-commands."""

_HELP = """\
Lantern: edge agents on cameras and wearables, a hub that stores their events,
evaluates geofences and curfews and matches faces against galleries, and
purpose-bound cross-region matching. Every search result is a candidate for
human review.

Sub-commands come from the installed Lantern packages.
"""


def distribution_version() -> str:
    """Return the installed version of the ``lantern-platform`` distribution."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        logger.debug("distribution %s is not installed; version unknown", DISTRIBUTION)
        return "0+unknown"


class _LanternHandler(RichHandler):
    """Marks the handler installed by :func:`configure_logging` so it can be replaced."""


def configure_logging(verbosity: int) -> None:
    """Send log records to stderr through rich, at a level chosen by ``-v`` count.

    0 gives WARNING, 1 gives INFO, 2 or more gives DEBUG. Calling again replaces the
    handler this function installed earlier and leaves any other handler alone.
    """
    if verbosity <= 0:
        level = logging.WARNING
    elif verbosity == 1:
        level = logging.INFO
    else:
        level = logging.DEBUG
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _LanternHandler)]:
        root.removeHandler(handler)
        handler.close()
    handler = _LanternHandler(
        console=Console(stderr=True),
        show_path=level == logging.DEBUG,
        rich_tracebacks=True,
    )
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s", datefmt="[%X]"))
    root.addHandler(handler)
    root.setLevel(level)
    logger.debug("logging configured at %s", logging.getLevelName(level))


def register_subcommands(app: typer.Typer, eps: Iterable[EntryPoint]) -> list[str]:
    """Add each entry point's Typer app to ``app`` as a sub-command named after it.

    An entry point whose module cannot be imported, whose object does not exist, or
    whose object is not a ``typer.Typer`` is logged as a warning and skipped. A name
    seen a second time (the same distribution found twice on the path) is skipped.
    Returns the names that were registered, in order.
    """
    registered: list[str] = []
    for ep in eps:
        if ep.name in registered:
            logger.debug("command %r already registered; skipping %s", ep.name, ep.value)
            continue
        try:
            sub_app = ep.load()
        except ImportError as exc:
            missing = exc.name or "unknown"
            logger.warning(
                "command %r skipped: importing %s failed, missing module %r (%s)",
                ep.name,
                ep.value,
                missing,
                exc,
            )
            continue
        except AttributeError as exc:
            logger.warning("command %r skipped: %s not found (%s)", ep.name, ep.value, exc)
            continue
        if not isinstance(sub_app, typer.Typer):
            logger.warning(
                "command %r skipped: %s is a %s, not a typer.Typer",
                ep.name,
                ep.value,
                type(sub_app).__name__,
            )
            continue
        app.add_typer(sub_app, name=ep.name)
        registered.append(ep.name)
        logger.debug("command %r registered from %s", ep.name, ep.value)
    return registered


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"lantern {distribution_version()}")
        raise typer.Exit()


app = typer.Typer(
    name="lantern",
    help=_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _root(
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose",
            "-v",
            count=True,
            help="More log output on stderr: -v for INFO, -vv for DEBUG (default WARNING).",
        ),
    ] = 0,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print the installed Lantern version and exit.",
        ),
    ] = False,
) -> None:
    configure_logging(verbose)


register_subcommands(app, entry_points(group=COMMAND_GROUP))


def main() -> None:
    """Run the ``lantern`` command line (the console-script entry point)."""
    app(prog_name="lantern")


if __name__ == "__main__":
    main()
