"""Canonical JSON: the one byte form used on the wire, for hashes and for signatures.

``canonical_json(value)`` is ``json.dumps`` with keys sorted (by code point),
separators ``,`` and ``:`` with no spaces, non-ASCII characters written as UTF-8
rather than ``\\u`` escapes, and NaN/Infinity refused. Numbers are written as Python
writes them: integers in decimal, floats as the shortest text that reads back to the
same double (``repr``), always with a ``.`` or an exponent (``5.0``, ``1e-07``).
Equal values give equal bytes.
"""

from __future__ import annotations

import json

__all__ = ["canonical_json"]


def canonical_json(value: object) -> bytes:
    """The canonical UTF-8 JSON bytes of a JSON-compatible value.

    Raises ``ValueError`` for NaN/Infinity, and ``UnicodeEncodeError`` (a
    ``ValueError``) for strings holding lone surrogates.
    """
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")
