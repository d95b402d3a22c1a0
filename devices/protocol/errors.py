"""The one exception type of the wire protocol, with a short machine code."""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["ERROR_CODES", "MAX_REASON_CHARS", "ErrorCode", "ProtocolError"]

ErrorCode = Literal[
    "bad_topic",
    "unknown_type",
    "too_large",
    "bad_json",
    "unknown_schema",
    "schema_mismatch",
    "device_mismatch",
    "invalid",
    "bad_clock",
    "unsigned",
    "unknown_kid",
    "bad_signature",
]
"""Why a message was refused, as a short stable word the hub can count and store.

``bad_topic``
    The topic is not a Lantern topic (wrong prefix or depth, a bad device id, a
    wildcard).
``unknown_type``
    A well-formed topic naming an event type or command this version does not know.
``too_large``
    The payload is over the size cap of its kind (checked before parsing).
``bad_json``
    Not UTF-8, not JSON, not an object, duplicate keys, NaN/Infinity, a number too
    large, lone surrogates, nesting too deep.
``unknown_schema``
    ``schema`` missing, malformed, or a version this side does not accept.
``schema_mismatch``
    A valid schema of another kind (a ``lantern.tele/1`` payload on an ``evt`` topic).
``device_mismatch``
    The envelope's ``device_id`` is not the device id of the topic.
``invalid``
    The message does not validate (wrong type, out of range, unknown field, embedding
    of the wrong length ...).
``bad_clock``
    A timestamp before 2020 or too far ahead of the receiver's clock.
``unsigned``
    A signature was required and the message has none.
``unknown_kid``
    The message is signed with a key id the verifier does not hold for this device.
``bad_signature``
    The signature does not verify.
"""

ERROR_CODES: tuple[ErrorCode, ...] = get_args(ErrorCode)

MAX_REASON_CHARS = 500
"""Reasons are cut to this length: they are stored in quarantine and shown to people."""


class ProtocolError(ValueError):
    """A message that breaks the wire protocol.

    ``code`` is one of :data:`ErrorCode`; ``reason`` says what was wrong for a person;
    ``field`` names the offending field as a dotted path (``body.lat``) when there is
    one. ``str(error)`` is ``"<code>: <reason>"``.
    """

    code: ErrorCode
    reason: str
    field: str | None

    def __init__(self, code: ErrorCode, reason: str, *, field: str | None = None) -> None:
        if len(reason) > MAX_REASON_CHARS:
            reason = reason[: MAX_REASON_CHARS - 3] + "..."
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason
        self.field = field

    def __reduce__(self) -> tuple[object, ...]:
        # ValueError pickles its args only; keep the code and field across processes.
        return (_rebuild, (self.code, self.reason, self.field))


def _rebuild(code: ErrorCode, reason: str, field: str | None) -> ProtocolError:
    return ProtocolError(code, reason, field=field)
