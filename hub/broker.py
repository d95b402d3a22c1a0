"""Mosquitto access control from the device registry: password file, ACL file, config.

The hub's registry holds every provisioned device with the ``$7$`` hash of its secret
(:mod:`hub.credentials`), plus the broker accounts of the hub itself and of admins.
From those accounts this module renders

* ``passwords``: Mosquitto's ``password_file``, one ``username:$7$...`` line each;
* ``acl``: Mosquitto's ``acl_file``, a ``user`` block per account;
* ``mosquitto.conf``: a listener with anonymous access off that points at both,
  that takes every client's username as its client id (below), with persistence on
  and queue limits sized for the hub's session (below).

Client ids
    MQTT lets a new connection with a client id already connected take that id over:
    the broker disconnects the first connection, and with clean start off the new
    one inherits its session. Password and ACL alone do not stop a device logged in
    with its own secret from connecting under another device's client id (devices
    use their device id) and knocking that device off the broker again and again.
    So the listener sets ``use_username_as_clientid true``: Mosquitto replaces the
    client id a client sends with its username, so a connection can only ever take
    over a connection (and the session) of its own account.

    The price: **an account has one connection at a time**; a second connection
    under the same username disconnects the first. Devices open one connection
    each. ``lantern hub serve`` opens one: its ingest client also publishes the
    acks, the stored configurations at start and the ones the API renders
    (:mod:`hub.configpush`), so the hub needs one hub account per running hub
    process. Running several hub processes on one broker (the shared subscription
    spreads the events over them) therefore takes one hub account each, which the
    ACL supports (:func:`render_acl` takes any number of hub usernames; every hub
    account has the same rules); likewise one admin account per operator or tool
    connected at the same time. The hub's ``--client-id`` is replaced by its
    username too, so its persistent session is kept under the username. Mosquitto
    reads this option at start only (not on SIGHUP): restart the broker once after
    adopting a configuration that adds it, when the hub has caught up, since a
    session stored under the hub's old client id is not carried over.

Queues and persistence
    The hub holds a persistent session (``clean_start=False`` with a long Session
    Expiry Interval, :mod:`hub.comms.mqtt`): while it is down or cut off the broker
    queues every QoS 1 event the devices send for it. Mosquitto's default
    ``max_queued_messages`` is 1000 per client, after which it *drops* further QoS 1
    messages for that client; a fleet of a few hundred devices fills that within
    minutes and the events are lost even though each device was told they were
    delivered (the broker PUBACKed them). So the snippet sets
    :data:`MAX_QUEUED_MESSAGES` (one million: an hour of 250 devices at one event
    a second) and ``max_queued_bytes 0`` (no byte limit; the count bounds it, at
    roughly a few hundred bytes per event a few hundred MB). ``persistence true``
    with ``persistence_location`` keeps those queues, the sessions and the retained
    messages (device states and configurations) across a broker restart;
    ``autosave_interval`` bounds what a broker crash loses to that many seconds.

ACL design
    One ``user`` block per account, not ``pattern`` lines with ``%u``. Pattern lines
    apply to every user who connects, hub and admins included, and to any username
    the password file happens to hold, so what an account may do would depend on
    the shape of its name. Explicit blocks are an allow-list generated from the
    registry: a device that is not in it gets no rule at all, and the hub's rights
    are exactly those written for it. The file is regenerated whenever the registry
    changes anyway, since the password file must be.

    A device (username = device id) may write only its own device-to-hub topics
    (``lantern/v1/<id>/evt/#``, ``tele``, ``state``) and read only its own
    hub-to-device ones (``ack``, ``config``, ``cmd/#``). A hub account reads
    ``evt/#``, ``tele`` and ``state`` of every device and writes their ``ack``,
    ``config`` and ``cmd/#``. An admin account reads and writes all of
    ``lantern/v1/#`` and reads ``$SYS/#``.

Shared subscriptions
    Mosquitto 2.0's ACL file does not check SUBSCRIBE at all: every subscription is
    granted and each message is checked against the subscriber's ``read`` rules when
    it is delivered, with the message's real topic. So a hub worker subscribing to
    ``$share/hub/lantern/v1/+/evt/#`` needs only ``topic read lantern/v1/+/evt/#``;
    no ``$share`` rule is needed, and a device subscribing to another's topics (or
    ``#``) gets a granted SUBACK but receives nothing it may not read. A publish the
    ACL denies is dropped; to an MQTT 5 QoS 1 publisher Mosquitto answers PUBACK
    reason code 0x87 (not authorized). Wrong password, unknown user and anonymous
    are all refused with CONNACK 0x87. (All checked against Mosquitto 2.0.11 by
    ``tests/hub/test_broker_mosquitto.py``.)

Mosquitto reads both files at start and again on SIGHUP.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from devices.protocol import TOPIC_PREFIX, validate_device_id

__all__ = [
    "ACL_FILE",
    "AUTOSAVE_INTERVAL_S",
    "CONF_FILE",
    "MAX_QUEUED_MESSAGES",
    "PASSWORD_FILE",
    "PERSISTENCE_DIR",
    "AccountKind",
    "BrokerAccount",
    "BrokerFiles",
    "admin_acl_rules",
    "device_acl_rules",
    "hub_acl_rules",
    "render_acl",
    "render_mosquitto_conf",
    "render_password_file",
    "write_broker_config",
]

logger = logging.getLogger(__name__)

PASSWORD_FILE = "passwords"
ACL_FILE = "acl"
CONF_FILE = "mosquitto.conf"
PERSISTENCE_DIR = "persistence"
"""Folder under the output folder for Mosquitto's database unless another is given."""
MAX_QUEUED_MESSAGES = 1_000_000
"""QoS 1 messages Mosquitto queues per disconnected persistent session (the hub's)."""
AUTOSAVE_INTERVAL_S = 60
"""Seconds between Mosquitto's saves of its in-memory state to the persistence file."""

_SERVICE_USER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""Usernames of hub and admin accounts: no space, ``:``, ``/``, ``+``, ``#`` nor ``$``,
so they are safe in both files and cannot be mistaken for a topic level."""

_MOSQUITTO_HASH_RE = re.compile(r"\$7\$[1-9][0-9]{0,8}\$[A-Za-z0-9+/]+={0,2}\$[A-Za-z0-9+/]+={0,2}")


class AccountKind(StrEnum):
    """What a broker account is for; it decides the account's ACL rules."""

    DEVICE = "device"
    HUB = "hub"
    ADMIN = "admin"


@dataclass(frozen=True)
class BrokerAccount:
    """A broker login: a username, the ``$7$`` hash of its password, and its kind.

    A device's username is its device id. Names and hashes are checked here, so
    nothing rendered from an account can break a line of either file.
    """

    username: str
    password_hash: str
    kind: AccountKind

    def __post_init__(self) -> None:
        kind = AccountKind(self.kind)
        object.__setattr__(self, "kind", kind)
        if kind is AccountKind.DEVICE:
            validate_device_id(self.username)
        else:
            _check_service_user(self.username, kind)
        if not isinstance(self.password_hash, str) or not _MOSQUITTO_HASH_RE.fullmatch(
            self.password_hash
        ):
            raise ValueError(
                f"password hash of {self.username!r} is not a Mosquitto $7$ hash "
                "(see hub.credentials.hash_for_mosquitto)"
            )


def _unique(accounts: Iterable[BrokerAccount]) -> list[BrokerAccount]:
    found: dict[str, BrokerAccount] = {}
    for account in accounts:
        if account.username in found:
            raise ValueError(f"username {account.username!r} appears twice")
        found[account.username] = account
    return sorted(found.values(), key=lambda a: a.username)


def render_password_file(accounts: Iterable[BrokerAccount]) -> str:
    """Mosquitto ``password_file`` text: ``username:hash`` lines, sorted by name."""
    return "".join(f"{a.username}:{a.password_hash}\n" for a in _unique(accounts))


def device_acl_rules(device_id: str) -> tuple[str, ...]:
    """The ``topic`` rules of one device: its own device-to-hub topics to write, its
    own hub-to-device topics to read."""
    base = f"{TOPIC_PREFIX}/{validate_device_id(device_id)}"
    return (
        f"topic write {base}/evt/#",
        f"topic write {base}/tele",
        f"topic write {base}/state",
        f"topic read {base}/ack",
        f"topic read {base}/config",
        f"topic read {base}/cmd/#",
    )


def hub_acl_rules() -> tuple[str, ...]:
    """The ``topic`` rules of a hub account: every device's events, telemetry and
    state to read (shared subscriptions included), their acks, configs and
    commands to write."""
    every = f"{TOPIC_PREFIX}/+"
    return (
        f"topic read {every}/evt/#",
        f"topic read {every}/tele",
        f"topic read {every}/state",
        f"topic write {every}/ack",
        f"topic write {every}/config",
        f"topic write {every}/cmd/#",
    )


def admin_acl_rules() -> tuple[str, ...]:
    """The ``topic`` rules of an admin account: all Lantern topics, and broker stats."""
    return (f"topic readwrite {TOPIC_PREFIX}/#", "topic read $SYS/#")


def _rules(kind: AccountKind, username: str) -> tuple[str, ...]:
    if kind is AccountKind.DEVICE:
        return device_acl_rules(username)
    return hub_acl_rules() if kind is AccountKind.HUB else admin_acl_rules()


def _check_service_user(name: str, kind: AccountKind) -> str:
    if not isinstance(name, str) or not _SERVICE_USER_RE.fullmatch(name):
        raise ValueError(
            f"{kind} username {name!r} is not 1-64 of [A-Za-z0-9_.-] starting with a "
            "letter or digit"
        )
    return name


def render_acl(
    devices: Iterable[str], hub_users: Iterable[str], admin_users: Iterable[str] = ()
) -> str:
    """Mosquitto ``acl_file`` text: a ``user`` block per device, hub and admin
    username (sorted within each group). There are no rules before the first
    ``user`` line, so anonymous clients would have none."""
    groups = (
        (AccountKind.HUB, sorted(_check_service_user(u, AccountKind.HUB) for u in hub_users)),
        (AccountKind.ADMIN, sorted(_check_service_user(u, AccountKind.ADMIN) for u in admin_users)),
        (AccountKind.DEVICE, sorted(validate_device_id(d) for d in devices)),
    )
    seen: set[str] = set()
    lines = [
        "# Mosquitto ACL generated by Lantern from the device registry; do not edit.",
        "# Subscriptions are always granted; these rules are checked per message.",
    ]
    for kind, names in groups:
        for name in names:
            if name in seen:
                raise ValueError(f"username {name!r} appears twice")
            seen.add(name)
            lines += ["", f"# {kind}", f"user {name}", *_rules(kind, name)]
    return "\n".join(lines) + "\n"


def render_mosquitto_conf(
    password_file: Path,
    acl_file: Path,
    *,
    listener_host: str = "127.0.0.1",
    listener_port: int = 1883,
    persistence_location: Path | None = None,
    max_queued_messages: int = MAX_QUEUED_MESSAGES,
) -> str:
    """A ``mosquitto.conf`` snippet: one listener whose client ids are the usernames,
    anonymous access off, the password and ACL files (absolute paths), persistence
    in ``persistence_location`` (default: :data:`PERSISTENCE_DIR` beside the password
    file) and a queue limit large enough for the hub's session to outlast a long
    outage (see the module docstring)."""
    if not 1 <= listener_port <= 65535:
        raise ValueError(f"listener port {listener_port} is out of range")
    if not listener_host or any(c.isspace() for c in listener_host):
        raise ValueError(f"listener host {listener_host!r} is not a host name or address")
    if max_queued_messages < 1:
        raise ValueError("max_queued_messages must be at least 1 (0 would mean no limit)")
    if persistence_location is None:
        persistence_location = password_file.parent / PERSISTENCE_DIR
    for path in (password_file, acl_file, persistence_location):
        if "\n" in str(path) or "\r" in str(path):
            raise ValueError(f"path {path!r} holds a newline")
    if any(c.isspace() for c in str(persistence_location.resolve())):
        # Mosquitto takes the rest of the line, but a trailing space would be lost.
        raise ValueError(f"persistence location {persistence_location!r} holds white space")
    return "\n".join(
        [
            "# Mosquitto settings generated by Lantern; do not edit.",
            "per_listener_settings false",
            f"listener {listener_port} {listener_host}",
            "# The client id is the username, so no account can take over (and drop)",
            "# another's connection or session; one connection per account (hub.broker).",
            "use_username_as_clientid true",
            "allow_anonymous false",
            f"password_file {password_file.resolve()}",
            f"acl_file {acl_file.resolve()}",
            "# The hub's persistent session must hold every event queued while it is",
            "# away; Mosquitto's default of 1000 would drop the rest (see hub.broker).",
            f"max_queued_messages {max_queued_messages}",
            "max_queued_bytes 0",
            "# Sessions, queued messages and retained states and configurations survive",
            "# a broker restart.",
            "persistence true",
            f"persistence_location {persistence_location.resolve()}/",
            f"autosave_interval {AUTOSAVE_INTERVAL_S}",
            "",
        ]
    )


@dataclass(frozen=True)
class BrokerFiles:
    """Where :func:`write_broker_config` put the three files."""

    password_file: Path
    acl_file: Path
    conf_file: Path


def _write_atomic(path: Path, text: str, mode: int) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, made
    with ``mode`` from the start, flushed to disk, then renamed over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_broker_config(
    out_dir: Path,
    accounts: Sequence[BrokerAccount],
    *,
    listener_host: str = "127.0.0.1",
    listener_port: int = 1883,
    persistence_location: Path | None = None,
) -> BrokerFiles:
    """Render and write ``passwords`` (mode 0600), ``acl`` (0640) and
    ``mosquitto.conf`` (0644) into ``out_dir`` (created if missing), and create the
    persistence folder (default ``out_dir/persistence``, mode 0700) if missing.

    Everything is rendered and checked before anything is written, and each file
    replaces its old version atomically, so a broker reloading meanwhile reads
    either the old or the new version of each file, never a part of one. The
    password file is written first, then the ACL: a new device may briefly be able
    to log in before it has rules (and can then do nothing), never the reverse.
    The broker user must be able to read the files and write the persistence folder
    (``chown`` them to it).
    """
    unique = _unique(accounts)
    by_kind = {kind: [a.username for a in unique if a.kind is kind] for kind in AccountKind}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = BrokerFiles(out_dir / PASSWORD_FILE, out_dir / ACL_FILE, out_dir / CONF_FILE)
    passwords = render_password_file(unique)
    acl = render_acl(
        by_kind[AccountKind.DEVICE], by_kind[AccountKind.HUB], by_kind[AccountKind.ADMIN]
    )
    persistence = persistence_location or out_dir / PERSISTENCE_DIR
    conf = render_mosquitto_conf(
        files.password_file,
        files.acl_file,
        listener_host=listener_host,
        listener_port=listener_port,
        persistence_location=persistence,
    )
    persistence.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_atomic(files.password_file, passwords, 0o600)
    _write_atomic(files.acl_file, acl, 0o640)
    _write_atomic(files.conf_file, conf, 0o644)
    logger.info(
        "wrote broker config for %d devices, %d hub and %d admin accounts to %s",
        len(by_kind[AccountKind.DEVICE]),
        len(by_kind[AccountKind.HUB]),
        len(by_kind[AccountKind.ADMIN]),
        out_dir,
    )
    return files
