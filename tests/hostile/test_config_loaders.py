"""Generated hostile documents against every configuration loader.

Loaders covered (figures in ``tests/artifacts/reliability/hostile-loaders.json``):

=========================================  ==============================================
loader                                     refuses with
=========================================  ==============================================
firmware profile YAML                      ``devices.firmware.load_profile`` ->
                                           ``ConfigError``
firmware device file YAML                  ``devices.firmware.load_device`` ->
                                           ``ConfigError``
firmware site file YAML                    ``devices.firmware.load_site`` -> ``ConfigError``
any firmware file                          ``devices.firmware.check_file`` -> its issues
device catalog                             ``devices.catalog.get_model`` ->
                                           ``UnknownModelError``; ``DeviceModel`` and
                                           ``Device`` (pydantic) -> ``ValidationError``
hub settings                               ``hub.settings.HubSettings`` -> ``ValidationError``
camera profile YAML                        ``edge.camera.command.load_camera_profile`` ->
                                           ``ConfigError`` / ``CameraConfigError``
engine configuration JSON                  ``edge.camera.command.engine_config_for`` ->
                                           ``CameraConfigError``
supervision zone JSON                      ``hub.supervision`` ``Zone`` + ``validate_zone``
                                           -> ``ValidationError`` / ``ZoneError``
supervision rule JSON                      ``hub.supervision.model.Rule`` ->
                                           ``ValidationError``
site map GeoJSON (the demo site loader's   ``devices.simulation.site.load_site_map`` ->
input, ``hub.demo.loader.load_site``)      ``SiteError``
federation peers file                      ``hub.federation.peers.load_federation_settings``
                                           -> ``FederationConfigError``
edge track GeoJSON                         ``edge.wearable.load_track`` -> ``TrackError``
edge watchlist file                        ``edge.watchlist.load_watchlist`` ->
                                           ``WatchlistError``
=========================================  ==============================================

Each starts from a valid document (a shipped file where there is one) broken by one
generated mutation at a random place: a value of another type, numbers beyond 64 bits
or a double, NaN/Infinity, nesting hundreds deep, a 100k-character string, an unknown
key, a key removed; and for files: invalid UTF-8, truncation, a duplicated key, an
empty file. The property: the loader returns a valid object or refuses with its own
error type and a message, nothing else, within the example deadline. Mutations that
cannot leave a valid document (unknown keys in forbidding models, invalid UTF-8,
non-finite or 400-digit numbers in a number field) must be refused.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from devices.catalog import BUILTIN_MODELS, Device, DeviceModel, UnknownModelError, get_model
from devices.firmware import (
    ConfigError,
    check_file,
    load_device,
    load_profile,
    load_profiles,
    load_site,
    packaged_config_dir,
)
from devices.signing import generate_private_key, private_key_to_b64, public_key_of
from devices.signing import public_key_to_b64 as pub_b64
from devices.simulation.site import SiteError, demo_site_path, load_site_map
from edge.camera.command import engine_config_for, load_camera_profile
from edge.camera.pipeline import CameraConfigError
from edge.watchlist import WatchlistError, build_document, document_bytes, load_watchlist
from edge.wearable import TrackError, load_track, parse_track
from hub.federation.peers import FederationConfigError, load_federation_settings
from hub.settings import HubSettings
from hub.supervision.model import Rule, Zone
from hub.supervision.zones import ZoneError, validate_zone
from models.engine import EngineConfig
from tests.hostile.conftest import Figures, hostile_settings

pytestmark = [pytest.mark.hostile, pytest.mark.usefixtures("watchdog")]

PART = "loaders"
_TOKEN = "__hostile_literal__"

Path_ = tuple[str | int, ...]


def _paths(value: Any, prefix: Path_ = ()) -> list[Path_]:
    out = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            out.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value[:6]):
            out.extend(_paths(item, (*prefix, index)))
    return out


def _get(value: Any, path: Path_) -> Any:
    for part in path:
        value = value[part]
    return value


def _set(document: Any, path: Path_, new: Any) -> Any:
    if not path:
        return new
    _get(document, path[:-1])[path[-1]] = new
    return document


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_OTHER_TYPE: dict[str, st.SearchStrategy[Any]] = {
    "bool": st.booleans(),
    "number": st.integers(-1000, 1000) | st.floats(-1e3, 1e3, allow_nan=False),
    "str": st.text(max_size=10),
    "list": st.lists(st.integers(0, 3), max_size=2),
    "dict": st.dictionaries(st.text(min_size=1, max_size=4), st.integers(0, 3), max_size=2),
    "null": st.none(),
}


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if _is_number(value):
        return "number"
    if value is None:
        return "null"
    return type(value).__name__ if isinstance(value, str | list | dict) else "other"


MUST_REFUSE = frozenset({"unknown_top_key", "invalid_utf8", "empty", "not_a_mapping"})
"""Mutations no valid document survives."""


@st.composite
def _mutation(
    draw: st.DrawFn, base: dict[str, Any], fmt: str = "json"
) -> tuple[str, Any, str | None]:
    """(kind, document, raw literal for the placeholder or None). YAML documents get
    smaller extremes: PyYAML is pure Python and slow on them."""
    document = copy.deepcopy(base)
    paths = _paths(document)
    path = draw(st.sampled_from(paths[1:] or paths))
    current = _get(document, path)
    kind = draw(
        st.sampled_from(
            [
                "wrong_type",
                "huge_number",
                "non_finite",
                "deep_nesting",
                "oversized_string",
                "unknown_key",
                "unknown_top_key",
                "removed_key",
                "not_a_mapping",
            ]
        )
    )
    literal: str | None = None
    if kind == "wrong_type":
        present = _type_name(current)
        other = draw(st.sampled_from(sorted(t for t in _OTHER_TYPE if t != present)))
        document = _set(document, path, draw(_OTHER_TYPE[other]))
    elif kind == "huge_number":
        document = _set(document, path, _TOKEN)
        literal = draw(st.sampled_from(["9" * 400, "-" + "1" * 64, "1e999", "2e308"]))
    elif kind == "non_finite":
        document = _set(document, path, draw(st.sampled_from([float("nan"), float("inf")])))
    elif kind == "deep_nesting":
        depth = draw(st.integers(100, 600 if fmt == "yaml" else 1200))
        document = _set(document, path, _TOKEN)
        literal = "[" * depth + "]" * depth
    elif kind == "oversized_string":
        length = 10_000 if fmt == "yaml" else 100_000
        document = _set(document, path, draw(st.sampled_from(["a", "é", "\u4e2d"])) * length)
    elif kind in ("unknown_key", "unknown_top_key"):
        holders = [p for p in paths if isinstance(_get(document, p), dict)]
        holder = () if kind == "unknown_top_key" else draw(st.sampled_from(holders))
        key = draw(st.sampled_from(["unexpected", "x-extra", "__proto__", "tyPe"]))
        _get(document, holder)[key] = draw(st.integers(0, 9) | st.text(max_size=5))
    elif kind == "removed_key":
        holders = [p for p in paths if isinstance(_get(document, p), dict) and _get(document, p)]
        holder = draw(st.sampled_from(holders))
        mapping = _get(document, holder)
        del mapping[draw(st.sampled_from(sorted(mapping)))]
    else:
        document = draw(st.sampled_from([[], [document], "text", 42, None]))
    return kind, document, literal


def _value_of(literal: str) -> Any:
    """The Python value of a placeholder literal: nested lists, or a number."""
    if literal.startswith("["):
        value: list[Any] = []
        for _ in range(literal.count("[") - 1):
            value = [value]
        return value
    try:
        return int(literal)
    except ValueError:
        return float(literal)


def _materialised(document: Any, literal: str | None) -> Any:
    """``document`` with the placeholder replaced by the value of ``literal``, for
    loaders that take a mapping rather than a file."""
    if literal is None:
        return document
    if document == _TOKEN:
        return _value_of(literal)
    if isinstance(document, dict):
        return {k: _materialised(v, literal) for k, v in document.items()}
    if isinstance(document, list):
        return [_materialised(v, literal) for v in document]
    return document


def _documents(base: dict[str, Any]) -> st.SearchStrategy[tuple[str, Any]]:
    """(kind, mutated mapping) for loaders that validate a mapping."""
    return _mutation(base).map(lambda m: (m[0], _materialised(m[1], m[2])))


_BAD_UTF8 = [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xfe"]


@st.composite
def _file_bytes(draw: st.DrawFn, base: dict[str, Any], fmt: str) -> tuple[str, bytes]:
    """A hostile file: a mutated document, or bytes broken after writing."""
    how = draw(st.sampled_from(["document", "document", "document", "bytes"]))
    if how == "document":
        kind, document, literal = draw(_mutation(base, fmt))
        return kind, _write(document, fmt, literal)
    raw = _write(base, fmt, None)
    kinds = ["invalid_utf8", "truncated", "duplicate_key", "empty"]
    kind = draw(st.sampled_from(kinds))
    if kind == "invalid_utf8":
        at = draw(st.integers(0, len(raw)))
        return kind, raw[:at] + draw(st.sampled_from(_BAD_UTF8)) + raw[at:]
    if kind == "truncated":
        return kind, raw[: draw(st.integers(0, len(raw) - 1))]
    if kind == "duplicate_key":
        key = draw(st.sampled_from(sorted(base)))
        extra = {key: base[key]}
        if fmt == "json":
            return kind, b"{" + _write(extra, fmt, None)[1:-1] + b"," + raw[1:]
        return kind, _write(extra, fmt, None) + raw
    return kind, draw(st.sampled_from([b"", b"\n", b"   ", b"---\n"]))


def _write(document: Any, fmt: str, literal: str | None) -> bytes:
    if fmt == "json":
        text = json.dumps(document, ensure_ascii=False)
        if literal is not None:
            text = text.replace(f'"{_TOKEN}"', literal, 1)
    else:
        text = yaml.safe_dump(document, allow_unicode=True, sort_keys=False, width=10**9)
        if literal is not None:
            text = text.replace(_TOKEN, literal, 1)
    return text.encode("utf-8")


Outcome = Callable[[], object]


def _run(call: Outcome, errors: tuple[type[Exception], ...]) -> str:
    """ "accepted", or "refused" for one of ``errors`` with a message; anything else
    (RecursionError, OSError, OverflowError, ...) propagates and fails the property."""
    try:
        call()
    except errors as exc:
        assert str(exc).strip(), f"{type(exc).__name__} without a message"
        return "refused"
    return "accepted"


def _property(
    figures: Figures,
    name: str,
    target: int,
    cases: st.SearchStrategy[tuple[str, Any]],
    attempt: Callable[[Any], str],
    must_refuse: frozenset[str] = MUST_REFUSE,
) -> Counter[str]:
    seen: Counter[str] = Counter()

    @hostile_settings(target)
    @given(cases)
    def check(case: tuple[str, Any]) -> None:
        kind, payload = case
        outcome = attempt(payload)
        if kind in must_refuse:
            assert outcome == "refused", f"{name}: a {kind} document was accepted"
        seen[f"{kind}:{outcome}"] += 1

    check()
    total = sum(seen.values())
    assert total >= target, (name, total)
    assert sum(n for key, n in seen.items() if key.endswith(":refused")) > total // 3, seen
    figures.examples(PART, name, total, seen)
    return seen


def _load_yaml_file(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile-loaders")


CONFIG = packaged_config_dir()


def _file_loader(
    folder: Path,
    name: str,
    load: Callable[[Path], object],
    errors: Any,
) -> Any:
    def attempt(raw: bytes) -> str:
        path = folder / name
        path.write_bytes(raw)
        return _run(lambda: load(path), errors)

    return attempt


def test_firmware_profiles(figures: Figures, folder: Path) -> None:
    bases = [_load_yaml_file(p) for p in sorted((CONFIG / "profiles").glob("*.yaml"))]
    cases = st.sampled_from(bases).flatmap(lambda base: _file_bytes(base, "yaml"))
    attempt = _file_loader(folder, "profile.yaml", load_profile, (ConfigError,))
    assert all(attempt(_write(base, "yaml", None)) == "accepted" for base in bases)
    _property(figures, "firmware.load_profile", 150, cases, attempt)


def test_firmware_device_and_site_files(figures: Figures, folder: Path) -> None:
    device = _load_yaml_file(CONFIG / "devices" / "ankle-demo-0001.yaml")
    site = _load_yaml_file(CONFIG / "sites" / "demo-north.yaml")
    load_dev = _file_loader(folder, "ankle-demo-0001.yaml", load_device, (ConfigError,))
    load_st = _file_loader(folder, "site.yaml", load_site, (ConfigError,))
    assert load_dev(_write(device, "yaml", None)) == "accepted"
    assert load_st(_write(site, "yaml", None)) == "accepted"
    _property(figures, "firmware.load_device", 100, _file_bytes(device, "yaml"), load_dev)
    _property(figures, "firmware.load_site", 100, _file_bytes(site, "yaml"), load_st)


def test_firmware_check_file_reports_issues_for_any_file(figures: Figures, folder: Path) -> None:
    profiles = load_profiles(CONFIG / "profiles")
    bases = [
        _load_yaml_file(CONFIG / "devices" / "ankle-demo-0001.yaml"),
        _load_yaml_file(CONFIG / "sites" / "demo-north.yaml"),
        _load_yaml_file(CONFIG / "profiles" / "wristband.yaml"),
    ]

    def attempt(raw: bytes) -> str:
        path = folder / "ankle-demo-0001.yaml"
        path.write_bytes(raw)
        _, issues = check_file(path, profiles)
        assert all(str(issue).strip() for issue in issues)
        return "refused" if issues else "accepted"

    cases = st.sampled_from(bases).flatmap(lambda base: _file_bytes(base, "yaml"))
    _property(figures, "firmware.check_file", 60, cases, attempt)


def test_catalog_models_and_devices(figures: Figures) -> None:
    model = BUILTIN_MODELS[0].model_dump(mode="json")
    device = {"device_id": "wb-0001", "model": "lantern-ankle-a1", "site": "north"}

    def attempt(case: tuple[str, Any]) -> str:
        which, document = case
        if which == "id":
            return _run(lambda: get_model(document), (UnknownModelError,))
        cls = DeviceModel if which == "model" else Device
        return _run(lambda: cls.model_validate(document), (ValidationError,))

    def documents(which: str, base: dict[str, Any]) -> st.SearchStrategy[tuple[str, Any]]:
        return _documents(base).map(lambda m: (m[0], (which, m[1])))

    cases = st.one_of(
        documents("model", model),
        documents("device", device),
        st.text(max_size=70).map(lambda t: ("unknown_model_id", ("id", t))),
    )
    _property(figures, "catalog", 500, cases, attempt)


def test_hub_settings(figures: Figures, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("JWT_SECRET", "DATABASE_URL", "DATA_DIR", "MQTT_URL", "FEDERATION_FILE"):
        monkeypatch.delenv(f"LANTERN_{name}", raising=False)
    base = {
        "data_dir": str(tmp_path),
        "jwt_secret": "k3Y-" + "abcdefghij0123456789ABCDEFGHIJ-_",
        "mqtt_url": "mqtt://127.0.0.1:1883",
        "db_echo": False,
        "map_tile_url": None,
    }
    assert _run(lambda: HubSettings(**base), (ValidationError,)) == "accepted"
    secrets = st.sampled_from(
        ["", "changeme", "CHANGEME ", "secret", "a" * 200, "abcabcabcabcabcabcabcabcabcabcabc"]
    )

    def attempt(document: Any) -> str:
        if not isinstance(document, dict):
            return _run(lambda: HubSettings.model_validate(document), (ValidationError,))
        return _run(lambda: HubSettings(**document), (ValidationError,))

    cases = st.one_of(
        _documents(base),
        secrets.map(lambda s: ("weak_secret", {**base, "jwt_secret": s})),
    )
    seen = _property(figures, "hub.HubSettings", 300, cases, attempt)
    assert seen["weak_secret:accepted"] == 0


def test_camera_profiles_and_engine_configurations(figures: Figures, folder: Path) -> None:
    cameras = [
        _load_yaml_file(CONFIG / "profiles" / f"{name}.yaml")
        for name in ("body_camera", "fixed_camera")
    ]
    profile = load_camera_profile(CONFIG / "profiles" / "body_camera.yaml")
    engine = EngineConfig().model_dump(mode="json")

    load_cam = _file_loader(
        folder, "camera.yaml", load_camera_profile, (ConfigError, CameraConfigError)
    )

    def load_engine(path: Path) -> object:
        return engine_config_for(profile.detector, path)

    load_eng = _file_loader(folder, "engine.json", load_engine, (CameraConfigError,))
    assert load_eng(_write(engine, "json", None)) == "accepted"
    assert all(load_cam(_write(base, "yaml", None)) == "accepted" for base in cameras)
    cases = st.sampled_from(cameras).flatmap(lambda base: _file_bytes(base, "yaml"))
    _property(figures, "camera.load_camera_profile", 100, cases, load_cam)
    _property(figures, "camera.engine_config_for", 400, _file_bytes(engine, "json"), load_eng)


ZONES = [
    {
        "id": "z-poly",
        "name": "Compound",
        "kind": "perimeter",
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[174.7, -36.8], [174.71, -36.8], [174.71, -36.81], [174.7, -36.8]]],
        },
    },
    {
        "id": "z-circle",
        "name": "Home",
        "kind": "residence",
        "geometry": {"type": "Point", "coordinates": [174.7, -36.8]},
        "radius_m": 150.0,
    },
    {
        "id": "z-corridor",
        "name": "Road",
        "kind": "other",
        "geometry": {"type": "LineString", "coordinates": [[174.7, -36.8], [174.72, -36.81]]},
        "buffer_m": 40.0,
    },
]

RULES = [
    {
        "id": "r-1",
        "subject_id": "1",
        "device_id": "wb-0001",
        "params": {"kind": "inclusion", "zone_ids": ["z-poly"]},
        "valid_from": "2025-01-01T00:00:00+00:00",
    },
    {
        "id": "r-2",
        "subject_id": "1",
        "device_id": "wb-0001",
        "params": {
            "kind": "curfew",
            "zone_id": "z-circle",
            "timezone": "Pacific/Auckland",
            "windows": [{"days": [0, 4], "start": "21:00", "end": "07:00"}],
        },
        "valid_from": "2025-01-01T00:00:00+00:00",
        "confirm_n": 2,
        "confirm_m": 3,
    },
]


def test_supervision_zones_and_rules(figures: Figures) -> None:
    for zone in ZONES:
        validate_zone(Zone.model_validate(zone))
    for rule in RULES:
        try:
            Rule.model_validate(rule)
        except ValidationError as exc:  # pragma: no cover - the base must be valid
            pytest.fail(f"base rule is invalid: {exc}")

    def zone(document: Any) -> str:
        return _run(
            lambda: validate_zone(Zone.model_validate(document)), (ValidationError, ZoneError)
        )

    def rule(document: Any) -> str:
        return _run(lambda: Rule.model_validate(document), (ValidationError,))

    zones = st.sampled_from(ZONES).flatmap(_documents)
    rules = st.sampled_from(RULES).flatmap(_documents)
    coordinates = st.sampled_from(ZONES[:1]).flatmap(
        lambda base: st.lists(
            st.tuples(st.floats(allow_nan=True, allow_infinity=True), st.floats(-1e3, 1e3)).map(
                list
            ),
            max_size=8,
        ).map(
            lambda ring: (
                "coordinates",
                {**base, "geometry": {"type": "Polygon", "coordinates": [ring]}},
            )
        )
    )
    _property(figures, "supervision.Zone", 800, st.one_of(zones, coordinates), zone)
    _property(figures, "supervision.Rule", 600, rules, rule)


def test_site_maps_of_the_demo_loader(figures: Figures, folder: Path) -> None:
    bases = [json.loads(demo_site_path(s).read_text()) for s in ("kereru-flats", "totara-downs")]
    attempt = _file_loader(folder, "site.geojson", load_site_map, (SiteError,))
    assert all(attempt(_write(base, "json", None)) == "accepted" for base in bases)
    cases = st.sampled_from(bases).flatmap(lambda base: _file_bytes(base, "json"))
    _property(figures, "site.load_site_map", 600, cases, attempt)


def test_federation_files(figures: Figures, folder: Path) -> None:
    key_file = folder / "hub.key"
    key = generate_private_key()
    key_file.write_text(private_key_to_b64(key))
    key_file.chmod(0o600)
    base = {
        "hub_id": "north",
        "private_key_file": str(key_file),
        "peers": [
            {
                "hub_id": "south",
                "url": "http://127.0.0.1:9",
                "public_key": pub_b64(public_key_of(generate_private_key())),
            }
        ],
        "policy": {},
        "request_timeout_s": 10.0,
    }
    attempt = _file_loader(
        folder, "federation.yaml", load_federation_settings, (FederationConfigError,)
    )
    assert attempt(_write(base, "yaml", None)) == "accepted"
    _property(
        figures, "federation.load_federation_settings", 300, _file_bytes(base, "yaml"), attempt
    )


def test_edge_tracks(figures: Figures, folder: Path) -> None:
    line = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"name": "walk"},
                "geometry": {
                    "type": "LineString",
                    "coordinates": [[174.7, -36.8], [174.701, -36.801], [174.702, -36.8]],
                },
            }
        ],
    }
    site = json.loads(demo_site_path("kereru-flats").read_text())
    attempt = _file_loader(folder, "track.geojson", load_track, (TrackError,))
    assert all(attempt(_write(base, "json", None)) == "accepted" for base in (line, site))
    cases = st.sampled_from([line, line, site]).flatmap(lambda base: _file_bytes(base, "json"))
    # A plain GeoJSON track may carry foreign members (RFC 7946 section 6.1).
    lenient = MUST_REFUSE - {"unknown_top_key"}
    _property(figures, "edge.load_track", 600, cases, attempt, lenient)


def test_edge_watchlists(figures: Figures, folder: Path) -> None:
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(3, 128)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    document = build_document(
        model_id="dlib-resnet-v1",
        entries=[(f"person:{i}", v) for i, v in enumerate(vectors)],
        threshold=0.6,
        version=1,
    )
    base = json.loads(document_bytes(document))

    def load(path: Path) -> object:
        return load_watchlist(path, model_id="dlib-resnet-v1", dim=128)

    attempt = _file_loader(folder, "watchlist.json", load, (WatchlistError,))
    assert attempt(_write(base, "json", None)) == "accepted"
    _property(figures, "edge.load_watchlist", 400, _file_bytes(base, "json"), attempt)


def _nested(fmt: str, depth: int) -> bytes:
    if fmt == "yaml":
        return ("type: wristband\nnested: " + "[" * depth + "]" * depth + "\n").encode()
    return ('{"type": "FeatureCollection", "nested": ' + "[" * depth + "]" * depth + "}").encode()


_DEEP_LOADERS: dict[str, tuple[str, Callable[[Path], object], tuple[type[Exception], ...]]] = {
    "firmware.load_profile": ("yaml", load_profile, (ConfigError,)),
    "firmware.load_device": ("yaml", load_device, (ConfigError,)),
    "camera.load_camera_profile": ("yaml", load_camera_profile, (ConfigError, CameraConfigError)),
    "federation.load_federation_settings": (
        "yaml",
        load_federation_settings,
        (FederationConfigError,),
    ),
    "site.load_site_map": ("json", load_site_map, (SiteError,)),
    "edge.load_track": ("json", load_track, (TrackError,)),
}


@pytest.mark.parametrize("name", sorted(_DEEP_LOADERS))
def test_deeply_nested_files_are_refused(name: str, tmp_path: Path) -> None:
    fmt, load, errors = _DEEP_LOADERS[name]
    path = tmp_path / ("ankle-demo-0001.yaml" if fmt == "yaml" else "deep.geojson")
    path.write_bytes(_nested(fmt, 1200 if fmt == "yaml" else 5000))
    with pytest.raises(errors) as refused:
        load(path)
    assert str(refused.value).strip()


def test_a_site_map_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "site.geojson"
    path.write_bytes(b'{"type": "FeatureCollection", "name": "\xff"}')
    with pytest.raises(SiteError) as refused:
        load_site_map(path)
    assert str(refused.value).strip()


def test_a_rule_with_a_long_time_zone_is_refused() -> None:
    rule = copy.deepcopy(RULES[1])
    rule["params"]["timezone"] = "a" * 300
    with pytest.raises(ValidationError):
        Rule.model_validate(rule)


def test_a_track_with_a_huge_integer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "track.geojson"
    path.write_text('{"type": "LineString", "coordinates": [[' + "9" * 400 + ", 1], [1, 1]]}")
    with pytest.raises(TrackError):
        load_track(path)


def test_a_site_map_with_a_long_time_zone_is_refused(tmp_path: Path) -> None:
    document = json.loads(demo_site_path("kereru-flats").read_text())
    document["lantern"]["timezone"] = "a" * 300
    path = tmp_path / "site.geojson"
    path.write_text(json.dumps(document))
    with pytest.raises(SiteError):
        load_site_map(path)


def test_a_track_position_beyond_a_double_is_refused() -> None:
    # parse_track takes documents that did not come from a file too: the position check
    # itself must refuse an integer float() cannot hold.
    line = {"type": "LineString", "coordinates": [[10**400, 1], [1, 1]]}
    with pytest.raises(TrackError, match="finite numbers in range"):
        parse_track(line)


@pytest.mark.parametrize("value", ["2025-02-30", "0000-01-01", "!!int 0x"])
def test_yaml_values_pyyaml_cannot_construct_are_refused(value: str, tmp_path: Path) -> None:
    # PyYAML lets ValueError out of its timestamp and int constructors.
    profile = tmp_path / "wristband.yaml"
    profile.write_text(f"type: wristband\nwhen: {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="YAML value error"):
        load_profile(profile)
    federation = tmp_path / "federation.yaml"
    federation.write_text(f"hub_id: north\nwhen: {value}\n", encoding="utf-8")
    with pytest.raises(FederationConfigError, match="bad YAML value"):
        load_federation_settings(federation)


def test_a_catalog_battery_beyond_any_wearable_is_refused() -> None:
    model = BUILTIN_MODELS[0].model_dump(mode="json")
    for capacity in (10**400, 100_001):
        with pytest.raises(ValidationError, match="battery_mah"):
            DeviceModel.model_validate({**model, "battery_mah": capacity})
    assert DeviceModel.model_validate({**model, "battery_mah": 100_000}).battery_mah == 100_000
