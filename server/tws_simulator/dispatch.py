"""The dispatch table: request message id → handler, and the error a handler raises.

The server owns one table; feature modules (session, contracts, market data, account
feed, orders) register their handlers on it and import only this module at run time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from .message_ids import In

if TYPE_CHECKING:
    from .server import ClientConnection

Handler = Callable[["ClientConnection", list[str]], Awaitable[None] | None]


class RequestError(Exception):
    """A request TWS would refuse: answered with this IB error code and text."""

    def __init__(self, code: int, message: str, req_id: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.req_id = req_id


class DispatchTable:
    """Which handler serves each request message id."""

    def __init__(self) -> None:
        self._handlers: dict[int, Handler] = {}

    def register(self, msg_id: int, handler: Handler) -> None:
        """Serve requests with this message id with ``handler`` (replacing any earlier one)."""
        self._handlers[int(msg_id)] = handler

    def get(self, msg_id: int) -> Handler | None:
        return self._handlers.get(msg_id)


# Where the request id sits among a request's fields (after the message id), so an error
# about a request can name it and the client's pending call fails instead of hanging.
REQ_ID_INDEX: dict[int, int] = {
    In.REQ_MKT_DATA: 1,
    In.CANCEL_MKT_DATA: 1,
    In.PLACE_ORDER: 0,
    In.CANCEL_ORDER: 1,
    In.REQ_EXECUTIONS: 1,
    In.REQ_CONTRACT_DATA: 1,
    In.REQ_MKT_DEPTH: 1,
    In.CANCEL_MKT_DEPTH: 1,
    In.REQ_HISTORICAL_DATA: 0,
    In.EXERCISE_OPTIONS: 1,
    In.REQ_SCANNER_SUBSCRIPTION: 0,
    In.CANCEL_SCANNER_SUBSCRIPTION: 1,
    In.CANCEL_HISTORICAL_DATA: 1,
    In.REQ_REAL_TIME_BARS: 1,
    In.CANCEL_REAL_TIME_BARS: 1,
    In.REQ_FUNDAMENTAL_DATA: 1,
    In.CANCEL_FUNDAMENTAL_DATA: 1,
    In.REQ_CALC_IMPLIED_VOLAT: 1,
    In.REQ_CALC_OPTION_PRICE: 1,
    In.REQ_ACCOUNT_SUMMARY: 1,
    In.CANCEL_ACCOUNT_SUMMARY: 1,
    In.REQ_POSITIONS_MULTI: 1,
    In.CANCEL_POSITIONS_MULTI: 1,
    In.REQ_ACCOUNT_UPDATES_MULTI: 1,
    In.CANCEL_ACCOUNT_UPDATES_MULTI: 1,
    In.REQ_SEC_DEF_OPT_PARAMS: 0,
    In.REQ_SOFT_DOLLAR_TIERS: 0,
    In.REQ_MATCHING_SYMBOLS: 0,
    In.REQ_SMART_COMPONENTS: 0,
    In.REQ_NEWS_ARTICLE: 0,
    In.REQ_HISTORICAL_NEWS: 0,
    In.REQ_HEAD_TIMESTAMP: 0,
    In.REQ_HISTOGRAM_DATA: 0,
    In.CANCEL_HISTOGRAM_DATA: 0,
    In.CANCEL_HEAD_TIMESTAMP: 0,
    In.REQ_PNL: 0,
    In.CANCEL_PNL: 0,
    In.REQ_PNL_SINGLE: 0,
    In.CANCEL_PNL_SINGLE: 0,
    In.REQ_HISTORICAL_TICKS: 0,
    In.REQ_TICK_BY_TICK_DATA: 0,
    In.CANCEL_TICK_BY_TICK_DATA: 0,
    In.REQ_WSH_META_DATA: 0,
    In.CANCEL_WSH_META_DATA: 0,
    In.REQ_WSH_EVENT_DATA: 0,
    In.CANCEL_WSH_EVENT_DATA: 0,
    In.REQ_USER_INFO: 0,
}


def request_id(msg_id: int, fields: list[str]) -> int:
    """The request id a request carries, or -1 when it has none (or it cannot be read)."""
    index = REQ_ID_INDEX.get(msg_id)
    if index is None or index >= len(fields):
        return -1
    try:
        return int(fields[index])
    except ValueError:
        return -1
