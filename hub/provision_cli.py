"""Provisioning devices in the hub's registry, and the broker files made from it.

``lantern devices provision`` registers one device (its site row is created when
missing) and issues its credential (:func:`hub.credentials.issue_device_credential`).
The secret is printed once on stdout and never stored or logged; the registry keeps
two ``credentials`` rows of kind ``mqtt_password`` for it, told apart by ``kid``:
:data:`BROKER_KID` holds the Mosquitto ``$7$`` hash and :data:`API_KID` the hash the
hub's API checks. A device that is already registered is refused unless
``--rotate`` is given, which overwrites both hashes in place, so the old secret stops
working as soon as the broker files are regenerated (and at once for the API).

``lantern broker config`` renders Mosquitto's password file, ACL and configuration
snippet (:func:`hub.broker.write_broker_config`) from every device that has an
active broker credential, plus an optional hub account whose password comes from an
environment variable. Mosquitto reads the files again on SIGHUP.

Both commands find the database like ``lantern users``: ``--database-url``, else
``--data-dir``, else ``LANTERN_DATABASE_URL``, else ``lantern.db`` in
``LANTERN_DATA_DIR`` (``./data``). Provisioning and rotation are audited.

Exit codes: 0 done, 1 refused (already provisioned, registry not migrated), 2 bad
options (device id, model, site, missing password variable).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError, ProgrammingError

from devices.catalog import SITE_ID_PATTERN, UnknownModelError, get_model
from devices.protocol import ProtocolError, validate_device_id
from hub import audit
from hub.broker import AccountKind, BrokerAccount, write_broker_config
from hub.cli_options import DatabaseUrl, DataDir, cli_actor, resolve_database_url
from hub.credentials import IssuedCredential, hash_for_mosquitto, issue_device_credential
from hub.db.engine import make_engine, write_session
from hub.db.models import Credential, Device, Site, utcnow

__all__ = [
    "API_KID",
    "BROKER_KID",
    "CREDENTIAL_KIND",
    "DEFAULT_SITE",
    "HUB_HASH_ITERATIONS",
    "AlreadyProvisioned",
    "Provisioned",
    "broker_accounts",
    "broker_app",
    "provision",
    "provision_device",
]

logger = logging.getLogger(__name__)

CREDENTIAL_KIND = "mqtt_password"
BROKER_KID = "mosquitto"
"""``kid`` of the row holding a device's Mosquitto ``$7$`` hash."""
API_KID = "api"
"""``kid`` of the row holding the hash the hub's API checks a device secret against."""
DEFAULT_SITE = "unassigned"
"""Site a device is registered at when ``--site`` is not given."""
HUB_HASH_ITERATIONS = 100_000
"""PBKDF2 iterations of the hub account's Mosquitto hash. Unlike a device secret its
password may be chosen by a person, so it gets a cost that slows guessing; the hub
connects rarely, so the broker pays it rarely."""

_SITE_RE = re.compile(SITE_ID_PATTERN)
_SECRET_LABEL = "DEVICE SECRET (shown once, not stored; the device's broker password):"


class AlreadyProvisioned(Exception):
    """The device is registered already and rotation was not asked for."""


@dataclass(frozen=True)
class Provisioned:
    """What :func:`provision_device` did: the credential and whether it replaced one."""

    credential: IssuedCredential
    site_id: str
    rotated: bool
    site_created: bool


def provision_device(
    engine: Engine,
    device_id: str,
    model_id: str,
    site_id: str = DEFAULT_SITE,
    *,
    rotate: bool = False,
    actor: str = "cli:unknown",
    actor_role: str = "cli",
) -> Provisioned:
    """Register ``device_id`` (or, with ``rotate``, renew its credential) and return
    the new credential, whose secret the caller shows once.

    Raises :class:`devices.protocol.ProtocolError` for a bad device id, ``ValueError``
    for a bad site id or a model that differs from the registered one on rotation,
    :class:`devices.catalog.UnknownModelError` for a model the catalog lacks, and
    :class:`AlreadyProvisioned` for a registered device without ``rotate``.
    """
    validate_device_id(device_id)
    model = get_model(model_id)
    if not _SITE_RE.fullmatch(site_id):
        raise ValueError(
            f"site id {site_id!r} is not 2-64 of [a-z0-9_-] starting with a letter or digit"
        )
    issued = issue_device_credential(device_id)
    site_created = False
    with write_session(engine) as session:
        device = session.get(Device, device_id)
        if device is not None and not rotate:
            raise AlreadyProvisioned(device_id)
        if device is not None:
            if device.model != model.id:
                raise ValueError(
                    f"device {device_id} is registered as model {device.model}, not "
                    f"{model.id}; --rotate renews only its credential"
                )
            site_id = device.site_id
        else:
            if session.get(Site, site_id) is None:
                session.add(Site(site_id=site_id, name=site_id))
                session.flush()  # no ORM relationship orders the site before the device
                site_created = True
            session.add(Device(device_id=device_id, site_id=site_id, model=model.id))
            session.flush()
        rows = session.scalars(
            select(Credential).where(
                Credential.device_id == device_id, Credential.kind == CREDENTIAL_KIND
            )
        ).all()
        existing = {row.kid: row for row in rows}
        for kid, value in ((BROKER_KID, issued.mosquitto_hash), (API_KID, issued.api_hash)):
            row = existing.get(kid)
            if row is None:
                session.add(
                    Credential(
                        device_id=device_id, kind=CREDENTIAL_KIND, kid=kid, secret_hash=value
                    )
                )
            else:
                row.secret_hash = value
                row.created_at = utcnow()
                row.revoked_at = None
        audit.append(
            session,
            actor=actor,
            role=actor_role,
            action="device.rotate_credential" if device is not None else "device.provision",
            target=f"device:{device_id}",
            result=f"model={model.id} site={site_id}",
        )
    logger.info(
        "device %s %s (model %s, site %s) by %s",
        device_id,
        "credential rotated" if device is not None else "provisioned",
        model.id,
        site_id,
        actor,
    )
    return Provisioned(issued, site_id, device is not None, site_created)


def broker_accounts(engine: Engine) -> list[BrokerAccount]:
    """A device broker account for every device with an active Mosquitto hash."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(Credential.device_id, Credential.secret_hash)
            .join(Device, Device.device_id == Credential.device_id)
            .where(
                Credential.kind == CREDENTIAL_KIND,
                Credential.kid == BROKER_KID,
                Credential.revoked_at.is_(None),
                Credential.secret_hash.is_not(None),
            )
            .order_by(Credential.device_id)
        ).all()
    return [BrokerAccount(device_id, str(hashed), AccountKind.DEVICE) for device_id, hashed in rows]


# -- command line ---------------------------------------------------------------------------

def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def provision(
    device_id: Annotated[
        str, typer.Option("--device-id", help="Device id: its broker username and topic level.")
    ],
    model: Annotated[str, typer.Option("--model", help="Device model id from the catalog.")],
    site: Annotated[
        str, typer.Option("--site", help="Site id; the site row is created if missing.")
    ] = DEFAULT_SITE,
    rotate: Annotated[
        bool,
        typer.Option("--rotate", help="Renew the credential of a registered device."),
    ] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Register a device in the hub's registry and print its new secret, once.

    The secret is the device's broker password; only its hashes are kept. Run
    ``lantern broker config`` afterwards and reload the broker so it can log in.
    """
    engine = make_engine(resolve_database_url(database_url, data_dir))
    try:
        done = provision_device(engine, device_id, model, site, rotate=rotate, actor=cli_actor())
    except ProtocolError as exc:
        raise _fail(exc.reason, 2) from exc
    except UnknownModelError as exc:
        raise _fail(exc.message, 2) from exc
    except ValueError as exc:
        raise _fail(str(exc), 2) from exc
    except AlreadyProvisioned as exc:
        raise _fail(
            f"device {device_id} is already provisioned; use --rotate to replace its credential",
            1,
        ) from exc
    except (OperationalError, ProgrammingError) as exc:
        raise _fail(
            f"cannot use the registry ({type(exc).__name__}); is it migrated "
            "(lantern hub migrate)?",
            1,
        ) from exc
    finally:
        engine.dispose()
    what = "credential rotated for" if done.rotated else "provisioned"
    typer.echo(f"{what} device {device_id} (model {model}, site {done.site_id})")
    if done.rotated:
        typer.echo("the old secret stops working once the broker files are regenerated")
    typer.echo(_SECRET_LABEL)
    typer.echo(done.credential.secret)


broker_app = typer.Typer(
    name="broker",
    help="The MQTT broker's access files, made from the hub's device registry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@broker_app.callback()
def _broker() -> None:
    """Broker access files (a group of commands)."""


@broker_app.command("config")
def config(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the three files into.")],
    hub_user: Annotated[
        str | None, typer.Option("--hub-user", help="Broker username of the hub.")
    ] = None,
    hub_password_env: Annotated[
        str | None,
        typer.Option(
            "--hub-password-env", help="Environment variable holding the hub's broker password."
        ),
    ] = None,
    listen_host: Annotated[str, typer.Option(help="Address the listener binds.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Listener port.")] = 1883,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Write Mosquitto's password file, ACL and config snippet from the registry."""
    accounts: list[BrokerAccount] = []
    if (hub_user is None) != (hub_password_env is None):
        raise _fail("--hub-user and --hub-password-env go together", 2)
    if hub_user is not None and hub_password_env is not None:
        password = os.environ.get(hub_password_env)
        if not password:
            raise _fail(f"environment variable {hub_password_env} is not set or empty", 2)
        try:
            hashed = hash_for_mosquitto(password, iterations=HUB_HASH_ITERATIONS)
            accounts.append(BrokerAccount(hub_user, hashed, AccountKind.HUB))
        except ValueError as exc:
            raise _fail(str(exc), 2) from exc
    engine = make_engine(resolve_database_url(database_url, data_dir))
    try:
        devices = broker_accounts(engine)
    except (OperationalError, ProgrammingError) as exc:
        raise _fail(
            f"cannot read the registry ({type(exc).__name__}); is it migrated "
            "(lantern hub migrate)?",
            1,
        ) from exc
    finally:
        engine.dispose()
    try:
        files = write_broker_config(
            out, [*accounts, *devices], listener_host=listen_host, listener_port=port
        )
    except ValueError as exc:
        raise _fail(str(exc), 2) from exc
    typer.echo(
        f"{len(devices)} device account(s)" + (f" and hub account {hub_user}" if hub_user else "")
    )
    for label, path in (
        ("password file", files.password_file),
        ("ACL", files.acl_file),
        ("config", files.conf_file),
    ):
        typer.echo(f"wrote {label}: {path}")
    typer.echo(
        "include the config in mosquitto.conf (or run mosquitto -c with it); a running "
        "broker rereads the files on SIGHUP: kill -HUP <mosquitto pid>"
    )
