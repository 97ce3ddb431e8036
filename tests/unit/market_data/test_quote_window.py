"""The send window of a quote stream and encoding on demand, through a real QuoteHub and
QuoteStream on the running loop (IB stands in: the test sets ticker fields and emits
ib_insync's pendingTickersEvent itself, as ib_insync does after each socket read)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from datetime import UTC, datetime

from ibgateway.v1 import common_pb2, market_data_pb2
from ibgateway_server.ib.insync import Ticker
from ibgateway_server.market_data.hub import QuoteHub, QuoteStream
from tests.polling import wait_until
from tests.unit.market_data.test_hub import StandInSession, make_hub


class Recorder:
    """A stream's writer: keeps (loop time, QuoteBatch) of every quote message; an
    optional delay makes it a slow consumer."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.batches: list[tuple[float, market_data_pb2.QuoteBatch]] = []

    async def write(self, data: bytes) -> None:
        message = market_data_pb2.StreamQuotesResponse.FromString(data)
        if message.WhichOneof("event") == "quotes":
            self.batches.append((asyncio.get_running_loop().time(), message.quotes))
        if self.delay:
            await asyncio.sleep(self.delay)

    @property
    def quotes(self) -> int:
        return sum(len(batch.quotes) for _, batch in self.batches)


async def start(
    hub: QuoteHub, symbols: str, window: float | None, recorder: Recorder
) -> tuple[QuoteStream, asyncio.Task[None]]:
    specs = [common_pb2.Contract(symbol=s) for s in symbols]
    stream = QuoteStream(hub, specs, common_pb2.MARKET_DATA_TYPE_LIVE, 60.0, window)
    await stream.open()
    while stream.next_message() is not None:  # the opening statuses
        pass
    return stream, asyncio.get_running_loop().create_task(stream.run(recorder.write))


def tickers(session: StandInSession, hub: QuoteHub) -> list[Ticker]:
    by_symbol = {line.contract.symbol: line.ticker for line in hub._lines.values()}
    return [t for _, t in sorted(by_symbol.items()) if t is not None]


def update(session: StandInSession, ticker: Ticker, bid: float) -> None:
    """One IB update of one contract, delivered as ib_insync delivers it."""
    ticker.bid, ticker.ask, ticker.close = bid, bid + 0.01, 100.0
    ticker.time = datetime.now(UTC)
    session.ib.pendingTickersEvent.emit({ticker})


async def spread_updates(
    session: StandInSession, ticks: list[Ticker], count: int, gap: float
) -> None:
    """``count`` updates, round robin over the contracts, one every ``gap`` seconds (the
    way IB sends them: spread out, a contract at a time)."""
    for n in range(count):
        update(session, ticks[n % len(ticks)], 100.0 + n / 100)
        await asyncio.sleep(gap)


async def settle(condition: Callable[[], bool], within: float = 2.0) -> None:
    await wait_until(condition, within, 0.005)


async def finish(hub: QuoteHub, *pairs: tuple[QuoteStream, asyncio.Task[None]]) -> None:
    for stream, task in pairs:
        stream.close()
        await task
    await hub.close()


async def test_a_window_turns_spread_out_updates_into_few_full_messages() -> None:
    hub, session = make_hub(budget=10)
    windowed, immediate = Recorder(), Recorder()
    a = await start(hub, "ABC", 0.020, windowed)
    b = await start(hub, "ABC", 0.0, immediate)
    ticks = tickers(session, hub)
    await spread_updates(session, ticks, 90, 0.002)
    await settle(lambda: windowed.quotes > 0 and hub.stats().max_lag == 0)

    # window 0: every update left at once, as its own message
    assert len(immediate.batches) == 90
    assert all(len(batch.quotes) == 1 for _, batch in immediate.batches)
    # a 20 ms window: at most one message per window, several contracts in each
    times = [t for t, _ in windowed.batches]
    assert all(later - earlier >= 0.020 for earlier, later in itertools.pairwise(times))
    assert len(windowed.batches) < 90 / 3
    assert windowed.quotes / len(windowed.batches) > 1.5
    # nothing is lost: the last message has the newest quote of every contract
    newest = {t.contract.symbol if t.contract else "": f"{t.bid:g}" for t in ticks}
    seen: dict[str, str] = {}
    for _, batch in windowed.batches:
        seen.update({q.contract.symbol: q.bid.value for q in batch.quotes})
    assert seen == newest
    stats = hub.stats()
    assert (stats.quotes_sent, stats.quote_messages) == (
        windowed.quotes + immediate.quotes,
        len(windowed.batches) + len(immediate.batches),
    )
    await finish(hub, a, b)


async def test_a_quote_after_a_quiet_window_goes_at_once_the_next_waits() -> None:
    hub, session = make_hub(budget=10)
    recorder = Recorder()
    pair = await start(hub, "A", 0.050, recorder)
    (ticker,) = tickers(session, hub)
    loop = asyncio.get_running_loop()
    update(session, ticker, 10.0)
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(recorder.batches) == 1  # sent in the same loop pass, no waiting
    sent = loop.time()
    update(session, ticker, 10.5)
    update(session, ticker, 11.0)
    for _ in range(3):
        await asyncio.sleep(0)
    assert len(recorder.batches) == 1  # the window is open: held back
    await settle(lambda: len(recorder.batches) == 2)
    when, batch = recorder.batches[1]
    assert when - sent >= 0.050
    assert [q.bid.value for q in batch.quotes] == ["11"]
    assert batch.conflated_updates == 1
    await finish(hub, pair)


async def test_a_slow_consumer_is_still_conflated_and_keeps_nobody_waiting() -> None:
    hub, session = make_hub(budget=10)
    slow, fast = Recorder(delay=0.030), Recorder()
    a = await start(hub, "AB", 0.0, slow)
    b = await start(hub, "AB", 0.0, fast)
    ticks = tickers(session, hub)
    await spread_updates(session, ticks, 150, 0.001)
    await settle(lambda: hub.stats().max_lag == 0)
    assert len(fast.batches) == 150
    assert len(slow.batches) < 150 / 3
    assert all(
        len({q.contract.con_id for q in batch.quotes}) == len(batch.quotes) <= 2
        for _, batch in slow.batches
    )
    assert sum(batch.conflated_updates for _, batch in slow.batches) + slow.quotes == 150
    await finish(hub, a, b)


async def test_quotes_are_encoded_when_sent_not_on_every_update() -> None:
    hub, session = make_hub(budget=10)
    recorder = Recorder()
    pair = await start(hub, "A", 0.050, recorder)
    (ticker,) = tickers(session, hub)
    (line,) = hub._lines.values()
    for n in range(200):  # 200 IB updates inside one window
        update(session, ticker, 10.0 + n / 100)
        await asyncio.sleep(0)
    await settle(lambda: hub.stats().max_lag == 0 and len(recorder.batches) == 2)
    assert hub.stats().updates == 200
    assert line.encodes == 2  # the first (sent at once) and the newest (window closed)
    assert recorder.batches[-1][1].quotes[0].bid.value == "11.99"
    await finish(hub, pair)


async def test_nobody_reading_means_nothing_encoded() -> None:
    hub, session = make_hub(budget=10)
    stream = QuoteStream(
        hub, [common_pb2.Contract(symbol="A")], common_pb2.MARKET_DATA_TYPE_LIVE, 60.0
    )
    await stream.open()
    (ticker,) = tickers(session, hub)
    (line,) = hub._lines.values()
    for n in range(50):
        update(session, ticker, 10.0 + n)
    assert (hub.stats().updates, line.encodes) == (50, 0)
    stream.close()
    await hub.close()
