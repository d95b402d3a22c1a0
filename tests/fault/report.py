"""Print the fault suite's results as a Markdown table.

``python -m tests.fault.report [--dir tests/artifacts/reliability]`` reads every
``*.json`` result written by the fault scenarios (files without a ``scenario`` key,
written by other suites into the same folder, are skipped) and prints one row per
scenario and backend, so the reliability figures in the docs can be regenerated from
a run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.fault.harness import RESULT_KEYS, RESULTS

COLUMNS = (
    ("scenario", "scenario"),
    ("backend", "backend"),
    ("sent", "sent"),
    ("stored", "stored"),
    ("lost", "lost"),
    ("duplicates_on_wire", "duplicates on wire"),
    ("duplicates_stored", "duplicates stored"),
    ("alerts", "alerts expected/raised"),
    ("recover_s", "recover s"),
)


def load(folder: Path) -> list[dict[str, Any]]:
    """The fault results in ``folder``, sorted by scenario and backend."""
    results: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and all(key in data for key in RESULT_KEYS):
            results.append(data)
    return sorted(results, key=lambda r: (str(r["scenario"]), str(r["backend"])))


def _cell(result: dict[str, Any], key: str) -> str:
    if key == "alerts":
        return f"{result['alerts_expected']}/{result['alerts_raised']}"
    value = result[key]
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def table(results: Sequence[dict[str, Any]]) -> str:
    """The Markdown table of ``results`` (numbers right-aligned)."""
    header = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = (
        "|"
        + "|".join("---" if key in ("scenario", "backend") else "---:" for key, _ in COLUMNS)
        + "|"
    )
    rows = ["| " + " | ".join(_cell(r, key) for key, _ in COLUMNS) + " |" for r in results]
    return "\n".join([header, rule, *rows])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--dir",
        type=Path,
        default=RESULTS,
        help="Folder of the result files (default: %(default)s).",
    )
    args = parser.parse_args(argv)
    results = load(args.dir)
    if not results:
        sys.stderr.write(f"no fault results in {args.dir}\n")
        return 1
    sys.stdout.write(table(results) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
