"""Pure request-validation helpers: collect BadRequest field violations, raise once.

Typical use in a servicer::

    v = Violations()
    qty = parse_decimal(request.quantity, "quantity", v, required=True, positive=True)
    v.check(request.client_order_id != "", "client_order_id", "required")
    v.raise_if_any()
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from google.protobuf import duration_pb2

from ibgateway.v1 import common_pb2
from ibgateway_server.errors import GatewayError, invalid_argument

# Plain decimal notation only: no exponent, no thousands separators (see common.proto).
_DECIMAL = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)$")

# Bounds of a stream's requested heartbeat interval (every stream RPC has one).
MIN_HEARTBEAT = 0.1
MAX_HEARTBEAT = 3600.0


class Violations:
    """An ordered list of (field path, description) pairs."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field: str, description: str) -> None:
        self.items.append((field, description))

    def check(self, condition: bool, field: str, description: str) -> bool:
        """Record a violation unless ``condition``; returns ``condition``."""
        if not condition:
            self.add(field, description)
        return condition

    def __bool__(self) -> bool:
        return bool(self.items)

    def error(self) -> GatewayError:
        return invalid_argument(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise self.error()


def parse_decimal(
    value: common_pb2.Decimal | str | None,
    field: str,
    violations: Violations,
    *,
    required: bool = False,
    positive: bool = False,
    non_negative: bool = False,
) -> Decimal | None:
    """A Decimal from a proto Decimal or text; None when empty (violation if required)."""
    text = value.value if isinstance(value, common_pb2.Decimal) else (value or "")
    text = text.strip()
    if not text:
        if required:
            violations.add(field, "required")
        return None
    if not _DECIMAL.match(text):
        violations.add(field, f'{text!r} is not a plain decimal number like "150.25"')
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        violations.add(field, f"{text!r} is not a decimal number")
        return None
    if positive and number <= 0:
        violations.add(field, f"must be greater than 0 (got {text})")
    elif non_negative and number < 0:
        violations.add(field, f"must not be negative (got {text})")
    return number


def check_contract(
    contract: common_pb2.Contract | None, field: str, violations: Violations
) -> bool:
    """A contract spec needs a con_id or a symbol; a strike must be a decimal.

    A negative con_id never gets here: the request rules refuse it first.
    """
    if contract is None or (not contract.con_id and not contract.symbol.strip()):
        violations.add(f"{field}.symbol", "required (or give con_id)")
        return False
    if contract.HasField("strike") and contract.strike.value:
        before = len(violations.items)
        parse_decimal(contract.strike, f"{field}.strike", violations, positive=True)
        return len(violations.items) == before
    return True


def heartbeat_seconds(
    interval: duration_pb2.Duration | None,
    default: float,
    violations: Violations,
    field: str = "heartbeat_interval",
) -> float:
    """A stream's heartbeat interval in seconds: the requested one, else ``default``.

    Pass ``request.heartbeat_interval if request.HasField("heartbeat_interval") else None``;
    unset or zero means the gateway default (IBGW_HEARTBEAT_SECONDS).
    """
    if interval is None:
        return default
    seconds = interval.seconds + interval.nanos / 1e9
    if seconds == 0:
        return default
    if not MIN_HEARTBEAT <= seconds <= MAX_HEARTBEAT:
        violations.add(
            field,
            f"must be 0 (gateway default) or between {MIN_HEARTBEAT:g}s and "
            f"{MAX_HEARTBEAT:g}s (got {seconds:g}s)",
        )
    return seconds
