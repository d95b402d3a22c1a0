"""``lantern protocol``: the JSON Schema export (checked with jsonschema against the
payload fixtures) and the operator's decoder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

from devices.cli import app as root_app
from devices.protocol import MESSAGE_CLASSES, encode, parse_topic, topic_for
from devices.protocol.schemas import schema_filename
from devices.protocol_cli import app
from devices.signing import generate_private_key, public_key_of, public_key_to_b64, sign
from tests.devices.protocol_helpers import PAYLOADS, load_cases, load_index, position_event

runner = CliRunner()


def _plain(text: str) -> str:
    return re.sub(r"[\s│╭╮╰╯─]+", " ", text)


@pytest.fixture(scope="module")
def schema_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("schemas") / "nested" / "dir"
    result = runner.invoke(app, ["schema", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"wrote {len(MESSAGE_CLASSES)} schema files" in _plain(result.stderr)
    return out


def test_one_valid_schema_file_per_message(schema_dir: Path) -> None:
    files = sorted(p.name for p in schema_dir.iterdir())
    assert files == sorted(schema_filename(k, n) for k, n in MESSAGE_CLASSES)
    for path in schema_dir.iterdir():
        schema = json.loads(path.read_text(encoding="utf-8"))
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["additionalProperties"] is False
        assert "schema" in schema["required"] and "body" in schema["required"]


def _validator(schema_dir: Path, topic: str) -> Draft202012Validator:
    info = parse_topic(topic)
    path = schema_dir / schema_filename(info.kind, info.name)
    return Draft202012Validator(json.loads(path.read_text(encoding="utf-8")))


def test_good_fixtures_validate_against_the_schemas(schema_dir: Path) -> None:
    checked = 0
    for case in load_cases():
        if case.expect != "ok" or case.upgraded_from or not case.file.startswith("good/"):
            continue
        payload = json.loads(case.payload)
        errors = list(_validator(schema_dir, case.topic).iter_errors(payload))
        assert not errors, f"{case.file}: {errors[0].message}"
        checked += 1
    assert checked >= len(MESSAGE_CLASSES)


@pytest.mark.parametrize(
    "name",
    [
        "evt.position.lat-95.json",
        "evt.position.extra-field.json",
        "evt.position.received-at.json",
        "evt.position.src-unknown.json",
        "evt.position.lat-string.json",
        "evt.position.schema-missing.json",
        "evt.alarm.type-unknown.json",
        "ack.too-many.json",
    ],
)
def test_structural_bad_fixtures_fail_the_schemas_too(schema_dir: Path, name: str) -> None:
    case = next(c for c in load_cases() if c.file == f"bad/{name}")
    assert list(_validator(schema_dir, case.topic).iter_errors(json.loads(case.payload)))


def test_schema_command_is_registered_on_the_root_cli(tmp_path: Path) -> None:
    result = runner.invoke(root_app, ["protocol", "schema", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "evt.position.schema.json").is_file()


def test_schema_command_refuses_an_unusable_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        result = runner.invoke(app, ["schema", "--out", str(out)])
        assert result.exit_code == 2
        assert "error" in result.stderr and str(blocker) in _plain(result.stderr)


def test_decode_prints_the_message() -> None:
    result = runner.invoke(
        app,
        [
            "decode",
            "--topic",
            "lantern/v1/wb-0042/evt/position",
            "--now",
            load_index()["now"],
            str(PAYLOADS / "good" / "evt.position.v1.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "upgraded from lantern.evt/1" in _plain(result.stderr)
    printed = json.loads(result.stdout)
    assert printed["schema"] == "lantern.evt/2" and printed["replayed"] is False


def test_decode_reports_the_refusal() -> None:
    result = runner.invoke(
        app,
        [
            "decode",
            "-t",
            "lantern/v1/wb-0042/evt/position",
            str(PAYLOADS / "bad" / "evt.position.device-mismatch.json"),
        ],
    )
    assert result.exit_code == 1
    assert "device_mismatch" in result.stderr and "field device_id" in _plain(result.stderr)


def test_decode_verifies_signatures_and_reads_stdin() -> None:
    key = generate_private_key()
    signed = sign(position_event(device_id="wb-0042"), key, "k1")
    public = public_key_to_b64(public_key_of(key))
    args = ["decode", "-t", topic_for(signed), "-", "--now", "2025-06-01T12:00:00Z"]
    ok = runner.invoke(app, [*args, "--key", f"k1={public}"], input=encode(signed))
    assert ok.exit_code == 0, ok.output
    wrong = public_key_to_b64(public_key_of(generate_private_key()))
    bad = runner.invoke(app, [*args, "--key", f"k1={wrong}"], input=encode(signed))
    assert bad.exit_code == 1 and "bad_signature" in bad.stderr
    unknown = runner.invoke(app, [*args, "--key", f"k2={public}"], input=encode(signed))
    assert unknown.exit_code == 1 and "unknown_kid" in unknown.stderr


def test_decode_with_configured_dims_and_bad_options(tmp_path: Path) -> None:
    payload = PAYLOADS / "bad" / "evt.sighting.unknown-model.json"
    topic = "lantern/v1/cam-gate-02/evt/sighting"
    now = ["--now", load_index()["now"]]
    refused = runner.invoke(app, ["decode", "-t", topic, *now, str(payload)])
    assert refused.exit_code == 1
    taken = runner.invoke(
        app, ["decode", "-t", topic, *now, "--dims", "facenet-*=128", str(payload)]
    )
    assert taken.exit_code == 0, taken.output
    for extra in (["--dims", "facenet"], ["--now", "yesterday"], ["--key", "nokey"]):
        result = runner.invoke(app, ["decode", "-t", topic, str(payload), *extra])
        assert result.exit_code == 2, result.output
    missing = runner.invoke(app, ["decode", "-t", topic, str(tmp_path / "absent.json")])
    assert missing.exit_code == 2 and "cannot read" in missing.stderr
