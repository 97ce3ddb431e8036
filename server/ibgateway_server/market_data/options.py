"""Option chains: IB's security definition option parameters, filtered, as protos (pure)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ibgateway.v1 import market_data_pb2
from ibgateway_server.ib import convert

DEFAULT_EXCHANGE = "SMART"


@dataclass(frozen=True)
class ChainFilter:
    """What GetOptionChain keeps of IB's answer (empty / None / 0: no limit)."""

    exchange: str = ""
    trading_class: str = ""
    min_expiry: str = ""
    max_expiry: str = ""
    min_strike: Decimal | None = None
    max_strike: Decimal | None = None
    strikes_around_price: int = 0


def fut_fop_exchange(contract: Any) -> str:
    """reqSecDefOptParams' futFopExchange: the future's exchange for futures options,
    empty for options on stocks and indices (as IB asks)."""
    return str(contract.exchange or "") if contract.secType == "FUT" else ""


def reference_price(ticker: Any) -> Decimal | None:
    """The price strikes are centred on: the midpoint, else the last, else the close."""
    if ticker is None:
        return None
    for value in (ticker.marketPrice(), ticker.last, ticker.close):
        if isinstance(value, int | float) and math.isfinite(value) and value > 0:
            return Decimal(convert.decimal_text(float(value)))
    return None


def _strikes(strikes: Iterable[float], flt: ChainFilter, price: Decimal | None) -> list[Decimal]:
    values = sorted({Decimal(convert.decimal_text(s)) for s in strikes if s and s == s})
    if flt.min_strike is not None:
        values = [s for s in values if s >= flt.min_strike]
    if flt.max_strike is not None:
        values = [s for s in values if s <= flt.max_strike]
    if flt.strikes_around_price and price is not None:
        n = flt.strikes_around_price
        values = [s for s in values if s < price][-n:] + [s for s in values if s >= price][:n]
    return values


def filter_chains(
    chains: Iterable[Any], flt: ChainFilter, price: Decimal | None = None
) -> list[market_data_pb2.OptionChain]:
    """The chains (ib_insync OptionChain objects) that pass ``flt``, as protos, by
    exchange then trading class. Without an exchange filter, SMART is kept when IB lists
    it (the other exchanges repeat the same options), else every exchange."""
    listed = list(chains)
    exchange = flt.exchange.upper()
    if not exchange and any(c.exchange == DEFAULT_EXCHANGE for c in listed):
        exchange = DEFAULT_EXCHANGE
    out: dict[tuple[str, str], market_data_pb2.OptionChain] = {}
    for chain in listed:
        if exchange and chain.exchange.upper() != exchange:
            continue
        if flt.trading_class and chain.tradingClass.upper() != flt.trading_class.upper():
            continue
        expirations = sorted(
            {
                e
                for e in chain.expirations
                if (not flt.min_expiry or e >= flt.min_expiry)
                and (not flt.max_expiry or e <= flt.max_expiry)
            }
        )
        key = (chain.exchange, chain.tradingClass)
        if not expirations or key in out:
            continue
        strikes = _strikes(chain.strikes, flt, price)
        if not strikes:
            continue
        out[key] = market_data_pb2.OptionChain(
            exchange=chain.exchange,
            trading_class=chain.tradingClass,
            multiplier=str(chain.multiplier or ""),
            expirations=expirations,
            strikes=[convert.to_decimal(s) for s in strikes],
        )
    return [out[key] for key in sorted(out)]
