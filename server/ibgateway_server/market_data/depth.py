"""Market depth for StreamDepth: one IB depth subscription per (contract, SMART or not),
shared by every stream that wants it.

The gateway keeps each book itself: IB sends row operations (insert, update, delete at a
position, per side) and :func:`apply_ticks` applies them in order to the line's book.
Every stream sends whole books, cut to the rows it asked for: the first as soon as the
book is known, then one after each change. A stream that cannot keep up sends the newest
book when it can and counts the ones it skipped (conflation), so a slow reader never holds
up the others and never piles up memory.

IB allows a few depth subscriptions per account (309 beyond them) and refuses depth
without a level-II permission (354) or for instruments without a book (10092): the
streams of such a line get a SubscriptionStatus and end. When the IB session drops, lines
are PAUSED; when it is back, they are requested again with an empty book (IB sends the
whole book again).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from ibgateway.v1 import common_pb2, market_data_pb2
from ibgateway_server.ib import convert
from ibgateway_server.ib.insync import Contract
from ibgateway_server.ib.session import IbSession, SessionEvent, StateChange
from ibgateway_server.market_data.hub import (
    ACTIVE,
    FAILED,
    LIMIT_REACHED,
    MAX_CONNECTION_EVENTS,
    NOT_FOUND,
    PAUSED,
    PERMISSION_DENIED,
)
from ibgateway_server.market_data.shared_lines import SharedLines

log = logging.getLogger(__name__)

MAX_ROWS = 20  # rows per side a stream may ask for (and the gateway asks IB for)
DEFAULT_ROWS = 10
INSERT, UPDATE, DELETE = 0, 1, 2
BID_SIDE = 1  # IB's side numbers: 0 ask, 1 bid
_ERROR_STATES = {
    200: NOT_FOUND,
    309: LIMIT_REACHED,
    354: PERMISSION_DENIED,
    10089: PERMISSION_DENIED,
    10090: PERMISSION_DENIED,
    10092: FAILED,
}
# 317: IB reset the book (ib_insync turns it into deletes of every row, applied as such)
_IGNORED_CODES = frozenset({317, 1100, 1101, 1102, 2100, 2119})
_TERMINAL = frozenset({NOT_FOUND, LIMIT_REACHED, PERMISSION_DENIED, FAILED})
_PAUSED_TEXT = "IB connection down; resumes when it is back"

Row = tuple[float, float, str]  # price, size, market maker
LineKey = tuple[int, bool]


def apply_ticks(bids: list[Row], asks: list[Row], ticks: Iterable[Any]) -> None:
    """Apply IB's depth operations (ib_insync MktDepthData: position, marketMaker,
    operation, side, price, size) in order to a book. An operation at a position the book
    does not have (a row IB never sent) is dropped rather than guessed."""
    for tick in ticks:
        rows = bids if tick.side == BID_SIDE else asks
        pos = tick.position
        if tick.operation == INSERT:
            if 0 <= pos <= len(rows):
                rows.insert(pos, (tick.price, tick.size, tick.marketMaker or ""))
        elif tick.operation == UPDATE:
            if 0 <= pos < len(rows):
                rows[pos] = (tick.price, tick.size, tick.marketMaker or "")
            elif pos == len(rows):  # some feeds update one past the end to grow the book
                rows.append((tick.price, tick.size, tick.marketMaker or ""))
        elif tick.operation == DELETE and 0 <= pos < len(rows):
            del rows[pos]


def levels_to_proto(rows: Iterable[Row]) -> list[market_data_pb2.DepthLevel]:
    return [
        market_data_pb2.DepthLevel(
            price=convert.to_decimal(price), size=convert.to_decimal(size), market_maker=mm
        )
        for price, size, mm in rows
    ]


class DepthLine:
    """One IB depth subscription and the book it keeps."""

    def __init__(self, key: LineKey, contract: Contract) -> None:
        self.key = key
        self.smart = key[1]
        self.template = contract
        self.contract = copy.copy(contract)
        self.contract_pb = convert.contract_to_proto(contract)
        self.ticker: Any = None
        self.bids: list[Row] = []
        self.asks: list[Row] = []
        self.version = 0  # bumped on every change of the book
        self.update_time: datetime | None = None
        self.state: int = ACTIVE
        self.message = ""
        self.ib_code = 0
        self.streams: list[DepthStream] = []

    def status(self) -> tuple[int, str, int]:
        return self.state, self.message, self.ib_code

    def set_state(self, state: int, message: str, ib_code: int = 0) -> None:
        self.state, self.message, self.ib_code = state, message, ib_code
        for stream in list(self.streams):
            stream.line_status(self)

    def on_update(self, ticker: Any) -> None:
        if ticker is not self.ticker or not ticker.domTicks:
            return
        apply_ticks(self.bids, self.asks, ticker.domTicks)
        self.version += 1
        self.update_time = ticker.time or datetime.now(UTC)
        if self.state == PAUSED:
            self.set_state(ACTIVE, "")
        for stream in self.streams:
            stream.wake()

    def book(self, rows: int, conflated: int) -> market_data_pb2.StreamDepthResponse:
        book = market_data_pb2.DepthBook(
            contract=self.contract_pb,
            bids=levels_to_proto(self.bids[:rows]),
            asks=levels_to_proto(self.asks[:rows]),
            conflated_updates=conflated,
        )
        if self.update_time is not None:
            book.update_time.FromDatetime(self.update_time)
        return market_data_pb2.StreamDepthResponse(book=book)


class DepthHub(SharedLines[LineKey, DepthLine, "DepthStream"]):
    """Every depth subscription of the gateway (started on first use)."""

    def __init__(self, session: IbSession, *, rows: int = MAX_ROWS) -> None:
        super().__init__(session)
        self.rows = rows
        self._by_contract: dict[int, DepthLine] = {}  # id(line.contract) → line

    # ------------------------------------------------------------ lines

    def acquire(self, contract: Contract, smart: bool, stream: DepthStream) -> DepthLine:
        self.start()
        key = (contract.conId, smart)
        line = self._lines.get(key)
        if line is None:
            line = DepthLine(key, contract)
            self._lines[key] = line
            self._subscribe(line)
        line.streams.append(stream)
        return line

    def release(self, line: DepthLine, stream: DepthStream) -> None:
        with contextlib.suppress(ValueError):
            line.streams.remove(stream)
        if not line.streams and self._lines.get(line.key) is line:
            del self._lines[line.key]
            self._cancel(line)

    def _cancel(self, line: DepthLine) -> None:
        self._by_contract.pop(id(line.contract), None)
        ticker, line.ticker = line.ticker, None
        if ticker is not None:
            ticker.updateEvent -= line.on_update
            if self.session.connected:
                with contextlib.suppress(Exception):
                    self.ib.cancelMktDepth(line.contract, isSmartDepth=line.smart)

    def _subscribe(self, line: DepthLine) -> None:
        if not self.session.connected:
            line.set_state(PAUSED, _PAUSED_TEXT)
            return
        # A fresh contract object each time: ib_insync keys its tickers by the object, and
        # a re-subscribed book must start empty, not on top of the old one.
        self._by_contract.pop(id(line.contract), None)
        line.contract = copy.copy(line.template)
        line.bids.clear()
        line.asks.clear()
        try:
            ticker = self.ib.reqMktDepth(line.contract, numRows=self.rows, isSmartDepth=line.smart)
        except ConnectionError:
            line.set_state(PAUSED, _PAUSED_TEXT)
            return
        self._by_contract[id(line.contract)] = line
        line.ticker = ticker
        ticker.updateEvent += line.on_update
        if line.state != ACTIVE:
            line.set_state(ACTIVE, "")

    # ------------------------------------------------------------ IB events

    def _on_error(self, req_id: int, code: int, message: str, contract: object) -> None:
        if contract is None or code in _IGNORED_CODES or 2100 <= code < 2200:
            return
        line = self._by_contract.get(id(contract))
        if line is None or line.contract is not contract:
            return
        log.info(
            "market depth of %s refused by IB (%d): %s", line.contract_pb.symbol, code, message
        )
        # The line is dead: forget it (a later stream tries afresh); its streams end.
        if self._lines.get(line.key) is line:
            del self._lines[line.key]
        self._cancel(line)
        line.set_state(_ERROR_STATES.get(code, FAILED), message, code)

    def _on_state(self, change: StateChange) -> None:
        event = convert.state_change_to_proto(change)
        for stream in list(self._streams):
            stream.connection_event(event)
        if change.event in (SessionEvent.DISCONNECTED, SessionEvent.RECONNECTING):
            for line in self._lines.values():  # the socket is gone, the subscriptions too
                self._by_contract.pop(id(line.contract), None)
                if line.ticker is not None:
                    line.ticker.updateEvent -= line.on_update
                    line.ticker = None
                line.set_state(PAUSED, _PAUSED_TEXT)
        elif change.event is SessionEvent.CONNECTIVITY_LOST:
            for line in self._lines.values():
                line.set_state(PAUSED, _PAUSED_TEXT)
        elif change.resubscribe:  # connected again, or 1101: IB forgot the subscriptions
            for line in list(self._lines.values()):
                self._cancel(line)
                self._subscribe(line)
        elif change.event is SessionEvent.CONNECTIVITY_RESTORED:  # 1102: data maintained
            for line in self._lines.values():
                if line.state == PAUSED and line.ticker is not None:
                    line.set_state(ACTIVE, "")


Writer = Callable[[market_data_pb2.StreamDepthResponse], Awaitable[None]]


class DepthStream:
    """One StreamDepth call: a status, then the newest book whenever it changed."""

    def __init__(self, hub: DepthHub, contract: Contract, rows: int, heartbeat: float) -> None:
        self.hub = hub
        self.contract = contract
        self.rows = rows
        self.heartbeat = heartbeat
        self.smart = False
        self.line: DepthLine | None = None
        self.sent_version = 0
        self._control: list[market_data_pb2.StreamDepthResponse] = []
        self._wake = asyncio.Event()
        self._ended = False
        self._closed = False

    def open(self, smart: bool) -> None:
        self.smart = smart
        self.hub.register(self)
        self.line = self.hub.acquire(self.contract, smart, self)
        self.line_status(self.line)

    def line_status(self, line: DepthLine) -> None:
        state, message, code = line.status()
        self._control.append(
            market_data_pb2.StreamDepthResponse(
                subscription_status=market_data_pb2.SubscriptionStatus(
                    index=0,
                    contract=line.contract_pb,
                    state=state,  # type: ignore[arg-type]
                    message=message,
                    ib_code=code,
                )
            )
        )
        self._wake.set()

    def connection_event(self, event: common_pb2.ConnectionStateChange) -> None:
        self._control.append(market_data_pb2.StreamDepthResponse(connection_state=event))
        del self._control[:-MAX_CONNECTION_EVENTS]
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def end(self) -> None:
        self._ended = True
        self._wake.set()

    def _next(self) -> tuple[market_data_pb2.StreamDepthResponse | None, bool]:
        """(message, last): control messages first, then the newest book if it changed."""
        if self._control:
            message = self._control.pop(0)
            status = message.subscription_status
            last = message.HasField("subscription_status") and status.state in _TERMINAL
            return message, last
        line = self.line
        if line is not None and line.version != self.sent_version and line.update_time:
            skipped = line.version - self.sent_version - 1 if self.sent_version else 0
            self.sent_version = line.version
            return line.book(self.rows, max(0, skipped)), False
        return None, False

    async def run(self, write: Writer) -> None:
        loop = asyncio.get_running_loop()
        last_send = loop.time()
        while not self._ended:
            message, last = self._next()
            if message is None:
                silence = loop.time() - last_send
                if silence < self.heartbeat:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.heartbeat - silence)
                    continue
                message = market_data_pb2.StreamDepthResponse(heartbeat=convert.heartbeat_now())
            await write(message)
            last_send = loop.time()
            if last:
                return  # IB refused the subscription: nothing more will come

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ended = True
        if self.line is not None:
            self.hub.release(self.line, self)
            self.line = None
        self._control.clear()
        self.hub.unregister(self)
