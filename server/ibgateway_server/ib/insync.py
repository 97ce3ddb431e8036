"""The one module that imports ib_insync.

Everything else in the gateway imports IB types from here, so that the maintained fork
``ib_async`` (same API) can be swapped in by changing this file alone.
"""

from __future__ import annotations

from ib_insync import (
    IB,
    AccountValue,
    CommissionReport,
    Contract,
    ContractDetails,
    Execution,
    ExecutionFilter,
    Fill,
    Forex,
    LimitOrder,
    MarketOrder,
    Order,
    OrderState,
    OrderStatus,
    PnL,
    PortfolioItem,
    Position,
    RequestError,
    Stock,
    StopLimitOrder,
    StopOrder,
    Ticker,
    Trade,
    TradeLogEntry,
    util,
)
from ib_insync.util import UNSET_DOUBLE, UNSET_INTEGER, isNan

# The library whose API this module re-exports (shown by GetConnectionStatus / logs).
LIBRARY_NAME = "ib_insync"

__all__ = [
    "IB",
    "LIBRARY_NAME",
    "UNSET_DOUBLE",
    "UNSET_INTEGER",
    "AccountValue",
    "CommissionReport",
    "Contract",
    "ContractDetails",
    "Execution",
    "ExecutionFilter",
    "Fill",
    "Forex",
    "LimitOrder",
    "MarketOrder",
    "Order",
    "OrderState",
    "OrderStatus",
    "PnL",
    "PortfolioItem",
    "Position",
    "RequestError",
    "Stock",
    "StopLimitOrder",
    "StopOrder",
    "Ticker",
    "Trade",
    "TradeLogEntry",
    "isNan",
    "util",
]
