"""The universe: every instrument the simulator can quote, qualify and trade, looked up
the way TWS resolves contracts (listed instruments, and their derivatives)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date

from .instruments import DEFAULT_INSTRUMENTS, DERIVATIVE_SEC_TYPES, Instrument
from .options import FIRST_DERIVATIVE_CON_ID, build_derivatives, eastern_today


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
            self._today = eastern_today()
        return self._today

    @property
    def derivatives(self) -> tuple[Instrument, ...]:
        """Every option, future and futures option (built once, on first use)."""
        if self._derivatives is None:
            built = tuple(build_derivatives(self._instruments, self.today))
            self._derivative_by_con_id = {d.con_id: d for d in built}
            for d in built:
                self._by_root.setdefault((d.symbol, d.sec_type), []).append(d)
            self._derivatives = built
        return self._derivatives

    def by_con_id(self, con_id: int) -> Instrument | None:
        inst = self._by_con_id.get(con_id)
        # (only a con id in the derivatives' range builds them: building takes a moment
        # of the simulator's loop, which an unknown stock con id should not cost)
        if inst is None and con_id >= FIRST_DERIVATIVE_CON_ID:
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
