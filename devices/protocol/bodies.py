"""The bodies of messages: what a position, alarm, sighting ... says.

Units are SI and named in each description: metres, metres per second, degrees,
dBm, percent, seconds. Every optional field may be left out or sent as ``null``; the
canonical form leaves it out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Annotated, Literal, Self, get_args

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    Strict,
    ValidationInfo,
    field_validator,
    model_validator,
)

from devices.protocol.canonical import canonical_json
from devices.protocol.embedding import (
    DEFAULT_EMBEDDING_DIMS,
    MAX_EMBEDDING_DIM,
    NORM_TOLERANCE,
    EmbeddingDims,
    decode_embedding,
)
from devices.protocol.errors import ErrorCode, ProtocolError
from devices.protocol.fields import (
    AlarmId,
    EventId,
    FirmwareVersion,
    ModelId,
    Sha256Hex,
)

__all__ = [
    "ALARM_TYPES",
    "MAX_ACK_IDS",
    "MAX_CONFIG_ERROR_CHARS",
    "MAX_CROP_BYTES",
    "AckBody",
    "AlarmBody",
    "AlarmType",
    "CheckinBody",
    "ConfigBody",
    "LocateBody",
    "PositionBody",
    "RebootBody",
    "Rejection",
    "SightingBody",
    "SightingQuality",
    "StateBody",
    "StrictModel",
    "SyncWatchlistBody",
    "TelemetryBody",
    "config_sha256",
]

MAX_CROP_BYTES = 64 * 1024
"""Largest face crop (JPEG bytes, before base64) a sighting may carry."""

MAX_ACK_IDS = 1000
"""Most event ids (stored plus rejected) in one ack."""

MAX_CONFIG_ERROR_CHARS = 300
"""Longest ``config_error`` a state may carry; a device shortens longer reasons."""

_I64 = 2**63 - 1


class StrictModel(BaseModel):
    """Base of every protocol model: unknown fields refused, no type coercion.

    ``strict=True`` means a JSON string is not taken for a number, nor ``1`` for
    ``true``, nor ``5.0`` for an integer; an integer is taken for a float. NaN and
    infinities are refused. Instances are immutable.
    """

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        allow_inf_nan=False,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
    )


Percent = Annotated[int, Field(ge=0, le=100)]
Rssi = Annotated[int, Field(ge=-150, le=0)]
Strap = Literal["closed", "open"]


class PositionBody(StrictModel):
    """A location fix of a wearable or other tracked device."""

    lat: float = Field(ge=-90, le=90, description="Latitude, degrees WGS84, north positive.")
    lon: float = Field(ge=-180, le=180, description="Longitude, degrees WGS84, east positive.")
    acc: float = Field(
        ge=0,
        le=100_000,
        description="Horizontal accuracy, metres: the radius of the circle the device is "
        "believed to be in (about 68% confidence). Required: geofences judge with it.",
    )
    src: Literal["gnss", "wifi", "cell", "ble_beacon", "uwb"] = Field(
        description="Where the fix came from. Required: a cell fix and a GNSS fix of the "
        "same accuracy are not equally trusted.",
    )
    alt: float | None = Field(
        default=None, ge=-1_000, le=50_000, description="Altitude, metres above mean sea level."
    )
    vel: float | None = Field(default=None, ge=0, le=500, description="Speed, metres per second.")
    cog: float | None = Field(
        default=None,
        ge=0,
        le=360,
        description="Course over ground, degrees clockwise from true north.",
    )
    sat: int | None = Field(default=None, ge=0, le=255, description="Satellites used in the fix.")
    hdop: float | None = Field(
        default=None, ge=0, le=100, description="Horizontal dilution of precision."
    )
    batt: Percent | None = Field(default=None, description="Battery charge, percent.")
    charging: bool | None = Field(default=None, description="True while on external power.")
    strap: Strap | None = Field(
        default=None, description="Strap circuit of a worn device: closed (worn) or open."
    )
    rssi: Rssi | None = Field(default=None, description="Cellular signal strength, dBm.")


AlarmType = Literal[
    "strap.tamper",
    "case.tamper",
    "sos",
    "fall",
    "battery.low",
    "battery.critical",
    "power.cut",
    "gnss.jamming",
    "outbox.full",
    "watchlist.hit",
]
ALARM_TYPES: tuple[AlarmType, ...] = get_args(AlarmType)


class AlarmBody(StrictModel):
    """A condition raised on the device; ``active`` when it starts, ``cleared`` when it
    ends, both with the same ``alarm_id``."""

    type: AlarmType = Field(
        description="What happened. outbox.full: the device's outbox of unsent events is "
        "full and it has begun to drop or refuse events. watchlist.hit: a local match "
        "on an edge camera (the sighting is in related_event_id)."
    )
    state: Literal["active", "cleared"] = Field(description="Raised or ended.")
    alarm_id: AlarmId = Field(
        description="Names one occurrence, so the hub pairs its active and cleared events."
    )
    position: PositionBody | None = Field(
        default=None, description="Where the device was when the alarm changed, if known."
    )
    related_event_id: EventId | None = Field(
        default=None, description="Another event this alarm refers to, e.g. the sighting."
    )
    detail: str | None = Field(
        default=None, max_length=200, description="A short note for people; not parsed."
    )


class SightingQuality(StrictModel):
    """How good the face was, as measured on the edge (see ``models.quality``)."""

    det_score: float = Field(
        ge=-1_000,
        le=1_000,
        description="The detector's confidence; its scale depends on the detector "
        "(dlib HOG: an SVM margin; YuNet, SCRFD: 0..1).",
    )
    detector: str | None = Field(
        default=None,
        max_length=64,
        description="The detector that gave det_score, e.g. dlib-hog, yunet, scrfd.",
    )
    face_px: int = Field(
        ge=1, le=100_000, description="Shorter side of the detector's box, pixels."
    )
    iod_px: float | None = Field(
        default=None, ge=0, le=100_000, description="Distance between the eye centres, pixels."
    )
    sharpness: float | None = Field(
        default=None,
        ge=0,
        le=1e9,
        description="Variance of the Laplacian of the aligned crop's centre: higher is "
        "sharper. Named for what it measures; a field called blur invites reading it "
        "upside down.",
    )
    yaw: float | None = Field(
        default=None, ge=-90, le=90, description="Head yaw estimate, degrees."
    )
    pitch: float | None = Field(
        default=None, ge=-90, le=90, description="Head pitch estimate, degrees (down positive)."
    )


# Arrays are tuples in Python; a strict tuple field would refuse the list JSON gives,
# so these fields are lax and their items strict.
BBoxCoord = Annotated[float, Strict(), Field(ge=-100_000, le=100_000)]
FramePx = Annotated[int, Strict(), Field(ge=1, le=100_000)]


class SightingBody(StrictModel):
    """A face seen by a camera: its embedding, quality, where in the frame, and which
    track it belongs to."""

    model_id: ModelId = Field(
        description="The embedding model (and alignment) that made the vector; vectors "
        "are comparable only between equal model_ids."
    )
    embedding: str = Field(
        max_length=(MAX_EMBEDDING_DIM * 4 + 2) // 3 * 4,
        description="Base64 of the vector as little-endian float32, L2-normalised (norm "
        "within 1e-3 of 1), of the dimension of model_id.",
    )
    quality: SightingQuality = Field(description="Quality measures of the face.")
    bbox: tuple[BBoxCoord, BBoxCoord, BBoxCoord, BBoxCoord] = Field(
        strict=False,
        description="Face box x0, y0, x1, y1 in the source frame's pixels (may extend "
        "past the frame's edges, as detector boxes do).",
    )
    frame: tuple[FramePx, FramePx] | None = Field(
        default=None, strict=False, description="Width and height of the source frame, pixels."
    )
    track_id: int = Field(
        ge=0, le=_I64, description="The tracker's id of this face within the boot."
    )
    frames_fused: int = Field(
        ge=1, le=10_000, description="How many frames of the track went into this sighting."
    )
    crop_jpeg: str | None = Field(
        default=None,
        max_length=(MAX_CROP_BYTES + 2) // 3 * 4,
        description="Base64 JPEG of the face, at most 64 KiB before base64; only where "
        "the site allows crops to leave the camera.",
    )

    @field_validator("bbox")
    @classmethod
    def _corners(cls, bbox: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        x0, y0, x1, y1 = bbox
        if not (x1 > x0 and y1 > y0):
            raise ValueError(f"bbox {list(bbox)} needs x1 > x0 and y1 > y0")
        return bbox

    @field_validator("embedding")
    @classmethod
    def _embedding(cls, embedding: str, info: ValidationInfo) -> str:
        model_id = info.data.get("model_id")
        if not isinstance(model_id, str):
            return embedding  # model_id itself failed; that error is reported
        context = info.context if isinstance(info.context, dict) else {}
        dims = context.get("dims")
        table = dims if isinstance(dims, EmbeddingDims) else DEFAULT_EMBEDDING_DIMS
        dim = table.dim(model_id)
        if dim is None:
            raise ValueError(
                f"dimension of model_id {model_id!r} is unknown; add it to the receiver's "
                "embedding dims table"
            )
        try:
            vector = decode_embedding(embedding, dim)
        except ProtocolError as exc:
            raise ValueError(f"{exc.reason} for {model_id}") from None
        norm = float(np.linalg.norm(vector.astype(np.float64)))
        if abs(norm - 1.0) > NORM_TOLERANCE:
            raise ValueError(f"L2 norm is {norm:.6g}, not 1 within {NORM_TOLERANCE}")
        return embedding

    @field_validator("crop_jpeg")
    @classmethod
    def _crop(cls, crop: str | None) -> str | None:
        if crop is None:
            return None
        try:
            jpeg = base64.b64decode(crop.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise ValueError("not valid base64") from None
        if len(jpeg) > MAX_CROP_BYTES:
            raise ValueError(f"{len(jpeg)} bytes is over {MAX_CROP_BYTES}")
        if not jpeg.startswith(b"\xff\xd8\xff"):
            raise ValueError("not a JPEG (no FF D8 FF start)")
        return crop


class CheckinBody(StrictModel):
    """A periodic heartbeat: the device is alive and says when to expect the next one."""

    next_checkin_s: int = Field(
        ge=10,
        le=7 * 86_400,
        description="Seconds until the next check-in; the hub treats the device as "
        "silent when it is overdue.",
    )
    batt: Percent | None = Field(default=None, description="Battery charge, percent.")
    charging: bool | None = Field(default=None, description="True while on external power.")
    strap: Strap | None = Field(default=None, description="Strap circuit: closed or open.")
    rssi: Rssi | None = Field(default=None, description="Signal strength, dBm.")
    uptime_s: int | None = Field(default=None, ge=0, le=_I64, description="Seconds since boot.")
    outbox_depth: int | None = Field(
        default=None, ge=0, le=_I64, description="Events waiting in the outbox."
    )


class TelemetryBody(StrictModel):
    """Device health, sent often at QoS 0; losing some is fine."""

    batt: Percent | None = Field(default=None, description="Battery charge, percent.")
    charging: bool | None = Field(default=None, description="True while on external power.")
    rssi: Rssi | None = Field(default=None, description="Signal strength, dBm.")
    temp_c: float | None = Field(
        default=None, ge=-60, le=150, description="Device temperature, degrees Celsius."
    )
    outbox_depth: int | None = Field(
        default=None, ge=0, le=_I64, description="Events waiting in the outbox."
    )
    uptime_s: int | None = Field(default=None, ge=0, le=_I64, description="Seconds since boot.")
    disk_free_mb: int | None = Field(
        default=None, ge=0, le=_I64, description="Free storage for the outbox, MiB."
    )


class StateBody(StrictModel):
    """Online/offline presence: the birth message on connect and the Last Will."""

    status: Literal["online", "offline"] = Field(
        description="online: published on connect; offline: the broker publishes the "
        "Last Will when the connection is lost, or the device on a clean shutdown."
    )
    fw: FirmwareVersion = Field(description="Firmware version running.")
    hw_model: str | None = Field(
        default=None, max_length=64, description="Catalog model of the hardware."
    )
    config_version: int | None = Field(
        default=None, ge=0, le=_I64, description="Version of the configuration applied."
    )
    config_sha256: Sha256Hex | None = Field(
        default=None, description="SHA-256 of the applied configuration's canonical JSON."
    )
    config_error: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_CONFIG_ERROR_CHARS,
        description="Why the last configuration the hub pushed was refused; the "
        "configuration in force is still config_version. Left out once a pushed "
        "configuration is applied (or is the one in force). Since lantern.state/2.",
    )

    @model_validator(mode="after")
    def _config_pair(self) -> Self:
        if (self.config_version is None) != (self.config_sha256 is None):
            raise ValueError("config_version and config_sha256 go together")
        return self


class Rejection(StrictModel):
    """An event the hub will not store (it is quarantined): the device may delete it."""

    event_id: EventId = Field(description="The refused event.")
    code: ErrorCode = Field(description="Why, as a protocol error code.")


class AckBody(StrictModel):
    """Events the hub has dealt with. The outbox deletes an event only when its id is
    in ``event_ids`` (durably stored) or ``rejected`` (quarantined, resending is
    pointless); never on MQTT PUBACK."""

    event_ids: list[EventId] = Field(
        default_factory=list,
        max_length=MAX_ACK_IDS,
        description="Event ids durably stored (or already stored: duplicates are acked).",
    )
    rejected: list[Rejection] = Field(
        default_factory=list,
        max_length=MAX_ACK_IDS,
        description="Events refused for good, with the reason code.",
    )

    @model_validator(mode="after")
    def _check(self) -> Self:
        ids = [*self.event_ids, *(r.event_id for r in self.rejected)]
        if not ids:
            raise ValueError("an ack must name at least one event")
        if len(ids) > MAX_ACK_IDS:
            raise ValueError(f"an ack names at most {MAX_ACK_IDS} events, not {len(ids)}")
        if len(set(ids)) != len(ids):
            raise ValueError("an ack names an event more than once")
        return self


def config_sha256(config: dict[str, JsonValue]) -> str:
    """Hex SHA-256 of a configuration's canonical JSON (see ``canonical``)."""
    return hashlib.sha256(canonical_json(config)).hexdigest()


class ConfigBody(StrictModel):
    """The configuration in force for the device. The typed profiles are in
    ``devices.firmware``; here it is a JSON object, checked against its hash."""

    version: int = Field(ge=1, le=_I64, description="Increases with every change.")
    sha256: Sha256Hex = Field(description="SHA-256 of the canonical JSON of config.")
    config: dict[str, JsonValue] = Field(description="The configuration itself.")

    @model_validator(mode="after")
    def _hash(self) -> Self:
        actual = config_sha256(self.config)
        if actual != self.sha256:
            raise ValueError(
                f"sha256 {self.sha256[:12]}... does not match config ({actual[:12]}...)"
            )
        return self


class RebootBody(StrictModel):
    """Restart the device."""

    delay_s: int = Field(default=0, ge=0, le=3_600, description="Seconds to wait first.")
    reason: str | None = Field(default=None, max_length=200, description="For the device log.")


class LocateBody(StrictModel):
    """Take a fix now and send it as a position event."""

    timeout_s: int = Field(
        default=60, ge=1, le=600, description="Give up on a fix after this many seconds."
    )


class SyncWatchlistBody(StrictModel):
    """Fetch the edge watchlist of this version."""

    version: int = Field(ge=0, le=_I64, description="Watchlist version to fetch.")
    sha256: Sha256Hex | None = Field(default=None, description="SHA-256 of that version.")
