"""A small typed client of the ibgateway API, for asyncio (:class:`AsyncClient`) and
blocking code (:class:`Client`).

- services as attributes: ``connection``, ``accounts``, ``portfolio``, ``market_data``,
  ``orders`` (and ``stubs``, the generated stubs on the same channel, for everything else);
- exact numbers: ``decimal.Decimal`` in and out (floats are refused);
- one exception type, :class:`GatewayError` (code, reason, ib_code, field_violations);
- a deadline on every unary call, retries of idempotent ones on ``UNAVAILABLE``;
- ``market_data.stream_quotes`` re-opens itself after a gateway restart;
  ``orders.events`` resumes after the last sequence it delivered.
"""

from ibgateway.client._aio import (
    AsyncClient,
    Balance,
    OrderRef,
    OrderStreamItem,
    PnL,
    QuoteSnapshot,
    QuoteStreamItem,
    Reconnect,
    Stubs,
)
from ibgateway.client._channel import service_config
from ibgateway.client._errors import FieldViolation, GatewayError
from ibgateway.client._sync import Client
from ibgateway.client._types import (
    ContractLike,
    DecimalLike,
    Fill,
    Order,
    OrderEvent,
    Position,
    Quote,
    StreamRestarted,
    contract_msg,
    decimal_msg,
    to_decimal,
)

__all__ = [
    "AsyncClient",
    "Balance",
    "Client",
    "ContractLike",
    "DecimalLike",
    "FieldViolation",
    "Fill",
    "GatewayError",
    "Order",
    "OrderEvent",
    "OrderRef",
    "OrderStreamItem",
    "PnL",
    "Position",
    "Quote",
    "QuoteSnapshot",
    "QuoteStreamItem",
    "Reconnect",
    "StreamRestarted",
    "Stubs",
    "contract_msg",
    "decimal_msg",
    "service_config",
    "to_decimal",
]
