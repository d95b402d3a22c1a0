"""What devices exist: device kinds, their capabilities, the models Lantern supports,
and the individual devices deployed at a site.

A :class:`DeviceModel` is a kind of hardware (``lantern-ankle-a1``): what it is, what it
can sense and do, its battery, and the firmware profile it gets unless a device says
otherwise. A :class:`Device` is one unit in the field: its id (the MQTT username and
topic level of the wire protocol), its model, its site, and per-device overrides of
its profile's settings. Credentials are not kept here: the hub issues one per device
and keeps them in its own registry.

The built-in models (:data:`BUILTIN_MODELS`) are Lantern's reference designs, described
by what they do rather than by any vendor's product. Their battery capacities are the
nominal figures of those designs, used for planning (how long a reporting interval lets a
charge last), not measurements of a particular product.

Nothing here imports ``edge`` or ``hub``; both read the catalog.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BUILTIN_CATALOG",
    "BUILTIN_MODELS",
    "DEVICE_ID_PATTERN",
    "SITE_ID_PATTERN",
    "Capability",
    "Catalog",
    "Device",
    "DeviceKind",
    "DeviceModel",
    "UnknownModelError",
    "get_model",
]

logger = logging.getLogger(__name__)

DEVICE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{1,63}$"
"""A device id as the wire protocol spells it: 2-64 characters, lower-case letters,
digits, ``_`` and ``-``, not starting with ``_`` or ``-``. It is the topic level and the
broker username, so it must be safe in both."""

SITE_ID_PATTERN = DEVICE_ID_PATTERN
"""Site ids follow the device id syntax: they appear in file names and log lines."""

MODEL_ID_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,63}$"
"""A device model id such as ``lantern-ankle-a1``."""


class DeviceKind(StrEnum):
    """The families of device Lantern supervises."""

    FIXED_CAMERA = "fixed_camera"
    """A mains-powered camera mounted at a fixed place (a gate, a corridor, a yard)."""
    BODY_CAMERA = "body_camera"
    """A camera worn by a member of staff, on battery, moving with its wearer."""
    WRISTBAND = "wristband"
    """A band worn on the wrist by a person in custody, inside a facility."""
    ANKLE_TAG = "ankle_tag"
    """A tag strapped to the ankle of a person under community supervision."""
    HOME_BEACON = "home_beacon"
    """A base unit at a supervised person's home that tells whether their tag is there."""


class Capability(StrEnum):
    """Something a device model can sense or do. Profiles may only switch on features
    whose capability the model has (see :func:`devices.firmware.verify_profile`)."""

    GNSS = "gnss"
    """Satellite positioning (position ``src`` ``gnss``)."""
    WIFI_POSITIONING = "wifi_positioning"
    """Positions from the Wi-Fi access points it can hear (``src`` ``wifi``)."""
    CELL_POSITIONING = "cell_positioning"
    """Coarse positions from the cell towers it can hear (``src`` ``cell``)."""
    BLE_BEACON = "ble_beacon"
    """Positions itself from fixed BLE beacons it hears (``src`` ``ble_beacon``)."""
    BLE_ADVERTISER = "ble_advertiser"
    """Advertises as a fixed BLE beacon that wearables position themselves from."""
    PRESENCE_RECEIVER = "presence_receiver"
    """Hears a paired wearable's radio and reports it present or absent."""
    STRAP_SENSOR = "strap_sensor"
    """Detects a cut or opened strap (alarm ``strap.tamper``)."""
    CASE_TAMPER = "case_tamper"
    """Detects its case being opened or the unit being moved (alarm ``case.tamper``)."""
    SOS_BUTTON = "sos_button"
    """A button the wearer presses for help (alarm ``sos``)."""
    FALL_DETECTION = "fall_detection"
    """Detects a fall from its accelerometer (alarm ``fall``)."""
    VIBRATION = "vibration"
    """A vibration motor to get the wearer's attention."""
    SPEAKER = "speaker"
    """A speaker for tones or spoken prompts."""
    CAMERA = "camera"
    """Captures video."""
    FACE_ENGINE = "face_engine"
    """Runs face detection and embedding on the device itself."""
    BATTERY = "battery"
    """Runs on a battery (main or backup)."""
    MAINS_POWER = "mains_power"
    """Runs from mains or PoE power; reports a power cut (alarm ``power.cut``)."""
    CELLULAR = "cellular"
    """Connects over a cellular network."""
    WIFI = "wifi"
    """Connects over Wi-Fi."""
    ETHERNET = "ethernet"
    """Connects over wired Ethernet."""


class DeviceModel(BaseModel):
    """A kind of hardware Lantern supports and what it can do."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=MODEL_ID_PATTERN, description="Model id, e.g. lantern-ankle-a1")
    kind: DeviceKind = Field(description="The device family")
    vendor: str = Field(min_length=1, description="Who makes it")
    description: str = Field(min_length=1, description="What it is, in a sentence or two")
    capabilities: frozenset[Capability] = Field(description="What it can sense and do")
    battery_mah: int | None = Field(
        None,
        gt=0,
        le=100_000,
        description="Nominal battery capacity (at most 100 Ah); None for a unit without one",
    )
    default_profile: str = Field(
        min_length=1, description="Firmware profile a device of this model gets by default"
    )

    def has(self, capability: Capability) -> bool:
        """Whether this model has ``capability``."""
        return capability in self.capabilities


class Device(BaseModel):
    """One deployed unit: its id, model and site, and overrides of its profile."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    device_id: str = Field(
        pattern=DEVICE_ID_PATTERN,
        description="Id on the wire: MQTT username and topic level (lower-case, 2-64 chars)",
    )
    model: str = Field(description="Device model id from the catalog, e.g. lantern-ankle-a1")
    site: str = Field(pattern=SITE_ID_PATTERN, description="Site the device belongs to")
    profile: str | None = Field(
        None, description="Firmware profile name; the model's default profile when unset"
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Profile settings for this device only, deep-merged onto the profile",
    )


class UnknownModelError(KeyError):
    """A device model id the catalog does not know; the message lists the known ids.

    A ``KeyError`` so that :class:`Catalog` behaves as a mapping (``in``, ``.get``), with
    the plain message as its text rather than ``KeyError``'s quoted repr.
    """

    def __init__(self, model_id: str, known: Iterable[str]) -> None:
        self.model_id = model_id
        self.known = sorted(known)
        self.message = f"unknown device model {model_id!r}; known models: {', '.join(self.known)}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class Catalog(Mapping[str, DeviceModel]):
    """Device models by id. Read-only; build a new one to add models."""

    def __init__(self, models: Iterable[DeviceModel]) -> None:
        by_id: dict[str, DeviceModel] = {}
        for model in models:
            if model.id in by_id:
                raise ValueError(f"device model {model.id!r} listed twice")
            by_id[model.id] = model
        self._models = by_id

    def __getitem__(self, model_id: str) -> DeviceModel:
        try:
            return self._models[model_id]
        except KeyError:
            raise UnknownModelError(model_id, self._models) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def get_model(self, model_id: str) -> DeviceModel:
        """The model with id ``model_id``; :class:`UnknownModelError` names the known ones."""
        return self[model_id]

    def of_kind(self, kind: DeviceKind) -> list[DeviceModel]:
        """The models of one device family, by id."""
        return [m for _, m in sorted(self._models.items()) if m.kind is kind]


_REFERENCE = "Lantern reference design"

BUILTIN_MODELS: tuple[DeviceModel, ...] = (
    DeviceModel(
        id="lantern-fixcam-f1",
        kind=DeviceKind.FIXED_CAMERA,
        vendor=_REFERENCE,
        description=(
            "Wall or ceiling camera powered over Ethernet, with an on-board accelerator "
            "that runs the face engine so only embeddings and small crops leave it."
        ),
        capabilities=frozenset(
            {
                Capability.CAMERA,
                Capability.FACE_ENGINE,
                Capability.MAINS_POWER,
                Capability.ETHERNET,
                Capability.CASE_TAMPER,
            }
        ),
        battery_mah=None,
        default_profile="fixed_camera",
    ),
    DeviceModel(
        id="lantern-bodycam-b1",
        kind=DeviceKind.BODY_CAMERA,
        vendor=_REFERENCE,
        description=(
            "Chest-worn camera for staff on patrol or escort duty: runs the face engine "
            "on its own processor, knows where it is, and has a help button."
        ),
        capabilities=frozenset(
            {
                Capability.CAMERA,
                Capability.FACE_ENGINE,
                Capability.BATTERY,
                Capability.GNSS,
                Capability.WIFI_POSITIONING,
                Capability.CELLULAR,
                Capability.WIFI,
                Capability.SOS_BUTTON,
                Capability.VIBRATION,
            }
        ),
        battery_mah=3400,
        default_profile="body_camera",
    ),
    DeviceModel(
        id="lantern-wrist-w1",
        kind=DeviceKind.WRISTBAND,
        vendor=_REFERENCE,
        description=(
            "Wristband for people in custody: positions itself from the facility's BLE "
            "beacons and Wi-Fi, reports a cut strap, and has a help button."
        ),
        capabilities=frozenset(
            {
                Capability.BLE_BEACON,
                Capability.WIFI_POSITIONING,
                Capability.WIFI,
                Capability.STRAP_SENSOR,
                Capability.SOS_BUTTON,
                Capability.VIBRATION,
                Capability.BATTERY,
            }
        ),
        battery_mah=220,
        default_profile="wristband",
    ),
    DeviceModel(
        id="lantern-ankle-a1",
        kind=DeviceKind.ANKLE_TAG,
        vendor=_REFERENCE,
        description=(
            "Ankle tag for community supervision: satellite, Wi-Fi and cell positioning "
            "over a cellular link, the home beacon indoors, strap and case tamper sensing."
        ),
        capabilities=frozenset(
            {
                Capability.GNSS,
                Capability.WIFI_POSITIONING,
                Capability.CELL_POSITIONING,
                Capability.BLE_BEACON,
                Capability.CELLULAR,
                Capability.STRAP_SENSOR,
                Capability.CASE_TAMPER,
                Capability.VIBRATION,
                Capability.BATTERY,
            }
        ),
        battery_mah=1400,
        default_profile="ankle_tag",
    ),
    DeviceModel(
        id="lantern-home-h1",
        kind=DeviceKind.HOME_BEACON,
        vendor=_REFERENCE,
        description=(
            "Base unit for a supervised person's home: a BLE beacon their tag positions "
            "itself from, a receiver that reports the tag present or absent, on mains "
            "power with a backup battery and a cellular link."
        ),
        capabilities=frozenset(
            {
                Capability.BLE_ADVERTISER,
                Capability.PRESENCE_RECEIVER,
                Capability.MAINS_POWER,
                Capability.BATTERY,
                Capability.CELLULAR,
                Capability.CASE_TAMPER,
                Capability.SPEAKER,
            }
        ),
        battery_mah=2000,
        default_profile="home_beacon",
    ),
)
"""Lantern's reference device models, one or more per :class:`DeviceKind`."""

BUILTIN_CATALOG = Catalog(BUILTIN_MODELS)
"""The built-in models as a :class:`Catalog`."""


def get_model(model_id: str, catalog: Catalog | None = None) -> DeviceModel:
    """The device model ``model_id`` from ``catalog`` (the built-in one by default).

    Raises :class:`UnknownModelError`, whose message lists the known model ids.
    """
    return (catalog or BUILTIN_CATALOG).get_model(model_id)
