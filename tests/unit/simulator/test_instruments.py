"""The instrument universe and how partial contract specs resolve."""

from __future__ import annotations

from tws_simulator.universe import Universe


def symbols(found: list) -> list[str]:
    return [i.local_symbol for i in found]


def test_universe_has_the_issue_instruments() -> None:
    universe = Universe()
    assert symbols(list(universe)) == [
        "AAPL",
        "MSFT",
        "TSLA",
        "GOOGL",
        "AMZN",
        "NVDA",
        "SPY",
        "QQQ",
        "SPX",
        "NDX",
        "EUR.USD",
    ]
    for inst in universe:
        assert inst.min_tick > 0 and inst.long_name
        if inst.sec_type == "STK":
            assert (inst.exchange, inst.currency) == ("SMART", "USD")
            assert inst.primary_exchange in ("NASDAQ", "ARCA", "NYSE")
            assert inst.valid_exchange_names()[0] == "SMART"
            assert inst.isin.startswith("US")
    eur = universe.by_symbol("EUR.USD")
    assert eur is not None and (eur.sec_type, eur.exchange) == ("CASH", "IDEALPRO")


def test_match_by_partial_spec() -> None:
    u = Universe()
    assert symbols(u.match(symbol="AAPL")) == ["AAPL"]
    assert symbols(u.match(symbol="aapl", sec_type="STK", exchange="SMART", currency="USD")) == [
        "AAPL"
    ]
    assert symbols(u.match(symbol="SPY", exchange="ARCA")) == ["SPY"]  # a listed exchange
    assert symbols(u.match(symbol="AAPL", primary_exchange="NASDAQ")) == ["AAPL"]
    assert symbols(u.match(con_id=756733)) == ["SPY"]
    assert symbols(u.match(con_id=756733, symbol="AAPL")) == []  # contradictory
    assert symbols(u.match(local_symbol="EUR.USD")) == ["EUR.USD"]
    assert symbols(u.match(symbol="EUR", sec_type="CASH", exchange="IDEALPRO", currency="USD")) == [
        "EUR.USD"
    ]


def test_no_match_means_error_200() -> None:
    u = Universe()
    assert u.match() == []  # nothing named at all
    assert u.match(symbol="NOPE") == []
    assert u.match(symbol="AAPL", currency="EUR") == []
    assert u.match(symbol="AAPL", exchange="IDEALPRO") == []
    assert u.match(con_id=1) == []
    # A derivative detail on a stock spec never matches the stock.
    assert u.match(symbol="AAPL", sec_type="STK", last_trade_date="20250620", strike=200.0) == []
    # No option of this strike is listed.
    assert u.match(symbol="AAPL", sec_type="OPT", strike=3.0, right="C") == []


def test_search_by_prefix_then_by_name() -> None:
    u = Universe()
    assert [i.symbol for i in u.search("a")] == ["AAPL", "AMZN", "GOOGL"]  # GOOGL: ALPHABET
    assert [i.symbol for i in u.search("NV")] == ["NVDA"]
    assert [i.symbol for i in u.search("EUR.")] == ["EUR"]
    assert u.search("") == [] and u.search("ZZZ") == []
