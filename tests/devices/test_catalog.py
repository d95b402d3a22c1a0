"""The device catalog: kinds, capabilities, built-in models and device records."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from devices.catalog import (
    BUILTIN_CATALOG,
    BUILTIN_MODELS,
    Capability,
    Catalog,
    Device,
    DeviceKind,
    DeviceModel,
    UnknownModelError,
    get_model,
)


def test_every_kind_has_a_builtin_model() -> None:
    kinds = {model.kind for model in BUILTIN_MODELS}
    assert kinds == set(DeviceKind)
    for kind in DeviceKind:
        assert all(m.kind is kind for m in BUILTIN_CATALOG.of_kind(kind))


def test_get_model_returns_the_model() -> None:
    model = get_model("lantern-ankle-a1")
    assert model.kind is DeviceKind.ANKLE_TAG
    assert model.has(Capability.GNSS)
    assert model.has(Capability.STRAP_SENSOR)
    assert not model.has(Capability.CAMERA)
    assert model.default_profile == "ankle_tag"


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(UnknownModelError) as info:
        get_model("lantern-ankle-zz")
    message = str(info.value)
    assert message.startswith("unknown device model 'lantern-ankle-zz'; known models: ")
    for model in BUILTIN_MODELS:
        assert model.id in message
    assert info.value.known == sorted(m.id for m in BUILTIN_MODELS)


def test_catalog_is_a_mapping() -> None:
    assert "lantern-home-h1" in BUILTIN_CATALOG
    assert "nope" not in BUILTIN_CATALOG
    assert BUILTIN_CATALOG.get("nope") is None
    assert len(BUILTIN_CATALOG) == len(BUILTIN_MODELS)
    assert sorted(BUILTIN_CATALOG) == sorted(m.id for m in BUILTIN_MODELS)


def test_custom_catalog_and_duplicates() -> None:
    extra = DeviceModel(
        id="test-tag-t1",
        kind=DeviceKind.ANKLE_TAG,
        vendor="test",
        description="a tag for tests",
        capabilities=frozenset({Capability.BATTERY}),
        battery_mah=100,
        default_profile="ankle_tag",
    )
    catalog = Catalog([extra])
    assert get_model("test-tag-t1", catalog) is extra
    with pytest.raises(UnknownModelError, match="known models: test-tag-t1$"):
        get_model("lantern-ankle-a1", catalog)
    with pytest.raises(ValueError, match="listed twice"):
        Catalog([extra, extra])


def test_models_are_described_and_consistent() -> None:
    for model in BUILTIN_MODELS:
        assert model.description.strip()
        if model.has(Capability.BATTERY):
            assert model.battery_mah is not None
        else:
            assert model.battery_mah is None
        if model.kind in (DeviceKind.FIXED_CAMERA, DeviceKind.BODY_CAMERA):
            assert model.has(Capability.CAMERA)


@pytest.mark.parametrize("device_id", ["ab", "ankle-0001", "cam_gate_1", "0a", "a" * 64])
def test_valid_device_ids(device_id: str) -> None:
    device = Device(device_id=device_id, model="lantern-ankle-a1", site="north")
    assert device.device_id == device_id
    assert device.overrides == {}
    assert device.profile is None


@pytest.mark.parametrize(
    "device_id",
    ["a", "A1", "-ab", "_ab", "a" * 65, "ab/cd", "ab+", "ab#", "ab cd", "ab.cd", ""],
)
def test_invalid_device_ids(device_id: str) -> None:
    with pytest.raises(ValidationError, match="device_id"):
        Device(device_id=device_id, model="lantern-ankle-a1", site="north")


def test_device_rejects_unknown_fields_and_loose_types() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Device.model_validate({"device_id": "ab", "model": "m", "site": "north", "password": "x"})
    with pytest.raises(ValidationError):
        Device.model_validate({"device_id": 1234, "model": "m", "site": "north"})
