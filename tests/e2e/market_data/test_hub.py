"""QuoteHub end to end: one IB line per contract fanned out to many streams, the line
budget, per-subscription errors, conflation for a stalled consumer, reconnects, cleanup
and heartbeats. Real gateway, real ib_insync, the TWS simulator; the IB side is observed
through the simulator's count of market data lines."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
import pytest

from ibgateway.v1 import common_pb2, market_data_pb2, market_data_pb2_grpc
from tests.e2e.conftest import gateway_channel
from tests.e2e.market_data import test_market_data_support as support
from tests.e2e.market_data.test_market_data_support import (
    QuotesGateway,
    StreamReader,
    contracts,
    hub_of,
    stream_request,
    wait_for,
)
from tws_simulator import TwsSimulator

make_quotes_gateway = support.make_quotes_gateway
quotes_gateway = support.quotes_gateway
md_stub = support.md_stub

pytestmark = pytest.mark.timeout(60)

AAPL, MSFT, TSLA, EURUSD = 265598, 272093, 76792991, 12087792
ACTIVE = market_data_pb2.SUBSCRIPTION_STATE_ACTIVE
PAUSED = market_data_pb2.SUBSCRIPTION_STATE_PAUSED
LIMIT_REACHED = market_data_pb2.SUBSCRIPTION_STATE_LIMIT_REACHED


def fx_and_stocks(send_window: float | None = None) -> market_data_pb2.StreamQuotesRequest:
    request = stream_request("AAPL", "MSFT")
    request.contracts.add(symbol="EUR", sec_type=common_pb2.SECURITY_TYPE_FOREX)
    if send_window is not None:
        request.send_window.FromNanoseconds(int(send_window * 1e9))
    return request


async def close_all(readers: list[StreamReader]) -> None:
    for reader in readers:
        await reader.close()


# ----------------------------------------------------------------------------- fan-out


async def test_many_streams_share_one_line_per_contract_and_see_the_latest(
    simulator: TwsSimulator, quotes_gateway: QuotesGateway, md_stub
) -> None:
    readers = [StreamReader(md_stub.StreamQuotes(fx_and_stocks())) for _ in range(20)]
    try:
        await wait_for(lambda: all(len(r.latest) == 3 for r in readers), within=10)
        assert simulator.market_data.lines_in_use == 3
        stats = hub_of(quotes_gateway).stats()
        assert (stats.lines, stats.streams, stats.groups) == (3, 20, 1)

        # Freeze the market, then publish one distinctive AAPL quote: every subscriber
        # must end up with it, and with the current quote of the other two contracts.
        simulator.market.paused = True
        simulator.market.move_to(AAPL, 123.45)
        market = simulator.market

        def everyone_has_the_latest() -> bool:
            for reader in readers:
                for con_id in (AAPL, MSFT, EURUSD):
                    quote = reader.latest.get(con_id)
                    want = market.quote(con_id)
                    if quote is None or (float(quote.bid.value), float(quote.ask.value)) != (
                        want.bid,
                        want.ask,
                    ):
                        return False
            return True

        await wait_for(everyone_has_the_latest)
        assert all(abs(float(r.latest[AAPL].bid.value) - 123.45) < 0.05 for r in readers)
    finally:
        await close_all(readers)


async def test_last_unsubscribe_releases_the_line(
    simulator: TwsSimulator, quotes_gateway: QuotesGateway, md_stub
) -> None:
    hub = hub_of(quotes_gateway)
    readers = [StreamReader(md_stub.StreamQuotes(stream_request("AAPL"))) for _ in range(3)]
    await wait_for(lambda: all(AAPL in r.latest for r in readers))
    assert simulator.market_data.lines_in_use == 1
    for reader in readers[:2]:
        await reader.close()
    await wait_for(lambda: hub.stats().streams == 1)
    await asyncio.sleep(hub.linger + 0.2)  # longer than the linger: the line stays in use
    assert simulator.market_data.lines_in_use == 1
    count = readers[2].quote_count
    await wait_for(lambda: readers[2].quote_count > count)  # and still flows
    await readers[2].close()
    await wait_for(lambda: simulator.market_data.lines_in_use == 0, within=hub.linger + 3)
    stats = hub.stats()
    assert (stats.lines, stats.streams, stats.groups) == (0, 0, 0)


# ------------------------------------------------------------------- budget and errors


async def test_line_budget_gives_limit_reached_while_others_flow(
    simulator: TwsSimulator, make_quotes_gateway
) -> None:
    gw = await make_quotes_gateway(quote_line_budget=2)
    async with gateway_channel(gw) as channel:
        stub = market_data_pb2_grpc.MarketDataServiceStub(channel)
        reader = StreamReader(stub.StreamQuotes(stream_request("AAPL", "MSFT", "TSLA")))
        try:
            await wait_for(lambda: {AAPL, MSFT} <= set(reader.latest) and len(reader.statuses) >= 3)
            assert reader.states(0) == reader.states(1) == [ACTIVE]
            assert reader.states(2) == [LIMIT_REACHED]
            assert "IBGW_QUOTE_LINE_BUDGET" in reader.statuses[2].message
            assert reader.statuses[2].contract.con_id == TSLA
            assert TSLA not in reader.latest
            assert simulator.market_data.lines_in_use == 2
            snapshot = await stub.GetQuotes(
                market_data_pb2.GetQuotesRequest(contracts=contracts("TSLA", "AAPL")), timeout=5
            )
            assert [q.contract.con_id for q in snapshot.quotes] == [AAPL]
            assert [f.state for f in snapshot.failures] == [LIMIT_REACHED]
        finally:
            await reader.close()
        # Once the lines are free (a lingering line is evicted), TSLA gets one.
        await wait_for(lambda: hub_of(gw).stats().streams == 0)
        second = StreamReader(stub.StreamQuotes(stream_request("TSLA")))
        try:
            await wait_for(lambda: TSLA in second.latest)
            assert second.states(0) == [ACTIVE]
            assert hub_of(gw).stats().lines <= 2
        finally:
            await second.close()


@pytest.mark.sim_config(line_limit=1)
async def test_ib_line_limit_101_is_a_per_subscription_status(md_stub) -> None:
    reader = StreamReader(md_stub.StreamQuotes(stream_request("AAPL", "MSFT")))
    try:
        await wait_for(lambda: LIMIT_REACHED in reader.states(1))
        limited = [s for s in reader.statuses if s.state == LIMIT_REACHED]
        assert limited[0].ib_code == 101 and limited[0].contract.con_id == MSFT
        count = reader.quote_count
        await wait_for(lambda: reader.quote_count > count + 3)
        assert set(reader.latest) == {AAPL}
    finally:
        await reader.close()


GOOGL, NVDA = 208813719, 4815747


async def test_limit_reached_contracts_get_freed_lines_in_fifo_order(
    simulator: TwsSimulator, make_quotes_gateway
) -> None:
    """Budget 2. Streams waiting for a line get one, oldest first, once a line is dropped
    (after its linger); a newcomer does not jump the queue by taking a lingering line."""
    gw = await make_quotes_gateway(quote_line_budget=2)
    hub = hub_of(gw)
    async with gateway_channel(gw) as channel:
        stub = market_data_pb2_grpc.MarketDataServiceStub(channel)
        holders = [StreamReader(stub.StreamQuotes(stream_request(s))) for s in ("AAPL", "MSFT")]
        await wait_for(lambda: AAPL in holders[0].latest and MSFT in holders[1].latest)
        first = StreamReader(stub.StreamQuotes(stream_request("TSLA")))
        await wait_for(lambda: first.states(0) == [LIMIT_REACHED])
        second = StreamReader(stub.StreamQuotes(stream_request("GOOGL")))
        await wait_for(lambda: second.states(0) == [LIMIT_REACHED])
        assert hub.stats().waiting == 2
        try:
            await holders[0].close()  # AAPL lingers, then its line goes to TSLA
            late = StreamReader(stub.StreamQuotes(stream_request("NVDA")))
            await wait_for(lambda: late.states(0) == [LIMIT_REACHED])  # queued behind
            await wait_for(lambda: TSLA in first.latest, within=hub.linger + 3)
            assert first.states(0) == [LIMIT_REACHED, ACTIVE]
            assert second.states(0) == [LIMIT_REACHED] and late.states(0) == [LIMIT_REACHED]
            count = first.quote_count
            await wait_for(lambda: first.quote_count > count + 3)  # and quotes flow
            assert simulator.market_data.lines_in_use == 2
            assert hub.stats().waiting == 2

            await holders[1].close()  # MSFT's line goes to GOOGL, not to the newer NVDA
            await wait_for(lambda: GOOGL in second.latest, within=hub.linger + 3)
            assert second.states(0) == [LIMIT_REACHED, ACTIVE]
            assert late.states(0) == [LIMIT_REACHED]

            await first.close()  # then NVDA
            await wait_for(lambda: NVDA in late.latest, within=hub.linger + 3)
            assert late.states(0) == [LIMIT_REACHED, ACTIVE]
            assert simulator.market_data.lines_in_use == 2
            assert hub.stats().waiting == 0
            assert late.error is None
        finally:
            await close_all([*holders, first, second, late])
    await wait_for(lambda: hub.stats().streams == 0)
    assert hub.stats().waiting == 0


async def test_a_stream_keeps_its_other_contracts_while_one_waits(
    simulator: TwsSimulator, make_quotes_gateway
) -> None:
    gw = await make_quotes_gateway(quote_line_budget=2)
    async with gateway_channel(gw) as channel:
        stub = market_data_pb2_grpc.MarketDataServiceStub(channel)
        holder = StreamReader(stub.StreamQuotes(stream_request("AAPL")))
        mixed = StreamReader(stub.StreamQuotes(stream_request("MSFT", "TSLA")))
        try:
            await wait_for(lambda: MSFT in mixed.latest and mixed.states(1) == [LIMIT_REACHED])
            await holder.close()
            await wait_for(lambda: TSLA in mixed.latest, within=hub_of(gw).linger + 3)
            assert mixed.states(0) == [ACTIVE]  # untouched
            assert mixed.states(1) == [LIMIT_REACHED, ACTIVE]
            # both contracts keep flowing in the same stream
            since = len(mixed.batches)
            await wait_for(
                lambda: (
                    {q.contract.con_id for b in mixed.batches[since:] for q in b.quotes}
                    == {MSFT, TSLA}
                )
            )
        finally:
            await close_all([holder, mixed])


@pytest.mark.sim_config(line_limit=2)
async def test_ib_line_limit_101_is_retried_when_a_line_frees_up(
    simulator: TwsSimulator, quotes_gateway: QuotesGateway, md_stub
) -> None:
    holder = StreamReader(md_stub.StreamQuotes(stream_request("AAPL", "MSFT")))
    await wait_for(lambda: {AAPL, MSFT} <= set(holder.latest))
    waiting = StreamReader(md_stub.StreamQuotes(stream_request("TSLA")))
    try:
        # subscribed (ACTIVE), then refused by IB
        await wait_for(lambda: waiting.states(0) == [ACTIVE, LIMIT_REACHED])
        assert waiting.statuses[-1].ib_code == 101
        assert hub_of(quotes_gateway).stats().waiting == 1
        await holder.close()
        await wait_for(lambda: TSLA in waiting.latest, within=hub_of(quotes_gateway).linger + 3)
        # one line was freed, one was asked for: IB was not probed again and again
        assert waiting.states(0) == [ACTIVE, LIMIT_REACHED, ACTIVE]
        await wait_for(lambda: simulator.market_data.lines_in_use == 1, within=5)
    finally:
        await close_all([holder, waiting])


@pytest.mark.sim_config(line_limit=1)
async def test_ib_line_limit_101_is_retried_after_a_reconnect(
    simulator: TwsSimulator, quotes_gateway: QuotesGateway, md_stub
) -> None:
    """Another API client holds IB's only line; once it is gone (here: TWS restarts), the
    gateway's reconnect gives the waiting contract its line."""
    from ibgateway_server.ib.insync import IB, Stock

    other = IB()
    await other.connectAsync(simulator.host, simulator.port, clientId=77)
    reader: StreamReader | None = None
    try:
        other.reqMktData(Stock("AAPL", "SMART", "USD", conId=AAPL))
        await wait_for(lambda: simulator.market_data.lines_in_use == 1)
        reader = StreamReader(md_stub.StreamQuotes(stream_request("MSFT")))
        await wait_for(lambda: reader is not None and LIMIT_REACHED in reader.states(0))
        assert simulator.faults.drop_all_connections() == 2
        await wait_for(lambda: MSFT in reader.latest, within=10)
        assert reader.states(0)[-1] == ACTIVE
        assert simulator.market_data.lines_in_use == 1
        assert hub_of(quotes_gateway).stats().waiting == 0
    finally:
        other.disconnect()
        if reader is not None:
            await reader.close()


@pytest.mark.sim_config(live_market_data=False)
async def test_permission_denied_and_delayed_data_in_streams(md_stub) -> None:
    live = StreamReader(md_stub.StreamQuotes(stream_request("AAPL")))
    delayed = StreamReader(
        md_stub.StreamQuotes(
            stream_request("MSFT", market_data_type=common_pb2.MARKET_DATA_TYPE_DELAYED)
        )
    )
    try:
        perm = market_data_pb2.SUBSCRIPTION_STATE_PERMISSION_DENIED
        await wait_for(lambda: perm in live.states(0) and MSFT in delayed.latest)
        denied = next(s for s in live.statuses if s.state == perm)
        assert denied.ib_code == 354
        assert delayed.latest[MSFT].market_data_type == common_pb2.MARKET_DATA_TYPE_DELAYED
        assert ACTIVE in delayed.states(0)
    finally:
        await close_all([live, delayed])


# --------------------------------------------------------------------------- conflation


@pytest.mark.sim_config(tick_interval=0.004)
async def test_stalled_consumer_is_conflated_and_blocks_nobody(
    simulator: TwsSimulator, quotes_gateway: QuotesGateway
) -> None:
    hub = hub_of(quotes_gateway)
    # A client with a small, fixed HTTP/2 window, so that not reading soon stops the
    # server's writes for it (as a stalled consumer on a real network would).
    stalled_channel = grpc.aio.insecure_channel(
        quotes_gateway.address,
        options=[("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1024)],
    )
    healthy_channel = grpc.aio.insecure_channel(quotes_gateway.address)
    try:
        stalled_call: Any = market_data_pb2_grpc.MarketDataServiceStub(
            stalled_channel
        ).StreamQuotes(fx_and_stocks())
        healthy = StreamReader(
            # no send window: every update is its own message while the stream keeps up
            market_data_pb2_grpc.MarketDataServiceStub(healthy_channel).StreamQuotes(
                fx_and_stocks(send_window=0)
            )
        )
        await stalled_call.read()  # the stream is open; now stop reading for a while
        await wait_for(lambda: hub.stats().streams == 2)
        loop = asyncio.get_running_loop()
        start = loop.time()
        start_count = healthy.quote_count
        await asyncio.sleep(3.0)
        elapsed = loop.time() - start
        # The healthy consumer kept receiving at the market's pace meanwhile (3 contracts,
        # one step every 4 ms: far more than 100 quotes/s even with batching).
        assert (healthy.quote_count - start_count) / elapsed > 100
        # It kept up: at most a stray skipped update when the machine is busy, where the
        # stalled stream (below) skips hundreds.
        healthy_skipped = sum(b.conflated_updates for b in healthy.batches[-20:])
        # The hub's memory for the stalled one is bounded: a capped log, no queue.
        assert hub.stats().log_entries <= 2 * 256

        # Drain the stalled stream: batches are conflated (one quote per contract at
        # most) and say how many updates were skipped.
        conflated = 0
        per_batch_max = 0
        for _ in range(400):
            message = await asyncio.wait_for(stalled_call.read(), 5)
            if message.WhichOneof("event") == "quotes":
                conflated += message.quotes.conflated_updates
                ids = [q.contract.con_id for q in message.quotes.quotes]
                assert len(ids) == len(set(ids))
                per_batch_max = max(per_batch_max, len(ids))
                if conflated > 0 and message.quotes.conflated_updates == 0:
                    break  # caught up
        assert conflated > 100
        assert healthy_skipped * 10 < conflated
        assert per_batch_max <= 3
        stalled_call.cancel()
        await healthy.close()
    finally:
        await stalled_channel.close()
        await healthy_channel.close()
    await wait_for(lambda: hub.stats().streams == 0)


@pytest.mark.sim_config(tick_interval=0.002, step_size=1)
async def test_a_send_window_batches_ib_like_spread_out_ticks(
    simulator: TwsSimulator, quotes_gateway: QuotesGateway, md_stub
) -> None:
    """IB's ticks come a contract at a time, spread out (here 500/s over the universe):
    a stream with a window gets few messages of several quotes each, a stream without one
    gets each tick as its own message."""
    request = market_data_pb2.StreamQuotesRequest(
        contracts=[common_pb2.Contract(con_id=i.con_id) for i in simulator.universe]
    )
    windowed_request = market_data_pb2.StreamQuotesRequest()
    windowed_request.CopyFrom(request)
    windowed_request.send_window.FromMilliseconds(20)
    immediate_request = market_data_pb2.StreamQuotesRequest()
    immediate_request.CopyFrom(request)
    immediate_request.send_window.FromMilliseconds(0)
    windowed = StreamReader(md_stub.StreamQuotes(windowed_request))
    immediate = StreamReader(md_stub.StreamQuotes(immediate_request))
    try:
        await wait_for(lambda: len(windowed.batches) > 3 and len(immediate.batches) > 3)
        windowed.batches.clear()
        immediate.batches.clear()
        await asyncio.sleep(1.0)

        def per_message(reader: StreamReader) -> float:
            return reader.quote_count / max(1, len(reader.batches))

        assert per_message(windowed) > 2.5
        assert len(windowed.batches) <= 1.0 / 0.020 + 2
        # Without a window a message leaves as soon as the loop gets to it: on a loaded
        # machine that may join a couple of ticks, never the window's many.
        assert per_message(immediate) < per_message(windowed) / 2
        assert len(immediate.batches) > 2 * len(windowed.batches)
        assert len(immediate.batches) > 3 * len(windowed.batches)
    finally:
        await close_all([windowed, immediate])


# --------------------------------------------------------------------------- reconnects


async def test_resubscribes_after_the_connection_drops(
    simulator: TwsSimulator, quotes_gateway: QuotesGateway, md_stub
) -> None:
    reader = StreamReader(md_stub.StreamQuotes(stream_request("AAPL", "MSFT")))
    try:
        await wait_for(lambda: {AAPL, MSFT} <= set(reader.latest))
        assert simulator.market_data.lines_in_use == 2
        assert simulator.faults.drop_all_connections() == 1
        await wait_for(lambda: PAUSED in reader.states(0) and PAUSED in reader.states(1))
        lost = [c.state for c in reader.connection]
        assert lost and lost[0] != common_pb2.CONNECTION_STATE_CONNECTED
        # The session reconnects by itself; the hub re-subscribes both lines.
        await wait_for(
            lambda: reader.connection[-1].state == common_pb2.CONNECTION_STATE_CONNECTED,
            within=10,
        )
        await wait_for(lambda: reader.states(0)[-1] == reader.states(1)[-1] == ACTIVE)
        resumed_at = len(reader.batches)
        await wait_for(
            lambda: (
                {q.contract.con_id for b in reader.batches[resumed_at:] for q in b.quotes}
                == {AAPL, MSFT}
            )
        )
        assert simulator.market_data.lines_in_use == 2
        assert hub_of(quotes_gateway).stats().lines == 2
        # The order a consumer sees: paused, then (after a reconnect) active again.
        events = [(s.index, s.state) for s in reader.statuses]
        assert events.index((0, PAUSED)) < len(events) - 1 - events[::-1].index((0, ACTIVE))
    finally:
        await reader.close()


@pytest.mark.parametrize("data_lost", [True, False])
async def test_ib_connectivity_loss_pauses_and_resumes(
    simulator: TwsSimulator, quotes_gateway: QuotesGateway, md_stub, data_lost: bool
) -> None:
    reader = StreamReader(md_stub.StreamQuotes(stream_request("AAPL")))
    try:
        await wait_for(lambda: AAPL in reader.latest)
        simulator.faults.go_offline()
        await wait_for(lambda: PAUSED in reader.states(0))
        assert reader.connection[-1].state == common_pb2.CONNECTION_STATE_IB_LINK_LOST
        assert reader.connection[-1].ib_code == 1100
        simulator.faults.come_back(data_lost=data_lost)
        await wait_for(lambda: reader.states(0)[-1] == ACTIVE)
        assert reader.connection[-1].ib_code == (1101 if data_lost else 1102)
        count = reader.quote_count
        await wait_for(lambda: reader.quote_count > count + 3)
        assert simulator.market_data.lines_in_use == 1
    finally:
        await reader.close()


# ------------------------------------------------------------------------------ cleanup


def _hub_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("quote-hub")]


async def test_cancelled_timed_out_and_closed_clients_release_everything(
    simulator: TwsSimulator, quotes_gateway: QuotesGateway, md_stub
) -> None:
    hub = hub_of(quotes_gateway)
    cancelled = [StreamReader(md_stub.StreamQuotes(fx_and_stocks())) for _ in range(5)]
    timed_out = [
        StreamReader(md_stub.StreamQuotes(stream_request("TSLA"), timeout=1.0)) for _ in range(3)
    ]
    other_channel = grpc.aio.insecure_channel(quotes_gateway.address)
    closed = StreamReader(
        market_data_pb2_grpc.MarketDataServiceStub(other_channel).StreamQuotes(
            stream_request("AAPL", "TSLA")
        )
    )
    await wait_for(lambda: hub.stats().streams == 9)
    assert simulator.market_data.lines_in_use == 4
    assert _hub_tasks()
    for reader in cancelled:
        await reader.close()
    await other_channel.close()  # the client goes away without cancelling
    await wait_for(lambda: all(r.task.done() for r in timed_out), within=5)
    assert all(
        r.error is not None and r.error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        for r in timed_out
    )
    await closed.close()
    await wait_for(lambda: hub.stats().streams == 0)
    await wait_for(lambda: simulator.market_data.lines_in_use == 0, within=hub.linger + 3)
    stats = hub.stats()
    assert (stats.lines, stats.groups, stats.snapshot_waiters, stats.log_entries) == (0, 0, 0, 0)
    await wait_for(lambda: not _hub_tasks())


# ---------------------------------------------------------------------------- heartbeat


async def test_heartbeat_on_a_quiet_stream(simulator: TwsSimulator, md_stub) -> None:
    simulator.market.paused = True  # a quiet market: no quotes after the first snapshot
    fast = StreamReader(md_stub.StreamQuotes(stream_request("AAPL", heartbeat=0.2)))
    default = StreamReader(md_stub.StreamQuotes(stream_request("MSFT")))  # 1 s (fixture)
    try:
        await wait_for(lambda: len(fast.heartbeats) >= 4, within=5)
        gaps = [b - a for a, b in zip(fast.heartbeats, fast.heartbeats[1:], strict=False)]
        assert all(0.1 < gap < 0.6 for gap in gaps), gaps
        await wait_for(lambda: len(default.heartbeats) >= 1, within=3)
        assert len(default.heartbeats) <= 2
    finally:
        await close_all([fast, default])
    # A busy stream needs no heartbeat.
    simulator.market.paused = False
    busy = StreamReader(md_stub.StreamQuotes(stream_request("AAPL", heartbeat=0.2)))
    try:
        await wait_for(lambda: busy.quote_count > 20)
        assert not busy.heartbeats
    finally:
        await busy.close()


async def test_a_snapshot_abandoned_mid_wait_gives_its_line_back(
    simulator: TwsSimulator, quotes_gateway: QuotesGateway
) -> None:
    """A GetQuotes whose client leaves while it waits for a quote must not keep the line
    (it would hold a budget slot and an IB line forever)."""
    hub = hub_of(quotes_gateway)
    contract = await hub.resolve(common_pb2.Contract(symbol="TSLA"), max_wait=5)
    simulator.faults.set_delay(2.0)  # TWS answers nothing for a while: the snapshot waits
    waiting = asyncio.ensure_future(hub.snapshot(contract, 0, max_wait=10))
    await wait_for(lambda: hub.stats().lines == 1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    simulator.faults.set_delay(0.0)
    await wait_for(lambda: hub.stats().lines == 0)  # released, then gone after its linger
