"""Device configuration as data: firmware profiles, per-device overrides, and the
rendered configuration the hub pushes to a device.

A *profile* is a YAML file of settings for a family of devices
(``firmware_configs/profiles/<name>.yaml``); its ``type`` says which family and so
which model validates it: :class:`WearableProfile` (wristbands and ankle tags),
:class:`CameraProfile` (fixed and body cameras) or :class:`HomeBeaconProfile`. Every
model forbids unknown keys and is strict about types (``"60"`` is not a number), so the
JSON Schema generated from them (:func:`schema_documents`) and the loader agree on
what a valid file is. Checks within one section (``report_interval_s.in_violation`` at
most ``normal``) are model validators; checks against the device's hardware (a profile
switching on fall detection for a model without it) are :func:`verify_profile`, run by
:func:`render`.

:func:`render` turns a :class:`~devices.catalog.Device` into the configuration that
device receives: its profile, deep-merged with the site's overrides for that profile
(when the device comes from a site file) and then with the device's own overrides,
validated as a whole and checked against the device model. Deep merge: mappings merge
key by key, anything else (numbers, strings, lists, ``null``) replaces what was there.
The result carries a ``sha256`` over the canonical JSON of the configuration (keys
sorted, no spaces, UTF-8; see :func:`canonical_json`) and a ``version``, see
:func:`next_version`.

Every failure is a :class:`ConfigError` listing each bad field as
``file: dotted.path: message (got value)``, the path being where the field sits in the
file that set it (``overrides.outbox.max_bytes`` in a device file). YAML syntax errors
give line and column; duplicate keys are errors, not silently the last one.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from devices.catalog import (
    BUILTIN_CATALOG,
    DEVICE_ID_PATTERN,
    SITE_ID_PATTERN,
    Capability,
    Catalog,
    Device,
    DeviceKind,
    DeviceModel,
    UnknownModelError,
)

__all__ = [
    "CONFIG_DIR_ENV",
    "PROFILE_FAMILIES",
    "AdvertisingSettings",
    "BatteryThresholds",
    "CameraAlarms",
    "CameraProfile",
    "ConfigError",
    "CropSettings",
    "DetectorSettings",
    "DeviceSource",
    "DirSource",
    "FieldIssue",
    "FileKind",
    "FileSource",
    "HomeBeaconAlarms",
    "HomeBeaconProfile",
    "IndoorBeacons",
    "LoadedProfile",
    "OfflineWatchlist",
    "OutboxSettings",
    "Overrides",
    "Positioning",
    "PresenceSettings",
    "Profile",
    "QualityGate",
    "RenderedConfig",
    "ReportIntervals",
    "RtspSource",
    "Site",
    "SiteDevice",
    "TrackSettings",
    "WearableAlarms",
    "WearableProfile",
    "canonical_json",
    "check_file",
    "config_sha256",
    "deep_merge",
    "default_config_dir",
    "dump_schema",
    "file_kind",
    "find_device",
    "load_device",
    "load_profile",
    "load_profiles",
    "load_site",
    "load_yaml",
    "next_version",
    "packaged_config_dir",
    "parse_profile",
    "render",
    "render_site_device",
    "schema_documents",
    "verify_profile",
    "write_schemas",
]

logger = logging.getLogger(__name__)

CONFIG_DIR_ENV = "LANTERN_FIRMWARE_DIR"
"""Environment variable naming a firmware configuration folder to use instead of the
packaged ``firmware_configs``."""

_MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$"
_ENV_NAME_PATTERN = r"^[A-Z_][A-Z0-9_]{0,127}$"
_MQTT_KEEPALIVE_MAX = 65535  # the CONNECT packet's keep-alive is a 16-bit count of seconds


class _Settings(BaseModel):
    """Base of every configuration model: unknown keys and loose types are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _cross(field_name: str, message: str, got: object, *related: str) -> PydanticCustomError:
    """An error from a model validator that belongs to one field of that model.

    Pydantic places model-validator errors at the model itself; :class:`ConfigError`
    appends ``field_name`` to the path, and blames whichever file last set ``field_name``
    or one of the ``related`` fields (the other side of the comparison).
    """
    return PydanticCustomError(
        "cross_field",
        message.replace("{", "{{").replace("}", "}}"),
        {"field": field_name, "got": got, "related": ",".join(related)},
    )


# -- shared sections ------------------------------------------------------------------


class OutboxSettings(_Settings):
    """The device's store-and-forward queue (SQLite), kept until the hub acks each event."""

    max_bytes: int = Field(
        4 * 1024 * 1024, gt=0, description="Largest size of the outbox on the device, bytes"
    )
    max_events: int = Field(10_000, gt=0, description="Most events the outbox holds")
    telemetry_drop_policy: Literal["oldest", "newest"] = Field(
        "oldest",
        description="When the outbox is full, telemetry goes first: 'oldest' drops the "
        "oldest telemetry rows, 'newest' refuses new telemetry. Alarms are never dropped "
        "for telemetry",
    )


class BatteryThresholds(_Settings):
    """Charge levels that raise ``battery.low`` and ``battery.critical`` alarms."""

    low_pct: int = Field(20, ge=1, le=99, description="Raise battery.low at or below this")
    critical_pct: int = Field(
        5, ge=1, le=99, description="Raise battery.critical at or below this; below low_pct"
    )

    @model_validator(mode="after")
    def _critical_below_low(self) -> BatteryThresholds:
        if self.critical_pct >= self.low_pct:
            raise _cross(
                "critical_pct",
                f"must be < low_pct ({self.low_pct})",
                self.critical_pct,
                "low_pct",
            )
        return self


Keepalive = Annotated[
    int,
    Field(
        ge=5,
        le=_MQTT_KEEPALIVE_MAX,
        description="MQTT keep-alive, seconds: the client pings when idle this long and the "
        "broker publishes the Last Will (offline) after 1.5 times this without a packet",
    ),
]
Heartbeat = Annotated[
    int,
    Field(
        ge=10,
        le=86_400,
        description="Longest silence, seconds: a device that has published nothing for "
        "this long sends a check-in, so the hub can tell a quiet device from a dead one",
    ),
]
TelemetryInterval = Annotated[
    int,
    Field(
        ge=10,
        le=86_400,
        description="Seconds between telemetry messages (battery, signal) on .../tele",
    ),
]


# -- wearables --------------------------------------------------------------------------


class ReportIntervals(_Settings):
    """How often a wearable reports its position."""

    normal: int = Field(60, gt=0, le=86_400, description="Seconds between positions normally")
    in_violation: int = Field(
        15,
        gt=0,
        le=86_400,
        description="Seconds between positions while a rule is violated (e.g. outside an "
        "inclusion zone); at most normal",
    )

    @model_validator(mode="after")
    def _violation_not_slower(self) -> ReportIntervals:
        if self.in_violation > self.normal:
            raise _cross(
                "in_violation",
                f"must be <= normal ({self.normal})",
                self.in_violation,
                "normal",
            )
        return self


PositionSource = Literal["gnss", "wifi", "cell"]
_DEFAULT_SOURCES: tuple[PositionSource, ...] = ("gnss", "wifi", "cell")


class Positioning(_Settings):
    """How a wearable finds where it is outdoors."""

    sources: list[PositionSource] = Field(
        default_factory=lambda: list(_DEFAULT_SOURCES),
        min_length=1,
        description="Sources to try, in order, until one gives an acceptable fix",
    )
    gnss_accuracy_gate_m: float = Field(
        50.0,
        gt=0,
        le=10_000,
        description="A GNSS fix whose estimated horizontal accuracy is worse than this many "
        "metres is discarded and the next source is tried",
    )
    gnss_fix_timeout_s: int = Field(
        45,
        gt=0,
        le=600,
        description="Give up on a GNSS fix after this many seconds; at most the normal "
        "report interval",
    )

    @field_validator("sources")
    @classmethod
    def _unique(cls, sources: list[PositionSource]) -> list[PositionSource]:
        seen: set[str] = set()
        for source in sources:
            if source in seen:
                raise ValueError(f"{source!r} listed twice")
            seen.add(source)
        return sources


class IndoorBeacons(_Settings):
    """Positioning from fixed BLE beacons (a facility's, or the home beacon)."""

    enabled: bool = Field(False, description="Position from known BLE beacons when heard")
    min_rssi_dbm: int = Field(
        -85, ge=-120, le=0, description="Ignore beacons heard weaker than this, dBm"
    )
    skip_gnss_when_heard: bool = Field(
        True,
        description="While a known beacon is heard, report its position (src ble_beacon) "
        "and leave the GNSS receiver off",
    )


class WearableAlarms(_Settings):
    """Which alarms a wearable raises; each needs the matching capability."""

    strap_tamper: bool = Field(True, description="strap.tamper when the strap is cut or opened")
    case_tamper: bool = Field(False, description="case.tamper when the case is opened")
    sos: bool = Field(False, description="sos when the wearer presses the help button")
    fall: bool = Field(False, description="fall when the accelerometer detects a fall")
    gnss_jamming: bool = Field(False, description="gnss.jamming when jamming is detected")


class WearableProfile(_Settings):
    """Settings for wristbands and ankle tags."""

    type: Literal["wearable"] = Field("wearable", description="Profile family")
    report_interval_s: ReportIntervals = Field(default_factory=ReportIntervals)
    positioning: Positioning = Field(default_factory=Positioning)
    indoor_beacons: IndoorBeacons = Field(default_factory=IndoorBeacons)
    heartbeat_s: Heartbeat = 300
    telemetry_interval_s: TelemetryInterval = 900
    mqtt_keepalive_s: Keepalive = 60
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    battery: BatteryThresholds = Field(default_factory=BatteryThresholds)
    alarms: WearableAlarms = Field(default_factory=WearableAlarms)

    @model_validator(mode="after")
    def _fix_fits_interval(self) -> WearableProfile:
        timeout = self.positioning.gnss_fix_timeout_s
        if "gnss" in self.positioning.sources and timeout > self.report_interval_s.normal:
            raise _cross(
                "positioning.gnss_fix_timeout_s",
                f"must be <= report_interval_s.normal ({self.report_interval_s.normal})",
                timeout,
                "report_interval_s.normal",
            )
        return self


# -- cameras ----------------------------------------------------------------------------


class RtspSource(_Settings):
    """An RTSP stream (the camera's own, on loopback, or another's)."""

    kind: Literal["rtsp"] = "rtsp"
    url: str = Field(
        pattern=r"^rtsps?://[^\s]+$",
        description="rtsp:// or rtsps:// URL without credentials",
    )
    transport: Literal["tcp", "udp"] = Field("tcp", description="RTP transport")
    credentials_env: str | None = Field(
        None,
        pattern=_ENV_NAME_PATTERN,
        description="Environment variable on the device holding 'user:password' for the "
        "stream; credentials never travel in the configuration",
    )

    @field_validator("url")
    @classmethod
    def _no_credentials(cls, url: str) -> str:
        if "@" in urlsplit(url).netloc:
            # Its own error type, so the message does not repeat the URL and its secret.
            raise PydanticCustomError(
                "credentials_in_url",
                "credentials must not be in the URL (the configuration is published as a "
                "retained MQTT message); name an environment variable in credentials_env",
            )
        return url


class FileSource(_Settings):
    """A video file on the device (tests, demonstrations, replays)."""

    kind: Literal["file"] = "file"
    path: str = Field(min_length=1, description="Path of the video file on the device")
    loop: bool = Field(False, description="Start again at the end")


class DirSource(_Settings):
    """A folder of still images on the device, read in name order."""

    kind: Literal["dir"] = "dir"
    path: str = Field(min_length=1, description="Folder on the device")
    pattern: str = Field("*.jpg", min_length=1, description="Glob of the files to read")


class DeviceSource(_Settings):
    """A local capture device (the body camera's own sensor)."""

    kind: Literal["device"] = "device"
    index: int = Field(0, ge=0, le=63, description="Capture device index (0: the first)")


Source = Annotated[RtspSource | FileSource | DirSource | DeviceSource, Field(discriminator="kind")]


class DetectorSettings(_Settings):
    """The face detector the camera runs."""

    type: Literal["dlib_hog", "dlib_cnn", "yunet", "scrfd"] = Field(
        "dlib_hog", description="Detector: dlib HOG or MMOD CNN, OpenCV YuNet, or SCRFD"
    )
    score_threshold: float | None = Field(
        None,
        description="Drop detections scoring below this; the scale depends on the detector "
        "(yunet and scrfd: 0-1; dlib: a margin, may be negative). None: its default",
    )
    every_n_frames: int = Field(
        1,
        ge=1,
        le=100,
        description="Detect on every n-th processed frame; the tracker carries faces between",
    )
    max_faces: int = Field(20, ge=1, le=256, description="Most faces kept per frame")

    @model_validator(mode="after")
    def _score_scale(self) -> DetectorSettings:
        score = self.score_threshold
        if self.type in ("yunet", "scrfd") and score is not None and not 0 <= score <= 1:
            raise _cross(
                "score_threshold", f"must be within 0-1 for the {self.type} detector", score
            )
        return self


class QualityGate(_Settings):
    """Thresholds of the face quality gate; ``null`` turns a check off.

    The names, defaults and bounds are those of ``models.quality.QualityConfig``, so the
    edge agent builds one from this section as it is.
    """

    min_inter_ocular_px: float | None = Field(
        20.0, ge=0, description="Least distance between the eye centres, image pixels"
    )
    min_box_px: float | None = Field(
        40.0, ge=0, description="Least shorter side of the detector's box, image pixels"
    )
    min_sharpness: float | None = Field(
        15.0,
        ge=0,
        description="Least variance of the Laplacian of the aligned crop's centre (below: "
        "blurred); set on dlib's 150 px chip",
    )
    max_abs_yaw_deg: float | None = Field(
        35.0, gt=0, le=90, description="Largest |yaw| estimate, degrees"
    )
    max_abs_pitch_deg: float | None = Field(
        30.0, gt=0, le=90, description="Largest |pitch| estimate, degrees"
    )
    min_score: float | None = Field(
        None, description="Least detector score; its scale depends on the detector"
    )


class TrackSettings(_Settings):
    """How detections are linked into tracks and what a track sends."""

    iou_threshold: float = Field(
        0.3, gt=0, le=1, description="Least box overlap (IoU) to continue a track"
    )
    max_age_frames: int = Field(
        10, ge=1, le=10_000, description="Processed frames a track lives without a detection"
    )
    min_hits: int = Field(2, ge=1, le=100, description="Detections before a track may send")
    emit: Literal["best_shot", "fused"] = Field(
        "best_shot",
        description="best_shot: embed the track's best-quality face; fused: average the "
        "embeddings of its best fused_max_frames faces (sighting frames_fused)",
    )
    fused_max_frames: int = Field(
        5, ge=1, le=100, description="Faces averaged per sighting with emit: fused"
    )
    max_track_s: float = Field(
        10.0, gt=0, le=3600, description="Send a sighting at the latest after this long"
    )

    @model_validator(mode="after")
    def _fusion_needs_frames(self) -> TrackSettings:
        if self.emit == "fused" and self.fused_max_frames < 2:
            raise _cross(
                "fused_max_frames", "must be >= 2 with emit: fused", self.fused_max_frames, "emit"
            )
        return self


class OfflineWatchlist(_Settings):
    """A copy of the watchlist on the camera, to alert while the hub is unreachable."""

    enabled: bool = Field(False, description="Keep and search a local watchlist copy")
    max_entries: int = Field(5_000, ge=1, le=1_000_000, description="Most templates kept")
    refresh_s: int = Field(
        900, ge=60, le=86_400, description="Seconds between checks for a new watchlist"
    )


class CropSettings(_Settings):
    """Whether a small face crop goes with each sighting (only where the site allows)."""

    send_face_crop: bool = Field(False, description="Attach a JPEG face crop to sightings")
    max_px: int = Field(112, ge=32, le=512, description="Longest side of the crop, pixels")
    jpeg_quality: int = Field(85, ge=1, le=100, description="JPEG quality of the crop")


class CameraAlarms(_Settings):
    """Which alarms a camera raises; each needs the matching capability."""

    case_tamper: bool = Field(False, description="case.tamper when the housing is opened")
    sos: bool = Field(False, description="sos when the wearer presses the help button")
    power_cut: bool = Field(False, description="power.cut when mains or PoE power is lost")


class CameraProfile(_Settings):
    """Settings for fixed and body cameras running the face pipeline on the device."""

    type: Literal["camera"] = Field("camera", description="Profile family")
    source: Source = Field(description="Where frames come from (kind: rtsp, file, dir, device)")
    fps: float = Field(5.0, gt=0, le=60, description="Frames processed per second")
    detector: DetectorSettings = Field(default_factory=DetectorSettings)
    quality: QualityGate = Field(default_factory=QualityGate)
    model_id: str = Field(
        pattern=_MODEL_ID_PATTERN,
        description="Embedding model, e.g. dlib-resnet-v1; sightings are matched only "
        "against galleries of the same model_id",
    )
    track: TrackSettings = Field(default_factory=TrackSettings)
    offline_watchlist: OfflineWatchlist = Field(default_factory=OfflineWatchlist)
    crops: CropSettings = Field(default_factory=CropSettings)
    position_report_s: int | None = Field(
        None,
        gt=0,
        le=86_400,
        description="Seconds between the camera's own positions (body cameras); null: none",
    )
    battery: BatteryThresholds | None = Field(
        None, description="Battery alarms (body cameras); null for mains-powered cameras"
    )
    alarms: CameraAlarms = Field(default_factory=CameraAlarms)
    heartbeat_s: Heartbeat = 60
    telemetry_interval_s: TelemetryInterval = 300
    mqtt_keepalive_s: Keepalive = 30
    outbox: OutboxSettings = Field(
        default_factory=lambda: OutboxSettings(max_bytes=256 * 1024 * 1024, max_events=100_000)
    )

    @model_validator(mode="after")
    def _detections_keep_tracks_alive(self) -> CameraProfile:
        every = self.detector.every_n_frames
        if every > self.track.max_age_frames:
            raise _cross(
                "detector.every_n_frames",
                f"must be <= track.max_age_frames ({self.track.max_age_frames}), or tracks "
                "die between detections",
                every,
                "track.max_age_frames",
            )
        return self


# -- home beacons -----------------------------------------------------------------------


class AdvertisingSettings(_Settings):
    """The BLE beacon the home unit advertises."""

    interval_ms: int = Field(
        500, ge=20, le=10_240, description="Advertising interval, ms (BLE allows 20-10240)"
    )
    tx_power_dbm: int = Field(0, ge=-40, le=20, description="Transmit power, dBm")


class PresenceSettings(_Settings):
    """Whether the paired wearable is at home."""

    enabled: bool = Field(True, description="Report the paired wearable present or absent")
    paired_device_id: str | None = Field(
        None,
        pattern=DEVICE_ID_PATTERN,
        description="The wearable listened for; set per device, required when enabled",
    )
    scan_interval_s: int = Field(10, ge=1, le=3600, description="Seconds between scans")
    absent_after_s: int = Field(
        120,
        ge=2,
        le=86_400,
        description="Report absent after not hearing the wearable this long; at least two "
        "scan intervals",
    )
    min_rssi_dbm: int = Field(-90, ge=-120, le=0, description="Weaker than this is not heard")

    @model_validator(mode="after")
    def _two_scans(self) -> PresenceSettings:
        if self.absent_after_s < 2 * self.scan_interval_s:
            raise _cross(
                "absent_after_s",
                f"must be >= 2 x scan_interval_s ({2 * self.scan_interval_s})",
                self.absent_after_s,
                "scan_interval_s",
            )
        return self


class HomeBeaconAlarms(_Settings):
    """Which alarms a home beacon raises; each needs the matching capability."""

    case_tamper: bool = Field(True, description="case.tamper when opened or moved")
    power_cut: bool = Field(True, description="power.cut when mains power is lost")


class HomeBeaconProfile(_Settings):
    """Settings for home beacons."""

    type: Literal["home_beacon"] = Field("home_beacon", description="Profile family")
    advertising: AdvertisingSettings = Field(default_factory=AdvertisingSettings)
    presence: PresenceSettings = Field(default_factory=PresenceSettings)
    battery: BatteryThresholds = Field(
        default_factory=lambda: BatteryThresholds(low_pct=30, critical_pct=10),
        description="Alarms for the backup battery",
    )
    alarms: HomeBeaconAlarms = Field(default_factory=HomeBeaconAlarms)
    heartbeat_s: Heartbeat = 300
    telemetry_interval_s: TelemetryInterval = 900
    mqtt_keepalive_s: Keepalive = 120
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)


Profile: TypeAlias = Annotated[
    WearableProfile | CameraProfile | HomeBeaconProfile, Field(discriminator="type")
]
"""A firmware profile of any family, told apart by ``type``."""

_PROFILE_ADAPTER: TypeAdapter[WearableProfile | CameraProfile | HomeBeaconProfile] = TypeAdapter(
    Profile
)

PROFILE_FAMILIES: dict[str, frozenset[DeviceKind]] = {
    "wearable": frozenset({DeviceKind.WRISTBAND, DeviceKind.ANKLE_TAG}),
    "camera": frozenset({DeviceKind.FIXED_CAMERA, DeviceKind.BODY_CAMERA}),
    "home_beacon": frozenset({DeviceKind.HOME_BEACON}),
}
"""Which device kinds each profile ``type`` applies to."""


# -- sites ------------------------------------------------------------------------------


class SiteDevice(_Settings):
    """A device listed in a site file (its site is the file's)."""

    device_id: str = Field(pattern=DEVICE_ID_PATTERN, description="Id on the wire")
    model: str = Field(description="Device model id from the catalog")
    profile: str | None = Field(None, description="Profile name; the model's default if unset")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="Settings for this device, merged last"
    )


class Site(_Settings):
    """A site file: the site's devices and its overrides per profile."""

    site: str = Field(pattern=SITE_ID_PATTERN, description="Site id")
    profile_overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per profile name, settings for every device of the site using it; "
        "merged onto the profile before each device's own overrides",
    )
    devices: list[SiteDevice] = Field(default_factory=list, description="The site's devices")

    @field_validator("devices")
    @classmethod
    def _unique_ids(cls, devices: list[SiteDevice]) -> list[SiteDevice]:
        seen: set[str] = set()
        for device in devices:
            if device.device_id in seen:
                raise ValueError(f"device {device.device_id!r} listed twice")
            seen.add(device.device_id)
        return devices

    def device(self, device_id: str) -> Device:
        """The device ``device_id`` of this site; :class:`ConfigError` if absent."""
        for entry in self.devices:
            if entry.device_id == device_id:
                return Device(site=self.site, **entry.model_dump())
        known = ", ".join(d.device_id for d in self.devices) or "none"
        message = f"no device {device_id!r} in site {self.site!r}; devices: {known}"
        raise ConfigError([FieldIssue("devices", message)])

    def index_of(self, device_id: str) -> int:
        """Position of ``device_id`` in ``devices`` (for error paths)."""
        for i, entry in enumerate(self.devices):
            if entry.device_id == device_id:
                return i
        raise ConfigError([FieldIssue("devices", f"no device {device_id!r}")])


# -- errors -----------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldIssue:
    """One bad field: where it is (dotted path in the file), what is wrong, which file."""

    path: str
    message: str
    source: str | None = None

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        prefix = f"{self.source}: " if self.source else ""
        return f"{prefix}{where}{self.message}"


class ConfigError(ValueError):
    """A configuration that cannot be used; ``issues`` lists every bad field."""

    def __init__(self, issues: Sequence[FieldIssue]) -> None:
        if not issues:
            raise ValueError("ConfigError needs at least one issue")
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))

    def with_source(self, source: str) -> ConfigError:
        """The same issues, those without a file attributed to ``source``."""
        return ConfigError(
            [
                issue if issue.source else FieldIssue(issue.path, issue.message, source)
                for issue in self.issues
            ]
        )


@dataclass(frozen=True)
class Overrides:
    """Settings deep-merged onto a profile, where they came from, and where they sit in
    that file (``("overrides",)`` in a device file), so errors point into it."""

    data: Mapping[str, Any]
    source: str
    prefix: tuple[str | int, ...] = ()


# -- error paths ------------------------------------------------------------------------

_Node: TypeAlias = tuple[str, Any]
"""What sits at a place in a model: ("model", cls), ("union", (discriminator, {tag: cls})),
("list", node), ("dict", node) or ("leaf", None)."""


def _node_of(annotation: Any, discriminator: str | None = None) -> _Node:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        args = typing.get_args(annotation)
        for meta in args[1:]:
            disc = getattr(meta, "discriminator", None)
            if isinstance(disc, str):
                discriminator = disc
        return _node_of(args[0], discriminator)
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if discriminator is not None:
            tags: dict[str, type[BaseModel]] = {}
            for member in members:
                for tag in typing.get_args(member.model_fields[discriminator].annotation):
                    tags[tag] = member
            return ("union", (discriminator, tags))
        if len(members) == 1:
            return _node_of(members[0])
        return ("leaf", None)
    if origin is list:
        return ("list", _node_of(typing.get_args(annotation)[0]))
    if origin is dict:
        return ("dict", _node_of(typing.get_args(annotation)[1]))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return ("model", annotation)
    return ("leaf", None)


def _field_node(model: type[BaseModel], name: str) -> _Node:
    info = model.model_fields.get(name)
    if info is None:
        return ("leaf", None)
    disc = info.discriminator if isinstance(info.discriminator, str) else None
    return _node_of(info.annotation, disc)


def _display_loc(root: _Node, loc: Sequence[str | int]) -> tuple[list[str | int], _Node, _Node]:
    """``loc`` without discriminator tags, the node the last element was looked up in
    (for suggestions), and the node at the end."""
    out: list[str | int] = []
    node = root
    parent: _Node = ("leaf", None)
    for element in loc:
        kind, payload = node
        if kind == "union":
            _, tags = payload
            if element in tags:
                node = ("model", tags[element])
                continue
            out.append(element)
            node = ("leaf", None)
            continue
        parent = node
        out.append(element)
        if kind == "model" and isinstance(element, str):
            node = _field_node(payload, element)
        elif kind in ("list", "dict"):
            node = payload
        else:
            node = ("leaf", None)
    return out, parent, node


def _json_value(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _number(value: Any) -> str:
    """A bound as a person writes it: ``0`` rather than ``0.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _describe(error: Mapping[str, Any], parent: _Node, end: _Node) -> tuple[str, list[str]]:
    """A message for one pydantic error, and extra path elements to append."""
    kind = error["type"]
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    got = error.get("input")
    show_got = True
    extra: list[str] = []
    if kind == "cross_field":
        extra = str(ctx["field"]).split(".")
        message = str(error["msg"])
        got = ctx.get("got")
    elif kind == "greater_than":
        message = f"must be > {_number(ctx['gt'])}"
    elif kind == "greater_than_equal":
        message = f"must be >= {_number(ctx['ge'])}"
    elif kind == "less_than":
        message = f"must be < {_number(ctx['lt'])}"
    elif kind == "less_than_equal":
        message = f"must be <= {_number(ctx['le'])}"
    elif kind == "missing":
        message, show_got = "required field is missing", False
    elif kind == "extra_forbidden":
        message = "unknown field"
        if parent[0] == "model":
            loc = error["loc"]
            names = list(parent[1].model_fields)
            close = difflib.get_close_matches(str(loc[-1]), names, n=1) if loc else []
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(names)}"
            message = f"unknown field; {hint}"
    elif kind in ("int_type", "int_parsing", "int_from_float"):
        message = "must be an integer"
    elif kind in ("float_type", "float_parsing"):
        message = "must be a number"
    elif kind in ("bool_type", "bool_parsing"):
        message = "must be true or false"
    elif kind == "string_type":
        message = "must be a string"
    elif kind in ("dict_type", "model_type", "model_attributes_type"):
        message, show_got = "must be a mapping", not isinstance(got, list)
    elif kind == "list_type":
        message = "must be a list"
    elif kind == "literal_error":
        message = f"must be {ctx.get('expected', 'one of the allowed values')}"
    elif kind == "string_pattern_mismatch":
        message = f"must match {ctx.get('pattern')}"
    elif kind in ("union_tag_not_found", "union_tag_invalid"):
        if end[0] == "union":
            discriminator, tags = end[1]
            extra = [discriminator]
            allowed = ", ".join(tags)
        else:
            allowed = str(ctx.get("expected_tags", ""))
        if kind == "union_tag_not_found":
            message, show_got = f"required field is missing (one of: {allowed})", False
        else:
            message, got = f"must be one of: {allowed}", ctx.get("tag")
    elif kind == "value_error":
        message = str(error["msg"]).removeprefix("Value error, ")
    else:
        message = str(error["msg"])
        message = message[:1].lower() + message[1:]
    if kind == "credentials_in_url":
        show_got = False
    if show_got and not isinstance(got, dict | list):
        message = f"{message} (got {_json_value(got)})"
    return message, extra


def _has_path(data: Any, parts: Sequence[str | int]) -> bool:
    """Whether ``data`` sets ``parts``, itself or by replacing a mapping above it."""
    current = data
    for part in parts:
        if not isinstance(current, Mapping):
            return True  # a scalar or list here replaced the whole subtree
        if part not in current:
            return False
        current = current[part]
    return True


def _issues(
    exc: ValidationError,
    root: _Node,
    *,
    source: str | None = None,
    layers: Sequence[Overrides] = (),
    prefix: Sequence[str | int] = (),
) -> list[FieldIssue]:
    """Turn a pydantic error into issues with dotted paths, each blamed on the last of
    ``layers`` that set the field (or a related one), else on ``source``."""
    issues: list[FieldIssue] = []
    for error in exc.errors():
        parts, parent, end = _display_loc(root, error["loc"])
        message, extra = _describe(error, parent, end)
        parts = [*parts, *extra]
        related: list[list[str | int]] = [parts]
        ctx = error.get("ctx") or {}
        if error["type"] == "cross_field" and ctx.get("related"):
            base = parts[: len(parts) - len(extra)]
            related += [[*base, *r.split(".")] for r in str(ctx["related"]).split(",")]
        blamed_source, blamed_prefix = source, tuple(prefix)
        for layer in reversed(layers):
            if any(_has_path(layer.data, path) for path in related):
                blamed_source, blamed_prefix = layer.source, layer.prefix
                break
        path = ".".join(str(p) for p in (*blamed_prefix, *parts))
        issues.append(FieldIssue(path, message, blamed_source))
    return issues


# -- YAML -------------------------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that rejects a key given twice in one mapping."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in mapping:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                mark,
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def load_yaml(path: Path) -> dict[str, Any]:
    """The mapping in a YAML file; :class:`ConfigError` for a missing or unreadable file,
    a syntax error (with line and column, 1-based), a duplicate key, or a top level that
    is not a mapping."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([FieldIssue("", f"cannot read: {exc}", source)]) from exc
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(
            [FieldIssue("", f"YAML syntax error at {where}{problem}", source)]
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([FieldIssue("", f"YAML error: {exc}", source)]) from exc
    except RecursionError:
        # PyYAML composes and constructs recursively, one level per nesting level.
        raise ConfigError([FieldIssue("", "YAML nested too deeply to read", source)]) from None
    except ValueError as exc:
        # PyYAML lets a few constructor errors out as they are, e.g. the ValueError
        # of a timestamp such as 2025-02-30.
        raise ConfigError([FieldIssue("", f"YAML value error: {exc}", source)]) from None
    if data is None:
        raise ConfigError([FieldIssue("", "empty file", source)])
    if not isinstance(data, dict):
        raise ConfigError(
            [FieldIssue("", f"expected a mapping at the top, got {type(data).__name__}", source)]
        )
    for key in data:
        if not isinstance(key, str):
            raise ConfigError(
                [FieldIssue("", f"top-level keys must be strings (got {key!r})", source)]
            )
    return data


# -- profiles ---------------------------------------------------------------------------

_PROFILE_ROOT: _Node = _node_of(Profile)


def parse_profile(
    data: Mapping[str, Any], *, source: str | None = None
) -> WearableProfile | CameraProfile | HomeBeaconProfile:
    """Validate a profile given as a mapping; :class:`ConfigError` lists the bad fields."""
    try:
        return _PROFILE_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ConfigError(_issues(exc, _PROFILE_ROOT, source=source)) from None


def load_profile(path: Path) -> WearableProfile | CameraProfile | HomeBeaconProfile:
    """Read and validate a profile YAML file."""
    return parse_profile(load_yaml(path), source=str(path))


@dataclass(frozen=True)
class LoadedProfile:
    """A profile, its name (the file stem) and the file it came from."""

    name: str
    profile: WearableProfile | CameraProfile | HomeBeaconProfile
    source: str


def _yaml_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_profiles(folder: Path) -> dict[str, LoadedProfile]:
    """Every profile in ``folder`` (``<name>.yaml``), by name. All files are read;
    :class:`ConfigError` lists the issues of every invalid one."""
    if not folder.is_dir():
        raise ConfigError([FieldIssue("", "profiles folder not found", str(folder))])
    loaded: dict[str, LoadedProfile] = {}
    issues: list[FieldIssue] = []
    for path in _yaml_files(folder):
        if path.stem in loaded:
            issues.append(FieldIssue("", f"profile {path.stem!r} defined twice", str(path)))
            continue
        try:
            loaded[path.stem] = LoadedProfile(path.stem, load_profile(path), str(path))
        except ConfigError as exc:
            issues.extend(exc.issues)
    if issues:
        raise ConfigError(issues)
    logger.debug("loaded %d profiles from %s", len(loaded), folder)
    return loaded


# -- devices and sites ------------------------------------------------------------------

_DEVICE_ROOT: _Node = ("model", Device)
_SITE_ROOT: _Node = ("model", Site)


def load_device(path: Path) -> Device:
    """Read a device file (``<device_id>.yaml``); its ``device_id`` must equal the name."""
    source = str(path)
    data = load_yaml(path)
    try:
        device = Device.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_issues(exc, _DEVICE_ROOT, source=source)) from None
    if device.device_id != path.stem:
        raise ConfigError(
            [
                FieldIssue(
                    "device_id",
                    f"must equal the file name {path.stem!r} (got {_json_value(device.device_id)})",
                    source,
                )
            ]
        )
    return device


def load_site(path: Path) -> Site:
    """Read a site file."""
    data = load_yaml(path)
    try:
        return Site.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_issues(exc, _SITE_ROOT, source=str(path))) from None


def find_device(device_id: str, devices_dir: Path) -> tuple[Device, Path]:
    """The device file for ``device_id`` in ``devices_dir`` and its path;
    :class:`ConfigError` names the devices that folder has."""
    for suffix in (".yaml", ".yml"):
        path = devices_dir / f"{device_id}{suffix}"
        if path.is_file():
            return load_device(path), path
    known = ", ".join(p.stem for p in _yaml_files(devices_dir)) if devices_dir.is_dir() else ""
    raise ConfigError(
        [
            FieldIssue(
                "",
                f"no device file for {device_id!r}; devices here: {known or 'none'}",
                str(devices_dir),
            )
        ]
    )


# -- rendering --------------------------------------------------------------------------


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in: mappings merge key by key, anything else in
    ``override`` (numbers, strings, lists, ``None``) replaces the value in ``base``.
    Neither argument is changed."""
    merged: dict[str, Any] = dict(base)
    for key, value in override.items():
        old = merged.get(key)
        if isinstance(old, Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(old, value)
        else:
            merged[key] = value
    return merged


def canonical_json(value: Any) -> bytes:
    """The canonical bytes of a JSON value: keys sorted, no whitespace, UTF-8, no NaN.
    Equal values give equal bytes whatever their key order."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def config_sha256(config: Mapping[str, Any]) -> str:
    """Hex SHA-256 of a configuration's :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(config)).hexdigest()


class RenderedConfig(BaseModel):
    """The configuration rendered for one device, and what it was rendered from.

    The hub publishes :meth:`body` (``version``, ``sha256``, ``config``) as the body of
    the protocol's retained ``config`` message on ``lantern/v1/{device_id}/config``.
    ``sha256`` covers ``config`` only (its canonical JSON), so a device checks it with
    :func:`config_sha256` and reports the ``version`` and ``sha256`` it applied in its
    retained ``state``. ``model``, ``site`` and ``profile`` are for the hub's records.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    device_id: str = Field(pattern=DEVICE_ID_PATTERN, description="The device it is for")
    model: str = Field(description="The device's model id")
    site: str = Field(description="The device's site")
    profile: str = Field(description="The profile it was rendered from")
    version: int = Field(ge=1, description="Increases by one whenever sha256 changes")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of config")
    config: dict[str, Any] = Field(description="The settings, every default filled in")

    def body(self) -> dict[str, Any]:
        """The body of the protocol's ``config`` message: version, sha256, config."""
        return {"version": self.version, "sha256": self.sha256, "config": self.config}


def next_version(previous: RenderedConfig | None, sha256: str) -> int:
    """The version of a configuration with hash ``sha256`` rendered after ``previous``:
    1 for the first, the same version for the same content, otherwise one more.

    The hub's store keeps the last rendered configuration per device and passes it here,
    so versions only grow and equal content never gets a new version.
    """
    if previous is None:
        return 1
    return previous.version if previous.sha256 == sha256 else previous.version + 1


def _capability_issues(
    profile: WearableProfile | CameraProfile | HomeBeaconProfile, model: DeviceModel
) -> list[tuple[str, str]]:
    """(path, message) for each feature switched on that the model cannot do."""
    found: list[tuple[str, str]] = []

    def need(path: str, capability: Capability, what: str) -> None:
        if not model.has(capability):
            found.append(
                (path, f"{what} needs capability {capability.value!r}, which {model.id} lacks")
            )

    if isinstance(profile, WearableProfile):
        per_source = {
            "gnss": Capability.GNSS,
            "wifi": Capability.WIFI_POSITIONING,
            "cell": Capability.CELL_POSITIONING,
        }
        for i, src in enumerate(profile.positioning.sources):
            need(f"positioning.sources.{i}", per_source[src], f"source {src!r}")
        if profile.indoor_beacons.enabled:
            need("indoor_beacons.enabled", Capability.BLE_BEACON, "beacon positioning")
        alarms = profile.alarms
        for flag, capability in (
            ("strap_tamper", Capability.STRAP_SENSOR),
            ("case_tamper", Capability.CASE_TAMPER),
            ("sos", Capability.SOS_BUTTON),
            ("fall", Capability.FALL_DETECTION),
            ("gnss_jamming", Capability.GNSS),
        ):
            if getattr(alarms, flag):
                need(f"alarms.{flag}", capability, f"alarm {flag}")
    elif isinstance(profile, CameraProfile):
        need("type", Capability.CAMERA, "a camera profile")
        need("model_id", Capability.FACE_ENGINE, "the on-device face pipeline")
        if profile.position_report_s is not None and not (
            model.has(Capability.GNSS) or model.has(Capability.WIFI_POSITIONING)
        ):
            found.append(
                ("position_report_s", f"needs GNSS or Wi-Fi positioning, which {model.id} lacks")
            )
        if profile.battery is not None:
            need("battery", Capability.BATTERY, "battery alarms")
        for flag, capability in (
            ("case_tamper", Capability.CASE_TAMPER),
            ("sos", Capability.SOS_BUTTON),
            ("power_cut", Capability.MAINS_POWER),
        ):
            if getattr(profile.alarms, flag):
                need(f"alarms.{flag}", capability, f"alarm {flag}")
    else:
        need("advertising", Capability.BLE_ADVERTISER, "advertising a beacon")
        if profile.presence.enabled:
            need("presence.enabled", Capability.PRESENCE_RECEIVER, "presence reporting")
            if profile.presence.paired_device_id is None:
                found.append(
                    (
                        "presence.paired_device_id",
                        "required when presence is enabled: set it in the device's overrides",
                    )
                )
        for flag, capability in (
            ("case_tamper", Capability.CASE_TAMPER),
            ("power_cut", Capability.MAINS_POWER),
        ):
            if getattr(profile.alarms, flag):
                need(f"alarms.{flag}", capability, f"alarm {flag}")
    return found


def verify_profile(
    profile: WearableProfile | CameraProfile | HomeBeaconProfile, model: DeviceModel
) -> list[FieldIssue]:
    """Checks of a profile against a device model: the profile family must suit the
    model's kind, and every feature switched on needs the capability behind it. A
    configuration rendered for one device must also name what only a device can
    (a home beacon's ``presence.paired_device_id``). Returns the issues (no source);
    empty when the profile suits the model."""
    kinds = PROFILE_FAMILIES[profile.type]
    if model.kind not in kinds:
        allowed = ", ".join(sorted(k.value for k in kinds))
        return [
            FieldIssue(
                "type",
                f"a {profile.type!r} profile is for {allowed}, not {model.kind.value} "
                f"({model.id}) (got {_json_value(profile.type)})",
            )
        ]
    return [FieldIssue(path, message) for path, message in _capability_issues(profile, model)]


_DEVICE_ONLY_FIELDS = frozenset({"presence.paired_device_id"})
"""Fields only a device's own overrides can sensibly set; missing, they are blamed on it."""


def _blame(
    path: str, layers: Sequence[Overrides], default: str
) -> tuple[str, tuple[str | int, ...]]:
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in path.split(".")]
    for layer in reversed(layers):
        if _has_path(layer.data, parts):
            return layer.source, layer.prefix
    return default, ()


def render(
    device: Device,
    profiles: Mapping[str, LoadedProfile],
    *,
    catalog: Catalog = BUILTIN_CATALOG,
    site_overrides: Overrides | None = None,
    device_source: str | None = None,
    device_loc: tuple[str | int, ...] = (),
    previous: RenderedConfig | None = None,
) -> RenderedConfig:
    """The configuration ``device`` receives.

    The device's profile (its own ``profile`` or its model's default, looked up in
    ``profiles``) is dumped with every default filled in; ``site_overrides`` and then
    ``device.overrides`` are deep-merged onto it (see :func:`deep_merge`); the result is
    validated as a profile and checked against the device model
    (:func:`verify_profile`). ``device_source`` is the file the device came from and
    ``device_loc`` where its entry sits in it (``()`` for a device file,
    ``("devices", 3)`` in a site file), so an error names that file and path.
    ``previous`` is the device's last rendered configuration, for :func:`next_version`.

    Raises :class:`ConfigError` listing every issue.
    """
    if previous is not None and previous.device_id != device.device_id:
        raise ValueError(
            f"previous configuration is for {previous.device_id!r}, not {device.device_id!r}"
        )
    dev_source = device_source or f"device {device.device_id}"
    try:
        model = catalog.get_model(device.model)
    except UnknownModelError as exc:
        issue = FieldIssue(_dotted(device_loc, "model"), str(exc), dev_source)
        raise ConfigError([issue]) from None
    name = device.profile or model.default_profile
    loaded = profiles.get(name)
    if loaded is None:
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(
            [
                FieldIssue(
                    _dotted(device_loc, "profile"),
                    f"unknown profile {name!r}; known profiles: {known}",
                    dev_source,
                )
            ]
        )
    layers: list[Overrides] = []
    if site_overrides is not None and site_overrides.data:
        layers.append(site_overrides)
    if device.overrides:
        layers.append(Overrides(device.overrides, dev_source, (*device_loc, "overrides")))
    for layer in layers:
        if "type" in layer.data and layer.data["type"] != loaded.profile.type:
            message = (
                "a profile's type cannot be overridden; choose another profile with `profile:` "
                f"(got {_json_value(layer.data['type'])})"
            )
            raise ConfigError([FieldIssue(_dotted(layer.prefix, "type"), message, layer.source)])
    kinds = PROFILE_FAMILIES[loaded.profile.type]
    if device.profile is not None and model.kind not in kinds:
        allowed = ", ".join(sorted(k.value for k in kinds))
        message = (
            f"profile {name!r} is a {loaded.profile.type!r} profile, for {allowed}; "
            f"{model.id} is a {model.kind.value}"
        )
        raise ConfigError([FieldIssue(_dotted(device_loc, "profile"), message, dev_source)])
    merged: dict[str, Any] = loaded.profile.model_dump(mode="json")
    for layer in layers:
        merged = deep_merge(merged, layer.data)
    try:
        profile = _PROFILE_ADAPTER.validate_python(merged)
    except ValidationError as exc:
        raise ConfigError(
            _issues(exc, _PROFILE_ROOT, source=loaded.source, layers=layers)
        ) from None
    problems = verify_profile(profile, model)
    if problems:
        issues = []
        device_layer = (dev_source, (*device_loc, "overrides"))
        for problem in problems:
            source, prefix = _blame(problem.path, layers, loaded.source)
            if problem.path in _DEVICE_ONLY_FIELDS and source == loaded.source:
                source, prefix = device_layer  # a profile cannot set it: the device must
            issues.append(FieldIssue(_dotted(prefix, problem.path), problem.message, source))
        raise ConfigError(issues)
    config = profile.model_dump(mode="json")
    digest = config_sha256(config)
    rendered = RenderedConfig(
        device_id=device.device_id,
        model=model.id,
        site=device.site,
        profile=name,
        version=next_version(previous, digest),
        sha256=digest,
        config=config,
    )
    logger.info(
        "rendered %s (%s, profile %s): version %d sha256 %s",
        device.device_id,
        model.id,
        name,
        rendered.version,
        digest[:12],
    )
    return rendered


def render_site_device(
    site: Site,
    device_id: str,
    profiles: Mapping[str, LoadedProfile],
    *,
    source: str,
    catalog: Catalog = BUILTIN_CATALOG,
    previous: RenderedConfig | None = None,
) -> RenderedConfig:
    """:func:`render` for a device of a site file (read from ``source``): the site's
    ``profile_overrides`` for the device's profile are merged before its own."""
    try:
        device = site.device(device_id)
    except ConfigError as exc:
        raise exc.with_source(source) from None
    index = site.index_of(device_id)
    layer: Overrides | None = None
    if device.model in catalog:
        name = device.profile or catalog[device.model].default_profile
        data = site.profile_overrides.get(name, {})
        layer = Overrides(data, source, ("profile_overrides", name))
    return render(
        device,
        profiles,
        catalog=catalog,
        site_overrides=layer,
        device_source=source,
        device_loc=("devices", index),
        previous=previous,
    )


FileKind = Literal["profile", "device", "site"]


def file_kind(data: Mapping[str, Any]) -> FileKind | None:
    """What a configuration file is, from its keys: a profile has ``type``, a device
    file ``device_id``, a site file ``site`` or ``devices``; None if none of these."""
    if "type" in data:
        return "profile"
    if "device_id" in data:
        return "device"
    if "site" in data or "devices" in data:
        return "site"
    return None


def check_file(
    path: Path,
    profiles: Mapping[str, LoadedProfile],
    *,
    catalog: Catalog = BUILTIN_CATALOG,
) -> tuple[FileKind | None, list[FieldIssue]]:
    """Validate one YAML file of any kind; its kind and its issues (empty: valid).

    A profile is validated alone. A device file is rendered with ``profiles``; a site
    file is checked for unknown profile names and each of its devices is rendered, so
    every device's issues are listed, not only the first one's.
    """
    source = str(path)
    try:
        data = load_yaml(path)
    except ConfigError as exc:
        return None, exc.issues
    kind = file_kind(data)
    try:
        if kind == "profile":
            parse_profile(data, source=source)
        elif kind == "device":
            device = load_device(path)
            render(device, profiles, catalog=catalog, device_source=source)
        elif kind == "site":
            site = load_site(path)
            issues: list[FieldIssue] = []
            known = ", ".join(sorted(profiles)) or "none"
            for name in site.profile_overrides:
                if name not in profiles:
                    issues.append(
                        FieldIssue(
                            f"profile_overrides.{name}",
                            f"unknown profile {name!r}; known profiles: {known}",
                            source,
                        )
                    )
            for entry in site.devices:
                try:
                    render_site_device(
                        site, entry.device_id, profiles, source=source, catalog=catalog
                    )
                except ConfigError as exc:
                    issues.extend(exc.issues)
            if issues:
                raise ConfigError(issues)
        else:
            message = (
                "not a profile (has `type`), a device file (has `device_id`) or a site "
                "file (has `site` and `devices`)"
            )
            return None, [FieldIssue("", message, source)]
    except ConfigError as exc:
        return kind, exc.issues
    return kind, []


def _dotted(prefix: Sequence[str | int], path: str) -> str:
    return ".".join([*(str(p) for p in prefix), *([path] if path else [])])


# -- configuration folder ---------------------------------------------------------------


def packaged_config_dir() -> Path:
    """The ``firmware_configs`` folder installed with Lantern (the repository's own in an
    editable install)."""
    root = files("firmware_configs")
    if not isinstance(root, Path):  # pragma: no cover - only for zipped installs
        raise RuntimeError(f"firmware_configs is not a folder on disk: {root}")
    return root


def default_config_dir() -> Path:
    """``$LANTERN_FIRMWARE_DIR`` when set, else :func:`packaged_config_dir`."""
    configured = os.environ.get(CONFIG_DIR_ENV)
    return Path(configured) if configured else packaged_config_dir()


# -- JSON Schema ------------------------------------------------------------------------

_DRAFT = "https://json-schema.org/draft/2020-12/schema"


def schema_documents() -> dict[str, dict[str, Any]]:
    """The JSON Schemas of profile, device and site files, by file name."""

    def document(title: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"$schema": _DRAFT, "title": title, **schema}

    return {
        "profile.schema.json": document("Lantern firmware profile", _PROFILE_ADAPTER.json_schema()),
        "device.schema.json": document("Lantern device file", Device.model_json_schema()),
        "site.schema.json": document("Lantern site file", Site.model_json_schema()),
    }


def dump_schema(schema: Mapping[str, Any]) -> str:
    """A schema as written to disk: sorted keys, two-space indent, final newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(out_dir: Path) -> list[Path]:
    """Write :func:`schema_documents` into ``out_dir`` (created if needed); the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, schema in schema_documents().items():
        path = out_dir / name
        path.write_text(dump_schema(schema), encoding="utf-8")
        written.append(path)
    return written
