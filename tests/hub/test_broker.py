"""Rendering and writing the Mosquitto password, ACL and config files (hub.broker)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from devices.protocol import ProtocolError
from hub.broker import (
    MAX_QUEUED_MESSAGES,
    PERSISTENCE_DIR,
    AccountKind,
    BrokerAccount,
    render_acl,
    render_mosquitto_conf,
    render_password_file,
    write_broker_config,
)
from hub.credentials import hash_for_mosquitto

HASH = hash_for_mosquitto("pw", salt=b"0123456789ab")


def account(name: str, kind: AccountKind = AccountKind.DEVICE) -> BrokerAccount:
    return BrokerAccount(name, HASH, kind)


def acl_blocks(text: str) -> dict[str, list[str]]:
    """The ACL's rules by ``user``; rules before any ``user`` line go under ``""``."""
    blocks: dict[str, list[str]] = {"": []}
    current = ""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("user "):
            current = line.removeprefix("user ")
            assert current not in blocks
            blocks[current] = []
        else:
            blocks[current].append(line)
    return blocks


def test_password_file_lines_sorted() -> None:
    text = render_password_file([account("dev-b"), account("hub", AccountKind.HUB)])
    assert text == f"dev-b:{HASH}\nhub:{HASH}\n"
    assert render_password_file([]) == ""


def test_duplicate_usernames_are_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        render_password_file([account("dev-a"), account("dev-a")])
    with pytest.raises(ValueError, match="twice"):
        render_acl(["hub-1"], ["hub-1"])


@pytest.mark.parametrize("name", ["Dev", "a", "dev/a", "dev+", "dev#", "_dev", "dev a", "x" * 65])
def test_bad_device_usernames_are_refused(name: str) -> None:
    with pytest.raises(ProtocolError):
        account(name)
    with pytest.raises(ProtocolError):
        render_acl([name], [])


@pytest.mark.parametrize("name", ["", "hub user", "hub:1", "hub/1", "$hub", "hub#", "h\nx"])
def test_bad_service_usernames_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        account(name, AccountKind.HUB)
    with pytest.raises(ValueError):
        render_acl([], [name])


@pytest.mark.parametrize("bad", ["", "plain", "$6$salt$hash", HASH + "\nroot:" + HASH, "x" + HASH])
def test_bad_hashes_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="\\$7\\$"):
        BrokerAccount("dev-a", bad, AccountKind.DEVICE)


def test_kind_accepts_its_string_value() -> None:
    made = BrokerAccount("hub", HASH, "hub")  # type: ignore[arg-type]
    assert made.kind is AccountKind.HUB
    with pytest.raises(ValueError):
        BrokerAccount("hub", HASH, "root")  # type: ignore[arg-type]


def test_acl_device_block_is_its_own_topics_only() -> None:
    blocks = acl_blocks(render_acl(["dev-a", "dev-b"], ["lantern-hub"]))
    assert blocks[""] == []  # nothing for anonymous clients
    assert blocks["dev-a"] == [
        "topic write lantern/v1/dev-a/evt/#",
        "topic write lantern/v1/dev-a/tele",
        "topic write lantern/v1/dev-a/state",
        "topic read lantern/v1/dev-a/ack",
        "topic read lantern/v1/dev-a/config",
        "topic read lantern/v1/dev-a/cmd/#",
    ]
    assert all("dev-a" not in rule for rule in blocks["dev-b"])
    assert not any(line.startswith("pattern") for line in render_acl(["dev-a"], []).splitlines())


def test_acl_hub_and_admin_blocks() -> None:
    blocks = acl_blocks(render_acl([], ["hub-1", "hub-0"], ["ops"]))
    assert list(blocks) == ["", "hub-0", "hub-1", "ops"]
    assert blocks["hub-0"] == [
        "topic read lantern/v1/+/evt/#",
        "topic read lantern/v1/+/tele",
        "topic read lantern/v1/+/state",
        "topic write lantern/v1/+/ack",
        "topic write lantern/v1/+/config",
        "topic write lantern/v1/+/cmd/#",
    ]
    assert blocks["ops"] == ["topic readwrite lantern/v1/#", "topic read $SYS/#"]


def test_conf_snippet(tmp_path: Path) -> None:
    text = render_mosquitto_conf(
        tmp_path / "passwords", tmp_path / "acl", listener_host="0.0.0.0", listener_port=8883
    )
    lines = text.splitlines()
    assert "listener 8883 0.0.0.0" in lines
    assert "allow_anonymous false" in lines
    assert f"password_file {tmp_path.resolve() / 'passwords'}" in lines
    assert f"acl_file {tmp_path.resolve() / 'acl'}" in lines
    with pytest.raises(ValueError):
        render_mosquitto_conf(tmp_path / "p", tmp_path / "a", listener_port=0)
    with pytest.raises(ValueError):
        render_mosquitto_conf(tmp_path / "p", tmp_path / "a", listener_host="a b")
    with pytest.raises(ValueError):
        render_mosquitto_conf(tmp_path / "p\nx", tmp_path / "a")


def test_write_broker_config_files_and_modes(tmp_path: Path) -> None:
    out = tmp_path / "broker"
    accounts = [
        account("dev-b"),
        account("dev-a"),
        account("lantern-hub", AccountKind.HUB),
        account("ops", AccountKind.ADMIN),
    ]
    files = write_broker_config(out, accounts, listener_port=18830)
    assert files.password_file == out / "passwords"
    assert stat.S_IMODE(files.password_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.acl_file.stat().st_mode) == 0o640
    assert stat.S_IMODE(files.conf_file.stat().st_mode) == 0o644
    assert files.password_file.read_text() == render_password_file(accounts)
    assert files.acl_file.read_text() == render_acl(["dev-a", "dev-b"], ["lantern-hub"], ["ops"])
    assert "listener 18830 127.0.0.1" in files.conf_file.read_text().splitlines()
    assert sorted(p.name for p in out.iterdir()) == [
        "acl",
        "mosquitto.conf",
        "passwords",
        "persistence",
    ]
    assert (out / "persistence").is_dir()
    assert stat.S_IMODE((out / "persistence").stat().st_mode) == 0o700
    assert f"persistence_location {(out / 'persistence').resolve()}/" in conf_lines(
        files.conf_file.read_text()
    )


def conf_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def conf_options(text: str) -> dict[str, str]:
    """The snippet's ``option value`` lines; an option set twice fails the test."""
    options: dict[str, str] = {}
    for line in conf_lines(text):
        name, _, value = line.partition(" ")
        assert name not in options, f"{name} set twice"
        options[name] = value
    return options


def test_conf_binds_client_ids_to_usernames_on_the_listener(tmp_path: Path) -> None:
    """``use_username_as_clientid`` is a listener option: it must follow the
    ``listener`` line (the behaviour is checked on a real Mosquitto in
    tests/access/test_broker_denials.py and tests/hub/test_broker_mosquitto.py)."""
    lines = conf_lines(render_mosquitto_conf(tmp_path / "passwords", tmp_path / "acl"))
    options = conf_options("\n".join(lines))
    assert options["use_username_as_clientid"] == "true"
    assert "clientid_prefixes" not in options  # Mosquitto: not to be used together
    listener = next(i for i, line in enumerate(lines) if line.startswith("listener "))
    assert lines.index("use_username_as_clientid true") > listener


def test_conf_keeps_the_hub_session_queue_through_an_outage(tmp_path: Path) -> None:
    options = conf_options(render_mosquitto_conf(tmp_path / "passwords", tmp_path / "acl"))
    # Mosquitto's default (1000 per client) would drop the events queued for the hub
    # after a few minutes of a few hundred devices; a byte limit would do the same.
    assert int(options["max_queued_messages"]) >= 1_000_000 == MAX_QUEUED_MESSAGES
    assert options["max_queued_bytes"] == "0"
    assert options["persistence"] == "true"
    assert options["persistence_location"] == f"{(tmp_path / PERSISTENCE_DIR).resolve()}/"
    assert int(options["autosave_interval"]) > 0


def test_conf_persistence_location_option(tmp_path: Path) -> None:
    text = render_mosquitto_conf(
        tmp_path / "passwords",
        tmp_path / "acl",
        persistence_location=tmp_path / "var" / "mosquitto",
        max_queued_messages=5000,
    )
    options = conf_options(text)
    assert options["persistence_location"] == f"{(tmp_path / 'var' / 'mosquitto').resolve()}/"
    assert options["max_queued_messages"] == "5000"
    with pytest.raises(ValueError, match="white space"):
        render_mosquitto_conf(tmp_path / "p", tmp_path / "a", persistence_location=tmp_path / "a b")
    with pytest.raises(ValueError, match="newline"):
        render_mosquitto_conf(
            tmp_path / "p", tmp_path / "a", persistence_location=tmp_path / "a\nb"
        )
    with pytest.raises(ValueError, match="at least 1"):
        render_mosquitto_conf(tmp_path / "p", tmp_path / "a", max_queued_messages=0)
    out = tmp_path / "out"
    files = write_broker_config(
        out, [account("dev-a")], persistence_location=tmp_path / "elsewhere"
    )
    assert (tmp_path / "elsewhere").is_dir() and not (out / PERSISTENCE_DIR).exists()
    assert conf_options(files.conf_file.read_text())["persistence_location"] == (
        f"{(tmp_path / 'elsewhere').resolve()}/"
    )


def test_write_broker_config_replaces_and_leaves_nothing_on_error(tmp_path: Path) -> None:
    write_broker_config(tmp_path, [account("dev-a")])
    write_broker_config(tmp_path, [account("dev-b")])
    assert (tmp_path / "passwords").read_text() == f"dev-b:{HASH}\n"
    before = {p.name: p.read_text() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(ValueError):
        write_broker_config(tmp_path, [account("dev-c"), account("dev-c")])
    with pytest.raises(ValueError):
        write_broker_config(tmp_path, [account("dev-c")], listener_port=70000)
    assert {p.name: p.read_text() for p in tmp_path.iterdir() if p.is_file()} == before
