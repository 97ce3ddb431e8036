"""The built-in instrument universe: what the simulator can quote, qualify and trade."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date

# What TWS lists for a US stock routed through SMART (abridged to the common ones).
_STK_ORDER_TYPES = (
    "ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,BENCHPX,CASHQTY,COND,CONDORDER,"
    "DARKONLY,DARKPOLL,DAY,DEACT,DEACTDIS,DEACTEOD,DIS,DUR,GAT,GTC,GTD,GTT,HID,IBKRATS,"
    "ICE,IMB,IOC,LIT,LMT,LOC,MIDPX,MIT,MKT,MOC,MTL,NGCOMB,NODARK,NONALGO,OCA,OPG,OPGREROUT,"
    "PEGBENCH,PEGMID,POSTATS,POSTONLY,PREOPGRTH,PRICECHK,REL,REL2MID,RELPCTOFS,RPI,RTH,"
    "SCALE,SCALEODD,SCALERST,SIZECHK,SNAPMID,SNAPMKT,SNAPREL,STP,STPLMT,SWEEP,TRAIL,"
    "TRAILLIT,TRAILLMT,TRAILMIT,WHATIF"
)
_STK_VALID_EXCHANGES = (
    "SMART,AMEX,NYSE,CBOE,PHLX,ISE,CHX,ARCA,ISLAND,DRCTEDGE,BEX,BATS,EDGEA,BYX,IEX,EDGX,"
    "FOXRIVER,PEARL,NYSENAT,LTSE,MEMX,IBEOS,OVERNIGHT,TPLUS0,PSX"
)
# Exactly what a real TWS sent for EUR.USD (see the contract_details_eurusd capture).
_CASH_ORDER_TYPES = (
    "ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,CASHQTY,COND,CONDORDER,DAY,DEACT,"
    "DEACTDIS,DEACTEOD,GAT,GTC,GTD,GTT,HID,IOC,LIT,LMT,MIT,MKT,NONALGO,OCA,REL,RELPCTOFS,"
    "SCALE,SCALERST,STP,STPLMT,TRAIL,TRAILLIT,TRAILLMT,TRAILMIT,WHATIF"
)
# What TWS lists for a US equity option, an index and a CME future (abridged).
OPT_ORDER_TYPES = (
    "ACTIVETIM,AD,ADJUST,ALERT,ALLOC,AVGCOST,BASKET,COND,CONDORDER,DAY,DEACT,DEACTDIS,"
    "DEACTEOD,DIS,GAT,GTC,GTD,GTT,HID,IOC,LIT,LMT,MIT,MKT,MTL,NGCOMB,NONALGO,OCA,OPG,"
    "OPGREROUT,PEGMID,REL,RELPCTOFS,SCALE,SCALERST,SIZECHK,STP,STPLMT,TRAIL,TRAILLIT,"
    "TRAILLMT,TRAILMIT,VOLAT,WHATIF"
)
OPT_VALID_EXCHANGES = (
    "SMART,AMEX,CBOE,PHLX,PSE,ISE,BOX,BATS,NASDAQOM,CBOE2,NASDAQBX,MIAX,GEMINI,EDGX,"
    "MERCURY,PEARL,EMERALD,MEMX,IBUSOPT"
)
IND_ORDER_TYPES = "ACTIVETIM,AD,ADJUST,ALERT,ALLOC,AVGCOST,BASKET,COND,CONDORDER,DAY,GTC"
FUT_ORDER_TYPES = (
    "ACTIVETIM,AD,ADJUST,ALERT,ALGO,ALLOC,AVGCOST,BASKET,COND,CONDORDER,DAY,DEACT,DEACTDIS,"
    "DEACTEOD,GAT,GTC,GTD,GTT,HID,ICE,IOC,LIT,LMT,LTH,MIT,MKT,MTL,NGCOMB,NONALGO,OCA,SCALE,"
    "SCALERST,SNAPMID,SNAPMKT,SNAPREL,STP,STPLMT,TRAIL,TRAILLIT,TRAILLMT,TRAILMIT,WHATIF"
)
US_STOCK_MARKET_RULE = 26  # 0.01 at every price level
IDEALPRO_MARKET_RULE = 3188  # 0.00005 (half a pip)
OPTION_MARKET_RULE = 32  # 0.01 below 3.00, 0.05 from 3.00 (the non-penny option grid)
PENNY_OPTION_MARKET_RULE = 110  # 0.01 at every price (SPY, QQQ: the penny program)
INDEX_MARKET_RULE = 109  # 0.01
CME_QUARTER_MARKET_RULE = 67  # 0.25 (ES, NQ)
CME_FOP_MARKET_RULE = 239  # 0.05 below 5.00, 0.25 from 5.00 (ES options)
DERIVATIVE_SEC_TYPES = frozenset({"OPT", "FUT", "FOP", "CONTFUT"})


@dataclass(frozen=True)
class Instrument:
    """One tradable contract, with everything a contractDetails message reports."""

    con_id: int
    symbol: str
    sec_type: str  # "STK", "CASH", "IND", "OPT", "FUT" or "FOP"
    exchange: str  # "SMART", "IDEALPRO", "CBOE", "CME", ...
    primary_exchange: str
    currency: str
    local_symbol: str
    trading_class: str
    market_name: str
    min_tick: float
    long_name: str
    multiplier: str = ""
    order_types: str = _STK_ORDER_TYPES
    valid_exchanges: str = _STK_VALID_EXCHANGES
    market_rule_id: int = US_STOCK_MARKET_RULE
    industry: str = ""
    category: str = ""
    subcategory: str = ""
    isin: str = ""
    stock_type: str = ""
    agg_group: int = 1
    time_zone_id: str = "US/Eastern"
    min_size: str = "0.0001"
    size_increment: str = "0.0001"
    suggested_size_increment: str = "100"
    # Derivatives (empty / zero for stocks, forex and indices).
    last_trade_date: str = ""  # YYYYMMDD
    strike: float = 0.0
    right: str = ""  # "C" or "P"
    contract_month: str = ""  # YYYYMM
    under_con_id: int = 0
    under_symbol: str = ""
    under_sec_type: str = ""
    # Simulated market parameters.
    start_price: float = 100.0
    spread_ticks: int = 1  # typical bid/ask spread, in ticks
    lot_size: int = 100  # quoted sizes are multiples of this
    volatility: float = 0.0002  # standard deviation of one step's relative move

    @property
    def is_cash(self) -> bool:
        return self.sec_type == "CASH"

    @property
    def is_index(self) -> bool:
        """An index has a value but no bid, ask or trades."""
        return self.sec_type == "IND"

    @property
    def is_derivative(self) -> bool:
        return self.sec_type in DERIVATIVE_SEC_TYPES

    @property
    def is_option(self) -> bool:
        return self.sec_type in ("OPT", "FOP")

    @property
    def price_multiplier(self) -> float:
        """How many units of the price one contract is worth (100 for a US option)."""
        return float(self.multiplier) if self.multiplier else 1.0

    def valid_exchange_names(self) -> tuple[str, ...]:
        return tuple(self.valid_exchanges.split(","))


def _stock(
    con_id: int,
    symbol: str,
    primary: str,
    long_name: str,
    price: float,
    isin: str,
    industry: tuple[str, str, str],
    *,
    stock_type: str = "COMMON",
    trading_class: str = "NMS",
) -> Instrument:
    return Instrument(
        con_id=con_id,
        symbol=symbol,
        sec_type="STK",
        exchange="SMART",
        primary_exchange=primary,
        currency="USD",
        local_symbol=symbol,
        trading_class=trading_class,
        market_name=trading_class,
        min_tick=0.01,
        long_name=long_name,
        industry=industry[0],
        category=industry[1],
        subcategory=industry[2],
        isin=isin,
        stock_type=stock_type,
        start_price=price,
        volatility=0.0003,
    )


_TECH_HW = ("Technology", "Computers", "Computers")
_TECH_SW = ("Technology", "Software", "Software")
_TECH_SEMI = ("Technology", "Semiconductors", "Electronic Compo-Semicon")
_WEB = ("Communications", "Internet", "Web Portals/ISP")
_ECOMMERCE = ("Communications", "Internet", "E-Commerce/Products")
_AUTO = ("Consumer, Cyclical", "Auto Manufacturers", "Auto-Cars/Light Trucks")
_FUND = ("", "", "")

DEFAULT_INSTRUMENTS: tuple[Instrument, ...] = (
    _stock(265598, "AAPL", "NASDAQ", "APPLE INC", 189.50, "US0378331005", _TECH_HW),
    _stock(272093, "MSFT", "NASDAQ", "MICROSOFT CORP", 374.20, "US5949181045", _TECH_SW),
    _stock(76792991, "TSLA", "NASDAQ", "TESLA INC", 238.80, "US88160R1014", _AUTO),
    _stock(208813719, "GOOGL", "NASDAQ", "ALPHABET INC-CL A", 131.90, "US02079K3059", _WEB),
    _stock(3691937, "AMZN", "NASDAQ", "AMAZON.COM INC", 146.10, "US0231351067", _ECOMMERCE),
    _stock(4815747, "NVDA", "NASDAQ", "NVIDIA CORP", 467.60, "US67066G1040", _TECH_SEMI),
    _stock(
        756733,
        "SPY",
        "ARCA",
        "SPDR S&P 500 ETF TRUST",
        456.70,
        "US78462F1030",
        _FUND,
        stock_type="ETF",
        trading_class="SPY",
    ),
    _stock(
        320227571,
        "QQQ",
        "NASDAQ",
        "INVESCO QQQ TRUST SERIES 1",
        390.10,
        "US46090E1038",
        _FUND,
        stock_type="ETF",
    ),
    Instrument(
        con_id=416904,
        symbol="SPX",
        sec_type="IND",
        exchange="CBOE",
        primary_exchange="",
        currency="USD",
        local_symbol="SPX",
        trading_class="SPX",
        market_name="SPX",
        min_tick=0.01,
        long_name="S&P 500 Stock Index",
        order_types=IND_ORDER_TYPES,
        valid_exchanges="CBOE",
        market_rule_id=INDEX_MARKET_RULE,
        agg_group=2147483647,
        min_size="1",
        size_increment="1",
        suggested_size_increment="1",
        start_price=4567.80,
        lot_size=1,
        volatility=0.0002,
    ),
    Instrument(
        con_id=416843,
        symbol="NDX",
        sec_type="IND",
        exchange="NASDAQ",
        primary_exchange="",
        currency="USD",
        local_symbol="NDX",
        trading_class="NDX",
        market_name="NDX",
        min_tick=0.01,
        long_name="NASDAQ 100 Stock Index",
        order_types=IND_ORDER_TYPES,
        valid_exchanges="NASDAQ",
        market_rule_id=INDEX_MARKET_RULE,
        agg_group=2147483647,
        min_size="1",
        size_increment="1",
        suggested_size_increment="1",
        start_price=15982.40,
        lot_size=1,
        volatility=0.00025,
    ),
    Instrument(
        con_id=12087792,
        symbol="EUR",
        sec_type="CASH",
        exchange="IDEALPRO",
        primary_exchange="",
        currency="USD",
        local_symbol="EUR.USD",
        trading_class="EUR.USD",
        market_name="EUR.USD",
        min_tick=0.00005,
        long_name="European Monetary Union Euro",
        order_types=_CASH_ORDER_TYPES,
        valid_exchanges="IDEALPRO",
        market_rule_id=IDEALPRO_MARKET_RULE,
        agg_group=4,
        min_size="0.01",
        size_increment="0.01",
        suggested_size_increment="0.01",
        start_price=1.08735,
        spread_ticks=1,
        lot_size=500_000,
        volatility=0.00003,
    ),
)

# Price increments per market rule: (low edge, increment) pairs, for reqMarketRule.
MARKET_RULES: dict[int, tuple[tuple[float, float], ...]] = {
    US_STOCK_MARKET_RULE: ((0.0, 0.01),),
    IDEALPRO_MARKET_RULE: ((0.0, 0.00005),),
    OPTION_MARKET_RULE: ((0.0, 0.01), (3.0, 0.05)),
    PENNY_OPTION_MARKET_RULE: ((0.0, 0.01),),
    INDEX_MARKET_RULE: ((0.0, 0.01),),
    CME_QUARTER_MARKET_RULE: ((0.0, 0.25),),
    CME_FOP_MARKET_RULE: ((0.0, 0.05), (5.0, 0.25)),
}


def tick_at(rule_id: int, price: float) -> float:
    """The price increment a market rule sets at ``price`` (the last band at or below it)."""
    bands = MARKET_RULES.get(rule_id, ((0.0, 0.01),))
    step = bands[0][1]
    for low, increment in bands:
        if price >= low:
            step = increment
    return step


def _matches(wanted: str, actual: str) -> bool:
    """An empty field in a request matches anything; otherwise compare case-insensitively."""
    return not wanted or wanted.upper() == actual.upper()


def _expiry_matches(wanted: str, inst: Instrument) -> bool:
    """IB reads an expiry as a day (YYYYMMDD) or a contract month (YYYYMM); for a future
    the month is its contract month, for an option the month of its expiry."""
    if not wanted:
        return True
    wanted = wanted.split()[0]
    if len(wanted) == 6:
        return inst.contract_month == wanted or inst.last_trade_date.startswith(wanted)
    return inst.last_trade_date == wanted


def _right(text: str) -> str:
    return {"CALL": "C", "PUT": "P"}.get(text.upper(), text.upper())


class Universe:
    """The instruments known to the simulator, looked up the way TWS resolves contracts.

    ``instruments`` are the listed ones (stocks, indices, forex), each with its own random
    walk; their derivatives (options, futures, futures options: see :mod:`options`) are
    built on first use, for the listing date ``today`` (US/Eastern today by default).
    """

    def __init__(
        self,
        instruments: Iterable[Instrument] = DEFAULT_INSTRUMENTS,
        *,
        today: date | None = None,
    ) -> None:
        self._instruments = tuple(instruments)
        self._by_con_id = {i.con_id: i for i in self._instruments}
        self._today = today
        self._derivatives: tuple[Instrument, ...] | None = None
        self._derivative_by_con_id: dict[int, Instrument] = {}
        self._by_root: dict[tuple[str, str], list[Instrument]] = {}

    def __iter__(self) -> Iterator[Instrument]:
        return iter(self._instruments)

    def __len__(self) -> int:
        return len(self._instruments)

    @property
    def instruments(self) -> tuple[Instrument, ...]:
        """The listed instruments (each walks on its own; derivatives follow them)."""
        return self._instruments

    @property
    def today(self) -> date:
        if self._today is None:
            from .options import eastern_today

            self._today = eastern_today()
        return self._today

    @property
    def derivatives(self) -> tuple[Instrument, ...]:
        """Every option, future and futures option (built once, on first use)."""
        if self._derivatives is None:
            from .options import build_derivatives

            built = tuple(build_derivatives(self._instruments, self.today))
            self._derivative_by_con_id = {d.con_id: d for d in built}
            for d in built:
                self._by_root.setdefault((d.symbol, d.sec_type), []).append(d)
            self._derivatives = built
        return self._derivatives

    def by_con_id(self, con_id: int) -> Instrument | None:
        inst = self._by_con_id.get(con_id)
        if inst is None and con_id:
            self.derivatives  # noqa: B018 (built on first use)
            inst = self._derivative_by_con_id.get(con_id)
        return inst

    def underlying(self, inst: Instrument) -> Instrument | None:
        return self.by_con_id(inst.under_con_id) if inst.under_con_id else None

    def front_future(self, symbol: str) -> Instrument | None:
        """The future of ``symbol`` that expires first (what IB's CONTFUT designates)."""
        self.derivatives  # noqa: B018
        futures = self._by_root.get((symbol.upper(), "FUT"), [])
        return min(futures, key=lambda f: f.last_trade_date, default=None)

    def options_on(self, under_con_id: int) -> list[Instrument]:
        """The options (and futures options) whose underlying is ``under_con_id``."""
        return [d for d in self.derivatives if d.is_option and d.under_con_id == under_con_id]

    def by_symbol(self, symbol: str) -> Instrument | None:
        """The instrument with this symbol or local symbol (e.g. "AAPL", "EUR.USD",
        "ESZ3", "AAPL  240119C00190000")."""
        wanted = symbol.upper()
        for inst in self._instruments:
            if wanted in (inst.symbol, inst.local_symbol.upper()):
                return inst
        for inst in self.derivatives:
            if wanted == inst.local_symbol.upper():
                return inst
        return None

    def match(
        self,
        con_id: int = 0,
        symbol: str = "",
        sec_type: str = "",
        exchange: str = "",
        currency: str = "",
        *,
        primary_exchange: str = "",
        local_symbol: str = "",
        trading_class: str = "",
        last_trade_date: str = "",
        strike: float = 0.0,
        right: str = "",
        multiplier: str = "",
    ) -> list[Instrument]:
        """Every instrument a (partial) contract spec designates; empty means error 200,
        several means TWS lists them all (and a client asking for one sees ambiguity)."""
        kind = sec_type.upper()
        if con_id:
            inst = self.by_con_id(con_id)
            candidates = [inst] if inst else []
        elif not (symbol or local_symbol):
            return []
        elif kind == "CONTFUT":
            front = self.front_future(symbol)
            candidates = [front] if front else []
            kind = "FUT"
        elif kind in DERIVATIVE_SEC_TYPES:
            self.derivatives  # noqa: B018
            candidates = list(self._by_root.get((symbol.upper(), kind), []))
        elif local_symbol and not symbol:
            candidates = [*self._instruments, *self.derivatives]
        else:
            candidates = list(self._instruments)
        wanted_right = _right(right)
        return [
            inst
            for inst in candidates
            if _matches(symbol, inst.symbol)
            and _matches(kind, inst.sec_type)
            and (not exchange or exchange.upper() in inst.valid_exchange_names())
            and _matches(currency, inst.currency)
            and _matches(primary_exchange, inst.primary_exchange)
            and _matches(local_symbol, inst.local_symbol)
            and _matches(trading_class, inst.trading_class)
            and _expiry_matches(last_trade_date, inst)
            and (not strike or abs(strike - inst.strike) < 1e-6)
            and _matches(wanted_right, inst.right)
            and (not multiplier or _same_number(multiplier, inst.multiplier))
        ]

    def search(self, pattern: str) -> list[Instrument]:
        """reqMatchingSymbols: symbols starting with the pattern, then long-name matches."""
        wanted = pattern.strip().upper()
        if not wanted:
            return []
        by_symbol = [
            i
            for i in self._instruments
            if i.symbol.startswith(wanted) or i.local_symbol.upper().startswith(wanted)
        ]
        by_name = [
            i
            for i in self._instruments
            if i not in by_symbol
            and any(word.startswith(wanted) for word in i.long_name.upper().split())
        ]
        return by_symbol + by_name


def _same_number(a: str, b: str) -> bool:
    try:
        return float(a) == float(b or 0)
    except ValueError:
        return False
