"""The hand-made wire encoding of quotes is byte-for-byte what the generated classes make."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import pytest
from google.protobuf import timestamp_pb2

from ibgateway.v1 import common_pb2, market_data_pb2
from ibgateway_server.ib.insync import UNSET_DOUBLE, Contract, Ticker
from ibgateway_server.market_data import convert as qc

NAN = float("nan")
CONTRACT = common_pb2.Contract(
    con_id=265598,
    symbol="AAPL",
    sec_type=common_pb2.SECURITY_TYPE_STOCK,
    exchange="SMART",
    primary_exchange="NASDAQ",
    currency="USD",
)


def test_field_numbers_match_the_protos() -> None:
    quote = market_data_pb2.Quote.DESCRIPTOR.fields_by_name
    expected = {
        "contract": qc.QUOTE_CONTRACT,
        "bid": qc.QUOTE_BID,
        "ask": qc.QUOTE_ASK,
        "last": qc.QUOTE_LAST,
        "bid_size": qc.QUOTE_BID_SIZE,
        "ask_size": qc.QUOTE_ASK_SIZE,
        "last_size": qc.QUOTE_LAST_SIZE,
        "volume": qc.QUOTE_VOLUME,
        "high": qc.QUOTE_HIGH,
        "low": qc.QUOTE_LOW,
        "close": qc.QUOTE_CLOSE,
        "open": qc.QUOTE_OPEN,
        "tick_time": qc.QUOTE_TICK_TIME,
        "receive_time": qc.QUOTE_RECEIVE_TIME,
        "market_data_type": qc.QUOTE_MARKET_DATA_TYPE,
        "bid_greeks": qc.QUOTE_BID_GREEKS,
        "ask_greeks": qc.QUOTE_ASK_GREEKS,
        "last_greeks": qc.QUOTE_LAST_GREEKS,
        "model_greeks": qc.QUOTE_MODEL_GREEKS,
    }
    assert {name: quote[name].number for name in expected} == expected
    assert set(quote) == set(expected)  # a new Quote field needs encoding here too
    greeks = market_data_pb2.OptionGreeks.DESCRIPTOR.fields_by_name
    names = {
        "impliedVol": "implied_volatility",
        "delta": "delta",
        "gamma": "gamma",
        "vega": "vega",
        "theta": "theta",
        "optPrice": "option_price",
        "undPrice": "underlying_price",
        "pvDividend": "pv_dividend",
    }
    assert {names[a]: n for a, n in qc.GREEK_VALUES} == {k: v.number for k, v in greeks.items()}
    batch = market_data_pb2.QuoteBatch.DESCRIPTOR.fields_by_name
    assert batch["quotes"].number == qc.BATCH_QUOTES
    assert batch["conflated_updates"].number == qc.BATCH_CONFLATED_UPDATES
    response = market_data_pb2.StreamQuotesResponse.DESCRIPTOR.fields_by_name
    assert response["quotes"].number == qc.RESPONSE_QUOTES
    assert common_pb2.Decimal.DESCRIPTOR.fields_by_name["value"].number == qc.DECIMAL_VALUE
    ts = timestamp_pb2.Timestamp.DESCRIPTOR.fields_by_name
    assert (ts["seconds"].number, ts["nanos"].number) == (
        qc.TIMESTAMP_SECONDS,
        qc.TIMESTAMP_NANOS,
    )


@pytest.mark.parametrize(
    "value",
    [
        *(0, 1, 127, 128, 300, 16383, 16384, 2**21 - 1, 2**21, 2**28 - 1, 2**28),
        *(2**35 - 1, 2**35, 999_999_000, 1_733_000_000, 2**31, 2**63 - 1),
    ],
)
def test_varint_matches_protobuf(value: int) -> None:
    encoded = market_data_pb2.QuoteBatch(conflated_updates=value).SerializeToString()
    if value == 0:
        assert encoded == b""
    else:
        assert encoded == qc.tag(2, 0) + qc.varint(value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (150.1, "150.1"),
        (150.25, "150.25"),
        (100.0, "100"),
        (1.08735, "1.08735"),
        (0.00005, "0.00005"),
        (1e-07, "0.0000001"),
        (1e17, "100000000000000000"),
        (-0.5, "-0.5"),
        (NAN, ""),
        (-1.0, ""),  # IB's "no price"
        (UNSET_DOUBLE, ""),
        (math.inf, ""),
    ],
)
def test_price_text(value: float, text: str) -> None:
    assert qc.price_text(value) == text


def test_size_text() -> None:
    assert qc.size_text(300.0) == "300"
    assert qc.size_text(0.0) == "0"
    assert qc.size_text(12.5) == "12.5"
    assert qc.size_text(-1.0) == ""
    assert qc.size_text(NAN) == ""


def _ticker(**values: float) -> Ticker:
    ticker = Ticker(contract=Contract(conId=265598, symbol="AAPL"))
    for name, value in values.items():
        setattr(ticker, name, value)
    return ticker


def _expected(ticker: Ticker, received: datetime, tick_time: datetime) -> bytes:
    def dec(value: float, price: bool = True) -> common_pb2.Decimal | None:
        text = qc.price_text(value) if price else qc.size_text(value)
        return common_pb2.Decimal(value=text) if text else None

    def ts(moment: datetime) -> timestamp_pb2.Timestamp:
        out = timestamp_pb2.Timestamp()
        out.FromDatetime(moment)
        return out

    quote = market_data_pb2.Quote(
        contract=CONTRACT,
        bid=dec(ticker.bid),
        ask=dec(ticker.ask),
        last=dec(ticker.last),
        bid_size=dec(ticker.bidSize, False),
        ask_size=dec(ticker.askSize, False),
        last_size=dec(ticker.lastSize, False),
        volume=dec(ticker.volume, False),
        high=dec(ticker.high),
        low=dec(ticker.low),
        close=dec(ticker.close),
        open=dec(ticker.open),
        tick_time=ts(tick_time),
        receive_time=ts(received),
        market_data_type=ticker.marketDataType,  # type: ignore[arg-type]
    )
    return quote.SerializeToString()


def test_encoder_output_is_the_canonical_quote_encoding() -> None:
    encoder = qc.QuoteEncoder(CONTRACT)
    received = datetime(2024, 6, 11, 14, 30, 1, 123456, tzinfo=UTC)
    ticker = _ticker(
        bid=189.51,
        ask=189.52,
        last=189.52,
        bidSize=300.0,
        askSize=500.0,
        lastSize=100.0,
        volume=1234500.0,
        high=190.1,
        low=188.2,
        close=189.0,
        open=189.3,
    )
    first = encoder.encode(ticker, received)
    assert first == _expected(ticker, received, received)
    # Only the bid moves: the cached fields are reused and the result is still canonical.
    ticker.bid = 189.5
    later = datetime(2024, 6, 11, 14, 30, 2, tzinfo=UTC)
    second = encoder.encode(ticker, later)
    assert second == _expected(ticker, later, later)
    decoded = market_data_pb2.Quote.FromString(second)
    assert decoded.bid.value == "189.5"
    assert decoded.receive_time.ToDatetime(tzinfo=UTC) == later


def test_encoder_stays_canonical_through_many_random_updates() -> None:
    """Fields change a few at a time, values come back (the memo), some go unset (NaN)
    and come back: every encoding is still what the generated classes make."""
    rng = random.Random(7)
    encoder = qc.QuoteEncoder(CONTRACT)
    ticker = _ticker(bid=100.0, ask=100.01, close=99.5)
    attrs = [attr for attr, _, _ in qc.QUOTE_FIELDS]
    for step in range(2000):
        for attr in rng.sample(attrs, rng.randint(1, 3)):
            roll = rng.random()
            if roll < 0.1:
                value = NAN
            elif attr.endswith(("Size", "volume")):
                value = float(100 * rng.randint(0, 6))
            else:
                value = round(100 + rng.randint(-5, 5) * 0.01, 2)
            setattr(ticker, attr, value)
        received = datetime(2024, 6, 11, 14, 30, step % 60, rng.randint(0, 999_999), tzinfo=UTC)
        assert encoder.encode(ticker, received) == _expected(ticker, received, received), step


def test_encoder_leaves_out_what_ib_has_not_sent() -> None:
    encoder = qc.QuoteEncoder(CONTRACT)
    received = datetime(2024, 6, 11, 14, 30, 1, tzinfo=UTC)
    ticker = _ticker(bid=1.08735, ask=1.0874)  # forex: no last, no sizes yet
    quote = market_data_pb2.Quote.FromString(encoder.encode(ticker, received))
    assert quote.bid.value == "1.08735" and quote.ask.value == "1.0874"
    assert not quote.HasField("last") and not quote.HasField("volume")
    assert quote.contract == CONTRACT
    assert quote.market_data_type == common_pb2.MARKET_DATA_TYPE_LIVE


def test_tick_time_uses_ib_time_when_it_changes() -> None:
    encoder = qc.QuoteEncoder(CONTRACT)
    received = datetime(2024, 6, 11, 14, 30, 5, tzinfo=UTC)
    trade_time = datetime(2024, 6, 11, 14, 30, 4, 500000, tzinfo=UTC)
    ticker = _ticker(last=10.0)
    ticker.rtTime = trade_time
    first = market_data_pb2.Quote.FromString(encoder.encode(ticker, received))
    assert first.tick_time.ToDatetime(tzinfo=UTC) == trade_time
    assert first.receive_time.ToDatetime(tzinfo=UTC) == received
    # the same (old) trade time again: this update is a new tick stamped on receipt
    later = datetime(2024, 6, 11, 14, 30, 6, tzinfo=UTC)
    second = market_data_pb2.Quote.FromString(encoder.encode(ticker, later))
    assert second.tick_time.ToDatetime(tzinfo=UTC) == later


def test_batch_message_decodes_as_stream_response() -> None:
    encoder = qc.QuoteEncoder(CONTRACT)
    received = datetime(2024, 6, 11, 14, 30, 1, tzinfo=UTC)
    quotes = [encoder.encode(_ticker(bid=1.0 + i / 100, ask=2.0), received) for i in range(3)]
    data = qc.quote_batch_message([qc.quote_element(q) for q in quotes], conflated_updates=7)
    message = market_data_pb2.StreamQuotesResponse.FromString(data)
    assert message.WhichOneof("event") == "quotes"
    assert [q.bid.value for q in message.quotes.quotes] == ["1", "1.01", "1.02"]
    assert message.quotes.conflated_updates == 7
    assert message.SerializeToString() == data
    empty = market_data_pb2.StreamQuotesResponse.FromString(qc.quote_batch_message([]))
    assert empty.WhichOneof("event") == "quotes" and not empty.quotes.quotes


def test_market_data_type_to_ib() -> None:
    assert qc.market_data_type_to_ib(common_pb2.MARKET_DATA_TYPE_UNSPECIFIED) == 1
    assert qc.market_data_type_to_ib(common_pb2.MARKET_DATA_TYPE_DELAYED) == 3
    assert qc.market_data_type_to_ib(common_pb2.MARKET_DATA_TYPE_DELAYED_FROZEN) == 4


def test_option_greeks_encode_canonically_and_leave_out_what_ib_could_not_compute() -> None:
    from ib_insync import OptionComputation

    encoder = qc.QuoteEncoder(CONTRACT)
    received = datetime(2024, 6, 11, 14, 30, 1, tzinfo=UTC)
    ticker = _ticker(bid=3.2, ask=3.35)
    ticker.modelGreeks = OptionComputation(
        0, 0.2493, 0.662, 3.27, 0.0, 0.0706, 0.0759, -0.2285, 189.5
    )
    ticker.bidGreeks = OptionComputation(0, None, None, 3.2, None, None, -2.0, -2.0, 189.5)
    data = encoder.encode(ticker, received)
    quote = market_data_pb2.Quote.FromString(data)
    model = quote.model_greeks
    assert (model.implied_volatility.value, model.delta.value, model.theta.value) == (
        "0.2493",
        "0.662",
        "-0.2285",
    )
    assert model.underlying_price.value == "189.5" and model.pv_dividend.value == "0"
    bid = quote.bid_greeks
    assert bid.option_price.value == "3.2" and bid.underlying_price.value == "189.5"
    assert not bid.HasField("implied_volatility") and not bid.HasField("vega")
    assert not quote.HasField("ask_greeks")
    assert data == quote.SerializeToString()  # the canonical encoding, field by field
