"""The federation file, the policy, and ``lantern federation keygen`` / ``peers``."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from devices.signing import private_key_from_b64, public_key_to_b64
from hub.federation.peers import FederationConfigError, load_federation_settings
from hub.federation.policy import PeerPolicy, check_policy
from tests.hub.federation.helpers import SECRET, ThreadedHub, hub_app, make_keys, write_federation
from tests.hub.test_serve import hub_env, lantern

POLICY = {
    "region-a": PeerPolicy(missing_person=["found"], crops=True),
    "region-b": PeerPolicy(criminal_investigation=["watchlist"]),
}


def test_policy_allows_only_listed_purposes_and_galleries() -> None:
    ok = check_policy(POLICY, "region-a", "missing_person", ["found"])
    assert ok.allowed and ok.crops and ok.reason is None
    no_crops = check_policy(POLICY, "region-b", "criminal_investigation", ["watchlist"])
    assert no_crops.allowed and not no_crops.crops
    purpose = check_policy(POLICY, "region-a", "criminal_investigation", ["watchlist"])
    assert not purpose.allowed
    assert purpose.reason == "purpose criminal_investigation is not allowed for peer region-a"
    gallery = check_policy(POLICY, "region-a", "missing_person", ["found", "watchlist"])
    assert not gallery.allowed and "gallery watchlist may not be searched" in str(gallery.reason)
    stranger = check_policy(POLICY, "region-x", "missing_person", ["found"])
    assert not stranger.allowed and "no policy for peer region-x" in str(stranger.reason)


def test_policy_refuses_unknown_keys() -> None:
    with pytest.raises(ValueError, match="extra"):
        PeerPolicy.model_validate({"missing_person": ["found"], "crop": True})
    with pytest.raises(ValueError, match="literal"):
        PeerPolicy.model_validate({"missing_person": ["everyone"]})


def test_federation_file_loads_with_a_relative_key(tmp_path: Path) -> None:
    key, _ = make_keys(tmp_path / "keys", "hub")
    _, peer_pub = make_keys(tmp_path / "other", "peer")
    path = write_federation(
        tmp_path / "federation.yaml",
        "region-a",
        Path("keys/hub.key"),
        [("region-c", "http://127.0.0.1:9/", peer_pub)],
        {"region-c": {"found_person": ["missing"]}},
    )
    settings = load_federation_settings(path)
    assert settings.private_key_file == key.resolve()
    assert settings.peer("region-c") is not None
    assert settings.peer("region-c").url == "http://127.0.0.1:9"  # type: ignore[union-attr]
    assert settings.policy["region-c"].galleries("found_person") == ["missing"]
    assert public_key_to_b64(settings.signing_key().public_key()) == public_key_to_b64(
        private_key_from_b64(key.read_text()).public_key()
    )


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda b: b | {"hub_id": "bad id!"}, "hub_id"),
        (lambda b: b | {"peers": b["peers"] * 2}, "peer listed twice: region-c"),
        (lambda b: b | {"policy": {"region-z": {}}}, "not peers: region-z"),
        (lambda b: b | {"surprise": 1}, "surprise"),
        (lambda b: b | {"peers": [b["peers"][0] | {"public_key": "abc"}]}, "public_key"),
        (lambda b: b | {"peers": [b["peers"][0] | {"hub_id": "region-a"}]}, "own peers"),
        (lambda b: b | {"private_key_file": "missing.key"}, "cannot read the private key"),
    ],
)
def test_bad_federation_files_are_refused(tmp_path: Path, edit: object, message: str) -> None:
    import yaml

    make_keys(tmp_path, "hub")
    _, peer_pub = make_keys(tmp_path / "p", "peer")
    body = {
        "hub_id": "region-a",
        "private_key_file": "hub.key",
        "peers": [{"hub_id": "region-c", "url": "http://x:1", "public_key": peer_pub}],
    }
    path = tmp_path / "federation.yaml"
    path.write_text(yaml.safe_dump(edit(body)))  # type: ignore[operator]
    with pytest.raises(FederationConfigError, match=message):
        load_federation_settings(path)


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    done = subprocess.run(
        lantern("federation", "keygen", "--out", str(out)),
        env=hub_env(None), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    private, public = out / "hub.key", out / "hub.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key = private_key_from_b64(private.read_text())
    assert public.read_text().strip() == public_key_to_b64(key.public_key())
    assert f"public_key: {public.read_text().strip()}" in done.stdout
    again = subprocess.run(
        lantern("federation", "keygen", "--out", str(out)),
        env=hub_env(None), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert again.returncode == 1 and "not overwritten" in again.stderr
    assert private_key_from_b64(private.read_text()) is not None


def test_peers_shows_policy_and_reachability(tmp_path: Path, sqlite_template: Path) -> None:
    from tests.hub.federation.helpers import sqlite_engine

    key, _ = make_keys(tmp_path, "hub")
    _, up_pub = make_keys(tmp_path / "u", "up")
    _, down_pub = make_keys(tmp_path / "d", "down")
    engine = sqlite_engine(sqlite_template, tmp_path / "up-db")
    with ThreadedHub(hub_app(engine, None)) as up:
        path = write_federation(
            tmp_path / "federation.yaml",
            "region-a",
            key,
            [("region-up", up.url, up_pub), ("region-down", "http://127.0.0.1:9", down_pub)],
            {"region-up": {"missing_person": ["found"], "crops": True}},
        )
        env = hub_env(SECRET) | {"LANTERN_FEDERATION_FILE": str(path)}
        done = subprocess.run(
            lantern("federation", "peers", "--timeout", "1"),
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    engine.dispose()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("hub region-a  public key ")
    up_line = next(line for line in lines if line.startswith("peer region-up"))
    assert "reachable" in up_line and "missing_person: found; crops allowed" in up_line
    down_line = next(line for line in lines if line.startswith("peer region-down"))
    assert "unreachable" in down_line and "may search nothing here" in down_line
    missing = subprocess.run(
        lantern("federation", "peers"), env=hub_env(None),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert missing.returncode == 2 and "LANTERN_FEDERATION_FILE" in missing.stderr
