"""Device configuration from the hub: render it, keep it, publish it retained.

What a device gets
    :func:`device_spec` finds what to render for a registered device in the firmware
    configuration folder (``HubSettings.config_dir``), first match wins:

    1. its device file ``<config_dir>/devices/<device_id>.yaml`` (``.yml``), whose
       ``model`` must be the registered one;
    2. its entry in a site file ``<config_dir>/sites/*.yaml``, rendered with that
       site's ``profile_overrides`` (:func:`devices.firmware.render_site_device`);
    3. otherwise the registry alone: the device's profile (``Device.profile``) or its
       model's default profile, with no overrides.

    Rendering (:func:`devices.firmware.render`) validates the result and checks it
    against the device model; every problem is a :class:`~devices.firmware.ConfigError`
    naming the file and field.

Versions only grow
    The last rendered body (``version``, ``sha256``, ``config``) is kept on the device
    row (``Device.desired_config``, with ``desired_config_version``/``_sha256``) and is
    the ``previous`` of the next render (:func:`devices.firmware.next_version`): equal
    content keeps its version, anything else gets the next one. The row is locked
    while rendering (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's write
    transaction holds its lock from the start), so two pushes cannot both take the
    same next version.

Publishing
    The stored body goes out as the protocol's ``config`` message on
    ``lantern/v1/<device_id>/config``, QoS 1 and retained (:data:`DELIVERY`), through a
    :class:`ConfigPublisher` (:class:`hub.comms.mqtt.HubMqttClient` is one). It is
    published after the transaction commits, so a device never receives a version the
    hub has not recorded. With no publisher the desired configuration is stored and
    reported as pending; ``lantern hub serve`` publishes every stored desired
    configuration again when it starts (:func:`republish_all`), which is harmless:
    a retained message replaces the previous one and a device ignores a version it
    already runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from devices import firmware as fw
from devices.catalog import Device as CatalogDevice
from devices.protocol import (
    DELIVERY,
    ConfigBody,
    ConfigMessage,
    ProtocolError,
    config_topic,
    encode,
)
from hub.db.models import Device

__all__ = [
    "ConfigPublisher",
    "DeviceSpec",
    "UnknownDevice",
    "body_message",
    "device_spec",
    "publish_body",
    "render_and_store",
    "render_for",
    "republish_all",
]

logger = logging.getLogger(__name__)


class ConfigPublisher(Protocol):
    """Something that publishes MQTT messages (``HubMqttClient`` is one)."""

    def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> None:
        """Publish ``payload`` on ``topic``; may hold it until connected."""


class UnknownDevice(LookupError):
    """The device is not registered."""


@dataclass(frozen=True)
class DeviceSpec:
    """What to render for a device and where it came from (for error messages)."""

    device: CatalogDevice
    site: fw.Site | None
    """The site file the device is listed in, if that is where it came from."""
    source: str
    """A device or site file, relative to the configuration folder; or ``registry``."""


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def device_spec(
    config_dir: Path,
    device_id: str,
    model: str,
    site_id: str,
    profile: str | None,
) -> DeviceSpec:
    """What to render for a registered device (see the module docstring for the order).

    Raises :class:`~devices.firmware.ConfigError` for an unreadable or invalid file,
    or a device file whose model is not the registered one.
    """
    devices_dir = config_dir / "devices"
    for suffix in (".yaml", ".yml"):
        path = devices_dir / f"{device_id}{suffix}"
        if path.is_file():
            source = _relative(path, config_dir)
            try:
                device = fw.load_device(path)
            except fw.ConfigError as exc:
                raise _relabel(exc, str(path), source) from None
            if device.model != model:
                message = f"device is registered as model {model!r}, not {device.model!r}"
                raise fw.ConfigError([fw.FieldIssue("model", message, source)])
            return DeviceSpec(device, None, source)
    sites_dir = config_dir / "sites"
    if sites_dir.is_dir():
        for path in sorted(sites_dir.iterdir()):
            if path.suffix not in (".yaml", ".yml") or not path.is_file():
                continue
            source = _relative(path, config_dir)
            try:
                site = fw.load_site(path)
            except fw.ConfigError as exc:
                raise _relabel(exc, str(path), source) from None
            if any(entry.device_id == device_id for entry in site.devices):
                device = site.device(device_id)
                if device.model != model:
                    message = f"device is registered as model {model!r}, not {device.model!r}"
                    where = f"devices.{site.index_of(device_id)}.model"
                    raise fw.ConfigError([fw.FieldIssue(where, message, source)])
                return DeviceSpec(device, site, source)
    device = CatalogDevice(device_id=device_id, model=model, site=site_id, profile=profile)
    return DeviceSpec(device, None, "registry")


def _relabel(exc: fw.ConfigError, absolute: str, relative: str) -> fw.ConfigError:
    """The issues with the absolute file name replaced by the folder-relative one."""
    return fw.ConfigError(
        [
            fw.FieldIssue(i.path, i.message, relative if i.source in (None, absolute) else i.source)
            for i in exc.issues
        ]
    )


def _previous(row: Device) -> fw.RenderedConfig | None:
    """The last rendered configuration of ``row`` as :func:`fw.next_version` wants it."""
    body = row.desired_config
    if not body:
        return None
    return fw.RenderedConfig(
        device_id=row.device_id,
        model=row.model,
        site=row.site_id,
        profile=row.profile or "unknown",
        version=int(body["version"]),
        sha256=str(body["sha256"]),
        config=dict(body["config"]),
    )


def render_for(
    config_dir: Path,
    *,
    device_id: str,
    model: str,
    site_id: str,
    profile: str | None,
    previous: fw.RenderedConfig | None = None,
) -> fw.RenderedConfig:
    """Render the configuration of a device (registered or about to be);
    :class:`~devices.firmware.ConfigError` if it cannot be."""
    spec = device_spec(config_dir, device_id, model, site_id, profile)
    profiles_dir = config_dir / "profiles"
    try:
        profiles = fw.load_profiles(profiles_dir)
    except fw.ConfigError as exc:
        raise _relabel(exc, str(profiles_dir), _relative(profiles_dir, config_dir)) from None
    if spec.site is not None:
        return fw.render_site_device(
            spec.site, device_id, profiles, source=spec.source, previous=previous
        )
    source = None if spec.source == "registry" else spec.source
    return fw.render(spec.device, profiles, device_source=source, previous=previous)


def render_and_store(session: Session, device_id: str, config_dir: Path) -> fw.RenderedConfig:
    """Render ``device_id``'s configuration and store it as its desired configuration,
    in the caller's write transaction (the row is locked first). Returns what was
    rendered; its version equals the stored one when the content did not change.

    Raises :class:`UnknownDevice` and :class:`~devices.firmware.ConfigError`.
    """
    row = session.get(Device, device_id, with_for_update=True)
    if row is None:
        raise UnknownDevice(device_id)
    rendered = render_for(
        config_dir,
        device_id=row.device_id,
        model=row.model,
        site_id=row.site_id,
        profile=row.profile,
        previous=_previous(row),
    )
    body = rendered.body()
    try:
        body_message(device_id, body)  # refuse now what could not be published
    except ProtocolError as exc:
        raise fw.ConfigError([fw.FieldIssue("", exc.reason)]) from None
    row.desired_config = body
    row.desired_config_version = rendered.version
    row.desired_config_sha256 = rendered.sha256
    session.flush()
    return rendered


def body_message(device_id: str, body: dict[str, Any], sent_at: datetime | None = None) -> bytes:
    """The encoded ``config`` message carrying a stored body."""
    message = ConfigMessage(
        device_id=device_id,
        sent_at=sent_at or datetime.now(UTC),
        body=ConfigBody.model_validate(body),
    )
    return encode(message)


def publish_body(publisher: ConfigPublisher, device_id: str, body: dict[str, Any]) -> None:
    """Publish a stored configuration body to the device, retained, QoS 1."""
    delivery = DELIVERY["config"]
    publisher.publish(
        config_topic(device_id),
        body_message(device_id, body),
        qos=delivery.qos,
        retain=delivery.retain,
    )
    logger.info("config version %s published to %s", body.get("version"), device_id)


def republish_all(engine: Engine, publisher: ConfigPublisher) -> int:
    """Publish every stored desired configuration again; how many were published.

    A body that no longer validates (it should not happen) is logged and skipped.
    """
    count = 0
    with Session(engine) as session:
        rows = session.execute(
            select(Device.device_id, Device.desired_config)
            .where(Device.desired_config.is_not(None))
            .order_by(Device.device_id)
        )
        stored = [(device_id, body) for device_id, body in rows if body]
    for device_id, body in stored:
        try:
            publish_body(publisher, device_id, body)
        except ValueError:
            logger.exception("stored config of %s cannot be published", device_id)
            continue
        count += 1
    logger.info("republished %d stored device configuration(s)", count)
    return count
