"""Quote conversions and the hand-made protobuf wire encoding of quote streams.

Quotes are the hot path of the gateway: every IB update is encoded ONCE into the bytes of
an ``ibgateway.v1.Quote`` and those bytes are reused for every subscriber. A stream message
(``StreamQuotesResponse`` whose oneof holds a ``QuoteBatch``) is assembled by
concatenating the pre-encoded quotes, which is valid protobuf: a length-delimited field on
the wire is ``tag, length, bytes``, so a repeated message field is one such chunk per
element and a message field (the oneof member) is one chunk wrapping its body. Any
protobuf decoder (generated stubs, grpcurl via reflection) reads the result as a normal
``StreamQuotesResponse``; the unit tests check that against the generated classes.

The field numbers below must match ``protos/ibgateway/v1/market_data.proto`` and
``common.proto``; ``tests/unit/market_data/test_quotes_convert.py`` checks them against the
descriptors so that a proto change cannot silently break the encoding.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable
from datetime import datetime

from ibgateway.v1 import common_pb2
from ibgateway_server.ib.convert import decimal_text
from ibgateway_server.ib.insync import UNSET_DOUBLE, Ticker

# --- wire constants ----------------------------------------------------------------------
_WIRE_VARINT = 0
_WIRE_LEN = 2

# Quote fields (market_data.proto).
QUOTE_CONTRACT = 1
QUOTE_BID = 2
QUOTE_ASK = 3
QUOTE_LAST = 4
QUOTE_BID_SIZE = 5
QUOTE_ASK_SIZE = 6
QUOTE_LAST_SIZE = 7
QUOTE_VOLUME = 8
QUOTE_HIGH = 9
QUOTE_LOW = 10
QUOTE_CLOSE = 11
QUOTE_OPEN = 12
QUOTE_TICK_TIME = 13
QUOTE_RECEIVE_TIME = 14
QUOTE_MARKET_DATA_TYPE = 15
QUOTE_BID_GREEKS = 16
QUOTE_ASK_GREEKS = 17
QUOTE_LAST_GREEKS = 18
QUOTE_MODEL_GREEKS = 19
# QuoteBatch fields.
BATCH_QUOTES = 1
BATCH_CONFLATED_UPDATES = 2
# StreamQuotesResponse oneof members.
RESPONSE_QUOTES = 1
# Decimal.value and Timestamp.seconds / .nanos.
DECIMAL_VALUE = 1
TIMESTAMP_SECONDS = 1
TIMESTAMP_NANOS = 2

# Ticker attribute → Quote field, in field order. Prices use IB's -1 for "no price".
PRICE_FIELDS: tuple[tuple[str, int], ...] = (
    ("bid", QUOTE_BID),
    ("ask", QUOTE_ASK),
    ("last", QUOTE_LAST),
)
SIZE_FIELDS: tuple[tuple[str, int], ...] = (
    ("bidSize", QUOTE_BID_SIZE),
    ("askSize", QUOTE_ASK_SIZE),
    ("lastSize", QUOTE_LAST_SIZE),
    ("volume", QUOTE_VOLUME),
)
# Ticker option computation → Quote field; OptionComputation attribute → OptionGreeks field.
GREEKS_FIELDS: tuple[tuple[str, int], ...] = (
    ("bidGreeks", QUOTE_BID_GREEKS),
    ("askGreeks", QUOTE_ASK_GREEKS),
    ("lastGreeks", QUOTE_LAST_GREEKS),
    ("modelGreeks", QUOTE_MODEL_GREEKS),
)
GREEK_VALUES: tuple[tuple[str, int], ...] = (
    ("impliedVol", 1),
    ("delta", 2),
    ("gamma", 3),
    ("vega", 4),
    ("theta", 5),
    ("optPrice", 6),
    ("undPrice", 7),
    ("pvDividend", 8),
)
# IB's "not computed" values (-1 for prices and volatility, -2 for greeks): ib_insync
# turns most into None, but passes vega and theta through.
_NOT_COMPUTED = (-1.0, -2.0)
SESSION_FIELDS: tuple[tuple[str, int], ...] = (
    ("high", QUOTE_HIGH),
    ("low", QUOTE_LOW),
    ("close", QUOTE_CLOSE),
    ("open", QUOTE_OPEN),
)


_ONE_BYTE = [bytes((n,)) for n in range(0x80)]


def varint(value: int) -> bytes:
    """The protobuf base-128 varint of a non-negative integer.

    Unrolled up to five bytes (every length, tag and timestamp the quote path writes):
    one ``bytes()`` call instead of a loop of appends, on the hot path of every quote."""
    if value < 0x80:
        return _ONE_BYTE[value]
    if value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    if value < 0x200000:
        return bytes(((value & 0x7F) | 0x80, ((value >> 7) & 0x7F) | 0x80, value >> 14))
    if value < 0x10000000:
        return bytes(
            (
                (value & 0x7F) | 0x80,
                ((value >> 7) & 0x7F) | 0x80,
                ((value >> 14) & 0x7F) | 0x80,
                value >> 21,
            )
        )
    if value < 0x800000000:
        return bytes(
            (
                (value & 0x7F) | 0x80,
                ((value >> 7) & 0x7F) | 0x80,
                ((value >> 14) & 0x7F) | 0x80,
                ((value >> 21) & 0x7F) | 0x80,
                value >> 28,
            )
        )
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(field_number: int, wire_type: int) -> bytes:
    return varint((field_number << 3) | wire_type)


def length_delimited(field_number: int, payload: bytes) -> bytes:
    """One length-delimited field: a sub-message, a string, or one repeated element."""
    return tag(field_number, _WIRE_LEN) + varint(len(payload)) + payload


# --- numbers -----------------------------------------------------------------------------


def price_text(value: float) -> str:
    """A price as an exact decimal string; "" for NaN, IB's unset value and IB's -1."""
    if value != value or value == -1.0 or value == UNSET_DOUBLE:
        return ""
    return _float_text(value)


def size_text(value: float) -> str:
    """A size or volume as an exact decimal string; "" when unavailable (NaN, negative)."""
    if value != value or value < 0 or value == UNSET_DOUBLE:
        return ""
    return _float_text(value)


def _float_text(value: float) -> str:
    # repr is the shortest round-trip form ("150.1", not "150.09999..."); it is plain
    # decimal notation except for very large or tiny numbers, which convert.py handles.
    if math.isinf(value):
        return ""
    text = repr(value)
    if "e" in text:
        return decimal_text(value)
    if text.endswith(".0"):
        text = text[:-2]
    return "0" if text == "-0" else text


def greek_text(value: float | None) -> str:
    """An option computation value as an exact decimal; "" when IB could not compute it."""
    if value is None or value != value or value in _NOT_COMPUTED or value == UNSET_DOUBLE:
        return ""
    return _float_text(value)


def greeks_field(field_number: int, computation: object) -> bytes:
    """An ``OptionGreeks`` field from an ib_insync OptionComputation (absent for None)."""
    if computation is None:
        return b""
    body = b"".join(
        decimal_field(number, greek_text(getattr(computation, attr, None)))
        for attr, number in GREEK_VALUES
    )
    return length_delimited(field_number, body)


def decimal_field(field_number: int, text: str) -> bytes:
    """An ``ibgateway.v1.Decimal`` field; empty bytes (field absent) for an empty value."""
    if not text:
        return b""
    raw = text.encode("ascii")
    return length_delimited(field_number, length_delimited(DECIMAL_VALUE, raw))


_SECONDS_TAG = bytes(((TIMESTAMP_SECONDS << 3) | _WIRE_VARINT,))
_NANOS_TAG = bytes(((TIMESTAMP_NANOS << 3) | _WIRE_VARINT,))
_last_seconds: tuple[int, bytes] = (-1, b"")  # the last second seen and its encoded field


def timestamp_body(moment: datetime) -> bytes:
    """The body of a ``google.protobuf.Timestamp`` (microsecond precision, as datetime
    has); the seconds field is re-encoded once a second, not per quote."""
    global _last_seconds
    micros = round(moment.timestamp() * 1_000_000)
    seconds, rest = divmod(micros, 1_000_000)
    last = _last_seconds
    if last[0] != seconds:
        last = _last_seconds = (seconds, _SECONDS_TAG + varint(seconds))
    if rest:
        return last[1] + _NANOS_TAG + varint(rest * 1000)
    return last[1]


def timestamp_field(field_number: int, moment: datetime) -> bytes:
    """A ``google.protobuf.Timestamp`` field (microsecond precision, as datetime has)."""
    return length_delimited(field_number, timestamp_body(moment))


# --- quotes ------------------------------------------------------------------------------


# Every decimal field of a Quote, in field order: (ticker attribute, field, is a price).
QUOTE_FIELDS: tuple[tuple[str, int, bool], ...] = (
    *((attr, number, True) for attr, number in PRICE_FIELDS),
    *((attr, number, False) for attr, number in SIZE_FIELDS),
    *((attr, number, True) for attr, number in SESSION_FIELDS),
)
_ticker_values = operator.attrgetter(*(attr for attr, _, _ in QUOTE_FIELDS))
_ticker_greeks = operator.attrgetter(*(attr for attr, _ in GREEKS_FIELDS))


_MEMO_SIZE = 512


def _same(a: float, b: float) -> bool:
    return a == b or (a != a and b != b)  # NaN is "no value": NaN and NaN are the same


class QuoteEncoder:
    """Encodes one instrument's ticker into ``Quote`` bytes, re-encoding only what changed.

    One encoder per IB market-data line. The contract is encoded once; the ticker's eleven
    prices and sizes are read in one C call and compared with the previous ones as a
    tuple; only the fields that moved are re-encoded (the rest of the bytes are reused),
    then the two timestamps (the seconds part cached, tick_time shared with receive_time
    when they are the same moment) and the option greeks (re-encoded only for a new
    computation).
    """

    __slots__ = (
        "_contract_field",
        "_encoded",
        "_fields",
        "_greeks",
        "_greeks_bytes",
        "_greeks_values",
        "_last_rt_time",
        "_memo",
        "_values",
        "contract",
    )

    def __init__(self, contract: common_pb2.Contract) -> None:
        self.contract = contract
        self._contract_field = length_delimited(QUOTE_CONTRACT, contract.SerializeToString())
        self._values: tuple[float, ...] | None = None  # the values last encoded
        self._fields: list[bytes] = [b""] * len(QUOTE_FIELDS)  # their encoded fields
        self._encoded = self._contract_field  # the contract and every decimal field
        # (field index, value) → encoded field: prices sit on a tick grid and sizes come
        # in lots, so the same few values come back again and again
        self._memo: dict[tuple[int, float], bytes] = {}
        self._last_rt_time: datetime | None = None
        # attribute name → (the OptionComputation, encoded field): ib_insync makes a new
        # object per computation tick, so identity tells what changed
        self._greeks: dict[str, tuple[object, bytes]] = {}
        self._greeks_values: tuple[object, ...] = (None,) * len(GREEKS_FIELDS)
        self._greeks_bytes = b""

    def _fields_of(self, values: tuple[float, ...]) -> bytes:
        old = self._values
        fields = self._fields
        memo = self._memo
        for i, (_, number, is_price) in enumerate(QUOTE_FIELDS):
            value = values[i]
            if old is not None and _same(value, old[i]):
                continue
            encoded = memo.get((i, value))
            if encoded is None:
                text = price_text(value) if is_price else size_text(value)
                encoded = decimal_field(number, text)
                if len(memo) >= _MEMO_SIZE:
                    memo.clear()
                memo[(i, value)] = encoded
            fields[i] = encoded
        self._values = values
        self._encoded = self._contract_field + b"".join(fields)
        return self._encoded

    def tick_time(self, ticker: Ticker, receive_time: datetime) -> datetime:
        """IB's own timestamp when this update brought one (RT volume, ms precision),
        else the time the gateway's IB client received the tick."""
        rt_time = ticker.rtTime
        if rt_time is not None and rt_time != self._last_rt_time:
            self._last_rt_time = rt_time
            return rt_time
        return receive_time

    def encode(self, ticker: Ticker, receive_time: datetime) -> bytes:
        """The serialized ``Quote`` for the ticker's current state."""
        values = _ticker_values(ticker)
        # (a tuple compares its items by identity first: an unset field holds the same
        # NaN object, so an unchanged ticker compares equal)
        encoded = self._encoded if values == self._values else self._fields_of(values)
        received = timestamp_body(receive_time)
        tick_time = self.tick_time(ticker, receive_time)
        ticked = received if tick_time is receive_time else timestamp_body(tick_time)
        md_type = ticker.marketDataType
        greeks = _ticker_greeks(ticker)
        if greeks != self._greeks_values:  # (identity first: usually the same objects)
            self._greeks_bytes = self._greeks_of(greeks)
        return b"".join(
            (
                encoded,
                _TICK_TIME_TAG,
                _ONE_BYTE[len(ticked)],
                ticked,
                _RECEIVE_TIME_TAG,
                _ONE_BYTE[len(received)],
                received,
                _MD_TYPE_TAG + varint(md_type) if md_type else b"",
                self._greeks_bytes,
            )
        )

    def _greeks_of(self, computations: tuple[object, ...]) -> bytes:
        """The option greeks fields (none for a ticker without option computations)."""
        parts = []
        for (attr, number), computation in zip(GREEKS_FIELDS, computations, strict=True):
            if computation is None:
                continue
            cached = self._greeks.get(attr)
            if cached is None or cached[0] is not computation:
                cached = (computation, greeks_field(number, computation))
                self._greeks[attr] = cached
            parts.append(cached[1])
        self._greeks_values = computations
        return b"".join(parts)


_TICK_TIME_TAG = tag(QUOTE_TICK_TIME, _WIRE_LEN)
_RECEIVE_TIME_TAG = tag(QUOTE_RECEIVE_TIME, _WIRE_LEN)
_MD_TYPE_TAG = tag(QUOTE_MARKET_DATA_TYPE, _WIRE_VARINT)


def quote_element(quote: bytes) -> bytes:
    """A serialized Quote as one element of ``QuoteBatch.quotes``."""
    return length_delimited(BATCH_QUOTES, quote)


def quote_batch_message(elements: Iterable[bytes], conflated_updates: int = 0) -> bytes:
    """The bytes of ``StreamQuotesResponse{quotes: QuoteBatch{...}}`` from quote elements
    (as made by :func:`quote_element`)."""
    body = b"".join(elements)
    if conflated_updates:
        body += tag(BATCH_CONFLATED_UPDATES, _WIRE_VARINT) + varint(conflated_updates)
    return length_delimited(RESPONSE_QUOTES, body)


def market_data_type_to_ib(value: int) -> int:
    """The IB reqMarketDataType number of a MarketDataType (unspecified means live)."""
    return value if value in (1, 2, 3, 4) else 1
