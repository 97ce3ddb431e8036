"""Derivatives: option chains, futures, futures options, and how they are priced.

The listed instruments (stocks, indices, forex) walk at random in :mod:`market`; every
derivative here is priced from its underlying's quote at each step:

* futures at fair value ``S * exp((r - q) * t)`` (the basis shrinks to zero at expiry);
* options (and options on futures) with Black-Scholes (Black-76 for futures options) at a
  volatility from a smile around the forward, so their quotes, greeks and implied
  volatilities move with the underlying.

Chains follow what US exchanges list: weekly expiries every Friday for the next four
weeks, monthly expiries on the third Friday of the next four months (SPX: AM-settled
monthlies under class SPX, PM-settled weeklies and monthlies under SPXW, Monday,
Wednesday and Friday), strikes on the exchange grid for the underlying's price, wider
around the money for monthlies than for weeklies.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from .instruments import (
    CME_FOP_MARKET_RULE,
    CME_QUARTER_MARKET_RULE,
    FUT_ORDER_TYPES,
    OPT_ORDER_TYPES,
    OPT_VALID_EXCHANGES,
    OPTION_MARKET_RULE,
    PENNY_OPTION_MARKET_RULE,
    Instrument,
)

RATE = 0.053  # the risk-free rate of the model (continuously compounded)
DIVIDEND_YIELD = 0.015  # of indices and stocks alike, for futures' basis
YEAR_SECONDS = 365.0 * 86400.0
MIN_TIME = 60.0 / YEAR_SECONDS  # a minute: options never reach t = 0 while listed
FIRST_DERIVATIVE_CON_ID = 600_000_000  # con ids handed out to derivatives, in build order
_EASTERN = ZoneInfo("US/Eastern")
_MONTH_CODES = "FGHJKMNQUVXZ"


@dataclass(frozen=True)
class OptionClass:
    """How one underlying's options are listed under one trading class."""

    trading_class: str
    weekdays: tuple[int, ...]  # listed short-dated expiries (0 = Monday); () = none
    short_weeks: int  # how many weeks ahead the short-dated expiries go
    monthlies: int  # how many third-Friday expiries
    short_range: float  # strikes listed within this fraction of the price (short-dated)
    monthly_range: float  # ... (monthlies)
    exchange: str = "SMART"  # the exchange contract details report
    valid_exchanges: str = OPT_VALID_EXCHANGES
    market_rule: int = OPTION_MARKET_RULE
    monthly_step: float = 0.0  # monthlies list a coarser grid far from the money (0: same)


@dataclass(frozen=True)
class Optionable:
    """An underlying with listed options: its at-the-money volatility and option classes."""

    atm_vol: float
    classes: tuple[OptionClass, ...]
    strike_step: float = 0.0  # 0: the exchange grid for the price (see strike_step)


def _equity(
    symbol: str, vol: float, *, penny: bool = False, step: float = 0.0, monthly_step: float = 0.0
) -> Optionable:
    rule = PENNY_OPTION_MARKET_RULE if penny else OPTION_MARKET_RULE
    return Optionable(
        vol,
        (OptionClass(symbol, (4,), 4, 4, 0.08, 0.20, market_rule=rule, monthly_step=monthly_step),),
        strike_step=step,
    )


_SPX_EXCHANGES = "SMART,CBOE"
_NDX_EXCHANGES = "SMART,NASDAQOM"
OPTIONABLE: dict[str, Optionable] = {
    "AAPL": _equity("AAPL", 0.24),
    "MSFT": _equity("MSFT", 0.22),
    "TSLA": _equity("TSLA", 0.50),
    "GOOGL": _equity("GOOGL", 0.28),
    "AMZN": _equity("AMZN", 0.30),
    "NVDA": _equity("NVDA", 0.45),
    "SPY": _equity("SPY", 0.14, penny=True, step=1.0, monthly_step=5.0),
    "QQQ": _equity("QQQ", 0.19, penny=True, step=1.0, monthly_step=5.0),
    "SPX": Optionable(
        0.14,
        (
            # AM-settled monthlies (third Friday) and PM-settled SPXW on Mon/Wed/Fri:
            # on a third Friday both classes list the same strikes (IB's ambiguous case).
            OptionClass("SPX", (), 0, 3, 0.0, 0.08, "SMART", _SPX_EXCHANGES, monthly_step=25.0),
            OptionClass("SPXW", (0, 2, 4), 2, 3, 0.02, 0.02, "SMART", _SPX_EXCHANGES),
        ),
        strike_step=5.0,
    ),
    "NDX": Optionable(
        0.19,
        (
            OptionClass("NDX", (), 0, 2, 0.0, 0.06, "SMART", _NDX_EXCHANGES, monthly_step=100.0),
            OptionClass("NDXP", (4,), 2, 0, 0.03, 0.0, "SMART", _NDX_EXCHANGES),
        ),
        strike_step=25.0,
    ),
}


@dataclass(frozen=True)
class FutureRoot:
    """A quarterly future on an index, and its options (on the front futures)."""

    symbol: str
    index: str  # the underlying index symbol
    multiplier: str
    long_name: str
    quarters: int = 4  # listed quarterly contracts
    option_expiries: int = 2  # the front futures that have a quarterly option
    option_range: float = 0.05
    option_step: float = 25.0


FUTURES: tuple[FutureRoot, ...] = (
    FutureRoot("ES", "SPX", "50", "E-mini S&P 500"),
    FutureRoot("NQ", "NDX", "20", "E-mini NASDAQ 100", option_step=100.0),
)


# -- calendar ------------------------------------------------------------------------------


def eastern_today() -> date:
    return datetime.now(_EASTERN).date()


def third_friday(year: int, month: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(4 - first.weekday()) % 7 + 14)


def _months_after(today: date, count: int, months: Iterable[int] = range(1, 13)) -> list[date]:
    """The third Fridays of the next ``count`` listed months still to come (today counts)."""
    wanted = set(months)
    found: list[date] = []
    year, month = today.year, today.month
    while len(found) < count:
        if month in wanted:
            expiry = third_friday(year, month)
            if expiry >= today:
                found.append(expiry)
        month += 1
        if month > 12:
            year, month = year + 1, 1
    return found


def option_expiries(cls: OptionClass, today: date) -> list[tuple[date, bool]]:
    """(expiry, is_monthly) for one option class, soonest first."""
    monthly = _months_after(today, cls.monthlies) if cls.monthlies else []
    short = [
        today + timedelta(days=n)
        for n in range(cls.short_weeks * 7)
        if (today + timedelta(days=n)).weekday() in cls.weekdays
    ]
    listed = {d: False for d in short}
    for d in monthly:
        listed[d] = True
    return sorted(listed.items())


def expiry_time(expiry: date) -> float:
    """Epoch seconds of an expiry's close (16:00 US/Eastern)."""
    return datetime.combine(expiry, time(16, 0), _EASTERN).timestamp()


def years_to(expiry_epoch: float, now: float) -> float:
    return max(MIN_TIME, (expiry_epoch - now) / YEAR_SECONDS)


# -- strikes -------------------------------------------------------------------------------


def strike_step(price: float) -> float:
    """The listing grid of US equity options for an underlying at ``price``."""
    if price < 25:
        return 0.5
    if price < 50:
        return 1.0
    if price < 200:
        return 2.5
    return 5.0


def strike_grid(price: float, step: float, fraction: float) -> list[float]:
    """Strikes on the grid within ``fraction`` of ``price`` (at least two on each side)."""
    low = math.floor(price * (1 - fraction) / step)
    high = math.ceil(price * (1 + fraction) / step)
    centre = round(price / step)
    low, high = min(low, centre - 2), max(high, centre + 2)
    return [round(n * step, 4) for n in range(max(1, low), high + 1)]


def format_strike(strike: float) -> str:
    return f"{strike:g}" if strike != int(strike) else str(int(strike))


def occ_symbol(root: str, expiry: str, right: str, strike: float) -> str:
    """The OCC option symbol IB uses as localSymbol, e.g. "AAPL  240119C00190000"
    (``expiry`` as YYYYMMDD)."""
    return f"{root:<6}{expiry[2:]}{right}{round(strike * 1000):08d}"


# -- building the universe's derivatives ---------------------------------------------------


def _option(
    con_id: int,
    under: Instrument,
    cls: OptionClass,
    expiry: str,
    strike: float,
    right: str,
    *,
    multiplier: str = "100",
) -> Instrument:
    return Instrument(
        con_id=con_id,
        symbol=under.symbol,
        sec_type="OPT",
        exchange=cls.exchange,
        primary_exchange="",
        currency=under.currency,
        local_symbol=occ_symbol(cls.trading_class, expiry, right, strike),
        trading_class=cls.trading_class,
        market_name=cls.trading_class,
        min_tick=0.01,
        long_name=under.long_name,
        multiplier=multiplier,
        order_types=OPT_ORDER_TYPES,
        valid_exchanges=cls.valid_exchanges,
        market_rule_id=cls.market_rule,
        industry=under.industry,
        category=under.category,
        subcategory=under.subcategory,
        agg_group=2,
        min_size="1",
        size_increment="1",
        suggested_size_increment="1",
        start_price=0.0,
        lot_size=1,
        volatility=0.0,
        last_trade_date=expiry,
        strike=strike,
        right=right,
        contract_month=expiry[:6],
        under_con_id=under.con_id,
        under_symbol=under.symbol,
        under_sec_type=under.sec_type,
    )


def _future(con_id: int, root: FutureRoot, index: Instrument, expiry: date) -> Instrument:
    code = f"{root.symbol}{_MONTH_CODES[expiry.month - 1]}{expiry.year % 10}"
    return Instrument(
        con_id=con_id,
        symbol=root.symbol,
        sec_type="FUT",
        exchange="CME",
        primary_exchange="",
        currency="USD",
        local_symbol=code,
        trading_class=root.symbol,
        market_name=root.symbol,
        min_tick=0.25,
        long_name=root.long_name,
        multiplier=root.multiplier,
        order_types=FUT_ORDER_TYPES,
        valid_exchanges="CME,QBALGO",
        market_rule_id=CME_QUARTER_MARKET_RULE,
        agg_group=2147483647,
        time_zone_id="US/Central",
        min_size="1",
        size_increment="1",
        suggested_size_increment="1",
        start_price=index.start_price,
        lot_size=1,
        last_trade_date=f"{expiry:%Y%m%d}",
        contract_month=f"{expiry:%Y%m}",
        under_con_id=index.con_id,
        under_symbol=index.symbol,
        under_sec_type="IND",
    )


def _future_option(
    con_id: int, root: FutureRoot, future: Instrument, strike: float, right: str
) -> Instrument:
    inst = _option(
        con_id,
        future,
        OptionClass(root.symbol, (), 0, 0, 0, 0, "CME", "CME", CME_FOP_MARKET_RULE),
        future.last_trade_date,
        strike,
        right,
        multiplier=root.multiplier,
    )
    return replace(
        inst,
        sec_type="FOP",
        local_symbol=f"{future.local_symbol} {right}{format_strike(strike)}",
        min_tick=0.05,
        time_zone_id="US/Central",
        under_sec_type="FUT",
    )


def build_derivatives(listed: Iterable[Instrument], today: date) -> list[Instrument]:
    """Every derivative of ``listed`` that the simulator knows, con ids in a fixed order."""
    by_symbol = {i.symbol: i for i in listed if i.sec_type in ("STK", "IND")}
    con_ids = iter(range(FIRST_DERIVATIVE_CON_ID, FIRST_DERIVATIVE_CON_ID + 10_000_000))
    out: list[Instrument] = []
    for symbol, spec in OPTIONABLE.items():
        under = by_symbol.get(symbol)
        if under is None:
            continue
        price = under.start_price
        step = spec.strike_step or strike_step(price)
        for cls in spec.classes:
            for expiry_date, monthly in option_expiries(cls, today):
                expiry = f"{expiry_date:%Y%m%d}"
                fraction = cls.monthly_range if monthly else cls.short_range
                if fraction <= 0:
                    continue
                grid = cls.monthly_step if monthly and cls.monthly_step else step
                for strike in strike_grid(price, grid, fraction):
                    for right in ("C", "P"):
                        out.append(_option(next(con_ids), under, cls, expiry, strike, right))
    for root in FUTURES:
        index = by_symbol.get(root.index)
        if index is None:
            continue
        futures = [
            _future(next(con_ids), root, index, expiry)
            for expiry in _months_after(today, root.quarters, (3, 6, 9, 12))
        ]
        out += futures
        for future in futures[: root.option_expiries]:
            for strike in strike_grid(index.start_price, root.option_step, root.option_range):
                for right in ("C", "P"):
                    out.append(_future_option(next(con_ids), root, future, strike, right))
    return out


# -- the model -----------------------------------------------------------------------------


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _norm_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


@dataclass(frozen=True, slots=True)
class Greeks:
    """An option's model value and sensitivities, in IB's units: vega per volatility
    point (0.01), theta per calendar day."""

    price: float
    delta: float
    gamma: float
    vega: float
    theta: float


def black_scholes(
    spot: float, strike: float, t: float, vol: float, right: str, *, r: float, q: float
) -> Greeks:
    """Black-Scholes-Merton with a continuous yield ``q`` (q = r gives Black-76 on a future)."""
    vol = max(vol, 1e-4)
    sqrt_t = math.sqrt(t)
    d1 = (math.log(spot / strike) + (r - q + 0.5 * vol * vol) * t) / (vol * sqrt_t)
    d2 = d1 - vol * sqrt_t
    disc_r, disc_q = math.exp(-r * t), math.exp(-q * t)
    pdf = _norm_pdf(d1)
    gamma = disc_q * pdf / (spot * vol * sqrt_t)
    vega = spot * disc_q * pdf * sqrt_t / 100.0
    decay = -spot * disc_q * pdf * vol / (2.0 * sqrt_t)
    if right == "C":
        price = spot * disc_q * _norm_cdf(d1) - strike * disc_r * _norm_cdf(d2)
        delta = disc_q * _norm_cdf(d1)
        theta = decay - r * strike * disc_r * _norm_cdf(d2) + q * spot * disc_q * _norm_cdf(d1)
    else:
        price = strike * disc_r * _norm_cdf(-d2) - spot * disc_q * _norm_cdf(-d1)
        delta = -disc_q * _norm_cdf(-d1)
        theta = decay + r * strike * disc_r * _norm_cdf(-d2) - q * spot * disc_q * _norm_cdf(-d1)
    return Greeks(max(price, 0.0), delta, gamma, vega, theta / 365.0)


def smile(atm_vol: float, strike: float, forward: float, t: float) -> float:
    """The volatility at ``strike``: a skew (puts dearer) and a smile in standardized
    moneyness, bounded to a sane band around the at-the-money volatility."""
    m = math.log(strike / forward) / (atm_vol * math.sqrt(max(t, 1.0 / 365.0)))
    m = max(-4.0, min(4.0, m))
    return atm_vol * max(0.5, min(2.5, 1.0 - 0.08 * m + 0.03 * m * m))


def implied_vol(
    price: float,
    spot: float,
    strike: float,
    t: float,
    right: str,
    guess: float,
    *,
    r: float,
    q: float,
) -> float | None:
    """The volatility that reprices ``price`` (Newton from ``guess``, then bisection), or
    None where no volatility can (a price below intrinsic value, or zero)."""
    if price <= 0:
        return None
    lo, hi, vol = 1e-3, 5.0, min(max(guess, 0.01), 4.0)
    if not black_scholes(spot, strike, t, lo, right, r=r, q=q).price <= price:
        return None
    if black_scholes(spot, strike, t, hi, right, r=r, q=q).price < price:
        return None
    for _ in range(40):
        g = black_scholes(spot, strike, t, vol, right, r=r, q=q)
        diff = g.price - price
        if abs(diff) < 1e-6:
            return vol
        if diff > 0:
            hi = vol
        else:
            lo = vol
        step = diff / (g.vega * 100.0) if g.vega > 1e-8 else 0.0
        vol = vol - step if step and lo < vol - step < hi else (lo + hi) / 2.0
    return vol


# -- pricing walkers -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OptionModel:
    """The inputs of one option's model at one moment (what computation ticks derive from)."""

    underlying_price: float
    strike: float
    t: float
    vol: float  # the model volatility (from the smile)
    right: str
    r: float
    q: float

    def greeks(self, vol: float | None = None) -> Greeks:
        return black_scholes(
            self.underlying_price,
            self.strike,
            self.t,
            self.vol if vol is None else vol,
            self.right,
            r=self.r,
            q=self.q,
        )

    def implied_vol(self, price: float) -> float | None:
        return implied_vol(
            price,
            self.underlying_price,
            self.strike,
            self.t,
            self.right,
            self.vol,
            r=self.r,
            q=self.q,
        )


def atm_vol_of(inst: Instrument) -> float:
    """The at-the-money volatility of a derivative's model (its index's for futures)."""
    root = inst.symbol
    for fut in FUTURES:
        if fut.symbol == root:
            root = fut.index
    spec = OPTIONABLE.get(root)
    return spec.atm_vol if spec else 0.25
