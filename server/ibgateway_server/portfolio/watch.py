"""WatchPortfolio: one account's positions, account values and P&L, as a snapshot and then
as changes, conflated per position / tag for a slow reader.

Sources (all pushed by TWS to ib_insync, nothing polled):

* positions: ``positionEvent`` (reqPositions, prompt on every fill) for the quantity and
  average cost, valued with ``updatePortfolioEvent`` (market price/value, P&L);
* account values: ``accountValueEvent`` (the account updates ib_insync subscribes at
  connect);
* P&L: one IB ``reqPnL`` subscription per account, shared by every watcher of it and
  cancelled when the last one leaves.

Each watcher keeps the newest value per key (position con_id, value tag+currency, P&L)
that it has not sent yet, so it never holds more than the account has keys (bounded), and
counts the intermediate values it skipped. After a reconnect it sends a fresh snapshot
(what changed while the gateway was away is in it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from ibgateway.v1 import account_pb2, common_pb2, portfolio_pb2
from ibgateway_server.ib import convert
from ibgateway_server.ib.insync import AccountValue, PnL, PortfolioItem, Position
from ibgateway_server.ib.session import IbSession, SessionEvent, StateChange
from ibgateway_server.portfolio.convert import position_to_proto
from ibgateway_server.portfolio.positions import merge_portfolio

log = logging.getLogger(__name__)

MAX_PENDING = 10_000  # keys held for one watcher (an account has far fewer)
MAX_CONNECTION_EVENTS = 16

Key = tuple[Any, ...]
Writer = Callable[[portfolio_pb2.WatchPortfolioResponse], Awaitable[None]]


def pnl_to_proto(pnl: PnL | None) -> portfolio_pb2.PortfolioPnL:
    if pnl is None:
        return portfolio_pb2.PortfolioPnL()
    return portfolio_pb2.PortfolioPnL(
        daily_pnl=convert.to_decimal(pnl.dailyPnL),
        unrealized_pnl=convert.to_decimal(pnl.unrealizedPnL),
        realized_pnl=convert.to_decimal(pnl.realizedPnL),
    )


def value_to_proto(value: AccountValue) -> account_pb2.AccountValue:
    return account_pb2.AccountValue(
        account_id=value.account, tag=value.tag, value=value.value, currency=value.currency
    )


def position_update(item: PortfolioItem) -> portfolio_pb2.PositionUpdate:
    return portfolio_pb2.PositionUpdate(position=position_to_proto(item), closed=not item.position)


class PnlSubscriptions:
    """One IB P&L subscription per account, shared by every watcher of it."""

    def __init__(self, session: IbSession) -> None:
        self.session = session
        self._refs: dict[str, int] = {}
        self._live: dict[str, PnL] = {}

    def acquire(self, account: str) -> None:
        self._refs[account] = self._refs.get(account, 0) + 1
        if self._refs[account] == 1:
            self._subscribe(account)

    def release(self, account: str) -> None:
        refs = self._refs.get(account, 0) - 1
        if refs > 0:
            self._refs[account] = refs
            return
        self._refs.pop(account, None)
        pnl = self._live.pop(account, None)
        if pnl is not None and self.session.connected:
            with contextlib.suppress(Exception):
                self.session.ib.cancelPnL(account)

    def current(self, account: str) -> PnL | None:
        pnl = self._live.get(account)
        if pnl is None or all(math.isnan(v) for v in (pnl.dailyPnL, pnl.unrealizedPnL)):
            return None
        return pnl

    def _subscribe(self, account: str) -> None:
        if not self.session.connected:
            return
        try:
            self._live[account] = self.session.ib.reqPnL(account)
        except Exception:  # e.g. the connection dropped just now: resubscribed on reconnect
            log.warning("cannot subscribe P&L of %s now", account, exc_info=True)

    def resubscribe(self) -> None:
        """After a reconnect IB has forgotten every subscription."""
        self._live.clear()
        for account in self._refs:
            self._subscribe(account)


class PortfolioWatch:
    """One WatchPortfolio call."""

    def __init__(self, session: IbSession, pnl: PnlSubscriptions, account: str) -> None:
        self.session = session
        self.ib = session.ib
        self.pnl = pnl
        self.account = account
        self.conflated = 0
        self._pending: OrderedDict[Key, Any] = OrderedDict()
        self._events: list[common_pb2.ConnectionStateChange] = []
        self._snapshot_due = True
        self._wake = asyncio.Event()
        self._closed = False
        self._remove_listener: Callable[[], None] | None = None

    # -------------------------------------------------------------- lifecycle

    def open(self) -> None:
        self.pnl.acquire(self.account)
        self.ib.positionEvent += self._on_position
        self.ib.updatePortfolioEvent += self._on_portfolio
        self.ib.accountValueEvent += self._on_value
        self.ib.pnlEvent += self._on_pnl
        self._remove_listener = self.session.add_state_listener(self._on_state)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.ib.positionEvent -= self._on_position
        self.ib.updatePortfolioEvent -= self._on_portfolio
        self.ib.accountValueEvent -= self._on_value
        self.ib.pnlEvent -= self._on_pnl
        if self._remove_listener is not None:
            self._remove_listener()
        self.pnl.release(self.account)
        self._pending.clear()
        self._wake.set()

    # ----------------------------------------------------------------- events

    def _put(self, key: Key, value: Any) -> None:
        if key in self._pending:
            self.conflated += 1
            del self._pending[key]
        elif len(self._pending) >= MAX_PENDING:
            self._pending.popitem(last=False)
            self.conflated += 1
        self._pending[key] = value
        self._wake.set()

    def _on_position(self, position: Position) -> None:
        if position.account != self.account:
            return
        if not position.position:
            item = PortfolioItem(
                contract=position.contract,
                position=0.0,
                marketPrice=math.nan,
                marketValue=0.0,
                averageCost=0.0,
                unrealizedPNL=0.0,
                realizedPNL=math.nan,
                account=position.account,
            )
        else:
            item = merge_portfolio([position], self.ib.portfolio(self.account))[0]
        self._put(("position", position.contract.conId), item)

    def _on_portfolio(self, item: PortfolioItem) -> None:
        if item.account != self.account:
            return
        self._put(("position", item.contract.conId), item)

    def _on_value(self, value: AccountValue) -> None:
        if value.account != self.account:
            return
        self._put(("value", value.tag, value.currency), value)

    def _on_pnl(self, pnl: PnL) -> None:
        if pnl.account != self.account:
            return
        self._put(("pnl",), pnl)

    def _on_state(self, change: StateChange) -> None:
        self._events.append(convert.state_change_to_proto(change))
        del self._events[:-MAX_CONNECTION_EVENTS]
        if change.event is SessionEvent.CONNECTED:
            # Everything may have changed while away: start over with a snapshot.
            self._snapshot_due = True
            self._pending.clear()
        self._wake.set()

    # --------------------------------------------------------------- messages

    def snapshot(self) -> portfolio_pb2.PortfolioSnapshot:
        ib = self.ib
        positions = [p for p in ib.positions(self.account) if p.position]
        items = merge_portfolio(positions, ib.portfolio(self.account))
        items.sort(key=lambda i: (i.contract.symbol, i.contract.conId))
        values = sorted(ib.accountValues(self.account), key=lambda v: (v.tag, v.currency))
        return portfolio_pb2.PortfolioSnapshot(
            account_id=self.account,
            positions=[position_to_proto(i) for i in items],
            account_values=[value_to_proto(v) for v in values if v.account == self.account],
            pnl=pnl_to_proto(self.pnl.current(self.account)),
            snapshot_time=convert.timestamp(time.time()),
        )

    def changes(self) -> portfolio_pb2.PortfolioChanges:
        pending, self._pending = self._pending, OrderedDict()
        message = portfolio_pb2.PortfolioChanges(
            account_id=self.account, conflated_updates=self.conflated
        )
        self.conflated = 0
        for key, value in pending.items():
            if key[0] == "position":
                message.positions.append(position_update(value))
            elif key[0] == "value":
                message.account_values.append(value_to_proto(value))
            else:
                message.pnl.CopyFrom(pnl_to_proto(value))
        return message

    def next_message(self) -> portfolio_pb2.WatchPortfolioResponse | None:
        if self._events:
            return portfolio_pb2.WatchPortfolioResponse(connection_state=self._events.pop(0))
        if self._snapshot_due and self.session.connected:
            self._snapshot_due = False
            self._pending.clear()
            self.conflated = 0
            return portfolio_pb2.WatchPortfolioResponse(snapshot=self.snapshot())
        if self._pending and not self._snapshot_due:
            return portfolio_pb2.WatchPortfolioResponse(changes=self.changes())
        return None

    async def run(self, write: Writer, heartbeat: float) -> None:
        loop = asyncio.get_running_loop()
        last_send = loop.time()
        while not self._closed:
            message = self.next_message()
            if message is None:
                silence = loop.time() - last_send
                if silence >= heartbeat:
                    message = portfolio_pb2.WatchPortfolioResponse(
                        heartbeat=convert.heartbeat_now()
                    )
                else:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), heartbeat - silence)
                    continue
            await write(message)
            last_send = loop.time()
