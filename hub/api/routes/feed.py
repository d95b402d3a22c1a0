"""The live situation feed: ``GET /api/v1/feed`` upgraded to a WebSocket.

Roles: admin, officer, analyst (:data:`FEED_ROLES`). WebSocket routes are not
``APIRoute`` objects, so the app factory's guard check and the OpenAPI document do
not see this one; it checks the caller itself, the same way the role guard does
(valid token, enabled user, admitted role), and its tests check every role.

Protocol
    1. Connect with the token as ``?access_token=...`` (browsers cannot set headers
       on a WebSocket) or an ``Authorization: Bearer ...`` header. Mind that a token
       in a URL may end up in proxy logs: tokens are short-lived for that reason too.
    2. Optional filters: ``site`` (repeatable: ``?site=a&site=b``; default every
       site) and ``types`` (comma list of position, alarm, sighting, device_state;
       default all).
    3. The hub accepts, then checks the token: missing, invalid or expired token,
       disabled user, refused role, or bad filters close the socket with code 1008
       and the reason.
    4. The first message is a :class:`FeedSnapshot` (``"type": "snapshot"``): the
       devices of the chosen sites with their status and latest fix, and the open
       alarms (newest :data:`SNAPSHOT_MAX_ALARMS`). The ``types`` filter applies to
       the deltas, not to the snapshot.
    5. Then one JSON :class:`hub.feed.FeedDelta` per change. The subscription starts
       before the snapshot is read, so a change may show in both: apply deltas
       idempotently (by ``data.event_id``, or the latest ``time`` per device).
    6. A client that falls more than the broker's queue size behind is closed with
       code 4008, reason ``"too slow"``; when the token expires the socket is closed
       with 1008 ``"token expired"``. Either way: reconnect (with a fresh token).
       Messages from the client are read and ignored.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime
from typing import Any, Literal, cast

import anyio
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, exists, select
from sqlalchemy.orm import Session, aliased
from starlette.concurrency import run_in_threadpool

from hub.api.deps import hub_id_of, token_user
from hub.api.schemas import DeviceStatus
from hub.auth import InvalidToken, decode_token
from hub.db.models import Alarm, Device, Position
from hub.db.users import Role
from hub.feed import DELTA_TYPES, TOO_SLOW_CLOSE_CODE, FeedBroker, SubscriberDropped, Subscription
from hub.settings import HubSettings

from .alarms import AlarmPublic, alarm_select
from .positions import PositionFix

__all__ = [
    "FEED_ROLES",
    "MAX_SITES",
    "POLICY_CLOSE_CODE",
    "SNAPSHOT_MAX_ALARMS",
    "FeedSnapshot",
    "SnapshotDevice",
    "broker_of",
    "router",
]

logger = logging.getLogger(__name__)

router = APIRouter(prefix="", tags=["feed"])

FEED_ROLES = frozenset({Role.admin, Role.officer, Role.analyst})
"""Roles admitted to the feed."""

POLICY_CLOSE_CODE = 1008
"""Close code for a refused connection (RFC 6455: policy violation)."""

SNAPSHOT_MAX_ALARMS = 1000
"""Most open alarms a snapshot lists (the newest)."""

MAX_SITES = 100
"""Most ``site`` filters one connection may give."""


class SnapshotDevice(BaseModel):
    """A device as the snapshot shows it."""

    model_config = ConfigDict(extra="forbid")

    device_id: str = Field(description="Device id.")
    site_id: str = Field(description="Site of the device.")
    model: str = Field(description="Hardware model.")
    status: DeviceStatus = Field(description="Connection status.")
    status_changed_at: datetime | None = Field(description="When the status last changed.")
    last_seen_at: datetime | None = Field(description="Time of the last message received.")
    position: PositionFix | None = Field(description="Latest fix by capture time, if any.")


class FeedSnapshot(BaseModel):
    """The first message of the feed: the situation now."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["snapshot"] = Field(description="Always 'snapshot'.")
    time: datetime = Field(description="When the snapshot was read (UTC).")
    sites: list[str] | None = Field(description="The site filter; null: every site.")
    types: list[str] = Field(description="Delta types that will follow.")
    devices: list[SnapshotDevice] = Field(description="Devices of the sites, by id.")
    open_alarms: list[AlarmPublic] = Field(
        description=f"Active alarms not yet cleared, newest first (at most {SNAPSHOT_MAX_ALARMS})."
    )


class _Refused(Exception):
    """A connection the feed will not serve; the message is the close reason."""


def broker_of(websocket: WebSocket) -> FeedBroker:
    """The app's broker (``app.state.feed``), made on first use if the app has none."""
    state = websocket.app.state
    broker: FeedBroker | None = getattr(state, "feed", None)
    if broker is None:
        broker = FeedBroker()
        state.feed = broker
    return broker


def _token_of(websocket: WebSocket) -> str | None:
    token = websocket.query_params.get("access_token")
    if token:
        return token
    scheme, _, value = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _authenticate(state: Any, token: str | None) -> datetime:
    """Check the caller like the role guard does (a token of this hub naming an enabled
    user by id and username; ``state`` is ``app.state``); the token's expiry, or
    _Refused."""
    if not token:
        raise _Refused("not authenticated")
    settings: HubSettings = state.settings
    engine: Engine = state.engine
    try:
        claims = decode_token(
            settings.jwt_secret.get_secret_value(), token, hub_id=hub_id_of(state)
        )
    except InvalidToken as exc:
        logger.info("feed token refused: %s", exc)
        raise _Refused("invalid or expired token") from exc
    with Session(engine) as session:
        user = token_user(session, claims)
        if user is None:
            raise _Refused("user unknown or disabled")
        role = Role(user.role)
    if role not in FEED_ROLES:
        raise _Refused(f"role {role.value} may not do this")
    return claims.expires_at


def _filters(websocket: WebSocket) -> tuple[list[str] | None, list[str]]:
    sites = websocket.query_params.getlist("site")
    if len(sites) > MAX_SITES:
        raise _Refused(f"at most {MAX_SITES} site filters")
    if any(not site or len(site) > 64 for site in sites):
        raise _Refused("site: 1 to 64 characters")
    raw = websocket.query_params.get("types")
    types: list[str] = sorted(DELTA_TYPES)
    if raw is not None:
        types = [t.strip() for t in raw.split(",") if t.strip()]
        unknown = sorted(set(types) - set(DELTA_TYPES))
        if unknown or not types:
            raise _Refused(f"types: unknown {', '.join(unknown) or '(none given)'}")
        types = sorted(set(types))
    return (sorted(set(sites)) if sites else None), types


def _snapshot(engine: Engine, sites: list[str] | None, types: list[str]) -> FeedSnapshot:
    latest_id = (
        select(Position.id)
        .where(Position.device_id == Device.device_id)
        .order_by(Position.captured_at.desc(), Position.id.desc())
        .limit(1)
        .correlate(Device)
        .scalar_subquery()
    )
    devices_stmt = select(Device, Position).outerjoin(Position, Position.id == latest_id)
    cleared = aliased(Alarm)
    alarms_stmt = alarm_select().where(
        Alarm.state == "active",
        ~exists().where(
            cleared.device_id == Alarm.device_id,
            cleared.alarm_id == Alarm.alarm_id,
            cleared.state == "cleared",
        ),
    )
    if sites is not None:
        devices_stmt = devices_stmt.where(Device.site_id.in_(sites))
        alarms_stmt = alarms_stmt.where(Device.site_id.in_(sites))
    with Session(engine) as session:
        devices = [
            SnapshotDevice(
                device_id=device.device_id,
                site_id=device.site_id,
                model=device.model,
                status=cast(DeviceStatus, device.status),
                status_changed_at=device.status_changed_at,
                last_seen_at=device.last_seen_at,
                position=PositionFix.model_validate(position) if position is not None else None,
            )
            for device, position in session.execute(devices_stmt.order_by(Device.device_id))
        ]
        alarms = [
            AlarmPublic.of(alarm, site)
            for alarm, site in session.execute(
                alarms_stmt.order_by(Alarm.captured_at.desc(), Alarm.id.desc()).limit(
                    SNAPSHOT_MAX_ALARMS
                )
            )
        ]
    return FeedSnapshot(
        type="snapshot",
        time=datetime.now(UTC),
        sites=sites,
        types=types,
        devices=devices,
        open_alarms=alarms,
    )


async def _pump(websocket: WebSocket, subscription: Subscription) -> None:
    while True:
        delta = await subscription.get()
        await websocket.send_text(delta.model_dump_json())


async def _drain(websocket: WebSocket) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):  # the client may be gone already
        await websocket.close(code=code, reason=reason)


@router.websocket("/feed")
async def live_feed(websocket: WebSocket) -> None:
    """The live situation feed (WebSocket). Roles: admin, officer, analyst.

    Query: ``access_token`` (or an ``Authorization: Bearer`` header), ``site``
    (repeatable), ``types`` (comma list). Sends a snapshot, then deltas; see the
    module docstring for the close codes."""
    await websocket.accept()
    app_state: Any = websocket.app.state
    try:
        expires_at = await run_in_threadpool(_authenticate, app_state, _token_of(websocket))
        sites, types = _filters(websocket)
    except _Refused as refused:
        await _close(websocket, POLICY_CLOSE_CODE, str(refused))
        return
    broker = broker_of(websocket)
    subscription = broker.subscribe(sites=sites, types=types)
    try:
        snapshot = await run_in_threadpool(_snapshot, app_state.engine, sites, types)
        await websocket.send_text(snapshot.model_dump_json())
        await _serve(websocket, subscription, expires_at)
    except WebSocketDisconnect:
        logger.debug("feed client left")
    finally:
        broker.unsubscribe(subscription)


async def _serve(websocket: WebSocket, subscription: Subscription, expires_at: datetime) -> None:
    """Send deltas until the client leaves, falls behind or its token expires."""
    outcome: list[str] = []

    async with anyio.create_task_group() as group:

        def end(why: str) -> None:
            outcome.append(why)
            group.cancel_scope.cancel()

        async def pump() -> None:
            try:
                await _pump(websocket, subscription)
            except SubscriberDropped:
                end("too slow")
            except WebSocketDisconnect:
                end("gone")
            except Exception:
                logger.exception("feed sending failed")
                end("error")

        async def drain() -> None:
            try:
                await _drain(websocket)
            except Exception as exc:  # e.g. receive after the disconnect
                logger.debug("feed receive ended: %s", exc)
            end("gone")

        async def expiry() -> None:
            await anyio.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()))
            end("token expired")

        group.start_soon(pump)
        group.start_soon(drain)
        group.start_soon(expiry)
    why = outcome[0] if outcome else "gone"
    if why == "too slow":
        logger.warning("feed client too slow: closing")
        await _close(websocket, TOO_SLOW_CLOSE_CODE, "too slow")
    elif why == "token expired":
        await _close(websocket, POLICY_CLOSE_CODE, "token expired")
    elif why == "error":
        await _close(websocket, 1011, "internal error")
