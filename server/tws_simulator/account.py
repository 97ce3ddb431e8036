"""The paper account: cash, positions, average costs, P&L and the values TWS derives from them.

Pure book-keeping against the live market; the wire side (who subscribed to what) lives in
``account_feed``, which listens to :meth:`Account.add_listener` for fills.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal

from .instruments import Instrument
from .market import Market, Quote
from .universe import Universe
from .wire import UNSET_DOUBLE

log = logging.getLogger(__name__)

# A Reg T margin account, simplified: one rate for initial and maintenance margin on
# stocks, intraday buying power four times the available funds.
INITIAL_MARGIN_RATE = 0.25
MAINTENANCE_MARGIN_RATE = 0.25
BUYING_POWER_MULTIPLIER = 4.0

FillListener = Callable[[int], None]  # called with the con_id whose position changed


@dataclass
class Position:
    instrument: Instrument
    quantity: Decimal
    average_cost: float  # per unit, commissions included (as TWS reports it)
    realized_pnl: float = 0.0
    day_reference: float = 0.0  # price the day's P&L is measured from


@dataclass(frozen=True)
class PortfolioItem:
    """One position valued at the current market, as in a portfolio update."""

    instrument: Instrument
    quantity: Decimal
    market_price: float
    market_value: float
    average_cost: float
    unrealized_pnl: float
    realized_pnl: float
    daily_pnl: float


def mark_price(instrument: Instrument, quote: Quote) -> float:
    """The price positions are valued at: last trade clamped into the bid/ask (midpoint for FX)."""
    if instrument.is_cash:
        return round(quote.midpoint, 6)
    return min(max(quote.last, quote.bid), quote.ask)


def _money(value: float) -> str:
    return f"{value:.2f}"


class Account:
    """One paper account (``DU…``) in USD, valued against the simulated market."""

    def __init__(
        self,
        account_id: str,
        universe: Universe,
        market: Market,
        *,
        cash: float = 1_000_000.0,
        positions: Mapping[str, tuple[float, float]] | None = None,
        currency: str = "USD",
    ) -> None:
        self.account_id = account_id
        self.currency = currency
        self.universe = universe
        self.market = market
        self.cash = float(cash)
        self.starting_cash = float(cash)
        self.realized_pnl = 0.0
        self.positions: dict[int, Position] = {}
        self._listeners: list[FillListener] = []
        for symbol, (quantity, average_cost) in (positions or {}).items():
            inst = universe.by_symbol(symbol)
            if inst is None:
                raise ValueError(f"unknown instrument for a starting position: {symbol!r}")
            self.positions[inst.con_id] = Position(
                inst,
                Decimal(str(quantity)),
                float(average_cost),
                0.0,
                market.quote(inst.con_id).close,
            )

    # -- valuation -----------------------------------------------------------------------

    def portfolio(self) -> list[PortfolioItem]:
        return [self.portfolio_item(pos) for pos in self.positions.values()]

    def portfolio_item(self, pos: Position) -> PortfolioItem:
        inst = pos.instrument
        price = mark_price(inst, self.market.quote(inst.con_id))
        qty = float(pos.quantity)
        # A derivative's price is per unit of its underlying; one contract is worth the
        # multiplier times it, and IB's average cost is per contract.
        multiplier = inst.price_multiplier
        value = qty * price * multiplier
        return PortfolioItem(
            instrument=inst,
            quantity=pos.quantity,
            market_price=price,
            market_value=round(value, 2),
            average_cost=pos.average_cost,
            unrealized_pnl=round(value - qty * pos.average_cost, 2),
            realized_pnl=round(pos.realized_pnl, 2),
            daily_pnl=round(qty * (price - pos.day_reference) * multiplier + pos.realized_pnl, 2),
        )

    def position(self, con_id: int) -> Position | None:
        return self.positions.get(con_id)

    def gross_position_value(self) -> float:
        # Forex balances are cash at IB, not positions with a margin requirement.
        return sum(
            abs(item.market_value) for item in self.portfolio() if not item.instrument.is_cash
        )

    def net_liquidation(self) -> float:
        return self.cash + sum(item.market_value for item in self.portfolio())

    def buying_power(self) -> float:
        return max(0.0, self.available_funds() * BUYING_POWER_MULTIPLIER)

    def available_funds(self) -> float:
        return self.net_liquidation() - INITIAL_MARGIN_RATE * self.gross_position_value()

    def values(self) -> list[tuple[str, str, str]]:
        """(key, value, currency) rows, the way updateAccountValue reports an account."""
        items = self.portfolio()
        cur = self.currency
        gpv = sum(abs(i.market_value) for i in items if not i.instrument.is_cash)
        stock_value = sum(i.market_value for i in items if not i.instrument.is_cash)
        net_liq = self.cash + sum(i.market_value for i in items)
        unrealized = sum(i.unrealized_pnl for i in items)
        init_margin = INITIAL_MARGIN_RATE * gpv
        maint_margin = MAINTENANCE_MARGIN_RATE * gpv
        available = net_liq - init_margin
        excess = net_liq - maint_margin
        cushion = excess / net_liq if net_liq else 0.0
        leverage = gpv / net_liq if net_liq else 0.0
        money = {
            "AccruedCash": 0.0,
            "AvailableFunds": available,
            "BuyingPower": max(0.0, available * BUYING_POWER_MULTIPLIER),
            "EquityWithLoanValue": net_liq,
            "ExcessLiquidity": excess,
            "FullAvailableFunds": available,
            "FullExcessLiquidity": excess,
            "FullInitMarginReq": init_margin,
            "FullMaintMarginReq": maint_margin,
            "GrossPositionValue": gpv,
            "InitMarginReq": init_margin,
            "LookAheadAvailableFunds": available,
            "LookAheadExcessLiquidity": excess,
            "LookAheadInitMarginReq": init_margin,
            "LookAheadMaintMarginReq": maint_margin,
            "MaintMarginReq": maint_margin,
            "NetLiquidation": net_liq,
            "PreviousDayEquityWithLoanValue": self.starting_cash,
            "RegTEquity": net_liq,
            "RegTMargin": 0.5 * gpv,
            "SMA": max(0.0, net_liq - 0.5 * gpv),
            "SettledCash": self.cash,
            "TotalCashValue": self.cash,
        }
        rows = [
            ("AccountCode", self.account_id, ""),
            ("AccountReady", "true", ""),
            ("AccountType", "INDIVIDUAL", ""),
            ("Currency", cur, cur),
            ("Cushion", f"{cushion:.6f}", ""),
            ("DayTradesRemaining", "-1", ""),
            ("LookAheadNextChange", "0", ""),
            ("Leverage-S", f"{leverage:.2f}", ""),
        ]
        rows += [(key, _money(value), cur) for key, value in sorted(money.items())]
        # The per-currency ledger, in the account currency and as BASE.
        for ledger in (cur, "BASE"):
            rows += [
                ("CashBalance", _money(self.cash), ledger),
                ("TotalCashBalance", _money(self.cash), ledger),
                ("NetLiquidationByCurrency", _money(net_liq), ledger),
                ("StockMarketValue", _money(stock_value), ledger),
                ("UnrealizedPnL", _money(unrealized), ledger),
                ("RealizedPnL", _money(self.realized_pnl), ledger),
                ("ExchangeRate", "1.00", ledger),
            ]
        return rows

    # -- fills ---------------------------------------------------------------------------

    def add_listener(self, fn: FillListener) -> Callable[[], None]:
        """Call ``fn(con_id)`` after every fill; returns the unsubscribe function."""
        self._listeners.append(fn)
        return lambda: self._listeners.remove(fn) if fn in self._listeners else None

    def apply_fill(
        self,
        instrument: Instrument,
        side: str,
        quantity: Decimal,
        price: float,
        commission: float,
    ) -> float:
        """Book one execution; returns its realized P&L (commission included).

        A fill that only opens or adds to a position realizes nothing and returns
        ``UNSET_DOUBLE`` (1.7976931348623157E308), as TWS writes in the commission report.
        Cash, the position and its average cost change, and every subscribed client gets
        its position, portfolio and account value updates.
        """
        if side not in ("BOT", "SLD"):
            raise ValueError(f"side must be BOT or SLD, not {side!r}")
        if quantity <= 0:
            raise ValueError("a fill quantity must be positive")
        signed = quantity if side == "BOT" else -quantity
        qty = float(quantity)
        # Cash and costs per contract (price times multiplier); the day's reference stays
        # a price. Futures are booked like options here (paid in full), a simplification
        # of IB's daily settlement that keeps net liquidation right.
        reference = price
        price = price * instrument.price_multiplier
        self.cash -= float(signed) * price + commission

        pos = self.positions.get(instrument.con_id)
        if pos is None:
            pos = Position(instrument, Decimal(0), 0.0, 0.0, reference)
            self.positions[instrument.con_id] = pos
        old = pos.quantity
        new = old + signed
        realized = UNSET_DOUBLE
        if old == 0 or (old > 0) == (signed > 0):
            # Opening or adding: the commission goes into the average cost.
            total_cost = float(abs(old)) * pos.average_cost + qty * price + commission
            pos.average_cost = total_cost / float(abs(new))
            if old == 0:
                pos.day_reference = reference
        else:
            closed = min(quantity, abs(old))
            direction = 1.0 if old > 0 else -1.0
            closing_commission = commission * float(closed) / qty
            realized = float(closed) * (price - pos.average_cost) * direction - closing_commission
            pos.realized_pnl += realized
            self.realized_pnl += realized
            if new == 0:
                pos.average_cost = 0.0
            elif (new > 0) != (old > 0):
                # Flipped through zero: the remainder opens a new position at this fill.
                opened = float(abs(new))
                pos.average_cost = (opened * price + commission - closing_commission) / opened
                pos.day_reference = reference
        pos.quantity = new
        self._notify(instrument.con_id)
        if new == 0:
            del self.positions[instrument.con_id]
        return realized

    def _notify(self, con_id: int) -> None:
        for fn in list(self._listeners):
            try:
                fn(con_id)
            except Exception:
                log.exception("account listener %r failed", fn)
