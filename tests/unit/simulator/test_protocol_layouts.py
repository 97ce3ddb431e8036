"""Version-dependent layouts, read back by ib_insync's own decoder at each version."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from ib_insync.decoder import Decoder

from tws_simulator import wire
from tws_simulator.contracts import contract_details_fields, symbol_samples_fields, trading_hours
from tws_simulator.dispatch import request_id
from tws_simulator.server import connection_time_text, parse_version_range
from tws_simulator.universe import Universe


class Recorder:
    """Stands in for ib_insync's Wrapper: keeps what the decoder hands over."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, args))


def decode(fields: list[object], version: int) -> list[tuple[str, tuple[Any, ...]]]:
    recorder = Recorder()
    # Round-trip through the real wire format first.
    payload = wire.encode_fields(fields)
    Decoder(recorder, version).interpret(wire.split_fields(payload))  # type: ignore[arg-type]
    return recorder.calls


@pytest.mark.parametrize("version", [157, 162, 163, 164, 170, 176, 178])
def test_contract_details_decode_at_every_version(version: int) -> None:
    aapl = Universe().by_symbol("AAPL")
    assert aapl is not None
    fields = contract_details_fields(aapl, 42, "SMART", version, today=date(2024, 6, 11))
    [(name, (req_id, cd))] = decode(fields, version)
    assert (name, req_id) == ("contractDetails", 42)
    c = cd.contract
    assert (c.conId, c.symbol, c.secType, c.exchange, c.primaryExchange) == (
        265598,
        "AAPL",
        "STK",
        "SMART",
        "NASDAQ",
    )
    assert cd.minTick == 0.01 and cd.longName == "APPLE INC" and cd.stockType == "COMMON"
    assert cd.timeZoneId == "US/Eastern" and cd.marketRuleIds.startswith("26,26")
    assert [(t.tag, t.value) for t in cd.secIdList] == [("ISIN", "US0378331005")]
    assert cd.tradingHours.startswith("20240611:0400-20240611:2000")
    if version >= 164:
        assert (cd.minSize, cd.sizeIncrement, cd.suggestedSizeIncrement) == (0.0001, 0.0001, 100)
    if version == 163:
        assert cd.suggestedSizeIncrement == 100


@pytest.mark.parametrize("version", [175, 176, 178])
def test_symbol_samples_decode(version: int) -> None:
    universe = Universe()
    found = universe.search("A")
    [(name, (req_id, descriptions))] = decode(symbol_samples_fields(found, 7, version), version)
    assert (name, req_id) == ("symbolSamples", 7)
    assert [d.contract.symbol for d in descriptions] == ["AAPL", "AMZN", "GOOGL"]
    assert descriptions[0].derivativeSecTypes == ["CFD", "OPT", "IOPT", "WAR", "BAG"]
    if version >= 176:
        assert descriptions[0].contract.description == "APPLE INC"


def test_trading_hours_layout() -> None:
    universe = Universe()
    aapl, eur = universe.by_symbol("AAPL"), universe.by_symbol("EUR.USD")
    assert aapl is not None and eur is not None
    hours, liquid = trading_hours(aapl, date(2024, 6, 14))  # a Friday
    assert hours.split(";")[:3] == [
        "20240614:0400-20240614:2000",
        "20240615:CLOSED",
        "20240616:CLOSED",
    ]
    assert liquid.split(";")[0] == "20240614:0930-20240614:1600"
    fx, _ = trading_hours(eur, date(2024, 6, 14))
    assert fx.startswith(";20240613:1715-20240614:1700;20240616:1715-20240617:1700")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("v157..176", (157, 176)),
        ("v100..178 +PACEAPI", (100, 178)),
        ("v176", (176, 176)),
        ("v176..157", None),
        ("157..176", None),
        ("vx..y", None),
        ("", None),
    ],
)
def test_parse_version_range(text: str, expected: tuple[int, int] | None) -> None:
    assert parse_version_range(text) == expected


def test_request_id_position_per_message() -> None:
    assert request_id(1, ["11", "42", "0"]) == 42  # reqMktData: after the version
    assert request_id(9, ["8", "7"]) == 7  # reqContractDetails
    assert request_id(20, ["5"]) == 5  # reqHistoricalData: no version field
    assert request_id(3, ["12", "0"]) == 12  # placeOrder: the order id
    assert request_id(49, ["1"]) == -1  # reqCurrentTime has none
    assert request_id(1, ["11"]) == -1 and request_id(1, ["11", "x"]) == -1


def test_connection_time_text() -> None:
    text = connection_time_text(1_700_000_000)
    day, clock, zone = text.split(" ", 2)
    assert len(day) == 8 and len(clock) == 8 and zone
