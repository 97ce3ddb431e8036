"""The one module that imports ib_insync.

Everything else in the gateway imports IB types from here, so that the maintained fork
``ib_async`` (same API) can be swapped in by changing this file alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

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


class PacedIngest:
    """Feeds ib_insync at most ``chunk`` bytes of TWS data per pass of the event loop.

    ib_insync decodes everything a socket read returned (up to 256 KiB) in one go, and
    its buffer handling is quadratic in the size of that read; under a heavy feed one pass
    could take tens of milliseconds and starve every gRPC sender sharing the loop. Here a
    large read is split and the rest is fed a chunk at a time, ``pause`` seconds apart
    (plus the time the loop's other work takes); while more than
    ``backlog`` bytes wait, the socket is not read (TWS then holds its ticks back; the
    simulator conflates them, as a real feed does). Small reads, the usual case, go straight
    through. Data received before a disconnect is all decoded before the disconnect is.
    """

    def __init__(
        self, ib: IB, chunk: int = 16 * 1024, backlog: int = 256 * 1024, pause: float = 0.0005
    ) -> None:
        self.chunk = chunk
        self.pause = pause
        self.backlog = backlog
        self._client: Any = ib.client
        self._conn: Any = self._client.conn
        self._pending = bytearray()
        self._scheduled = False
        self._paused: Any = None  # the transport whose reading is paused
        self._conn.hasData -= self._client._onSocketHasData
        self._conn.hasData += self._on_data
        self._conn.disconnected -= self._client._onSocketDisconnected
        self._conn.disconnected += self._on_disconnected

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _on_data(self, data: bytes) -> None:
        if not self._pending and len(data) <= self.chunk:
            self._client._onSocketHasData(data)
            return
        self._pending += data
        if not self._scheduled:
            self._feed()
        if len(self._pending) > self.backlog and self._paused is None:
            transport = self._conn.transport
            if transport is not None:
                transport.pause_reading()
                self._paused = transport

    def _feed(self) -> None:
        self._scheduled = False
        pending = self._pending
        if not pending:
            return
        piece = bytes(pending[: self.chunk])
        del pending[: self.chunk]
        self._client._onSocketHasData(piece)
        if pending:
            self._scheduled = True
            loop = asyncio.get_running_loop()
            if self.pause > 0:
                # a timer, not the next pass: a loop with nothing else to do goes idle in
                # between (gRPC's completion thread needs the GIL, which a busy loop holds)
                loop.call_later(self.pause, self._feed)
            else:
                loop.call_soon(self._feed)
        elif self._paused is not None:
            transport, self._paused = self._paused, None
            if not transport.is_closing():
                transport.resume_reading()

    def _on_disconnected(self, message: str) -> None:
        self._paused = None
        while self._pending:
            self._feed()
        self._client._onSocketDisconnected(message)


def pace_ingest(ib: IB) -> PacedIngest:
    """Bound the TWS data ib_insync decodes per event-loop pass (see :class:`PacedIngest`)."""
    return PacedIngest(ib)


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
    "PacedIngest",
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
    "pace_ingest",
    "util",
]
