"""Decoder tests driven by captured payloads (tests/fixtures/payloads, as Traccar's
protocol tests are): every good payload decodes, every bad one fails with its code."""

from __future__ import annotations

import pytest

from devices.protocol import (
    CURRENT_SCHEMAS,
    ERROR_CODES,
    MESSAGE_CLASSES,
    PREVIOUS_SCHEMAS,
    DecodedMessage,
    EventEnvelope,
    ProtocolError,
    decode,
    encode,
    parse_topic,
)
from devices.signing import load_public_keys, verify
from tests.devices.protocol_helpers import PAYLOADS, Case, fixture_now, load_cases, load_index

CASES = load_cases()


def _decode(case: Case) -> DecodedMessage:
    return decode(case.topic, case.payload, now=fixture_now())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_payload_fixture(case: Case) -> None:
    if case.expect != "ok":
        with pytest.raises(ProtocolError) as caught:
            _decode(case)
        assert caught.value.code == case.expect, caught.value.reason
        assert caught.value.reason
        assert str(caught.value).startswith(f"{case.expect}: ")
        return
    decoded = _decode(case)
    assert decoded.topic == parse_topic(case.topic)
    assert decoded.upgraded_from == case.upgraded_from
    assert decoded.size == len(case.payload)
    assert decoded.message.device_id == decoded.topic.device_id
    # What the decoder returns encodes, and that encoding decodes to the same message.
    again = decode(case.topic, encode(decoded.message), now=fixture_now())
    assert again.message == decoded.message
    assert again.upgraded_from is None
    if case.verify is not None:
        keys = load_public_keys(load_index()["keys"])
        if case.verify == "ok":
            verify(decoded.message, keys)  # type: ignore[arg-type]
        else:
            with pytest.raises(ProtocolError) as caught:
                verify(decoded.message, keys)  # type: ignore[arg-type]
            assert caught.value.code == case.verify


def test_every_file_is_a_case_and_every_case_a_file() -> None:
    on_disk = {
        f"{folder}/{path.name}"
        for folder in ("good", "bad")
        for path in (PAYLOADS / folder).iterdir()
    }
    listed = [case.file for case in CASES]
    assert len(listed) == len(set(listed)), "a file is listed twice"
    assert on_disk == set(listed)
    assert all(
        case.file.startswith("good/") == (case.expect == "ok") or case.verify for case in CASES
    )


def test_every_message_kind_has_a_good_payload() -> None:
    good = {
        (info.kind, info.name)
        for info in (parse_topic(c.topic) for c in CASES if c.file.startswith("good/"))
    }
    assert set(MESSAGE_CLASSES) <= good


def test_the_bad_payloads_cover_every_decoder_error_code() -> None:
    codes = {c.expect for c in CASES} | {c.verify for c in CASES if c.verify}
    # "unsigned" comes from verify() on an unsigned event; tested in test_signing.
    assert set(ERROR_CODES) - {"unsigned"} <= codes


def test_previous_schema_is_upgraded_to_the_current() -> None:
    upgraded = [c for c in CASES if c.upgraded_from]
    assert {c.upgraded_from for c in upgraded} == {"lantern.evt/1", "lantern.state/1"}
    for case in upgraded:
        decoded = _decode(case)
        assert decoded.schema == case.upgraded_from
        kind = decoded.topic.kind
        assert decoded.message.schema_version == CURRENT_SCHEMAS[kind]
        assert decoded.schema == PREVIOUS_SCHEMAS[kind]
        if isinstance(decoded.message, EventEnvelope):
            assert decoded.message.replayed is False
