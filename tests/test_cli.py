"""Tests for the root ``lantern`` command line in ``devices.cli``."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from importlib.metadata import EntryPoint, version

import pytest
import typer
from typer.main import get_group
from typer.testing import CliRunner

from devices.cli import (
    COMMAND_GROUP,
    DISTRIBUTION,
    _LanternHandler,
    app,
    configure_logging,
    register_subcommands,
)

runner = CliRunner()

# A sub-command appears in the help's command list as a line starting with its name
# (after box-drawing characters); "matches" in the prose does not count.
_MATCH_COMMAND_LINE = re.compile(r"^\W*match\b", re.MULTILINE)


def test_help_lists_match_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    assert "--version" in result.output
    assert "match" in get_group(app).commands
    assert _MATCH_COMMAND_LINE.search(result.output), result.output


def test_help_via_module_subprocess() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "devices.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "lantern" in proc.stdout
    assert _MATCH_COMMAND_LINE.search(proc.stdout), proc.stdout + proc.stderr


def test_no_args_shows_help() -> None:
    result = runner.invoke(app, [])
    assert "Usage" in result.output


def test_version_matches_installed_distribution() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"lantern {version(DISTRIBUTION)}"


def test_broken_entry_point_is_skipped_with_warning(caplog: pytest.LogCaptureFixture) -> None:
    broken = EntryPoint(name="broken", value="no_such_module_xyz:app", group=COMMAND_GROUP)
    target = typer.Typer()
    with caplog.at_level(logging.WARNING, logger="devices.cli"):
        registered = register_subcommands(target, [broken])
    assert registered == []
    assert target.registered_groups == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "broken" in warnings[0].getMessage()
    assert "no_such_module_xyz" in warnings[0].getMessage()
    assert "missing module 'no_such_module_xyz'" in warnings[0].getMessage()


def test_working_entry_point_is_registered_next_to_broken_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken = EntryPoint(name="broken", value="no_such_module_xyz:app", group=COMMAND_GROUP)
    working = EntryPoint(name="root-again", value="devices.cli:app", group=COMMAND_GROUP)
    target = typer.Typer()
    with caplog.at_level(logging.WARNING, logger="devices.cli"):
        registered = register_subcommands(target, [broken, working])
    assert registered == ["root-again"]
    assert [g.name for g in target.registered_groups] == ["root-again"]


def test_entry_point_that_is_not_a_typer_app_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = EntryPoint(name="wrong", value="devices.cli:main", group=COMMAND_GROUP)
    target = typer.Typer()
    with caplog.at_level(logging.WARNING, logger="devices.cli"):
        registered = register_subcommands(target, [wrong])
    assert registered == []
    assert any("not a typer.Typer" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("verbosity", "level"),
    [(0, logging.WARNING), (1, logging.INFO), (2, logging.DEBUG), (5, logging.DEBUG)],
)
def test_configure_logging_level_follows_verbosity(verbosity: int, level: int) -> None:
    root = logging.getLogger()
    # A handler this function installed earlier (another test ran the CLI) is replaced by
    # design; every other handler must survive.
    before_level = root.level
    before_handlers = [h for h in root.handlers if not isinstance(h, _LanternHandler)]
    try:
        configure_logging(verbosity)
        configure_logging(verbosity)
        assert root.level == level
        added = [h for h in root.handlers if h not in before_handlers]
        assert len(added) == 1, "a second call must replace, not stack, the handler"
        assert all(h in root.handlers for h in before_handlers)
    finally:
        for handler in [h for h in root.handlers if h not in before_handlers]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(before_level)
