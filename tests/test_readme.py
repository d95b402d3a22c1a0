"""The README's promises that code can check: every API route is in its route table
with the roles the route admits, and every command group is documented."""

from __future__ import annotations

import re
from pathlib import Path

from hub.api import api_routes, create_app
from hub.api.deps import declared_roles
from hub.settings import HubSettings

README = Path(__file__).resolve().parents[1] / "README.md"
SECRET = "readme-Test_key-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFG-42"


def test_every_api_route_is_documented_with_its_roles(tmp_path: Path) -> None:
    text = README.read_text(encoding="utf-8")
    documented = {
        (m.group(1), m.group(2)): m.group(3).strip()
        for m in re.finditer(
            r"^\| `(GET|POST|PUT|PATCH|DELETE) (/[^`]*)` \| ([^|]+) \|", text, re.M
        )
    }
    settings = HubSettings(jwt_secret=SECRET, database_url=f"sqlite:///{tmp_path / 'x.db'}")  # type: ignore[arg-type]
    missing = []
    for method, path, route in api_routes(create_app(settings)):
        roles = declared_roles(route)
        expected = ", ".join(sorted(r.value for r in roles)) if roles else "public"
        key = (method, path.removeprefix("/api/v1"))
        if documented.get(key) != expected:
            missing.append(
                f"{method} {key[1]}: README says {documented.get(key)!r}, route admits {expected!r}"
            )
    assert not missing, "\n".join(missing)


def test_every_lantern_command_group_is_in_the_readme() -> None:
    from devices.cli import app

    text = README.read_text(encoding="utf-8")
    groups = [g.name for g in app.registered_groups if g.name]
    assert groups
    for name in groups:
        assert f"lantern {name}" in text, name
