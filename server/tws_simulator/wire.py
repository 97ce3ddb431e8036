"""The TWS API wire format: length-prefixed frames of NUL-terminated text fields.

Pure helpers shared by every part of the simulator. A message is built as a list of
already-formatted ``str`` fields (see :func:`fmt`) and framed by :func:`frame`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable
from decimal import Decimal

# TWS's "unset" conventions, as they appear on the wire.
UNSET_DOUBLE = 1.7976931348623157e308
UNSET_INTEGER = 2**31 - 1
UNSET_DOUBLE_TEXT = "1.7976931348623157E308"
UNSET_INTEGER_TEXT = "2147483647"

HANDSHAKE_PREFIX = b"API\0"
_LENGTH = struct.Struct(">I")
MAX_FRAME = 16 * 1024 * 1024  # a sanity bound: TWS messages are far smaller


def fmt_float(value: float) -> str:
    """Format a double the way TWS (Java's ``Double.toString``) writes it."""
    if value == UNSET_DOUBLE:
        return UNSET_DOUBLE_TEXT
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if math.isnan(value):
        return "NaN"
    if value == int(value) and abs(value) < 1e16:
        return f"{value:.1f}"
    return repr(value)


def fmt(value: object) -> str:
    """Format one field value: None/"" → empty, bool → 1/0, float → Java style."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return fmt_float(value)
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value == value.to_integral() else str(value)
    return str(value)


def encode_fields(fields: Iterable[object]) -> bytes:
    """NUL-terminate each formatted field and join them (no length prefix)."""
    return b"".join(fmt(f).encode() + b"\0" for f in fields)


def frame(payload: bytes) -> bytes:
    """Prefix a payload with its 4-byte big-endian length."""
    return _LENGTH.pack(len(payload)) + payload


def encode_message(fields: Iterable[object]) -> bytes:
    """One complete framed message from its fields."""
    return frame(encode_fields(fields))


def split_fields(payload: bytes) -> list[str]:
    """Split a frame payload into its text fields (the trailing NUL yields no field)."""
    parts = payload.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return [p.decode("utf-8", errors="replace") for p in parts]


def read_length(header: bytes) -> int:
    """Decode a 4-byte length prefix."""
    (length,) = _LENGTH.unpack(header)
    return int(length)
