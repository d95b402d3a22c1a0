"""The wearable's tracks (walked by the devices.simulation simulator) and
``lantern edge wearable``'s refusals: tracks, unknown models, malformed device
configs, corrupt and locked outboxes."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from devices.firmware import ReportIntervals, WearableProfile, load_profile, packaged_config_dir
from devices.protocol import PositionBody
from devices.simulation import demo_site_path
from edge.cli import app
from edge.outbox import Outbox, OutboxLimits
from edge.wearable import TRACK_NAME, Track, TrackError, load_track, make_simulator, parse_track
from tests.edge.mqtt_helpers import TRACK, free_port, unique_id, write_track

runner = CliRunner()

LINE = {"type": "LineString", "coordinates": [[0.0, 0.0], [0.001, 0.0]]}
START = datetime(2025, 3, 14, 7, 30, tzinfo=UTC)


def ankle() -> WearableProfile:
    profile = load_profile(packaged_config_dir() / "profiles" / "ankle_tag.yaml")
    assert isinstance(profile, WearableProfile)
    return profile


def test_track_shapes() -> None:
    assert parse_track(LINE).length_m == pytest.approx(111.2, abs=0.5)
    assert parse_track({"type": "Feature", "geometry": LINE, "properties": {}}).length_m > 100
    multi = {"type": "MultiLineString", "coordinates": [[[0, 0], [0.001, 0]], [[0.001, 0.001]]]}
    assert parse_track(multi).length_m == pytest.approx(222.4, abs=1.0)
    collection = parse_track(TRACK)
    assert len(collection.points) == 4


def _walk_positions(track: Track, seconds: float) -> list[PositionBody]:
    """The positions the wearable's simulator reports over ``seconds`` (every 10 s)."""
    fast = ankle().model_copy(
        update={"report_interval_s": ReportIntervals(normal=10, in_violation=10)}
    )
    simulator = make_simulator("walker-01", track, fast, start=START, seed=3, speed_mps=1.0)
    emissions = simulator.step(START + timedelta(seconds=seconds))
    return [e.body for e in emissions if isinstance(e.body, PositionBody)]


def test_track_is_walked_back_and_forth_by_the_simulator() -> None:
    track = parse_track(LINE)  # 111 m due east along the equator
    assert track.site.id == "track" and track.name == TRACK_NAME
    simulator = make_simulator("walker-01", track, ankle(), start=START, speed_mps=1.0)
    lap = track.length_m  # seconds at 1 m/s
    start = simulator.truth_at(START)
    assert (start.lat, start.lon) == pytest.approx((0.0, 0.0), abs=1e-7)
    middle = simulator.truth_at(START + timedelta(seconds=lap / 2))
    assert middle.lon == pytest.approx(0.0005, abs=1e-6) and middle.speed == pytest.approx(1.0)
    end = simulator.truth_at(START + timedelta(seconds=lap))
    assert end.lon == pytest.approx(0.001, abs=1e-6)
    back = simulator.truth_at(START + timedelta(seconds=lap * 2))
    assert back.lon == pytest.approx(0.0, abs=1e-6)
    # What it reports: GNSS fixes outdoors, eastwards first, then back west.
    positions = _walk_positions(track, lap * 2)
    assert len(positions) >= 20
    assert {p.src for p in positions} == {"gnss"}
    courses = [p.cog for p in positions if p.cog is not None]
    assert any(abs(c - 90.0) < 30 for c in courses) and any(abs(c - 270.0) < 30 for c in courses)


def test_a_site_map_gives_its_walk_track(tmp_path: Path) -> None:
    track = load_track(demo_site_path("kereru-flats"))
    assert track.site.id == "kereru-flats" and track.name == "walk"
    assert track.site.buildings  # indoors and out, as the site says
    document = json.loads(demo_site_path("kereru-flats").read_text(encoding="utf-8"))
    document["features"] = [f for f in document["features"] if f["properties"]["role"] != "track"]
    no_tracks = tmp_path / "no-tracks.geojson"
    no_tracks.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(TrackError, match="no track to walk"):
        load_track(no_tracks)
    document["lantern"]["timezone"] = "Mars/Olympus"
    no_tracks.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(TrackError, match="unknown time zone"):
        load_track(no_tracks)


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
