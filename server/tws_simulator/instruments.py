"""The built-in instrument universe: what the simulator can quote, qualify and trade."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
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
US_STOCK_MARKET_RULE = 26  # 0.01 at every price level
IDEALPRO_MARKET_RULE = 3188  # 0.00005 (half a pip)


@dataclass(frozen=True)
class Instrument:
    """One tradable contract, with everything a contractDetails message reports."""

    con_id: int
    symbol: str
    sec_type: str  # "STK" or "CASH"
    exchange: str  # "SMART" or "IDEALPRO"
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
    # Simulated market parameters.
    start_price: float = 100.0
    spread_ticks: int = 1  # typical bid/ask spread, in ticks
    lot_size: int = 100  # quoted sizes are multiples of this
    volatility: float = 0.0002  # standard deviation of one step's relative move

    @property
    def is_cash(self) -> bool:
        return self.sec_type == "CASH"

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
}


def _matches(wanted: str, actual: str) -> bool:
    """An empty field in a request matches anything; otherwise compare case-insensitively."""
    return not wanted or wanted.upper() == actual.upper()


class Universe:
    """The instruments known to the simulator, looked up the way TWS resolves contracts."""

    def __init__(self, instruments: Iterable[Instrument] = DEFAULT_INSTRUMENTS) -> None:
        self._instruments = tuple(instruments)
        self._by_con_id = {i.con_id: i for i in self._instruments}

    def __iter__(self) -> Iterator[Instrument]:
        return iter(self._instruments)

    def __len__(self) -> int:
        return len(self._instruments)

    @property
    def instruments(self) -> tuple[Instrument, ...]:
        return self._instruments

    def by_con_id(self, con_id: int) -> Instrument | None:
        return self._by_con_id.get(con_id)

    def by_symbol(self, symbol: str) -> Instrument | None:
        """The instrument with this symbol or local symbol (e.g. "AAPL", "EUR.USD")."""
        wanted = symbol.upper()
        for inst in self._instruments:
            if wanted in (inst.symbol, inst.local_symbol.upper()):
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
        """Every instrument a (partial) contract spec designates; empty means error 200."""
        if con_id:
            inst = self._by_con_id.get(con_id)
            candidates = [inst] if inst else []
        else:
            if not (symbol or local_symbol):
                return []
            candidates = list(self._instruments)
        if last_trade_date or strike or right or multiplier:
            # Only stocks and forex exist here: a derivative spec never matches.
            return []
        return [
            inst
            for inst in candidates
            if _matches(symbol, inst.symbol)
            and _matches(sec_type, inst.sec_type)
            and (not exchange or exchange.upper() in inst.valid_exchange_names())
            and _matches(currency, inst.currency)
            and _matches(primary_exchange, inst.primary_exchange)
            and _matches(local_symbol, inst.local_symbol)
            and _matches(trading_class, inst.trading_class)
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
