"""Contract requests: contract details, matching symbols, market rules.

Also the contract block parser and resolver shared with every request that names a
contract (market data, ...).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Protocol
from zoneinfo import ZoneInfo

from . import wire
from .clock import EASTERN
from .dispatch import RequestError
from .instruments import MARKET_RULES, Instrument
from .message_ids import In, Out
from .universe import Universe
from .versions import BOND_ISSUERID, SIZE_RULES
from .wire import fmt_float

if TYPE_CHECKING:
    from .server import ClientConnection, Simulator

log = logging.getLogger(__name__)

NO_SECURITY_DEFINITION = 200
NO_SECURITY_DEFINITION_TEXT = "No security definition has been found for the request"
# Derivative kinds TWS lists for a US stock in symbol samples.
_STOCK_DERIVATIVES = ("CFD", "OPT", "IOPT", "WAR", "BAG")
_INDEX_DERIVATIVES = ("OPT", "FUT", "FOP", "IOPT", "WAR", "BAG")
_TRADING_DAYS_LISTED = 7


@dataclass(frozen=True)
class ContractSpec:
    """The 11-field contract block requests carry (conId … tradingClass)."""

    con_id: int = 0
    symbol: str = ""
    sec_type: str = ""
    last_trade_date: str = ""
    strike: float = 0.0
    right: str = ""
    multiplier: str = ""
    exchange: str = ""
    primary_exchange: str = ""
    currency: str = ""
    local_symbol: str = ""
    trading_class: str = ""

    def describe(self) -> str:
        return self.local_symbol or self.symbol or str(self.con_id)


CONTRACT_FIELDS = 12


def parse_contract(fields: list[str], start: int) -> ContractSpec:
    """Read the contract block beginning at ``fields[start]``."""
    f = fields[start : start + CONTRACT_FIELDS]
    if len(f) < CONTRACT_FIELDS:
        raise ValueError("truncated contract")
    return ContractSpec(
        con_id=int(f[0] or 0),
        symbol=f[1],
        sec_type=f[2],
        last_trade_date=f[3],
        strike=float(f[4] or 0),
        right=f[5],
        multiplier=f[6],
        exchange=f[7],
        primary_exchange=f[8],
        currency=f[9],
        local_symbol=f[10],
        trading_class=f[11],
    )


class ContractFields(Protocol):
    """The contract block any request carries (ContractSpec here, placeOrder's too)."""

    @property
    def con_id(self) -> int: ...

    @property
    def symbol(self) -> str: ...

    @property
    def sec_type(self) -> str: ...

    @property
    def last_trade_date(self) -> str: ...

    @property
    def strike(self) -> float: ...

    @property
    def right(self) -> str: ...

    @property
    def multiplier(self) -> str: ...

    @property
    def exchange(self) -> str: ...

    @property
    def primary_exchange(self) -> str: ...

    @property
    def currency(self) -> str: ...

    @property
    def local_symbol(self) -> str: ...

    @property
    def trading_class(self) -> str: ...


def candidates(universe: Universe, spec: ContractFields) -> list[Instrument]:
    """The instruments a (partial) contract matches; "?" and "0" rights mean unset, as
    ib_insync sends them for contracts it rebuilt from TWS's own messages."""
    right = "" if spec.right in ("", "0", "?") else spec.right
    return universe.match(
        spec.con_id,
        spec.symbol,
        spec.sec_type,
        spec.exchange,
        spec.currency,
        primary_exchange=spec.primary_exchange,
        local_symbol=spec.local_symbol,
        trading_class=spec.trading_class,
        last_trade_date=spec.last_trade_date,
        strike=spec.strike,
        right=right,
        multiplier=spec.multiplier,
    )


def resolve(universe: Universe, spec: ContractSpec, req_id: int) -> Instrument:
    """The one instrument a request designates, or the error TWS gives (200)."""
    found = candidates(universe, spec)
    if not found:
        raise RequestError(NO_SECURITY_DEFINITION, NO_SECURITY_DEFINITION_TEXT, req_id)
    if len(found) > 1:
        raise RequestError(
            NO_SECURITY_DEFINITION,
            f"The contract description specified for {spec.describe()} is ambiguous.",
            req_id,
        )
    return found[0]


# -- trading hours -------------------------------------------------------------------------


def _eastern_today() -> date:
    try:
        return datetime.now(ZoneInfo("US/Eastern")).date()
    except Exception:  # no tz database: local date is close enough
        return date.today()


def trading_hours(inst: Instrument, today: date | None = None) -> tuple[str, str]:
    """(tradingHours, liquidHours) for the coming week, in TWS's text layout."""
    kind = "CASH" if inst.is_cash else "CME" if inst.sec_type in ("FUT", "FOP") else "US"
    return _hours(kind, today or _eastern_today())


@functools.lru_cache(maxsize=16)
def _hours(kind: str, first: date) -> tuple[str, str]:
    days = [first + timedelta(days=n) for n in range(_TRADING_DAYS_LISTED)]
    if kind == "CME":
        # CME Globex equity futures: Sunday-Friday 17:00-16:00 Central, RTH 08:30-15:00.
        trading = ";".join(
            f"{d - timedelta(days=1):%Y%m%d}:1700-{d:%Y%m%d}:1600"
            if d.weekday() < 5
            else f"{d:%Y%m%d}:CLOSED"
            for d in days
        )
        liquid = ";".join(
            f"{d:%Y%m%d}:0830-{d:%Y%m%d}:1500" if d.weekday() < 5 else f"{d:%Y%m%d}:CLOSED"
            for d in days
        )
        return trading, liquid
    if kind == "CASH":
        # IDEALPRO trades Sunday 17:15 to Friday 17:00 (ET); the capture's layout, leading ';'.
        sessions = [
            f"{d - timedelta(days=1):%Y%m%d}:1715-{d:%Y%m%d}:1700" for d in days if d.weekday() < 5
        ]
        text = ";" + ";".join(sessions)
        return text, text

    def listing(open_: str, close: str) -> str:
        return ";".join(
            f"{d:%Y%m%d}:{open_}-{d:%Y%m%d}:{close}" if d.weekday() < 5 else f"{d:%Y%m%d}:CLOSED"
            for d in days
        )

    return listing("0400", "2000"), listing("0930", "1600")


# -- encoding ------------------------------------------------------------------------------


def format_tick(value: float) -> str:
    """A price increment as TWS writes it: plain decimal ("0.00005"), never "5e-05"."""
    return f"{value:.10f}".rstrip("0").rstrip(".")


def strike_text(inst: Instrument) -> str:
    """The strike as contractDetails writes it: a plain 0 unless it is an option."""
    return fmt_float(inst.strike) if inst.strike else "0"


def contract_details_fields(
    inst: Instrument,
    req_id: int,
    exchange: str,
    version: int,
    today: date | None = None,
    *,
    sec_type: str = "",
) -> list[object]:
    """One contractDetails message (layout of a real TWS, see the EUR.USD capture).

    ``sec_type`` overrides the reported type (a CONTFUT request is answered as CONTFUT,
    with the front future's con id)."""
    hours, liquid = trading_hours(inst, today)
    rules = ",".join([str(inst.market_rule_id)] * len(inst.valid_exchange_names()))
    fields: list[object] = [Out.CONTRACT_DATA]
    if version < SIZE_RULES:
        fields.append(8)
    fields += [
        req_id,
        inst.symbol,
        sec_type or inst.sec_type,
        inst.last_trade_date,  # lastTradeDateOrContractMonth (and last trade time)
        strike_text(inst),
        inst.right,
        exchange,
        inst.currency,
        inst.local_symbol,
        inst.market_name,
        inst.trading_class,
        inst.con_id,
        format_tick(inst.min_tick),
    ]
    if version < SIZE_RULES:
        fields.append(1)  # mdSizeMultiplier, obsolete
    fields += [
        inst.multiplier,
        inst.order_types,
        inst.valid_exchanges,
        1,  # priceMagnifier
        inst.under_con_id,
        inst.long_name,
        inst.primary_exchange,
        inst.contract_month,
        inst.industry,
        inst.category,
        inst.subcategory,
        inst.time_zone_id,
        hours,
        liquid,
        "",  # evRule
        "",  # evMultiplier
    ]
    if inst.isin:
        fields += [1, "ISIN", inst.isin]
    else:
        fields += [0]
    fields += [
        inst.agg_group,
        inst.under_symbol,
        inst.under_sec_type,
        rules,
        inst.last_trade_date,  # realExpirationDate
        inst.stock_type,
    ]
    if version == SIZE_RULES - 1:
        fields.append(inst.suggested_size_increment)
    elif version >= SIZE_RULES:
        fields += [inst.min_size, inst.size_increment, inst.suggested_size_increment]
    return fields


def option_parameter_fields(
    options: list[Instrument], req_id: int, exchange: str = ""
) -> list[list[object]]:
    """securityDefinitionOptionParameter messages: one per exchange and trading class, each
    with every expiry and strike of the class (as TWS sends them: the union over
    expiries, so not every strike exists on every expiry). ``exchange`` keeps one."""
    classes: dict[tuple[str, str, int], tuple[set[str], set[float], tuple[str, ...]]] = {}
    for opt in options:
        key = (opt.trading_class, opt.multiplier, opt.under_con_id)
        expiries, strikes, _ = classes.setdefault(key, (set(), set(), opt.valid_exchange_names()))
        expiries.add(opt.last_trade_date)
        strikes.add(opt.strike)
    messages: list[list[object]] = []
    for (trading_class, multiplier, under_con_id), (expiries, strikes, venues) in sorted(
        classes.items()
    ):
        for venue in venues:
            if exchange and venue != exchange:
                continue
            messages.append(
                [
                    Out.SECURITY_DEFINITION_OPTION_PARAMETER,
                    req_id,
                    venue,
                    under_con_id,
                    trading_class,
                    multiplier,
                    len(expiries),
                    *sorted(expiries),
                    len(strikes),
                    *sorted(strikes),
                ]
            )
    return messages


def symbol_samples_fields(insts: list[Instrument], req_id: int, version: int) -> list[object]:
    fields: list[object] = [Out.SYMBOL_SAMPLES, req_id, len(insts)]
    for inst in insts:
        derivatives = (
            () if inst.is_cash else _INDEX_DERIVATIVES if inst.is_index else _STOCK_DERIVATIVES
        )
        fields += [
            inst.con_id,
            inst.symbol,
            inst.sec_type,
            inst.primary_exchange or inst.exchange,
            inst.currency,
            len(derivatives),
            *derivatives,
        ]
        if version >= BOND_ISSUERID:
            fields += [inst.long_name, ""]  # description, issuerId
    return fields


# -- handlers ------------------------------------------------------------------------------


def install(sim: Simulator) -> None:
    universe = sim.universe

    def req_contract_details(conn: ClientConnection, fields: list[str]) -> None:
        # [version, reqId, contract(12), includeExpired, secIdType, secId, (issuerId)]
        req_id = int(fields[1])
        spec = parse_contract(fields, 2)
        sec_id_type = fields[15] if len(fields) > 15 else ""
        sec_id = fields[16] if len(fields) > 16 else ""
        found = candidates(universe, spec)
        if not spec.con_id and not spec.symbol and sec_id_type.upper() == "ISIN" and sec_id:
            found = [i for i in universe.instruments if i.isin == sec_id.upper()]
        if not found:
            raise RequestError(NO_SECURITY_DEFINITION, NO_SECURITY_DEFINITION_TEXT, req_id)
        reported = "CONTFUT" if spec.sec_type.upper() == "CONTFUT" else ""
        # the simulated clock's day (clock_start), as for the listings and sessions
        today = datetime.fromtimestamp(sim.clock.now(), EASTERN).date()
        out = [
            wire.encode_message(
                contract_details_fields(
                    inst,
                    req_id,
                    spec.exchange.upper() or inst.exchange,
                    conn.server_version,
                    today,
                    sec_type=reported,
                )
            )
            for inst in found
        ]
        conn.send_raw(b"".join(out))
        conn.send(Out.CONTRACT_DATA_END, 1, req_id)

    def req_matching_symbols(conn: ClientConnection, fields: list[str]) -> None:
        # [reqId, pattern]
        req_id = int(fields[0])
        found = universe.search(fields[1] if len(fields) > 1 else "")[:16]
        conn.send(*symbol_samples_fields(found, req_id, conn.server_version))

    def req_market_rule(conn: ClientConnection, fields: list[str]) -> None:
        rule_id = int(fields[0])
        increments = MARKET_RULES.get(rule_id)
        if increments is None:
            log.info("%r asked for unknown market rule %d", conn, rule_id)
            conn.send_error(-1, 321, f"Error validating request.-'91' : cause - rule {rule_id}")
            return
        flat: list[object] = []
        for low, step in increments:
            flat += [low, format_tick(step)]
        conn.send(Out.MARKET_RULE, rule_id, len(increments), *flat)

    def req_sec_def_opt_params(conn: ClientConnection, fields: list[str]) -> None:
        # [reqId, underlyingSymbol, futFopExchange, underlyingSecType, underlyingConId]
        req_id = int(fields[0])
        symbol, fop_exchange, _sec_type, con_text = [*fields[1:5], "", "", "", ""][:4]
        under = universe.by_con_id(int(con_text or 0))
        if under is None or (symbol and symbol.upper() != under.symbol):
            raise RequestError(NO_SECURITY_DEFINITION, NO_SECURITY_DEFINITION_TEXT, req_id)
        out = [
            wire.encode_message(f)
            for f in option_parameter_fields(
                universe.options_on(under.con_id), req_id, fop_exchange.upper()
            )
        ]
        conn.send_raw(b"".join(out))
        conn.send(Out.SECURITY_DEFINITION_OPTION_PARAMETER_END, req_id)

    sim.register(In.REQ_CONTRACT_DATA, req_contract_details)
    sim.register(In.REQ_MATCHING_SYMBOLS, req_matching_symbols)
    sim.register(In.REQ_MARKET_RULE, req_market_rule)
    sim.register(In.REQ_SEC_DEF_OPT_PARAMS, req_sec_def_opt_params)
