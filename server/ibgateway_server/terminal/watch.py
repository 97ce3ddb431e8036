"""Live terminal views of a gateway: ``ibgw quotes``, ``ibgw orders``, ``ibgw positions``.

On a terminal each is a table that updates in place (rich); piped, each update is one
plain line. They are clients like any other (ibgateway.client). Ctrl-C ends them with
exit code 0; a gateway that goes away is retried for a few seconds (the streams re-open
themselves), then the view ends with exit code 1 and one line saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from decimal import Decimal
from typing import Any, TextIO

import grpc
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ibgateway.client import (
    AsyncClient,
    GatewayError,
    Order,
    OrderEvent,
    Position,
    Quote,
    Reconnect,
    StreamRestarted,
)
from ibgateway.v1 import common_pb2, market_data_pb2, orders_pb2
from ibgateway_server.terminal.target import Target


def reconnect(retries: int) -> Reconnect:
    """How long a vanished gateway is waited for (6 retries: about 15 s)."""
    return Reconnect(initial_delay=0.2, max_delay=3.0, max_attempts=retries)


def _text(value: Decimal | None) -> str:
    return "" if value is None else format(value, "f")


def _client(target: Target) -> AsyncClient:
    root = target.tls_ca.read_bytes() if target.tls_ca else None
    key = target.tls_client_key.read_bytes() if target.tls_client_key else None
    chain = target.tls_client_cert.read_bytes() if target.tls_client_cert else None
    options = target.options()
    return AsyncClient(
        target.address,
        token=target.token,
        tls=target.uses_tls,
        root_certificates=root,
        private_key=key,
        certificate_chain=chain,
        options=options,
    )


class View:
    """One live view: ``render()`` for a terminal, ``line()`` for a pipe."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.status = "connecting"
        self.console = Console(file=out)
        self.live = out.isatty()

    def render(self) -> Table:
        raise NotImplementedError

    def emit(self, line: str) -> None:
        if not self.live:
            print(line, file=self.out, flush=True)


async def _run(view: View, work: Callable[[Callable[[], None]], Any]) -> int:
    """Run ``work(refresh)`` under a Live display (on a terminal); map the endings."""
    with contextlib.ExitStack() as stack:
        refresh: Callable[[], None] = lambda: None  # noqa: E731
        if view.live:
            live = stack.enter_context(
                Live(view.render(), console=view.console, auto_refresh=False, transient=False)
            )

            def refresh() -> None:
                live.update(view.render(), refresh=True)

        try:
            await work(refresh)
        except GatewayError as err:
            message = f"ibgw: the gateway went away: {err}"
            if err.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                message = f"ibgw: {err}"
            stack.close()
            print(message, file=sys.stderr, flush=True)
            return 1
    return 0


# ------------------------------------------------------------------------------ quotes


def _contract(text: str) -> common_pb2.Contract:
    """``AAPL`` = US stock; ``EUR.USD`` = a currency pair on IDEALPRO."""
    base, dot, quote = text.partition(".")
    if dot and len(base) == 3 and len(quote) == 3:
        return common_pb2.Contract(
            symbol=base.upper(), currency=quote.upper(), sec_type=common_pb2.SECURITY_TYPE_FOREX
        )
    return common_pb2.Contract(symbol=text.upper())


class QuotesView(View):
    def __init__(self, out: TextIO, symbols: Sequence[str], retries: int) -> None:
        super().__init__(out)
        self.retries = retries
        self.symbols = list(symbols)
        self.rows: dict[int, Quote] = {}  # by request index
        self.notes: dict[int, str] = {}

    def render(self) -> Table:
        table = Table(title=f"quotes ({self.status})", title_justify="left")
        for name in ("symbol", "bid", "ask", "last", "bid size", "ask size", "volume", "time"):
            table.add_column(name, justify="left" if name == "symbol" else "right")
        for index, symbol in enumerate(self.symbols):
            q = self.rows.get(index)
            if q is None:
                table.add_row(symbol, self.notes.get(index, "…"))
                continue
            when = q.tick_time.astimezone().strftime("%H:%M:%S") if q.tick_time else ""
            table.add_row(
                q.symbol,
                _text(q.bid),
                _text(q.ask),
                _text(q.last),
                _text(q.bid_size),
                _text(q.ask_size),
                _text(q.volume),
                when,
            )
        return table

    async def follow(self, gw: AsyncClient, refresh: Callable[[], None]) -> None:
        contracts = [_contract(s) for s in self.symbols]
        index_of: dict[int, int] = {}  # con_id → request index
        stream = gw.market_data.stream_quotes(contracts, reconnect=reconnect(self.retries))
        async for item in stream:
            if isinstance(item, Quote):
                index = index_of.get(item.con_id)
                if index is None:
                    continue
                self.rows[index] = item
                self.emit(
                    f"{item.symbol} bid {_text(item.bid)} ask {_text(item.ask)} "
                    f"last {_text(item.last)}"
                )
            elif isinstance(item, market_data_pb2.SubscriptionStatus):
                state = market_data_pb2.SubscriptionState.Name(item.state).removeprefix(
                    "SUBSCRIPTION_STATE_"
                )
                if item.contract.con_id:
                    index_of[item.contract.con_id] = item.index
                self.notes[item.index] = state if not item.message else f"{state}: {item.message}"
                self.status = "live"
                self.emit(f"{self.symbols[item.index]} {state} {item.message}".rstrip())
            elif isinstance(item, StreamRestarted):
                self.status = "re-opened after the gateway went away"
                self.emit(f"# {self.status}")
            else:  # an IB session change
                self.status = item.message or "IB connection changed"
                self.emit(f"# {self.status}")
            refresh()


async def watch_quotes(target: Target, symbols: Sequence[str], retries: int, out: TextIO) -> int:
    view = QuotesView(out, symbols, retries)
    async with _client(target) as gw:
        return await _run(view, lambda refresh: _reachable(gw, view.follow(gw, refresh)))


async def _reachable(gw: AsyncClient, work: Any) -> None:
    """A gateway that is not there at the start is an error at once, not a wait."""
    try:
        await gw.wait_ready(5.0)
    except GatewayError:
        work.close()
        raise
    await work


# ------------------------------------------------------------------------------ orders


class OrdersView(View):
    def __init__(self, out: TextIO, tail: int, retries: int) -> None:
        super().__init__(out)
        self.retries = retries
        self.orders: dict[str, Order] = {}  # by client_order_id or order id
        self.events: deque[OrderEvent] = deque(maxlen=tail)

    @staticmethod
    def _key(order: Order) -> str:
        return order.client_order_id or str(order.order_id)

    def render(self) -> Table:
        table = Table(title=f"working orders ({self.status})", title_justify="left")
        for name in ("key", "id", "side", "qty", "symbol", "type", "limit", "stop", "status",
                     "filled"):  # fmt: skip
            table.add_column(name)
        for o in self.orders.values():
            if not o.done:
                table.add_row(
                    o.client_order_id, str(o.order_id), o.side, _text(o.quantity), o.symbol,
                    o.order_type, _text(o.limit_price), _text(o.stop_price), o.status,
                    _text(o.filled_quantity),
                )  # fmt: skip
        events = Table(title="latest events", title_justify="left")
        for name in ("seq", "time", "event", "key", "status", "fill"):
            events.add_column(name)
        for e in self.events:
            when = e.event_time.astimezone().strftime("%H:%M:%S") if e.event_time else ""
            fill = f"{_text(e.fill.quantity)} @ {_text(e.fill.price)}" if e.fill else ""
            events.add_row(str(e.sequence), when, e.type, self._key(e.order), e.order.status, fill)
        outer = Table.grid()
        outer.add_row(table)
        outer.add_row(events)
        return outer

    async def follow(self, gw: AsyncClient, refresh: Callable[[], None]) -> None:
        events = gw.orders.events(reconnect=reconnect(self.retries))
        first = asyncio.ensure_future(anext(events))  # subscribe before listing: no gap
        await asyncio.sleep(0)
        for order in await gw.orders.list("OPEN"):
            self.orders[self._key(order)] = order
            self.emit(
                f"working {self._key(order)} {order.side} {_text(order.quantity)} "
                f"{order.symbol} {order.order_type} {order.status}"
            )
        self.status = "live"
        refresh()
        async for item in _chain(first, events):
            if isinstance(item, OrderEvent):
                self.events.append(item)
                self.orders[self._key(item.order)] = item.order
                fill = f" {_text(item.fill.quantity)}@{_text(item.fill.price)}" if item.fill else ""
                self.emit(
                    f"{item.sequence} {item.type} {self._key(item.order)} {item.order.status}{fill}"
                )
            elif isinstance(item, orders_pb2.ReplayGap):
                for order in await gw.orders.list("OPEN"):  # re-sync
                    self.orders[self._key(order)] = order
            elif isinstance(item, StreamRestarted):
                self.status = "re-opened after the gateway went away"
                self.emit(f"# {self.status}")
            else:
                self.status = item.message or "IB connection changed"
                self.emit(f"# {self.status}")
            refresh()


async def _chain(first: asyncio.Future[Any], rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    yield await first
    async for item in rest:
        yield item


async def watch_orders(target: Target, tail: int, retries: int, out: TextIO) -> int:
    view = OrdersView(out, tail, retries)
    async with _client(target) as gw:
        return await _run(view, lambda refresh: _reachable(gw, view.follow(gw, refresh)))


# --------------------------------------------------------------------------- positions


class PositionsView(View):
    def __init__(self, out: TextIO, account_id: str, retries: int) -> None:
        super().__init__(out)
        self.retries = retries
        self.account_id = account_id
        self.positions: list[Position] = []
        self.summary = ""

    def render(self) -> Table:
        table = Table(title=f"{self.summary} ({self.status})", title_justify="left")
        for name in ("account", "symbol", "qty", "avg cost", "price", "value", "unrealized"):
            table.add_column(name, justify="left" if name in ("account", "symbol") else "right")
        for p in self.positions:
            table.add_row(
                p.account_id, p.symbol, _text(p.quantity), _text(p.average_cost),
                _text(p.market_price), _text(p.market_value), _text(p.unrealized_pnl),
            )  # fmt: skip
        return table

    async def follow(self, gw: AsyncClient, refresh: Callable[[], None], interval: float) -> None:
        failures = 0
        while True:
            try:
                balance = await gw.accounts.balance(self.account_id)
                self.positions = await gw.portfolio.positions(self.account_id)
            except GatewayError as err:
                failures += 1
                if err.code != grpc.StatusCode.UNAVAILABLE or failures > self.retries:
                    raise
                self.status = f"unavailable: {err.message}"
                self.emit(f"# {self.status}")
            else:
                failures = 0
                self.summary = (
                    f"{balance.account_id} net liquidation {_text(balance.net_liquidation)} "
                    f"{balance.currency}"
                )
                self.status = dt.datetime.now().strftime("%H:%M:%S")
                self.emit(self.summary)
                for p in self.positions:
                    self.emit(
                        f"  {p.symbol} {_text(p.quantity)} @ {_text(p.average_cost)} "
                        f"value {_text(p.market_value)}"
                    )
            refresh()
            await asyncio.sleep(interval)


async def watch_positions(
    target: Target, account_id: str, interval: float, retries: int, out: TextIO
) -> int:
    view = PositionsView(out, account_id, retries)
    async with _client(target) as gw:
        return await _run(view, lambda refresh: _reachable(gw, view.follow(gw, refresh, interval)))


def run_view(main: Callable[[], Any]) -> int:
    """asyncio.run with Ctrl-C as a normal end (exit 0, no traceback)."""
    try:
        return int(asyncio.run(main()))
    except KeyboardInterrupt:
        return 0
    finally:
        # a second Ctrl-C while the channel closes must not print a traceback either
        signal.signal(signal.SIGINT, signal.SIG_IGN)
