"""The wearable's track follower and ``lantern edge wearable``'s refusals: tracks,
unknown models, malformed device configs, corrupt and locked outboxes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edge.cli import app
from edge.outbox import Outbox, OutboxLimits
from edge.wearable import TrackError, load_track, parse_track
from tests.edge.mqtt_helpers import TRACK, free_port, unique_id, write_track

runner = CliRunner()

LINE = {"type": "LineString", "coordinates": [[0.0, 0.0], [0.001, 0.0]]}


def test_track_shapes() -> None:
    assert parse_track(LINE).length_m == pytest.approx(111.2, abs=0.5)
    assert parse_track({"type": "Feature", "geometry": LINE, "properties": {}}).length_m > 100
    multi = {"type": "MultiLineString", "coordinates": [[[0, 0], [0.001, 0]], [[0.001, 0.001]]]}
    assert parse_track(multi).length_m == pytest.approx(222.4, abs=1.0)
    collection = parse_track(TRACK)
    assert len(collection.points) == 4


def test_track_walks_back_and_forth() -> None:
    track = parse_track(LINE)
    start, middle = track.at(0), track.at(track.length_m / 2)
    assert (start.lat, start.lon) == pytest.approx((0.0, 0.0), abs=1e-9)
    assert middle.lon == pytest.approx(0.0005, abs=1e-7)
    assert middle.cog == pytest.approx(90.0, abs=0.5)  # eastwards
    back = track.at(track.length_m * 1.5)
    assert back.lon == pytest.approx(0.0005, abs=1e-7)
    assert back.cog == pytest.approx(270.0, abs=0.5)  # coming back west
    assert track.at(track.length_m * 2).lon == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([1, 2], "GeoJSON object"),
        ({"type": "Point", "coordinates": [0, 0]}, "no LineString"),
        ({"type": "LineString", "coordinates": [[0, 0]]}, "no LineString"),
        ({"type": "LineString", "coordinates": [[0, 0], [0, 0]]}, "zero length"),
        ({"type": "LineString", "coordinates": [[0, 0], [200, 0]]}, "not a longitude"),
        ({"type": "LineString", "coordinates": [[0, 0], ["a", 1]]}, "[lon, lat]"),
        ({"type": "LineString", "coordinates": [[0, 0], [math.nan, 1]]}, "not a longitude"),
        ({"type": "LineString", "coordinates": "nope"}, "must be a list"),
        ({"type": "FeatureCollection"}, "features list"),
    ],
)
def test_bad_tracks_are_refused(document: Any, message: str) -> None:
    with pytest.raises(TrackError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_track(document)


def test_track_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(TrackError, match="not JSON"):
        load_track(bad)
    with pytest.raises(TrackError, match="cannot read"):
        load_track(tmp_path / "missing.geojson")


def _run(*args: str) -> Any:
    return runner.invoke(app, ["wearable", *args], catch_exceptions=False)


def _base(tmp_path: Path, device_id: str) -> list[str]:
    return [
        "--device-id",
        device_id,
        "--sim",
        str(write_track(tmp_path)),
        "--broker",
        f"127.0.0.1:{free_port()}",  # nobody there: the agent keeps retrying
        "--outbox",
        str(tmp_path / "outbox.db"),
    ]


def test_unknown_model_is_a_usage_error(tmp_path: Path) -> None:
    result = _run(*_base(tmp_path, "dev-01"), "--model", "acme-tracker-9")
    assert result.exit_code == 2
    assert "unknown device model 'acme-tracker-9'" in result.output
    assert "lantern-ankle-a1" in result.output  # the known ones are listed


def test_camera_model_cannot_run_the_wearable(tmp_path: Path) -> None:
    result = _run(*_base(tmp_path, "dev-01"), "--model", "lantern-fixcam-f1")
    assert result.exit_code == 2
    assert "not a wearable" in result.output


def test_bad_track_file_is_a_usage_error(tmp_path: Path) -> None:
    args = _base(tmp_path, "dev-01")
    bad = tmp_path / "bad.geojson"
    bad.write_text(json.dumps({"type": "Point", "coordinates": [0, 0]}), encoding="utf-8")
    args[args.index("--sim") + 1] = str(bad)
    result = _run(*args)
    assert result.exit_code == 2 and "no LineString" in result.output


def _config_dir(tmp_path: Path, device_yaml: str) -> Path:
    folder = tmp_path / "firmware"
    (folder / "profiles").mkdir(parents=True)
    (folder / "devices").mkdir()
    source = Path(__file__).resolve().parents[2] / "firmware_configs" / "profiles"
    for name in ("ankle_tag.yaml", "wristband.yaml"):
        (folder / "profiles" / name).write_text((source / name).read_text())
    (folder / "devices" / "tag-77.yaml").write_text(device_yaml)
    return folder


@pytest.mark.parametrize(
    ("device_yaml", "message"),
    [
        (
            "device_id: tag-77\nmodel: lantern-ankle-a1\nsite: north\n"
            "overrides:\n  report_interval_s:\n    normal: fast\n",
            "report_interval_s.normal",
        ),
        (
            "device_id: tag-77\nmodel: lantern-ankle-a1\nsite: north\n"
            "overrides:\n  alarms:\n    sos: true\n",
            "sos_button",
        ),
        ("device_id: tag-77\nmodel: acme-9\nsite: north\n", "unknown device model"),
        ("device_id: tag-77\nmodel: [unclosed\n", "tag-77.yaml"),
        ("device_id: tag-77\nmodel: lantern-ankle-a1\nsite: north\nsurprise: 1\n", "surprise"),
    ],
    ids=["not-a-number", "capability", "unknown-model", "yaml-syntax", "unknown-key"],
)
def test_malformed_device_config_is_a_usage_error(
    tmp_path: Path, device_yaml: str, message: str
) -> None:
    folder = _config_dir(tmp_path, device_yaml)
    result = _run(*_base(tmp_path, "tag-77"), "--config-dir", str(folder))
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_missing_password_variable_is_a_usage_error(tmp_path: Path) -> None:
    result = _run(
        *_base(tmp_path, "dev-01"),
        "--username",
        "dev-01",
        "--password-env",
        "LANTERN_TEST_NO_SUCH_PASSWORD",
    )
    assert result.exit_code == 2
    assert "LANTERN_TEST_NO_SUCH_PASSWORD" in result.output


def test_corrupt_outbox_refuses_then_recovers(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    path.write_bytes(b"definitely not sqlite " * 500)
    args = _base(tmp_path, unique_id("corrupt"))
    refused = _run(*args, "--duration", "0.2")
    assert refused.exit_code == 3
    assert "--recover-outbox" in refused.output and str(path) in refused.output
    assert path.read_bytes().startswith(b"definitely")  # left untouched
    recovered = _run(*args, "--duration", "0.3", "--recover-outbox")
    assert recovered.exit_code == 0, recovered.output
    moved = list(tmp_path.glob("outbox.db.corrupt-*"))
    assert len(moved) == 1 and moved[0].read_bytes().startswith(b"definitely")
    with Outbox(path, OutboxLimits(10**6, 10**4)) as box:
        assert box.events >= 1  # the new outbox took the events of the short run


def test_outbox_in_use_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with Outbox(path, OutboxLimits(10**6, 10**4)):
        result = _run(*_base(tmp_path, "dev-01"), "--duration", "0.2")
    assert result.exit_code == 3 and "in use" in result.output
