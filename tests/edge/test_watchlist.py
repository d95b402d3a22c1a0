"""The offline watchlist file: build, verify, refuse, match, and the alarm it raises."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from devices.protocol import AlarmEvent, canonical_json, decode, encode, topic_for
from devices.signing import generate_private_key, public_key_of
from edge.camera.events import LocalEventFactory
from edge.watchlist import (
    Watchlist,
    WatchlistError,
    WatchlistMismatch,
    build_document,
    document_bytes,
    hit_alarm,
    load_watchlist,
    write_document,
)

MODEL = "dlib-resnet-v1"
F32 = npt.NDArray[np.float32]


def unit(rng: np.random.Generator, dim: int = 128) -> F32:
    v = rng.standard_normal(dim).astype(np.float32)
    out: F32 = v / np.linalg.norm(v)
    return out


@pytest.fixture
def people() -> dict[str, F32]:
    rng = np.random.default_rng(7)
    return {"wl-0001": unit(rng), "wl-0002": unit(rng), "wl-0003": unit(rng)}


def entries(people: dict[str, F32]) -> list[tuple[str, F32]]:
    rng = np.random.default_rng(8)
    out = list(people.items())
    # A second template of the first person, near the first.
    second = people["wl-0001"] + 0.2 * unit(rng)
    out.append(("wl-0001", second / np.linalg.norm(second)))
    return out


def write(
    path: Path,
    people: dict[str, F32],
    *,
    model_id: str = MODEL,
    private_key: Ed25519PrivateKey | None = None,
    kid: str | None = None,
) -> Path:
    doc = build_document(
        model_id=model_id,
        entries=entries(people),
        threshold=0.8,
        version=3,
        private_key=private_key,
        kid=kid,
    )
    return write_document(path, doc)


def test_round_trip_and_match(tmp_path: Path, people: dict[str, F32]) -> None:
    path = write(tmp_path / "wl.json", people)
    watchlist = load_watchlist(path, model_id=MODEL, dim=128, max_entries=10)
    assert len(watchlist) == 4 and watchlist.refs == ["wl-0001", "wl-0002", "wl-0003"]
    assert (watchlist.version, watchlist.threshold, watchlist.model_id) == (3, 0.8, MODEL)

    rng = np.random.default_rng(9)
    probe = people["wl-0002"] + 0.1 * unit(rng)
    hit = watchlist.match(probe / np.linalg.norm(probe), model_id=MODEL)
    assert hit is not None and hit.person_ref == "wl-0002"
    assert 0.8 <= hit.score <= 1.0 and hit.version == 3
    assert watchlist.match(unit(rng), model_id=MODEL) is None  # nobody near a random face


def test_the_file_is_canonical_json_with_a_hash(tmp_path: Path, people: dict[str, F32]) -> None:
    path = write(tmp_path / "wl.json", people)
    data = json.loads(path.read_bytes())
    assert data["format"] == "lantern.watchlist/1" and len(data["sha256"]) == 64
    assert "sig" not in data and data["dim"] == 128
    loaded = load_watchlist(path, model_id=MODEL)
    assert document_bytes(loaded.document) == path.read_bytes()
    assert load_watchlist(path, model_id=MODEL, expected_sha256=data["sha256"]).sha256


def test_other_model_is_refused_clearly(tmp_path: Path, people: dict[str, F32]) -> None:
    path = write(tmp_path / "wl.json", people, model_id="insightface-w600k_r50")
    with pytest.raises(WatchlistMismatch, match="insightface-w600k_r50.*dlib-resnet-v1"):
        load_watchlist(path, model_id=MODEL)
    same = write(tmp_path / "same.json", people)
    with pytest.raises(WatchlistMismatch, match="dimension 128"):
        load_watchlist(same, model_id=MODEL, dim=512)
    watchlist = load_watchlist(same, model_id=MODEL)
    with pytest.raises(WatchlistMismatch):
        watchlist.match(people["wl-0001"], model_id="insightface-w600k_r50")


def test_altered_file_is_refused(tmp_path: Path, people: dict[str, F32]) -> None:
    path = write(tmp_path / "wl.json", people)
    data = json.loads(path.read_bytes())
    data["threshold"] = 0.1  # a lower threshold would raise alarms for anybody
    path.write_text(json.dumps(data))
    with pytest.raises(WatchlistError, match="does not match its content"):
        load_watchlist(path, model_id=MODEL)


def test_unexpected_hash_too_many_entries_and_bad_files(
    tmp_path: Path, people: dict[str, F32]
) -> None:
    path = write(tmp_path / "wl.json", people)
    with pytest.raises(WatchlistError, match="not the expected"):
        load_watchlist(path, model_id=MODEL, expected_sha256="0" * 64)
    with pytest.raises(WatchlistError, match="max_entries of 3"):
        load_watchlist(path, model_id=MODEL, max_entries=3)
    bad = tmp_path / "bad.json"
    for text, message in [
        ('{"format": "lantern.watchlist/1", "format": "x"}', "duplicate key"),
        ("[1, 2]", "not a watchlist"),
        ('{"format": "lantern.watchlist/9"}', "is not 'lantern.watchlist/1'"),
        ('{"format": "lantern.watchlist/1", "version": 1}', "invalid"),
    ]:
        bad.write_text(text)
        with pytest.raises(WatchlistError, match=message):
            load_watchlist(bad, model_id=MODEL)
    with pytest.raises(WatchlistError, match="cannot be read"):
        load_watchlist(tmp_path / "missing.json", model_id=MODEL)


def test_vectors_are_checked(tmp_path: Path, people: dict[str, F32]) -> None:
    doc = build_document(model_id=MODEL, entries=entries(people), threshold=0.8, version=3)
    short = build_document(model_id=MODEL, entries=[("x-1", np.ones(64))], threshold=0.5, version=1)
    wrong = doc.entries[1].model_copy(update={"embedding": short.entries[0].embedding})
    broken = doc.model_copy(update={"entries": [doc.entries[0], wrong, *doc.entries[2:]]})
    # Re-hash as the module notes define it, so that only the vector is wrong.
    content = canonical_json(broken.model_dump(mode="json", exclude={"sha256"}, exclude_none=True))
    broken = broken.model_copy(update={"sha256": hashlib.sha256(content).hexdigest()})
    path = write_document(tmp_path / "wl.json", broken)
    with pytest.raises(WatchlistError, match=r"entries\[1\] \(wl-0002\).*64 values, expected 128"):
        load_watchlist(path, model_id=MODEL)


def test_signatures(tmp_path: Path, people: dict[str, F32]) -> None:
    hub_key, other_key = generate_private_key(), generate_private_key()
    keys = {"hub-1": public_key_of(hub_key)}
    signed = write(tmp_path / "signed.json", people, private_key=hub_key, kid="hub-1")
    assert load_watchlist(signed, model_id=MODEL, public_keys=keys).version == 3
    assert load_watchlist(signed, model_id=MODEL).version == 3  # no keys configured

    unsigned = write(tmp_path / "unsigned.json", people)
    with pytest.raises(WatchlistError, match="not signed"):
        load_watchlist(unsigned, model_id=MODEL, public_keys=keys)
    forged = write(tmp_path / "forged.json", people, private_key=other_key, kid="hub-1")
    with pytest.raises(WatchlistError, match="does not verify"):
        load_watchlist(forged, model_id=MODEL, public_keys=keys)
    stranger = write(tmp_path / "stranger.json", people, private_key=other_key, kid="hub-9")
    with pytest.raises(WatchlistError, match="unknown key 'hub-9'"):
        load_watchlist(stranger, model_id=MODEL, public_keys=keys)


def test_build_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="at least one"):
        build_document(model_id=MODEL, entries=[], threshold=0.5, version=1)
    with pytest.raises(ValueError, match="different dimensions"):
        build_document(
            model_id=MODEL,
            entries=[("a-1", np.ones(4)), ("b-1", np.ones(5))],
            threshold=0.5,
            version=1,
        )
    with pytest.raises(ValueError):
        build_document(model_id=MODEL, entries=[("bad ref", np.ones(4))], threshold=0.5, version=1)


def test_hit_alarm_is_a_valid_watchlist_hit_event(tmp_path: Path, people: dict[str, F32]) -> None:
    ref = "r" * 64
    doc = build_document(
        model_id=MODEL,
        entries=[(ref, people["wl-0001"])],
        threshold=0.5,
        version=2**40,
        created_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    watchlist = Watchlist(doc, np.stack([people["wl-0001"]]))
    hit = watchlist.match(people["wl-0001"], model_id=MODEL)
    assert hit is not None
    make = LocalEventFactory("cam-test-01")
    sighting_id = "0190a6f2-8c4e-7b1a-9c3d-2e4f6a8b0c1d"
    body = hit_alarm(hit, sighting_event_id=sighting_id)
    assert body.type == "watchlist.hit" and body.related_event_id == sighting_id
    assert body.detail is not None and ref in body.detail and "not an identification" in body.detail
    event = make("alarm", body, datetime.now(UTC))
    decoded = decode(topic_for(event), encode(event)).message
    assert isinstance(decoded, AlarmEvent) and decoded.body == body
