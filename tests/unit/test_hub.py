"""The fan-out group of the QuoteHub: which quotes a consumer gets, and what it missed.

Pure: lines are fed real ib_insync Ticker objects by hand; no IB connection."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc

from ibgateway.v1 import market_data_pb2
from ibgateway_server.errors import GatewayError, from_ib_error
from ibgateway_server.hub import (
    AMBIGUOUS,
    FAILED,
    LIMIT_REACHED,
    NOT_FOUND,
    PERMISSION_DENIED,
    Group,
    Line,
    state_for_error,
)
from ibgateway_server.ib_api import Contract, Ticker


def make_line(con_id: int, symbol: str) -> tuple[Line, Ticker]:
    contract = Contract(conId=con_id, symbol=symbol, secType="STK", exchange="SMART")
    line = Line((con_id, "SMART", 1), contract, 1)
    ticker = Ticker(contract=line.contract)
    return line, ticker


def tick(line: Line, ticker: Ticker, bid: float, group: Group | None = None) -> None:
    ticker.bid, ticker.ask, ticker.close = bid, bid + 0.01, 100.0
    ticker.time = datetime.now(UTC)
    line.update(ticker)
    if group is not None:
        group.push(line)


def decode(data: bytes) -> market_data_pb2.QuoteBatch:
    message = market_data_pb2.StreamQuotesResponse.FromString(data)
    assert message.WhichOneof("event") == "quotes"
    return message.quotes


def bids(batch: market_data_pb2.QuoteBatch) -> dict[str, str]:
    return {q.contract.symbol: q.bid.value for q in batch.quotes}


def test_batch_has_the_newest_quote_per_line_and_counts_what_was_skipped() -> None:
    (a, ta), (b, tb) = make_line(1, "A"), make_line(2, "B")
    group = Group(frozenset({a, b}), lambda g: None)
    start = group.end
    tick(a, ta, 10.0, group)
    tick(a, ta, 10.5, group)
    tick(b, tb, 20.0, group)
    tick(a, ta, 11.0, group)
    batch = decode(group.batch_from(start))
    assert bids(batch) == {"A": "11", "B": "20"}
    assert batch.conflated_updates == 2  # two older A quotes replaced by the newest
    # a consumer that already had the first two updates misses nothing
    assert decode(group.batch_from(start + 2)).conflated_updates == 0


def test_same_position_same_bytes() -> None:
    (a, ta) = make_line(1, "A")
    group = Group(frozenset({a}), lambda g: None)
    tick(a, ta, 10.0, group)
    first = group.batch_from(0)
    assert group.batch_from(0) is first  # assembled once, shared by every consumer there
    tick(a, ta, 10.1, group)
    assert group.batch_from(0) is not first
    assert bids(decode(group.batch_from(0))) == {"A": "10.1"}


def test_log_stays_bounded_and_a_far_behind_consumer_is_still_exact() -> None:
    lines = [make_line(i, f"S{i}") for i in range(1, 4)]
    group = Group(frozenset(line for line, _ in lines), lambda g: None, min_cap=8)
    for step in range(1000):
        line, ticker = lines[step % 3]
        tick(line, ticker, 100.0 + step, group)
        assert len(group.log) < 2 * group.cap
    assert group.base > 0  # the oldest entries are gone...
    batch = decode(group.batch_from(0))  # ...yet a consumer stuck at 0 gets the truth
    assert bids(batch) == {"S1": "1099", "S2": "1097", "S3": "1098"}
    assert batch.conflated_updates == 1000 - 3


def test_waiting_members_are_announced_once_per_round() -> None:
    (a, ta) = make_line(1, "A")
    announced: list[Group] = []
    group = Group(frozenset({a}), announced.append)
    tick(a, ta, 1.0, group)
    assert announced == []  # nobody waits: nothing to do
    group.idle[object()] = None  # type: ignore[index]
    tick(a, ta, 2.0, group)
    tick(a, ta, 3.0, group)
    assert announced == [group]


def test_snapshot_has_every_line_with_data() -> None:
    (a, ta), (b, _) = make_line(1, "A"), make_line(2, "B")
    group = Group(frozenset({a, b}), lambda g: None)
    assert group.snapshot() is None
    tick(a, ta, 5.0)
    snapshot = group.snapshot()
    assert snapshot is not None
    assert bids(decode(snapshot)) == {"A": "5"}


def test_line_completeness_and_status() -> None:
    line, ticker = make_line(1, "A")
    ticker.bid, ticker.time = 10.0, datetime.now(UTC)
    line.update(ticker)
    assert not line.complete  # one side only
    ticker.ask, ticker.close = 10.01, 9.5
    line.update(ticker)
    assert line.complete
    assert line.status_fields() == (market_data_pb2.SUBSCRIPTION_STATE_ACTIVE, "", 0)


def test_state_for_error() -> None:
    assert state_for_error(from_ib_error(200, "no security definition")) == NOT_FOUND
    assert state_for_error(from_ib_error(354, "not subscribed")) == PERMISSION_DENIED
    assert state_for_error(from_ib_error(101, "max tickers")) == LIMIT_REACHED
    ambiguous = GatewayError(grpc.StatusCode.INVALID_ARGUMENT, "AMBIGUOUS_CONTRACT", "2 matches")
    assert state_for_error(ambiguous) == AMBIGUOUS
    budget = GatewayError(grpc.StatusCode.RESOURCE_EXHAUSTED, "LINE_BUDGET_EXHAUSTED", "full")
    assert state_for_error(budget) == LIMIT_REACHED
    assert state_for_error(from_ib_error(502, "cannot connect")) == FAILED
