"""The README's promises that code can check: every API route is in its route table
with the roles the route admits, and every command group is documented."""

from __future__ import annotations

import json
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


def test_the_supervision_examples_are_valid_zones_and_rules() -> None:
    """Every JSON block of the README's supervision section is a zone the API accepts
    (validated geometry) or a rule it accepts, and every rule kind has an example."""
    from hub.api.routes.rules import RuleCreate
    from hub.api.routes.zones import ZoneFeatureIn
    from hub.supervision.model import Zone
    from hub.supervision.zones import validate_zone

    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Supervision") : text.index("## Benchmarks")]
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", section, re.S)]
    kinds = set()
    zones = 0
    for block in blocks:
        if block.get("type") == "Feature":
            feature = ZoneFeatureIn.model_validate(block)
            props = feature.properties.model_dump()
            validate_zone(Zone(id=feature.id or "x", geometry=feature.geometry, **props))
            zones += 1
        else:
            kinds.add(RuleCreate.model_validate(block).params.kind)
    assert kinds == {"inclusion", "exclusion", "curfew", "proximity", "silence"}
    assert zones >= 4
