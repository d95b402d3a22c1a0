"""The JSON schema of a rule's parameters matches what validation requires."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from hub.supervision.model import CurfewParams, Rule

RULE: dict[str, Any] = {
    "id": "r-1",
    "subject_id": "1",
    "device_id": "wb-0001",
    "params": {"kind": "silence", "max_silence_s": 600},
    "valid_from": "2025-01-01T00:00:00+00:00",
}


def test_every_params_schema_requires_its_kind() -> None:
    schema = Rule.model_json_schema()
    union = schema["properties"]["params"]
    assert union["discriminator"]["propertyName"] == "kind"
    names = [ref["$ref"].rsplit("/", 1)[-1] for ref in union["oneOf"]]
    assert len(names) == 5
    for name in names:
        params = schema["$defs"][name]
        assert "kind" in params["required"], name
        assert "default" not in params["properties"]["kind"], name


def test_a_rule_without_a_kind_is_refused_as_the_schema_says() -> None:
    Rule.model_validate(RULE)
    params = {k: v for k, v in RULE["params"].items() if k != "kind"}
    with pytest.raises(ValidationError, match="kind"):
        Rule.model_validate({**RULE, "params": params})


def test_params_built_in_python_still_know_their_kind() -> None:
    window = {"days": [0], "start": "21:00", "end": "07:00"}
    params = CurfewParams.model_validate({"zone_id": "z", "timezone": "UTC", "windows": [window]})
    assert params.kind == "curfew"


@pytest.mark.parametrize("name", ["a" * 300, "Europe/../../etc/passwd", "Mars/Olympus", ""])
def test_a_curfew_in_an_unknown_time_zone_is_refused(name: str) -> None:
    window = {"days": [0], "start": "21:00", "end": "07:00"}
    params = {"kind": "curfew", "zone_id": "z", "timezone": name, "windows": [window]}
    with pytest.raises(ValidationError, match="unknown time zone"):
        Rule.model_validate({**RULE, "params": params})
