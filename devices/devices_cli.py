"""``lantern devices``: one group for every command about devices, whichever side has it.

The group belongs to ``devices`` (installed everywhere) and holds no command of its
own. Each package adds its commands through the ``lantern.devices.commands``
entry-point group: the hub adds ``provision``, the edge package ``simulate`` and the
hidden ``ack-all``. An entry point ``name = "module:object"`` may point at

* a function, which becomes the command ``name``; or
* a ``typer.Typer``, from which the command called ``name`` is taken as that app
  declares it (its help, its options and whether it is hidden).

A command whose module cannot be imported here (an optional dependency of the other
side missing) is logged as a warning and left out; the rest still work.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import typer
from typer.main import get_command_name
from typer.models import CommandInfo

__all__ = ["DEVICES_GROUP", "app", "register_device_commands"]

logger = logging.getLogger(__name__)

DEVICES_GROUP = "lantern.devices.commands"
"""Entry-point group through which packages add commands to ``lantern devices``."""

app = typer.Typer(
    name="devices",
    help="Devices: provision them in the hub's registry, simulate a fleet of them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _devices() -> None:
    """Commands about devices (a group)."""


def _command_name(info: CommandInfo) -> str | None:
    if info.name:
        return info.name
    if info.callback is None:
        return None
    return get_command_name(info.callback.__name__)


def _command_from(name: str, obj: Any) -> CommandInfo | None:
    """The command ``name`` that ``obj`` (a function or a Typer app) contributes."""
    if isinstance(obj, typer.Typer):
        for info in obj.registered_commands:
            if _command_name(info) == name:
                found = copy.copy(info)
                found.name = name
                return found
        return None
    if callable(obj):
        callback: Callable[..., Any] = obj
        return CommandInfo(name=name, callback=callback)
    return None


def register_device_commands(target: typer.Typer, eps: Iterable[EntryPoint]) -> list[str]:
    """Add to ``target`` the command each entry point names; return the names added.

    An entry point that cannot be loaded, or whose object offers no command of that
    name, is logged as a warning and skipped; a name seen twice is skipped.
    """
    added: list[str] = []
    for ep in eps:
        if ep.name in added:
            logger.debug("devices %r already registered; skipping %s", ep.name, ep.value)
            continue
        try:
            obj = ep.load()
        except (ImportError, AttributeError) as exc:
            logger.warning("devices %r skipped: loading %s failed (%s)", ep.name, ep.value, exc)
            continue
        info = _command_from(ep.name, obj)
        if info is None:
            logger.warning(
                "devices %r skipped: %s offers no command of that name", ep.name, ep.value
            )
            continue
        target.registered_commands.append(info)
        added.append(ep.name)
        logger.debug("devices %r registered from %s", ep.name, ep.value)
    return added


register_device_commands(app, entry_points(group=DEVICES_GROUP))
