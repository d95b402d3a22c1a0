"""Firmware profiles, overrides, rendering, error paths, JSON Schemas and the
``lantern firmware`` command."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from devices import firmware as fw
from devices.catalog import BUILTIN_CATALOG, BUILTIN_MODELS, Device, DeviceKind
from devices.firmware_cli import app

CONFIG_DIR = fw.packaged_config_dir()
PROFILE_FILES = sorted((CONFIG_DIR / "profiles").glob("*.yaml"))
SHIPPED_FILES = sorted(CONFIG_DIR.rglob("*.yaml"))

runner = CliRunner()


@pytest.fixture(scope="module")
def profiles() -> dict[str, fw.LoadedProfile]:
    return fw.load_profiles(CONFIG_DIR / "profiles")


def profile_data(name: str) -> dict[str, Any]:
    return fw.load_yaml(CONFIG_DIR / "profiles" / f"{name}.yaml")


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def errors_of(exc: pytest.ExceptionInfo[fw.ConfigError]) -> list[str]:
    return [str(issue) for issue in exc.value.issues]


# -- shipped files ------------------------------------------------------------------------


def test_the_packaged_folder_is_the_repository_one() -> None:
    assert CONFIG_DIR == Path(__file__).resolve().parents[2] / "firmware_configs"
    assert {p.stem for p in PROFILE_FILES} == {
        "wristband",
        "ankle_tag",
        "fixed_camera",
        "body_camera",
        "home_beacon",
    }


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.name)
def test_every_shipped_profile_validates(path: Path) -> None:
    profile = fw.load_profile(path)
    assert profile.type in fw.PROFILE_FAMILIES


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_shipped_file_checks_clean(path: Path, profiles: dict[str, fw.LoadedProfile]) -> None:
    kind, issues = fw.check_file(path, profiles)
    assert issues == []
    assert kind is not None


@pytest.mark.parametrize("path", SHIPPED_FILES, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_shipped_files_match_the_committed_json_schema(path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    data = fw.load_yaml(path)
    name = {"profile": "profile", "device": "device", "site": "site"}[str(fw.file_kind(data))]
    schema = json.loads((CONFIG_DIR / "schema" / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(data)


def test_json_schema_rejects_what_the_loader_rejects() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((CONFIG_DIR / "schema" / "profile.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    data = profile_data("ankle_tag")
    for bad in (
        {"outbox": {"max_bytes": -5}},
        {"heartbeat_s": "300"},
        {"surprise": 1},
        {"type": "toaster"},
    ):
        assert not validator.is_valid(fw.deep_merge(data, bad)), bad


def test_committed_schemas_equal_the_generated_ones() -> None:
    documents = fw.schema_documents()
    assert sorted(documents) == sorted(p.name for p in (CONFIG_DIR / "schema").glob("*.json"))
    for name, document in documents.items():
        committed = (CONFIG_DIR / "schema" / name).read_text(encoding="utf-8")
        assert committed == fw.dump_schema(document), (
            f"{name} is stale: run lantern firmware schema --out firmware_configs/schema"
        )


def test_every_model_renders_with_its_default_profile(
    profiles: dict[str, fw.LoadedProfile],
) -> None:
    for model in BUILTIN_MODELS:
        overrides: dict[str, Any] = {}
        if model.kind is DeviceKind.HOME_BEACON:
            overrides = {"presence": {"paired_device_id": "ankle-0001"}}
        device = Device(device_id="dev-1", model=model.id, site="north", overrides=overrides)
        rendered = fw.render(device, profiles)
        assert rendered.profile == model.default_profile
        assert model.kind in fw.PROFILE_FAMILIES[rendered.config["type"]]


def test_quality_gate_mirrors_models_quality_config() -> None:
    quality = pytest.importorskip("models.quality")
    ours = fw.QualityGate.model_fields
    theirs = quality.QualityConfig.model_fields
    assert list(ours) == list(theirs)
    for name, info in ours.items():
        assert info.default == theirs[name].default, name
        assert info.metadata == theirs[name].metadata, name  # the same bounds
    # the edge agent builds its gate from the rendered section as it is
    quality.QualityConfig.model_validate(fw.QualityGate().model_dump())


# -- rendering ----------------------------------------------------------------------------


def test_render_example_device_merges_its_overrides(
    profiles: dict[str, fw.LoadedProfile],
) -> None:
    device, path = fw.find_device("ankle-demo-0001", CONFIG_DIR / "devices")
    rendered = fw.render(device, profiles, device_source=str(path))
    assert rendered.device_id == "ankle-demo-0001"
    assert rendered.model == "lantern-ankle-a1"
    assert rendered.site == "demo-north"
    assert rendered.profile == "ankle_tag"
    assert rendered.version == 1
    config = rendered.config
    assert config["report_interval_s"] == {"normal": 60, "in_violation": 10}
    assert config["positioning"]["gnss_accuracy_gate_m"] == 35.0
    assert config["positioning"]["sources"] == ["gnss", "wifi", "cell"]  # kept from the profile
    assert config["mqtt_keepalive_s"] == 60


def test_sha256_is_over_canonical_json_of_config(profiles: dict[str, fw.LoadedProfile]) -> None:
    device = Device(device_id="ankle-1", model="lantern-ankle-a1", site="north")
    rendered = fw.render(device, profiles)
    canonical = json.dumps(rendered.config, sort_keys=True, separators=(",", ":")).encode()
    assert rendered.sha256 == hashlib.sha256(canonical).hexdigest()
    assert rendered.sha256 == fw.config_sha256(rendered.config)
    assert rendered.body() == {
        "version": rendered.version,
        "sha256": rendered.sha256,
        "config": rendered.config,
    }


def test_render_is_deterministic_and_ignores_key_order_and_number_spelling(
    profiles: dict[str, fw.LoadedProfile],
) -> None:
    overrides = {
        "report_interval_s": {"normal": 120, "in_violation": 20},
        "positioning": {"gnss_accuracy_gate_m": 40, "gnss_fix_timeout_s": 30},
    }
    reordered = {
        "positioning": {"gnss_fix_timeout_s": 30, "gnss_accuracy_gate_m": 40.0},
        "report_interval_s": {"in_violation": 20, "normal": 120},
    }

    def sha(o: dict[str, Any]) -> str:
        device = Device(device_id="ankle-1", model="lantern-ankle-a1", site="n1", overrides=o)
        return fw.render(device, profiles).sha256

    assert sha(overrides) == sha(overrides) == sha(reordered)
    assert sha(overrides) != sha({})
    assert (
        fw.canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == b'{"a":[1,{"c":3,"d":2}],"b":1}'
    )


def test_profile_file_key_order_does_not_change_the_hash(
    tmp_path: Path, profiles: dict[str, fw.LoadedProfile]
) -> None:
    data = profile_data("ankle_tag")
    shuffled = dict(reversed(list(data.items())))
    path = write_yaml(tmp_path / "ankle_tag.yaml", shuffled)
    other = {"ankle_tag": fw.LoadedProfile("ankle_tag", fw.load_profile(path), str(path))}
    device = Device(device_id="ankle-1", model="lantern-ankle-a1", site="n1")
    assert fw.render(device, other).sha256 == fw.render(device, profiles).sha256


def test_versions_follow_content(profiles: dict[str, fw.LoadedProfile]) -> None:
    device = Device(device_id="ankle-1", model="lantern-ankle-a1", site="n1")
    first = fw.render(device, profiles)
    assert first.version == 1
    same = fw.render(device, profiles, previous=first)
    assert (same.version, same.sha256) == (1, first.sha256)
    changed_device = device.model_copy(update={"overrides": {"heartbeat_s": 600}})
    changed = fw.render(changed_device, profiles, previous=same)
    assert changed.version == 2
    assert changed.sha256 != first.sha256
    back = fw.render(device, profiles, previous=changed)
    assert back.version == 3  # never reused, even for content seen before
    assert fw.next_version(None, first.sha256) == 1
    other = Device(device_id="ankle-2", model="lantern-ankle-a1", site="n1")
    with pytest.raises(ValueError, match="previous configuration is for 'ankle-1'"):
        fw.render(other, profiles, previous=first)


def test_deep_merge() -> None:
    base = {"a": {"b": 1, "c": {"d": 2, "e": 3}}, "l": [1, 2], "n": 5, "k": {"x": 1}}
    override = {"a": {"c": {"d": 20}}, "l": [9], "n": None, "k": 7, "new": {"y": 1}}
    base_before = copy.deepcopy(base)
    override_before = copy.deepcopy(override)
    merged = fw.deep_merge(base, override)
    assert merged == {
        "a": {"b": 1, "c": {"d": 20, "e": 3}},
        "l": [9],
        "n": None,
        "k": 7,
        "new": {"y": 1},
    }
    assert base == base_before
    assert override == override_before


def test_site_layers_apply_in_order(profiles: dict[str, fw.LoadedProfile]) -> None:
    site = fw.Site.model_validate(
        {
            "site": "north",
            "profile_overrides": {
                "ankle_tag": {"mqtt_keepalive_s": 120, "heartbeat_s": 600},
                "fixed_camera": {"fps": 2},
            },
            "devices": [
                {"device_id": "ankle-1", "model": "lantern-ankle-a1"},
                {
                    "device_id": "ankle-2",
                    "model": "lantern-ankle-a1",
                    "overrides": {"heartbeat_s": 900},
                },
            ],
        }
    )
    one = fw.render_site_device(site, "ankle-1", profiles, source="north.yaml")
    two = fw.render_site_device(site, "ankle-2", profiles, source="north.yaml")
    assert one.site == two.site == "north"
    assert one.config["mqtt_keepalive_s"] == two.config["mqtt_keepalive_s"] == 120
    assert one.config["heartbeat_s"] == 600
    assert two.config["heartbeat_s"] == 900  # the device's own overrides come last
    with pytest.raises(fw.ConfigError, match="no device 'ankle-3' in site 'north'"):
        fw.render_site_device(site, "ankle-3", profiles, source="north.yaml")


def test_example_site_file_renders_every_device(profiles: dict[str, fw.LoadedProfile]) -> None:
    path = CONFIG_DIR / "sites" / "demo-north.yaml"
    site = fw.load_site(path)
    for entry in site.devices:
        rendered = fw.render_site_device(site, entry.device_id, profiles, source=str(path))
        assert rendered.site == "demo-north"
    camera = fw.render_site_device(site, "cam-demo-gate-1", profiles, source=str(path))
    assert camera.config["crops"]["send_face_crop"] is True
    assert camera.config["source"]["url"] == "rtsp://127.0.0.1:554/gate"
    assert camera.config["source"]["credentials_env"] == "LANTERN_RTSP_CREDENTIALS"


def test_protocol_config_body_accepts_the_rendered_body(
    profiles: dict[str, fw.LoadedProfile],
) -> None:
    try:
        from devices.protocol.bodies import ConfigBody
    except ImportError:
        pytest.skip("devices.protocol is not there yet")
    device = Device(device_id="ankle-1", model="lantern-ankle-a1", site="n1")
    body = fw.render(device, profiles).body()
    assert ConfigBody.model_validate(body).sha256 == body["sha256"]


# -- error paths in profiles ----------------------------------------------------------------


def profile_error(tmp_path: Path, name: str, change: dict[str, Any]) -> tuple[Path, list[str]]:
    path = write_yaml(tmp_path / f"{name}.yaml", fw.deep_merge(profile_data(name), change))
    with pytest.raises(fw.ConfigError) as info:
        fw.load_profile(path)
    return path, errors_of(info)


@pytest.mark.parametrize(
    ("name", "change", "expected"),
    [
        (
            "ankle_tag",
            {"outbox": {"max_bytes": -5}},
            "outbox.max_bytes: must be > 0 (got -5)",
        ),
        (
            "ankle_tag",
            {"report_interval_s": {"normal": -60}},
            "report_interval_s.normal: must be > 0 (got -60)",
        ),
        (
            "ankle_tag",
            {"report_interval_s": {"in_violation": 120}},
            "report_interval_s.in_violation: must be <= normal (60) (got 120)",
        ),
        (
            "ankle_tag",
            {"outbox": {"max_byte": 5}},
            "outbox.max_byte: unknown field; did you mean 'max_bytes'? (got 5)",
        ),
        ("ankle_tag", {"colour": "red"}, "colour: unknown field;"),
        ("ankle_tag", {"heartbeat_s": "300"}, 'heartbeat_s: must be an integer (got "300")'),
        ("ankle_tag", {"heartbeat_s": True}, "heartbeat_s: must be an integer (got true)"),
        ("ankle_tag", {"outbox": 5}, "outbox: must be a mapping (got 5)"),
        (
            "ankle_tag",
            {"positioning": {"sources": ["gnss", "gps"]}},
            "positioning.sources.1: must be 'gnss', 'wifi' or 'cell' (got \"gps\")",
        ),
        (
            "ankle_tag",
            {"positioning": {"sources": ["gnss", "gnss"]}},
            "positioning.sources: 'gnss' listed twice",
        ),
        (
            "ankle_tag",
            {"positioning": {"gnss_fix_timeout_s": 90}},
            "positioning.gnss_fix_timeout_s: must be <= report_interval_s.normal (60) (got 90)",
        ),
        (
            "ankle_tag",
            {"battery": {"critical_pct": 30}},
            "battery.critical_pct: must be < low_pct (20) (got 30)",
        ),
        (
            "ankle_tag",
            {"mqtt_keepalive_s": 70000},
            "mqtt_keepalive_s: must be <= 65535 (got 70000)",
        ),
        (
            "ankle_tag",
            {"type": "toaster"},
            'type: must be one of: wearable, camera, home_beacon (got "toaster")',
        ),
        (
            "fixed_camera",
            {"source": {"kind": "rtp"}},
            'source.kind: must be one of: rtsp, file, dir, device (got "rtp")',
        ),
        (
            "fixed_camera",
            {"source": {"transport": "sctp"}},
            "source.transport: must be 'tcp' or 'udp' (got \"sctp\")",
        ),
        ("body_camera", {"source": {"index": -1}}, "source.index: must be >= 0 (got -1)"),
        (
            "fixed_camera",
            {"detector": {"score_threshold": 1.5}},
            "detector.score_threshold: must be within 0-1 for the scrfd detector (got 1.5)",
        ),
        (
            "fixed_camera",
            {"detector": {"every_n_frames": 11}},
            "detector.every_n_frames: must be <= track.max_age_frames (10)",
        ),
        (
            "fixed_camera",
            {"track": {"emit": "fused", "fused_max_frames": 1}},
            "track.fused_max_frames: must be >= 2 with emit: fused (got 1)",
        ),
        (
            "fixed_camera",
            {"quality": {"max_abs_yaw_deg": 0}},
            "quality.max_abs_yaw_deg: must be > 0 (got 0)",
        ),
        ("fixed_camera", {"model_id": "bad id"}, "model_id: must match"),
        (
            "home_beacon",
            {"presence": {"absent_after_s": 15}},
            "presence.absent_after_s: must be >= 2 x scan_interval_s (20) (got 15)",
        ),
        (
            "home_beacon",
            {"advertising": {"interval_ms": 5}},
            "advertising.interval_ms: must be >= 20 (got 5)",
        ),
    ],
)
def test_bad_profiles_name_file_and_field(
    tmp_path: Path, name: str, change: dict[str, Any], expected: str
) -> None:
    path, errors = profile_error(tmp_path, name, change)
    assert any(e.startswith(f"{path}: {expected}") for e in errors), errors


def test_every_bad_field_is_listed(tmp_path: Path) -> None:
    _, errors = profile_error(
        tmp_path, "ankle_tag", {"outbox": {"max_bytes": -5, "max_events": 0}, "heartbeat_s": 1}
    )
    assert len(errors) == 3
    assert any("outbox.max_events: must be > 0 (got 0)" in e for e in errors)
    assert any("heartbeat_s: must be >= 10 (got 1)" in e for e in errors)


def test_missing_type_says_which_are_allowed(tmp_path: Path) -> None:
    data = profile_data("ankle_tag")
    del data["type"]
    path = write_yaml(tmp_path / "p.yaml", data)
    with pytest.raises(fw.ConfigError) as info:
        fw.load_profile(path)
    assert errors_of(info) == [
        f"{path}: type: required field is missing (one of: wearable, camera, home_beacon)"
    ]


def test_missing_required_camera_fields(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "cam.yaml", {"type": "camera"})
    with pytest.raises(fw.ConfigError) as info:
        fw.load_profile(path)
    assert sorted(errors_of(info)) == [
        f"{path}: model_id: required field is missing",
        f"{path}: source: required field is missing",
    ]


def test_rtsp_credentials_are_refused_without_echoing_them(tmp_path: Path) -> None:
    url = "rtsp://admin:hunter2@10.0.0.5/stream"
    _, errors = profile_error(tmp_path, "fixed_camera", {"source": {"url": url}})
    assert len(errors) == 1
    assert "source.url: credentials must not be in the URL" in errors[0]
    assert "hunter2" not in errors[0]


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("type: wearable\noutbox:\n  max_bytes: [1, 2\nheartbeat_s: 5\n")
    with pytest.raises(fw.ConfigError) as info:
        fw.load_profile(path)
    (error,) = errors_of(info)
    assert error.startswith(f"{path}: YAML syntax error at line 4, column 12:"), error


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("type: wearable\nheartbeat_s: 300\nheartbeat_s: 30\n")
    with pytest.raises(fw.ConfigError) as info:
        fw.load_yaml(path)
    (error,) = errors_of(info)
    assert error == (
        f"{path}: YAML syntax error at line 3, column 1: found duplicate key 'heartbeat_s'"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", "empty file"), ("- a\n- b\n", "expected a mapping at the top, got list")],
)
def test_files_that_are_not_mappings(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    with pytest.raises(fw.ConfigError) as info:
        fw.load_yaml(path)
    assert errors_of(info) == [f"{path}: {expected}"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(fw.ConfigError, match="cannot read"):
        fw.load_yaml(tmp_path / "absent.yaml")


def test_profiles_folder_with_a_name_twice(tmp_path: Path) -> None:
    folder = tmp_path / "profiles"
    folder.mkdir()
    write_yaml(folder / "tag.yaml", {"type": "wearable"})
    write_yaml(folder / "tag.yml", {"type": "wearable"})
    with pytest.raises(fw.ConfigError, match="profile 'tag' defined twice"):
        fw.load_profiles(folder)


# -- error paths in device and site files ---------------------------------------------------


def device_file(tmp_path: Path, data: dict[str, Any]) -> Path:
    return write_yaml(tmp_path / f"{data['device_id']}.yaml", data)


def render_file(path: Path, profiles: dict[str, fw.LoadedProfile]) -> list[str]:
    device = fw.load_device(path)
    with pytest.raises(fw.ConfigError) as info:
        fw.render(device, profiles, device_source=str(path))
    return errors_of(info)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"outbox": {"max_bytes": -5}}, "overrides.outbox.max_bytes: must be > 0 (got -5)"),
        (
            {"outbox": {"max_byte": 5}},
            "overrides.outbox.max_byte: unknown field; did you mean 'max_bytes'? (got 5)",
        ),
        (
            {"report_interval_s": {"in_violation": 90}},
            "overrides.report_interval_s.in_violation: must be <= normal (60) (got 90)",
        ),
        # the device set `normal` below the profile's in_violation: the device is blamed
        (
            {"report_interval_s": {"normal": 10}},
            "overrides.report_interval_s.in_violation: must be <= normal (10) (got 15)",
        ),
        ({"positioning": "gnss"}, 'overrides.positioning: must be a mapping (got "gnss")'),
        (
            {"alarms": {"fall": True}},
            "overrides.alarms.fall: alarm fall needs capability 'fall_detection', "
            "which lantern-ankle-a1 lacks",
        ),
        (
            {"type": "home_beacon"},
            "overrides.type: a profile's type cannot be overridden; choose another profile "
            'with `profile:` (got "home_beacon")',
        ),
    ],
)
def test_bad_device_overrides_name_the_device_file(
    tmp_path: Path,
    profiles: dict[str, fw.LoadedProfile],
    overrides: dict[str, Any],
    expected: str,
) -> None:
    path = device_file(
        tmp_path,
        {
            "device_id": "ankle-9",
            "model": "lantern-ankle-a1",
            "site": "north",
            "overrides": overrides,
        },
    )
    errors = render_file(path, profiles)
    assert any(e.startswith(f"{path}: {expected}") for e in errors), errors


def test_profile_errors_not_set_by_the_device_name_the_profile(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "profiles"
    folder.mkdir()
    data = profile_data("wristband")
    data["alarms"]["fall"] = True  # valid alone, but the wristband model has no fall sensor
    profile_path = write_yaml(folder / "wristband.yaml", data)
    profiles = fw.load_profiles(folder)
    device = Device(device_id="wrist-1", model="lantern-wrist-w1", site="north")
    with pytest.raises(fw.ConfigError) as info:
        fw.render(device, profiles, device_source="wrist-1.yaml")
    assert errors_of(info) == [
        f"{profile_path}: alarms.fall: alarm fall needs capability 'fall_detection', "
        "which lantern-wrist-w1 lacks"
    ]


def test_unknown_model_in_a_device_file_lists_known_models(
    tmp_path: Path, profiles: dict[str, fw.LoadedProfile]
) -> None:
    path = device_file(tmp_path, {"device_id": "x-1", "model": "acme-9", "site": "north"})
    (error,) = render_file(path, profiles)
    assert error.startswith(f"{path}: model: unknown device model 'acme-9'; known models: ")
    assert all(model.id in error for model in BUILTIN_MODELS)


def test_unknown_and_unsuitable_profiles(
    tmp_path: Path, profiles: dict[str, fw.LoadedProfile]
) -> None:
    base = {"device_id": "x-1", "model": "lantern-ankle-a1", "site": "north"}
    path = device_file(tmp_path, {**base, "profile": "ankle"})
    (error,) = render_file(path, profiles)
    assert error.startswith(f"{path}: profile: unknown profile 'ankle'; known profiles: ")
    assert "ankle_tag" in error
    path = device_file(tmp_path, {**base, "profile": "fixed_camera"})
    assert render_file(path, profiles) == [
        f"{path}: profile: profile 'fixed_camera' is a 'camera' profile, for body_camera, "
        "fixed_camera; lantern-ankle-a1 is a ankle_tag"
    ]
    # a wristband may use the ankle tag's profile family, but not switch on what it lacks
    path = device_file(tmp_path, {**base, "model": "lantern-wrist-w1", "profile": "ankle_tag"})
    errors = render_file(path, profiles)
    assert any("positioning.sources.0: source 'gnss' needs capability 'gnss'" in e for e in errors)


def test_home_beacon_needs_its_paired_wearable(
    tmp_path: Path, profiles: dict[str, fw.LoadedProfile]
) -> None:
    path = device_file(
        tmp_path, {"device_id": "home-1", "model": "lantern-home-h1", "site": "north"}
    )
    assert render_file(path, profiles) == [
        f"{path}: overrides.presence.paired_device_id: required when presence is enabled: "
        "set it in the device's overrides"
    ]


def test_device_file_name_must_match_its_id(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path / "other.yaml",
        {"device_id": "ankle-1", "model": "lantern-ankle-a1", "site": "north"},
    )
    with pytest.raises(fw.ConfigError) as info:
        fw.load_device(path)
    assert errors_of(info) == [
        f"{path}: device_id: must equal the file name 'other' (got \"ankle-1\")"
    ]


def test_device_file_structure_errors(tmp_path: Path) -> None:
    path = write_yaml(
        tmp_path / "Ankle-1.yaml",
        {"device_id": "Ankle-1", "model": "lantern-ankle-a1", "site": "north", "pin": 1},
    )
    with pytest.raises(fw.ConfigError) as info:
        fw.load_device(path)
    errors = errors_of(info)
    assert f'{path}: device_id: must match ^[a-z0-9][a-z0-9_-]{{1,63}}$ (got "Ankle-1")' in (errors)
    assert any(e.startswith(f"{path}: pin: unknown field") for e in errors)


def test_site_file_errors_point_into_the_site_file(
    tmp_path: Path, profiles: dict[str, fw.LoadedProfile]
) -> None:
    path = write_yaml(
        tmp_path / "north.yaml",
        {
            "site": "north",
            "profile_overrides": {
                "ankle_tag": {"outbox": {"max_events": 0}},
                "ankle": {"heartbeat_s": 60},
            },
            "devices": [
                {"device_id": "ankle-1", "model": "lantern-ankle-a1"},
                {
                    "device_id": "home-1",
                    "model": "lantern-home-h1",
                    "overrides": {"presence": {"paired_device_id": "Ankle 1"}},
                },
            ],
        },
    )
    kind, issues = fw.check_file(path, profiles)
    assert kind == "site"
    assert [str(i) for i in issues] == [
        f"{path}: profile_overrides.ankle: unknown profile 'ankle'; known profiles: "
        "ankle_tag, body_camera, fixed_camera, home_beacon, wristband",
        f"{path}: profile_overrides.ankle_tag.outbox.max_events: must be > 0 (got 0)",
        f"{path}: devices.1.overrides.presence.paired_device_id: must match "
        '^[a-z0-9][a-z0-9_-]{1,63}$ (got "Ankle 1")',
    ]


def test_site_file_lists_each_device_once(tmp_path: Path) -> None:
    device = {"device_id": "ankle-1", "model": "lantern-ankle-a1"}
    path = write_yaml(tmp_path / "s.yaml", {"site": "north", "devices": [device, device]})
    with pytest.raises(fw.ConfigError, match="devices: device 'ankle-1' listed twice"):
        fw.load_site(path)


def test_find_device_lists_what_the_folder_has(tmp_path: Path) -> None:
    with pytest.raises(fw.ConfigError, match="no device file for 'nope'; devices here: ankle-demo"):
        fw.find_device("nope", CONFIG_DIR / "devices")
    with pytest.raises(fw.ConfigError, match="devices here: none"):
        fw.find_device("nope", tmp_path)


def test_unrecognised_file(tmp_path: Path, profiles: dict[str, fw.LoadedProfile]) -> None:
    path = write_yaml(tmp_path / "x.yaml", {"hello": 1})
    kind, issues = fw.check_file(path, profiles)
    assert kind is None
    assert len(issues) == 1 and "not a profile" in str(issues[0])


# -- the command line ---------------------------------------------------------------------


def test_cli_help_texts() -> None:
    for args in ([], ["validate"], ["render"], ["schema"]):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0, result.output
    assert "profile + site + device" in runner.invoke(app, ["--help"]).output


def test_root_cli_registers_firmware() -> None:
    from devices.cli import app as root

    result = runner.invoke(root, ["firmware", "--help"])
    assert result.exit_code == 0, result.output
    assert "validate" in result.output


def test_cli_validate_shipped_folder() -> None:
    result = runner.invoke(app, ["validate", str(CONFIG_DIR)])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("OK    ") == len(SHIPPED_FILES)
    assert f"{len(SHIPPED_FILES)} file(s): {len(SHIPPED_FILES)} valid, 0 invalid" in result.stdout


def test_cli_validate_reports_each_bad_field(tmp_path: Path) -> None:
    good = CONFIG_DIR / "profiles" / "ankle_tag.yaml"
    data = fw.deep_merge(profile_data("ankle_tag"), {"outbox": {"max_bytes": -5}})
    bad = write_yaml(tmp_path / "bad.yaml", data)
    broken = tmp_path / "broken.yaml"
    broken.write_text("type: [\n")
    result = runner.invoke(app, ["validate", str(good), str(tmp_path)])
    assert result.exit_code == 1, result.output
    out = result.stdout
    assert f"OK    {good} (profile)" in out
    assert f"FAIL  {bad} (profile)" in out
    assert f"  {bad}: outbox.max_bytes: must be > 0 (got -5)" in out
    assert f"FAIL  {broken}" in out
    assert f"{broken}: YAML syntax error at line 2" in out
    assert "3 file(s): 1 valid, 2 invalid" in out


def test_cli_validate_device_file_against_profiles(tmp_path: Path) -> None:
    path = device_file(
        tmp_path,
        {
            "device_id": "wrist-1",
            "model": "lantern-wrist-w1",
            "site": "north",
            "overrides": {"alarms": {"fall": True}},
        },
    )
    result = runner.invoke(app, ["validate", str(path), "--config-dir", str(CONFIG_DIR)])
    assert result.exit_code == 1
    assert f"{path}: overrides.alarms.fall: alarm fall needs capability" in result.stdout


def test_cli_validate_usage_errors(tmp_path: Path) -> None:
    assert runner.invoke(app, ["validate", str(tmp_path / "absent.yaml")]).exit_code == 2
    result = runner.invoke(app, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert "no YAML files" in result.stderr


def test_cli_render_device_file() -> None:
    result = runner.invoke(app, ["render", "--device", "ankle-demo-0001"])
    assert result.exit_code == 0, result.output
    message = json.loads(result.stdout)
    assert message["device_id"] == "ankle-demo-0001"
    assert message["version"] == 1
    assert message["sha256"] == fw.config_sha256(message["config"])
    assert message["config"]["report_interval_s"]["in_violation"] == 10


def test_cli_render_from_a_site_file_and_previous_versions(tmp_path: Path) -> None:
    site = CONFIG_DIR / "sites" / "demo-north.yaml"
    args = ["render", "--device", "home-demo-0002", "--site-file", str(site)]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    message = json.loads(first.stdout)
    assert message["config"]["presence"]["paired_device_id"] == "ankle-demo-0002"
    previous = tmp_path / "last.json"
    previous.write_text(first.stdout)
    again = json.loads(runner.invoke(app, [*args, "--previous", str(previous)]).stdout)
    assert (again["version"], again["sha256"]) == (1, message["sha256"])
    changed = dict(message, sha256="0" * 64, version=4)
    previous.write_text(json.dumps(changed))
    bumped = json.loads(runner.invoke(app, [*args, "--previous", str(previous)]).stdout)
    assert bumped["version"] == 5


def test_cli_render_errors(tmp_path: Path) -> None:
    result = runner.invoke(app, ["render", "--device", "nope"])
    assert result.exit_code == 1
    assert "no device file for 'nope'; devices here: ankle-demo-0001" in result.stderr
    site = CONFIG_DIR / "sites" / "demo-north.yaml"
    both = ["render", "--device", "x1", "--site-file", str(site), "--devices", str(tmp_path)]
    result = runner.invoke(app, both)
    assert result.exit_code == 2
    assert "not both" in result.stderr
    path = device_file(
        tmp_path,
        {
            "device_id": "ankle-9",
            "model": "lantern-ankle-a1",
            "site": "north",
            "overrides": {"outbox": {"max_bytes": -5}},
        },
    )
    result = runner.invoke(app, ["render", "--device", "ankle-9", "--devices", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{path}: overrides.outbox.max_bytes: must be > 0 (got -5)" in result.stderr
    bad_previous = tmp_path / "prev.json"
    bad_previous.write_text("{}")
    result = runner.invoke(
        app, ["render", "--device", "ankle-demo-0001", "--previous", str(bad_previous)]
    )
    assert result.exit_code == 1
    assert "not a rendered configuration" in result.stderr


def test_cli_render_uses_the_configured_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "devices").mkdir()
    write_yaml(tmp_path / "profiles" / "ankle_tag.yaml", {"type": "wearable", "heartbeat_s": 77})
    device_file(
        tmp_path / "devices", {"device_id": "t-1", "model": "lantern-ankle-a1", "site": "s1"}
    )
    monkeypatch.setenv(fw.CONFIG_DIR_ENV, str(tmp_path))
    result = runner.invoke(app, ["render", "--device", "t-1"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["config"]["heartbeat_s"] == 77


def test_cli_schema_writes_and_checks(tmp_path: Path) -> None:
    out = tmp_path / "schema"
    result = runner.invoke(app, ["schema", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for path in (CONFIG_DIR / "schema").glob("*.json"):
        assert (out / path.name).read_text() == path.read_text()
    assert runner.invoke(app, ["schema", "--out", str(out), "--check"]).exit_code == 0
    (out / "site.schema.json").write_text("{}\n")
    result = runner.invoke(app, ["schema", "--out", str(out), "--check"])
    assert result.exit_code == 1
    assert "site.schema.json: out of date" in result.stderr
    committed = CONFIG_DIR / "schema"
    assert runner.invoke(app, ["schema", "--out", str(committed), "--check"]).exit_code == 0


def test_catalog_models_and_profiles_agree(profiles: dict[str, fw.LoadedProfile]) -> None:
    for model in BUILTIN_CATALOG.values():
        assert model.default_profile in profiles
        family = profiles[model.default_profile].profile.type
        assert model.kind in fw.PROFILE_FAMILIES[family]


def test_readme_explains_every_profile_field() -> None:
    readme = (CONFIG_DIR / "README.md").read_text(encoding="utf-8")

    def names(model: type[fw.BaseModel]) -> set[str]:
        found: set[str] = set()
        for name, info in model.model_fields.items():
            found.add(name)
            for candidate in (info.annotation, *getattr(info.annotation, "__args__", ())):
                if isinstance(candidate, type) and issubclass(candidate, fw.BaseModel):
                    found |= names(candidate)
        return found

    models: list[type[fw.BaseModel]] = [
        fw.WearableProfile,
        fw.CameraProfile,
        fw.HomeBeaconProfile,
        fw.RtspSource,
        fw.FileSource,
        fw.DirSource,
        fw.DeviceSource,
    ]
    documented = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", readme))
    missing = sorted({n for m in models for n in names(m)} - documented)
    assert missing == []
