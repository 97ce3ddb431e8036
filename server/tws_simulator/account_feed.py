"""Account requests on the wire: account updates (single and multi), account summary,
positions (single and multi), and P&L — each kept up to date as prices move and orders fill.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .account import Account, PortfolioItem, Position
from .dispatch import RequestError
from .instruments import Instrument
from .message_ids import In, Out

if TYPE_CHECKING:
    from .server import ClientConnection, Simulator

log = logging.getLogger(__name__)

# Rows of the ledger ($LEDGER tags, ledgerAndNLV multi-updates).
LEDGER_KEYS = frozenset(
    {
        "CashBalance",
        "TotalCashBalance",
        "NetLiquidationByCurrency",
        "StockMarketValue",
        "UnrealizedPnL",
        "RealizedPnL",
        "ExchangeRate",
    }
)

ValueKey = tuple[str, str]  # (key, currency)


def _contract_fields(inst: Instrument, exchange: str) -> list[object]:
    """conId … tradingClass, the way position and portfolio messages write a contract."""
    return [
        inst.con_id,
        inst.symbol,
        inst.sec_type,
        inst.last_trade_date,
        inst.strike,  # a float here: "0.0" for a stock, unlike contractDetails' plain 0
        inst.right,
        inst.multiplier,
        exchange,
        inst.currency,
        inst.local_symbol,
        inst.trading_class,
    ]


def position_fields(account_id: str, pos: Position) -> list[object]:
    return [
        Out.POSITION_DATA,
        3,
        account_id,
        *_contract_fields(pos.instrument, ""),
        pos.quantity,
        pos.average_cost,
    ]


def position_multi_fields(req_id: int, account_id: str, pos: Position, model: str) -> list[object]:
    return [
        Out.POSITION_MULTI,
        1,
        req_id,
        account_id,
        *_contract_fields(pos.instrument, ""),
        pos.quantity,
        pos.average_cost,
        model,
    ]


def portfolio_fields(account_id: str, item: PortfolioItem) -> list[object]:
    inst = item.instrument
    return [
        Out.PORTFOLIO_VALUE,
        8,
        *_contract_fields(inst, inst.primary_exchange),
        item.quantity,
        item.market_price,
        item.market_value,
        item.average_cost,
        item.unrealized_pnl,
        item.realized_pnl,
        account_id,
    ]


def _portfolio_state(item: PortfolioItem) -> tuple[object, ...]:
    return (item.quantity, item.market_price, item.average_cost, item.realized_pnl)


@dataclass(eq=False)
class _ValueSub:
    """A subscriber to account values: which rows it wants and what it was last sent."""

    conn: ClientConnection
    req_id: int  # -1 for reqAccountUpdates
    kind: str  # "updates", "multi", "summary"
    model: str = ""
    ledger_only: bool = False
    tags: frozenset[str] | None = None  # summary: requested tags (None: all)
    ledger_currencies: frozenset[str] = frozenset()  # summary: $LEDGER rows wanted
    sent: dict[ValueKey, str] = field(default_factory=dict)
    sent_portfolio: dict[int, tuple[object, ...]] = field(default_factory=dict)

    def wants(self, key: str, currency: str) -> bool:
        if self.kind == "summary":
            if key in LEDGER_KEYS:
                return currency in self.ledger_currencies
            return currency != "BASE" and (self.tags is None or key in self.tags)
        if self.ledger_only:
            return key in LEDGER_KEYS or key == "NetLiquidation"
        return True


@dataclass(eq=False)
class _PnlSub:
    conn: ClientConnection
    req_id: int
    con_id: int | None  # None: the whole account (reqPnL)
    last: tuple[float, ...] | None = None


class AccountFeed:
    """Who subscribed to which part of the account, and the messages that keep them current."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.account: Account = sim.account
        self._values: list[_ValueSub] = []
        self._positions: set[ClientConnection] = set()
        self._positions_multi: dict[tuple[ClientConnection, int], str] = {}
        self._pnl: list[_PnlSub] = []
        self.account.add_listener(self.on_fill)
        sim.add_disconnect_listener(self.drop_client)
        sim.add_background(self._refresh_values)
        sim.add_background(self._refresh_pnl)

    # -- sending -------------------------------------------------------------------------

    def _value_message(self, sub: _ValueSub, key: str, value: str, currency: str) -> list[object]:
        account_id = self.account.account_id
        if sub.kind == "updates":
            return [Out.ACCT_VALUE, 2, key, value, currency, account_id]
        if sub.kind == "multi":
            return [
                Out.ACCOUNT_UPDATE_MULTI,
                1,
                sub.req_id,
                account_id,
                sub.model,
                key,
                value,
                currency,
            ]
        return [Out.ACCOUNT_SUMMARY, 1, sub.req_id, account_id, key, value, currency]

    def _send_values(
        self,
        sub: _ValueSub,
        rows: list[tuple[str, str, str]],
        portfolio: list[PortfolioItem],
        *,
        only_changed: bool,
    ) -> bool:
        sent_any = False
        for key, value, currency in rows:
            if not sub.wants(key, currency):
                continue
            if only_changed and sub.sent.get((key, currency)) == value:
                continue
            sub.sent[(key, currency)] = value
            sub.conn.send(*self._value_message(sub, key, value, currency))
            sent_any = True
        if sub.kind == "updates":
            for item in portfolio:
                state = _portfolio_state(item)
                con_id = item.instrument.con_id
                if only_changed and sub.sent_portfolio.get(con_id) == state:
                    continue
                sub.sent_portfolio[con_id] = state
                sub.conn.send(*portfolio_fields(self.account.account_id, item))
                sent_any = True
            if sent_any:
                sub.conn.send(Out.ACCT_UPDATE_TIME, 1, time.strftime("%H:%M"))
        return sent_any

    def on_fill(self, con_id: int) -> None:
        """A fill changed a position: positions, portfolio and values go out at once."""
        pos = self.account.position(con_id)
        if pos is None:
            return
        account_id = self.account.account_id
        for conn in list(self._positions):
            conn.send(*position_fields(account_id, pos))
        for (conn, req_id), model in list(self._positions_multi.items()):
            conn.send(*position_multi_fields(req_id, account_id, pos, model))
        rows = self.account.values()
        item = self.account.portfolio_item(pos)
        for sub in list(self._values):
            self._send_values(sub, rows, [item], only_changed=True)

    async def _refresh_values(self) -> None:
        """Portfolio prices and account values follow the market, like TWS's updates."""
        while True:
            await asyncio.sleep(self.sim.config.account_update_interval)
            if not self._values or self.sim.faults.offline:
                continue
            rows = self.account.values()
            portfolio = self.account.portfolio()
            for sub in list(self._values):
                self._send_values(sub, rows, portfolio, only_changed=True)

    def _pnl_values(self, sub: _PnlSub) -> tuple[float, ...]:
        if sub.con_id is None:
            items = self.account.portfolio()
            daily = sum(i.daily_pnl for i in items)
            unrealized = sum(i.unrealized_pnl for i in items)
            return (round(daily, 2), round(unrealized, 2), round(self.account.realized_pnl, 2))
        pos = self.account.position(sub.con_id)
        if pos is None:
            return (0.0, 0.0, 0.0, 0.0, 0.0)
        item = self.account.portfolio_item(pos)
        return (
            float(item.quantity),
            item.daily_pnl,
            item.unrealized_pnl,
            item.realized_pnl,
            item.market_value,
        )

    def _send_pnl(self, sub: _PnlSub, *, only_changed: bool) -> None:
        values = self._pnl_values(sub)
        if only_changed and values == sub.last:
            return
        sub.last = values
        if sub.con_id is None:
            sub.conn.send(Out.PNL, sub.req_id, *values)
        else:
            qty, *rest = values
            sub.conn.send(Out.PNL_SINGLE, sub.req_id, int(qty) if qty == int(qty) else qty, *rest)

    async def _refresh_pnl(self) -> None:
        while True:
            await asyncio.sleep(self.sim.config.pnl_interval)
            if self.sim.faults.offline:
                continue
            for sub in list(self._pnl):
                self._send_pnl(sub, only_changed=True)

    def drop_client(self, conn: ClientConnection) -> None:
        self._values = [s for s in self._values if s.conn is not conn]
        self._positions.discard(conn)
        for key in [k for k in self._positions_multi if k[0] is conn]:
            del self._positions_multi[key]
        self._pnl = [s for s in self._pnl if s.conn is not conn]

    # -- handlers ------------------------------------------------------------------------

    def _check_account(self, account: str, req_id: int) -> None:
        if account and account not in (self.account.account_id, "All"):
            raise RequestError(
                321,
                f"Error validating request.-'bg' : cause - Invalid account code '{account}'",
                req_id,
            )

    def req_account_updates(self, conn: ClientConnection, fields: list[str]) -> None:
        # [version, subscribe, acctCode]
        subscribe = fields[1] == "1"
        account = fields[2] if len(fields) > 2 else ""
        self._values = [s for s in self._values if not (s.conn is conn and s.kind == "updates")]
        if not subscribe:
            return
        self._check_account(account, -1)
        sub = _ValueSub(conn, -1, "updates")
        self._values.append(sub)
        self._send_values(sub, self.account.values(), self.account.portfolio(), only_changed=False)
        conn.send(Out.ACCT_DOWNLOAD_END, 1, self.account.account_id)

    def req_account_updates_multi(self, conn: ClientConnection, fields: list[str]) -> None:
        # [version, reqId, account, modelCode, ledgerAndNLV]
        req_id = int(fields[1])
        self._check_account(fields[2], req_id)
        sub = _ValueSub(conn, req_id, "multi", model=fields[3], ledger_only=fields[4] == "1")
        self._values.append(sub)
        self._send_values(sub, self.account.values(), [], only_changed=False)
        conn.send(Out.ACCOUNT_UPDATE_MULTI_END, 1, req_id)

    def cancel_account_updates_multi(self, conn: ClientConnection, fields: list[str]) -> None:
        req_id = int(fields[1])
        self._values = [
            s
            for s in self._values
            if not (s.conn is conn and s.kind == "multi" and s.req_id == req_id)
        ]

    def req_account_summary(self, conn: ClientConnection, fields: list[str]) -> None:
        # [version, reqId, group, tags]
        req_id = int(fields[1])
        tags: set[str] = set()
        ledger: set[str] = set()
        for tag in (t.strip() for t in fields[3].split(",")):
            if tag.startswith("$LEDGER"):
                ledger |= self._ledger_currencies(tag.partition(":")[2])
            elif tag:
                tags.add(tag)
        sub = _ValueSub(
            conn, req_id, "summary", tags=frozenset(tags), ledger_currencies=frozenset(ledger)
        )
        self._values.append(sub)
        self._send_values(sub, self.account.values(), [], only_changed=False)
        conn.send(Out.ACCOUNT_SUMMARY_END, 1, req_id)

    def _ledger_currencies(self, which: str) -> set[str]:
        """$LEDGER → BASE rows, $LEDGER:ALL → every currency, $LEDGER:USD → that one."""
        if not which:
            return {"BASE"}
        if which.upper() == "ALL":
            return {"BASE", self.account.currency}
        return {which.upper()}

    def cancel_account_summary(self, conn: ClientConnection, fields: list[str]) -> None:
        req_id = int(fields[1])
        self._values = [
            s
            for s in self._values
            if not (s.conn is conn and s.kind == "summary" and s.req_id == req_id)
        ]

    def req_positions(self, conn: ClientConnection, fields: list[str]) -> None:
        self._positions.add(conn)
        account_id = self.account.account_id
        for pos in self.account.positions.values():
            conn.send(*position_fields(account_id, pos))
        conn.send(Out.POSITION_END, 1)

    def cancel_positions(self, conn: ClientConnection, fields: list[str]) -> None:
        self._positions.discard(conn)

    def req_positions_multi(self, conn: ClientConnection, fields: list[str]) -> None:
        # [version, reqId, account, modelCode]
        req_id = int(fields[1])
        self._check_account(fields[2], req_id)
        model = fields[3] if len(fields) > 3 else ""
        self._positions_multi[(conn, req_id)] = model
        account_id = self.account.account_id
        for pos in self.account.positions.values():
            conn.send(*position_multi_fields(req_id, account_id, pos, model))
        conn.send(Out.POSITION_MULTI_END, 1, req_id)

    def cancel_positions_multi(self, conn: ClientConnection, fields: list[str]) -> None:
        self._positions_multi.pop((conn, int(fields[1])), None)

    def req_pnl(self, conn: ClientConnection, fields: list[str]) -> None:
        # [reqId, account, modelCode]
        req_id = int(fields[0])
        self._check_account(fields[1], req_id)
        sub = _PnlSub(conn, req_id, None)
        self._pnl.append(sub)
        self._send_pnl(sub, only_changed=False)

    def req_pnl_single(self, conn: ClientConnection, fields: list[str]) -> None:
        # [reqId, account, modelCode, conId]
        req_id = int(fields[0])
        self._check_account(fields[1], req_id)
        con_id = int(fields[3] or 0)
        if self.sim.universe.by_con_id(con_id) is None:
            raise RequestError(200, "No security definition has been found for the request", req_id)
        sub = _PnlSub(conn, req_id, con_id)
        self._pnl.append(sub)
        self._send_pnl(sub, only_changed=False)

    def cancel_pnl(self, conn: ClientConnection, fields: list[str]) -> None:
        req_id = int(fields[0])
        self._pnl = [s for s in self._pnl if not (s.conn is conn and s.req_id == req_id)]


def install(sim: Simulator) -> AccountFeed:
    feed = AccountFeed(sim)
    sim.register(In.REQ_ACCT_DATA, feed.req_account_updates)
    sim.register(In.REQ_ACCOUNT_UPDATES_MULTI, feed.req_account_updates_multi)
    sim.register(In.CANCEL_ACCOUNT_UPDATES_MULTI, feed.cancel_account_updates_multi)
    sim.register(In.REQ_ACCOUNT_SUMMARY, feed.req_account_summary)
    sim.register(In.CANCEL_ACCOUNT_SUMMARY, feed.cancel_account_summary)
    sim.register(In.REQ_POSITIONS, feed.req_positions)
    sim.register(In.CANCEL_POSITIONS, feed.cancel_positions)
    sim.register(In.REQ_POSITIONS_MULTI, feed.req_positions_multi)
    sim.register(In.CANCEL_POSITIONS_MULTI, feed.cancel_positions_multi)
    sim.register(In.REQ_PNL, feed.req_pnl)
    sim.register(In.CANCEL_PNL, feed.cancel_pnl)
    sim.register(In.REQ_PNL_SINGLE, feed.req_pnl_single)
    sim.register(In.CANCEL_PNL_SINGLE, feed.cancel_pnl)
    return feed
