"""GetOptionChain's filtering of IB's chain answer (pure)."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

from ibgateway_server.market_data.options import ChainFilter, filter_chains, fut_fop_exchange


def chain(exchange: str, cls: str = "AAPL", strikes: tuple[float, ...] = ()) -> SimpleNamespace:
    return SimpleNamespace(
        exchange=exchange,
        tradingClass=cls,
        multiplier="100",
        expirations=["20240126", "20240119", "20240216"],
        strikes=list(strikes or (180.0, 182.5, 185.0, 187.5, 190.0, 192.5)),
    )


def strikes(found: list) -> list[str]:
    return [s.value for s in found[0].strikes]


def test_smart_by_default_else_everything() -> None:
    both = [chain("CBOE"), chain("SMART"), chain("SMART")]
    assert [c.exchange for c in filter_chains(both, ChainFilter())] == ["SMART"]
    assert [c.exchange for c in filter_chains(both, ChainFilter(exchange="cboe"))] == ["CBOE"]
    cme = [chain("CME", "ES"), chain("CME", "EW")]
    assert [c.trading_class for c in filter_chains(cme, ChainFilter())] == ["ES", "EW"]
    assert filter_chains(cme, ChainFilter(trading_class="ew"))[0].trading_class == "EW"


def test_expiry_and_strike_ranges() -> None:
    flt = ChainFilter(min_expiry="20240120", min_strike=Decimal("182.5"), max_strike=Decimal("190"))
    [found] = filter_chains([chain("SMART")], flt)
    assert list(found.expirations) == ["20240126", "20240216"]
    assert [s.value for s in found.strikes] == ["182.5", "185", "187.5", "190"]
    assert filter_chains([chain("SMART")], ChainFilter(max_expiry="20240101")) == []


def test_strikes_around_the_price() -> None:
    flt = ChainFilter(strikes_around_price=2)
    assert strikes(filter_chains([chain("SMART")], flt, Decimal("186"))) == [
        "182.5",
        "185",
        "187.5",
        "190",
    ]
    # At the money counts as above; near the edge fewer strikes remain.
    assert strikes(filter_chains([chain("SMART")], flt, Decimal("180"))) == ["180", "182.5"]


def test_fut_fop_exchange() -> None:
    assert fut_fop_exchange(SimpleNamespace(secType="FUT", exchange="CME")) == "CME"
    assert fut_fop_exchange(SimpleNamespace(secType="STK", exchange="SMART")) == ""
