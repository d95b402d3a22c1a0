"""Registered devices: list and read (admin, officer, analyst); register, rotate a
credential and push configuration (admin); read the configuration (admin, officer).

Registration (``POST /devices``)
    Checks the device id, model, site (it must exist: ``POST /sites`` first) and that
    a configuration can be rendered for the device, and only then registers it with
    :func:`hub.provision_cli.provision_device` (which issues the credential and audits
    ``device.provision``). So a request refused with 422 leaves nothing behind, and
    a 201 always carries the secret, which is shown this once and never again: a
    registration is never rolled back after the secret exists. The configuration is
    then rendered, stored and published (:mod:`hub.configpush`); should that render
    fail after all (the configuration folder changed in between), the device stays
    registered, the answer says ``push: "error"`` with the reasons, and
    ``POST /devices/{id}/config`` pushes once the folder is fixed.

Publishing
    The API publishes through ``app.state.config_publisher`` (set by ``lantern hub
    serve`` to its MQTT connection). Without one the desired configuration is stored
    and reported as ``pending_push``; ``serve`` publishes it when it next starts.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from devices import firmware as fw
from devices.catalog import UnknownModelError, get_model
from devices.protocol import ProtocolError, validate_device_id
from hub import audit
from hub.api.deps import AuthUser, DbSession, EngineDep, PageParams, paginate, require
from hub.api.schemas import (
    ConfigPushState,
    DeviceConfigPublic,
    DeviceCreate,
    DevicePublic,
    DeviceRegistered,
    DeviceStatus,
    Page,
    SecretIssued,
)
from hub.configpush import (
    ConfigPublisher,
    UnknownDevice,
    publish_body,
    render_and_store,
    render_for,
)
from hub.db.engine import write_session
from hub.db.models import Device, Site
from hub.db.users import Role
from hub.provision_cli import AlreadyProvisioned, provision_device

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/devices", tags=["devices"])

Reader = Annotated[AuthUser, Depends(require(Role.admin, Role.officer, Role.analyst))]
Admin = Annotated[AuthUser, Depends(require(Role.admin))]
ConfigReader = Annotated[AuthUser, Depends(require(Role.admin, Role.officer))]

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "No such device."}}


def _invalid(loc: list[str | int], message: str, kind: str = "value_error") -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors."""
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail=[{"loc": loc, "msg": message, "type": kind}],
    )


def _config_invalid(exc: fw.ConfigError, *, registry_loc: list[str | int]) -> HTTPException:
    """A 422 listing every issue of a configuration that cannot be rendered. An issue
    in a file sits at ``["config", file, *field path]``; one in what the registry (or
    the request) says at ``registry_loc + field path``."""
    detail: list[dict[str, Any]] = []
    for issue in exc.issues:
        parts: list[str | int] = [int(p) if p.isdigit() else p for p in issue.path.split(".") if p]
        if issue.source is None or issue.source.startswith("device "):
            loc = [*registry_loc, *parts]
        else:
            loc = ["config", issue.source, *parts]
        detail.append({"loc": loc, "msg": issue.message, "type": "config_error"})
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=detail)


def _read_device(engine: Engine, device_id: str) -> Device:
    """The device row as committed now (a fresh session, not the request's)."""
    with Session(engine, expire_on_commit=False) as session:
        device = session.get(Device, device_id)
    if device is None:  # pragma: no cover - deleted by another request meanwhile
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such device")
    return device


def _publisher(request: Request) -> ConfigPublisher | None:
    publisher: ConfigPublisher | None = getattr(request.app.state, "config_publisher", None)
    return publisher


def _config_dir(request: Request) -> Path:
    config_dir: Path = request.app.state.settings.config_dir
    return config_dir


def _config_public(
    device: Device, push: ConfigPushState = "none", render_error: list[str] | None = None
) -> DeviceConfigPublic:
    return DeviceConfigPublic(
        device_id=device.device_id,
        desired_version=device.desired_config_version,
        desired_sha256=device.desired_config_sha256,
        applied_version=device.applied_config_version,
        applied_sha256=device.applied_config_sha256,
        in_sync=device.desired_config_sha256 is not None
        and device.applied_config_sha256 == device.desired_config_sha256,
        config_error=device.config_error,
        desired=device.desired_config or None,
        push=push,
        render_error=render_error,
    )


def _push(engine: Engine, request: Request, device_id: str, caller: AuthUser) -> DeviceConfigPublic:
    """Render, store (audited ``device.config_push``) and publish a device's config.
    Raises :class:`UnknownDevice` and :class:`devices.firmware.ConfigError`."""
    with write_session(engine) as session:
        rendered = render_and_store(session, device_id, _config_dir(request))
        audit.append(
            session,
            actor=caller.username,
            role=caller.role.value,
            action="device.config_push",
            target=f"device:{device_id}",
            result=f"version={rendered.version} sha256={rendered.sha256} "
            f"profile={rendered.profile}",
        )
        device = session.get(Device, device_id)
        assert device is not None  # locked and read by render_and_store
    publisher = _publisher(request)
    push: ConfigPushState = "pending_push"
    if publisher is not None and device.desired_config:
        publish_body(publisher, device_id, device.desired_config)
        push = "published"
    return _config_public(device, push)


@router.get("", response_model=Page[DevicePublic], summary="List devices")
def list_devices(
    _caller: Reader,
    session: DbSession,
    page: PageParams,
    site_id: Annotated[str | None, Query(max_length=64, description="Only this site.")] = None,
    status_: Annotated[
        DeviceStatus | None, Query(alias="status", description="Only this status.")
    ] = None,
) -> Page[DevicePublic]:
    """Devices by id, a page at a time."""
    stmt = select(Device)
    if site_id is not None:
        stmt = stmt.where(Device.site_id == site_id)
    if status_ is not None:
        stmt = stmt.where(Device.status == status_)
    return paginate(session, stmt, page, DevicePublic.model_validate, Device.device_id)


@router.get(
    "/{device_id}", response_model=DevicePublic, summary="Read a device", responses=_NOT_FOUND
)
def get_device(device_id: str, _caller: Reader, session: DbSession) -> DevicePublic:
    """One device by id."""
    device = session.get(Device, device_id)
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such device")
    return DevicePublic.model_validate(device)


@router.post(
    "",
    response_model=DeviceRegistered,
    status_code=status.HTTP_201_CREATED,
    summary="Register a device",
    responses={
        409: {"description": "The device is registered already."},
        422: {"description": "Bad id, unknown model or site, or no renderable config."},
    },
)
def post_device(
    body: DeviceCreate, caller: Admin, engine: EngineDep, session: DbSession, request: Request
) -> DeviceRegistered:
    """Register a device, issue its broker credential (the secret is in this answer
    only) and render, store and publish its configuration (audited)."""
    try:
        validate_device_id(body.device_id)
    except ProtocolError as exc:
        raise _invalid(["body", "device_id"], exc.reason) from exc
    try:
        model = get_model(body.model)
    except UnknownModelError as exc:
        raise _invalid(["body", "model"], exc.message) from exc
    if session.get(Device, body.device_id) is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="device already registered")
    if session.get(Site, body.site_id) is None:
        raise _invalid(["body", "site_id"], f"no site {body.site_id!r}; create it first")
    try:  # a dry run: refuse before anything is registered
        render_for(
            _config_dir(request),
            device_id=body.device_id,
            model=model.id,
            site_id=body.site_id,
            profile=body.profile,
        )
    except fw.ConfigError as exc:
        raise _config_invalid(exc, registry_loc=["body"]) from exc
    try:
        done = provision_device(
            engine,
            body.device_id,
            model.id,
            body.site_id,
            actor=caller.username,
            actor_role=caller.role.value,
        )
    except AlreadyProvisioned as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail="device already registered") from exc
    if body.profile is not None:
        with write_session(engine) as write:
            row = write.get(Device, body.device_id)
            if row is not None:
                row.profile = body.profile
    try:
        config = _push(engine, request, body.device_id, caller)
    except (fw.ConfigError, UnknownDevice) as exc:
        logger.warning("device %s registered but its config not rendered: %s", body.device_id, exc)
        config = _config_public(
            _read_device(engine, body.device_id), "error", str(exc).splitlines()
        )
    device = _read_device(engine, body.device_id)
    return DeviceRegistered(
        device=DevicePublic.model_validate(device),
        broker_username=done.credential.device_id,
        secret=done.credential.secret,
        config=config,
    )


@router.post(
    "/{device_id}/credentials/rotate",
    response_model=SecretIssued,
    summary="Rotate a device's credential",
    responses=_NOT_FOUND,
)
def post_rotate(
    device_id: str, caller: Admin, engine: EngineDep, session: DbSession
) -> SecretIssued:
    """Issue a new secret (shown in this answer only). The old one stops working for the
    API at once and for the broker once its files are regenerated (``lantern broker
    config``); audited ``device.rotate_credential``."""
    device = session.get(Device, device_id)
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such device")
    done = provision_device(
        engine,
        device_id,
        device.model,
        device.site_id,
        rotate=True,
        actor=caller.username,
        actor_role=caller.role.value,
    )
    return SecretIssued(
        device_id=device_id,
        broker_username=done.credential.device_id,
        secret=done.credential.secret,
        rotated=done.rotated,
    )


@router.get(
    "/{device_id}/config",
    response_model=DeviceConfigPublic,
    summary="Read a device's desired and applied configuration",
    responses=_NOT_FOUND,
)
def get_config(device_id: str, _caller: ConfigReader, session: DbSession) -> DeviceConfigPublic:
    """The configuration the hub wants the device to run (version, hash and body) and
    the one the device reports it runs, with its last refusal reason."""
    device = session.get(Device, device_id)
    if device is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such device")
    return _config_public(device)


@router.post(
    "/{device_id}/config",
    response_model=DeviceConfigPublic,
    summary="Render and push a device's configuration",
    responses={**_NOT_FOUND, 422: {"description": "The configuration cannot be rendered."}},
)
def post_config(
    device_id: str, caller: Admin, engine: EngineDep, request: Request
) -> DeviceConfigPublic:
    """Render the device's configuration from the firmware configuration folder again,
    store it (a new version only if it changed) and publish it retained (audited)."""
    try:
        return _push(engine, request, device_id, caller)
    except UnknownDevice as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="no such device") from exc
    except fw.ConfigError as exc:
        raise _config_invalid(exc, registry_loc=["device"]) from exc
