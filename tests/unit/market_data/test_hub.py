"""The QuoteHub's parts: the fan-out group (which quotes a consumer gets, and what it
missed) and the queue of streams waiting for a line (who gets a freed line, and when).

Pure: lines are fed real ib_insync Ticker objects by hand; the waiting-line tests drive
the hub through a stand-in session whose IB only records requests (no connection)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc

from ibgateway.v1 import common_pb2, market_data_pb2
from ibgateway_server.errors import GatewayError, from_ib_error
from ibgateway_server.ib.insync import Contract, Ticker
from ibgateway_server.ib.session import SessionEvent, SessionState, StateChange
from ibgateway_server.market_data.hub import (
    ACTIVE,
    AMBIGUOUS,
    FAILED,
    LIMIT_REACHED,
    NOT_FOUND,
    PERMISSION_DENIED,
    Group,
    Line,
    QuoteHub,
    QuoteStream,
    state_for_error,
)


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


def decode(found: tuple[bytes, int] | None) -> market_data_pb2.QuoteBatch:
    """A group's (message, quote count) as a QuoteBatch (the count checked)."""
    assert found is not None
    data, count = found
    message = market_data_pb2.StreamQuotesResponse.FromString(data)
    assert message.WhichOneof("event") == "quotes"
    assert len(message.quotes.quotes) == count
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


# ------------------------------------------------------------- waiting for a line


class RecordingEvent:
    """Enough of an eventkit Event for the hub to (un)subscribe and for a test to emit."""

    def __init__(self) -> None:
        self.handlers: list[Callable[..., None]] = []

    def __iadd__(self, handler: Callable[..., None]) -> RecordingEvent:
        self.handlers.append(handler)
        return self

    def __isub__(self, handler: Callable[..., None]) -> RecordingEvent:
        self.handlers.remove(handler)
        return self

    def emit(self, *args: Any) -> None:
        for handler in list(self.handlers):
            handler(*args)


class RecordingIB:
    """Records market-data requests; IB's answers are emitted by the test."""

    def __init__(self) -> None:
        self.pendingTickersEvent = RecordingEvent()
        self.errorEvent = RecordingEvent()
        self.requested: list[Contract] = []
        self.cancelled: list[str] = []

    def reqMarketDataType(self, md_type: int) -> None:
        pass

    def reqMktData(self, contract: Contract, generic_ticks: str = "") -> Ticker:
        self.requested.append(contract)
        return Ticker(contract=contract)

    def cancelMktData(self, contract: Contract) -> None:
        self.cancelled.append(contract.symbol)

    def isConnected(self) -> bool:
        return True

    def symbols(self) -> list[str]:
        return [c.symbol for c in self.requested]


CON_IDS = {"A": 1, "B": 2, "C": 3, "D": 4, "E": 5}


class StandInSession:
    """The parts of IbSession the hub uses: a connected session that qualifies symbols."""

    def __init__(self) -> None:
        self.ib = RecordingIB()
        self.connected = True
        self.listeners: list[Callable[[StateChange], None]] = []

    def add_state_listener(self, listener: Callable[[StateChange], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    async def qualify(self, contract: Contract, **_: Any) -> Contract:
        return Contract(
            conId=CON_IDS[contract.symbol],
            symbol=contract.symbol,
            secType="STK",
            exchange="SMART",
            currency="USD",
        )


def make_hub(budget: int) -> tuple[QuoteHub, StandInSession]:
    session = StandInSession()
    hub = QuoteHub(session, line_budget=budget, linger=0.0)  # type: ignore[arg-type]
    hub.start()
    return hub, session


async def open_stream(hub: QuoteHub, *symbols: str) -> QuoteStream:
    specs = [common_pb2.Contract(symbol=s) for s in symbols]
    stream = QuoteStream(hub, specs, common_pb2.MARKET_DATA_TYPE_LIVE, heartbeat=60.0)
    await stream.open()
    return stream


def statuses(stream: QuoteStream) -> list[tuple[str, int]]:
    """The (symbol, state) of every subscription status the stream would send now."""
    seen: list[tuple[str, int]] = []
    while (data := stream.next_message()) is not None:
        message = market_data_pb2.StreamQuotesResponse.FromString(data)
        if message.WhichOneof("event") == "subscription_status":
            status = message.subscription_status
            seen.append((status.contract.symbol, status.state))
    return seen


async def test_freed_lines_go_to_the_longest_waiting_stream_one_per_freed_line() -> None:
    hub, session = make_hub(budget=2)
    holder_a, holder_b = await open_stream(hub, "A"), await open_stream(hub, "B")
    first = await open_stream(hub, "C", "D")  # waits for two lines
    second = await open_stream(hub, "E")
    assert statuses(first) == [("C", LIMIT_REACHED), ("D", LIMIT_REACHED)]
    assert statuses(second) == [("E", LIMIT_REACHED)]
    assert hub.stats().waiting == 3
    assert session.ib.symbols() == ["A", "B"]

    holder_a.close()  # one line freed: the oldest waiter's first contract gets it
    assert session.ib.cancelled == ["A"]
    assert session.ib.symbols() == ["A", "B", "C"]
    assert statuses(first) == [("C", ACTIVE)]
    assert statuses(second) == []
    assert (hub.stats().lines, hub.stats().waiting) == (2, 2)

    holder_b.close()  # the next one: still the oldest waiter, before a newer stream
    assert session.ib.symbols()[-1] == "D" and statuses(first) == [("D", ACTIVE)]
    assert statuses(second) == []

    first.close()  # two lines freed, one wanted
    assert session.ib.symbols()[-1] == "E" and statuses(second) == [("E", ACTIVE)]
    assert (hub.stats().lines, hub.stats().waiting) == (1, 0)
    second.close()
    assert (hub.stats().lines, hub.stats().streams, hub.stats().groups) == (0, 0, 0)
    await hub.close()


async def test_a_closed_waiting_stream_is_forgotten() -> None:
    hub, session = make_hub(budget=1)
    holder = await open_stream(hub, "A")
    waiting = await open_stream(hub, "B")
    waiting.close()
    assert hub.stats().waiting == 0
    holder.close()
    assert session.ib.symbols() == ["A"]  # nobody asked for B any more
    await hub.close()


async def test_a_newcomer_does_not_take_a_lingering_line_from_a_waiting_stream() -> None:
    hub, session = make_hub(budget=1)
    hub.linger = 60.0
    holder = await open_stream(hub, "A")
    waiting = await open_stream(hub, "B")
    holder.close()  # A lingers (a later consumer of A would reuse it)
    newcomer = await open_stream(hub, "C")
    assert statuses(newcomer) == [("C", LIMIT_REACHED)]
    assert session.ib.symbols() == ["A"]
    reuser = await open_stream(hub, "A")  # the lingering line itself is still shared
    assert statuses(reuser) == [("A", ACTIVE)]
    assert hub.stats().waiting == 2
    for stream in (reuser, waiting, newcomer):
        stream.close()
    await hub.close()


async def test_ib_line_limit_waits_without_probing_ib_again_until_a_line_is_freed() -> None:
    hub, session = make_hub(budget=10)
    holder = await open_stream(hub, "A")
    refused = await open_stream(hub, "B")
    statuses(refused)
    b_contract = session.ib.requested[-1]
    session.ib.errorEvent.emit(7, 101, "Max number of tickers has been reached", b_contract)
    assert statuses(refused) == [("B", LIMIT_REACHED)]
    assert hub.stats().waiting == 1
    assert hub.stats().lines == 1  # the refused line is gone ...
    assert session.ib.symbols() == ["A", "B"]  # ... and not asked for again at once

    holder.close()
    assert session.ib.symbols() == ["A", "B", "B"]
    assert statuses(refused) == [("B", ACTIVE)]
    assert hub.stats().waiting == 0
    refused.close()
    await hub.close()


async def test_a_reconnect_retries_every_waiting_contract_within_the_budget() -> None:
    hub, session = make_hub(budget=10)
    streams = [await open_stream(hub, symbol) for symbol in ("A", "B", "C")]
    requested = {contract.symbol: contract for contract in session.ib.requested}
    for symbol in ("B", "C"):  # IB has no line for these
        session.ib.errorEvent.emit(
            7, 101, "Max number of tickers has been reached", requested[symbol]
        )
    for stream in streams:
        statuses(stream)
    assert hub.stats().waiting == 2
    for listener in session.listeners:
        listener(
            StateChange(
                event=SessionEvent.CONNECTED,
                state=SessionState.CONNECTED,
                message="connected",
                resubscribe=True,
            )
        )
    # the live line is re-subscribed first, then the waiting ones, oldest first
    assert session.ib.symbols()[3:] == ["A", "B", "C"]
    assert hub.stats().waiting == 0
    assert statuses(streams[1]) == [("B", ACTIVE)]
    assert statuses(streams[2]) == [("C", ACTIVE)]
    for stream in streams:
        stream.close()
    await hub.close()
