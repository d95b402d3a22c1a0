"""Topic builders, the parser, subscriptions and delivery settings."""

from __future__ import annotations

import pytest

from devices.protocol import (
    COMMAND_NAMES,
    DELIVERY,
    EVENT_TYPES,
    HUB_EVENTS_SUBSCRIPTION,
    HUB_STATE_SUBSCRIPTION,
    MAX_PAYLOAD_BYTES,
    MESSAGE_CLASSES,
    MOSQUITTO_DEVICE_ACL,
    TOPIC_KINDS,
    ProtocolError,
    TopicInfo,
    ack_topic,
    cmd_topic,
    config_topic,
    device_subscriptions,
    evt_topic,
    parse_topic,
    state_topic,
    tele_topic,
    validate_device_id,
)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_event_topic_round_trip(event_type: str) -> None:
    topic = evt_topic("wb-0042", event_type)  # type: ignore[arg-type]
    assert topic == f"lantern/v1/wb-0042/evt/{event_type}"
    assert parse_topic(topic) == TopicInfo("wb-0042", "evt", event_type)
    assert parse_topic(topic).topic == topic


@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_command_topic_round_trip(name: str) -> None:
    topic = cmd_topic("cam_7", name)  # type: ignore[arg-type]
    assert topic == f"lantern/v1/cam_7/cmd/{name}"
    assert parse_topic(topic) == TopicInfo("cam_7", "cmd", name)


@pytest.mark.parametrize(
    ("build", "kind"),
    [(tele_topic, "tele"), (state_topic, "state"), (ack_topic, "ack"), (config_topic, "config")],
)
def test_plain_topics_round_trip(build: object, kind: str) -> None:
    topic = build("d1")  # type: ignore[operator]
    assert topic == f"lantern/v1/d1/{kind}"
    info = parse_topic(topic)
    assert info == TopicInfo("d1", kind, None)  # type: ignore[arg-type]
    assert info.topic == topic


@pytest.mark.parametrize(
    "device_id",
    ["a", "-abc", "_abc", "ABC", "a/b", "a+b", "a#b", "$sys", "a b", "é1", "x" * 65, "", "a.b"],
)
def test_bad_device_ids_are_refused(device_id: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        validate_device_id(device_id)
    assert caught.value.code == "bad_topic"
    with pytest.raises(ProtocolError):
        evt_topic(device_id, "position")


@pytest.mark.parametrize("device_id", ["ab", "0a", "wb-0042", "cam_gate_2", "x" * 64])
def test_good_device_ids(device_id: str) -> None:
    assert validate_device_id(device_id) == device_id


@pytest.mark.parametrize(
    ("topic", "code"),
    [
        ("lantern/v1/wb-1/evt", "bad_topic"),
        ("lantern/v1/wb-1/evt/", "bad_topic"),
        ("lantern/v1/wb-1/evt/Position", "bad_topic"),
        ("lantern/v1/wb-1/evt/#", "bad_topic"),
        ("lantern/v1/wb-1/evt/position/more", "bad_topic"),
        ("lantern/v1/wb-1/tele/x", "bad_topic"),
        ("lantern/v1/wb-1/telemetry", "bad_topic"),
        ("lantern/v1/+/evt/position", "bad_topic"),
        ("lantern/v1/wb-1", "bad_topic"),
        ("/lantern/v1/wb-1/tele", "bad_topic"),
        ("lantern/v1/wb-1/evt/teleport", "unknown_type"),
        ("lantern/v1/wb-1/cmd/format_disk", "unknown_type"),
        ("x" * 300, "bad_topic"),
    ],
)
def test_parse_topic_refusals(topic: str, code: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_topic(topic)
    assert caught.value.code == code
    assert caught.value.reason


def test_parse_topic_refuses_non_strings() -> None:
    with pytest.raises(ProtocolError):
        parse_topic(b"lantern/v1/wb-1/tele")  # type: ignore[arg-type]


def test_builders_refuse_unknown_types() -> None:
    with pytest.raises(ProtocolError) as caught:
        evt_topic("wb-1", "teleport")  # type: ignore[arg-type]
    assert caught.value.code == "unknown_type"
    with pytest.raises(ProtocolError):
        cmd_topic("wb-1", "format_disk")  # type: ignore[arg-type]


def test_subscriptions_match_the_topics() -> None:
    assert HUB_EVENTS_SUBSCRIPTION == "$share/hub/lantern/v1/+/evt/#"
    assert not HUB_STATE_SUBSCRIPTION.startswith("$share/")
    assert device_subscriptions("wb-1") == (
        "lantern/v1/wb-1/ack",
        "lantern/v1/wb-1/config",
        "lantern/v1/wb-1/cmd/+",
    )


def test_acl_pins_devices_to_their_own_topics() -> None:
    assert all("/%u/" in line for line in MOSQUITTO_DEVICE_ACL)
    writes = {line.split()[2] for line in MOSQUITTO_DEVICE_ACL if line.split()[1] == "write"}
    assert writes == {"lantern/v1/%u/evt/#", "lantern/v1/%u/tele", "lantern/v1/%u/state"}


def test_every_kind_has_delivery_caps_and_a_model() -> None:
    assert set(DELIVERY) == set(TOPIC_KINDS)
    assert set(MAX_PAYLOAD_BYTES) == set(MESSAGE_CLASSES)
    assert DELIVERY["tele"].qos == 0 and DELIVERY["tele"].expiry_s
    assert DELIVERY["state"].retain and DELIVERY["config"].retain
    assert not DELIVERY["evt"].retain and DELIVERY["evt"].qos == 1
