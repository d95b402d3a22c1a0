"""Figures the access tests measure, written to ``tests/artifacts/reliability/access.json``.

Each test records what it checked under a section name; at the end of the run the
sections recorded are merged into the JSON file (a partial run replaces only its own
sections, so the file always says which run produced each part).
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ARTIFACT = Path(__file__).resolve().parents[1] / "artifacts" / "reliability" / "access.json"

_LOCK = threading.Lock()
_SECTIONS: dict[str, dict[str, Any]] = {}


def record(section: str, key: str, value: Any) -> None:
    """Store ``value`` under ``section``/``key`` for the artifact of this run."""
    with _LOCK:
        _SECTIONS.setdefault(section, {})[key] = value


def write(path: Path = ARTIFACT) -> Path | None:
    """Merge the recorded sections into ``path``; None when nothing was recorded."""
    with _LOCK:
        if not _SECTIONS:
            return None
        sections = {name: dict(values) for name, values in _SECTIONS.items()}
    document: dict[str, Any] = {}
    if path.is_file():
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            loaded = {}
        if isinstance(loaded, dict):
            document = loaded
    now = datetime.now(UTC).isoformat(timespec="seconds")
    for name, values in sections.items():
        document[name] = {"measured_at": now, **values}
    document["source"] = "pytest tests/access"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
