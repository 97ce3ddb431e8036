"""The built-in instrument universe: what the simulator can quote, qualify and trade."""

from __future__ import annotations

from dataclasses import dataclass

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
