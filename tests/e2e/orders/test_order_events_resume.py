"""StreamOrderEvents end to end, the stream's life: resuming after a sequence, replay gaps
(another epoch, events no longer held), a client that leaves, the gateway shutting down,
and an IB connection drop during which an order fills.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import grpc.aio
import pytest

from ibgateway.v1 import common_pb2, orders_pb2, orders_pb2_grpc
from ibgateway_server.app import Gateway
from ibgateway_server.ib.session import SessionState
from ibgateway_server.orders import events as order_events
from ibgateway_server.orders.events import OrderEventLog
from tests.e2e.conftest import (
    GatewayFactory,
    expect_error,
    gateway_channel,
    rich_error,
    wait_for_state,
)
from tests.e2e.orders.test_order_events_support import (
    ACKNOWLEDGED,
    COMMISSION,
    FILLED,
    STATUS_CHANGED,
    EventReader,
    kinds,
    market_order_done,
    of_order,
    open_reader,
    place_market,
    place_resting_limit,
    stream_request,
)
from tests.e2e.orders.test_orders_support import AAPL_CON_ID, ACCOUNT
from tests.polling import wait_until
from tws_simulator import TwsSimulator

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def stub(channel: grpc.aio.Channel) -> orders_pb2_grpc.OrderServiceAsyncStub:
    return orders_pb2_grpc.OrderServiceStub(channel)


def event_log(gw: Gateway) -> OrderEventLog:
    assert gw.order_book is not None
    return gw.order_book.events


async def two_filled_orders(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, reader: EventReader, prefix: str
) -> list[orders_pb2.OrderEvent]:
    """Place two market orders one after the other; every event of both."""
    events: list[orders_pb2.OrderEvent] = []
    for n in (1, 2):
        await place_market(stub, f"{prefix}-{n}")
        events += await reader.events_until(market_order_done(f"{prefix}-{n}"))
    return events


async def test_resume_after_a_sequence_gets_exactly_the_missed_events(
    gateway: Gateway, stub: orders_pb2_grpc.OrderServiceAsyncStub
) -> None:
    first = await open_reader(stub)
    seen = await two_filled_orders(stub, first, "res")
    await first.close()
    assert len(seen) == 8
    epoch = seen[0].epoch

    # The consumer processed up to the 3rd event, then lost its stream.
    cut = seen[2].sequence
    resumed = EventReader(stub, stream_request(after_sequence=cut, epoch=epoch))
    replayed = [await resumed.next_event() for _ in range(len(seen) - 3)]
    assert [e.SerializeToString() for e in replayed] == [e.SerializeToString() for e in seen[3:]]

    # Then live events, continuing the sequence without a hole or a repeat.
    await place_market(stub, "res-3")
    live = await resumed.events_until(market_order_done("res-3"))
    await resumed.close()
    assert [e.sequence for e in live] == list(
        range(seen[-1].sequence + 1, seen[-1].sequence + 1 + len(live))
    )
    assert {m.WhichOneof("event") for m in resumed.received} <= {"order_event", "heartbeat"}

    # Resuming at the very end replays nothing.
    at_end = EventReader(stub, stream_request(after_sequence=live[-1].sequence, epoch=epoch))
    await place_market(stub, "res-4")
    nxt = await at_end.next_event()
    await at_end.close()
    assert nxt.sequence == live[-1].sequence + 1 and nxt.order.client_order_id == "res-4"


async def test_an_unknown_epoch_starts_with_a_replay_gap(
    gateway: Gateway, stub: orders_pb2_grpc.OrderServiceAsyncStub
) -> None:
    first = await open_reader(stub)
    await place_market(stub, "gap-0")
    before = await first.events_until(market_order_done("gap-0"))
    await first.close()

    reader = EventReader(stub, stream_request(after_sequence=5, epoch="20200101T000000Z-dead"))
    opening = await reader.next(within=5)
    assert opening is not None and opening.WhichOneof("event") == "replay_gap"
    gap = opening.replay_gap
    assert gap.epoch == event_log(gateway).epoch == before[0].epoch
    assert gap.first_available_sequence == 1  # everything of this run is still held
    # Nothing of this epoch is replayed (the client re-syncs with ListOrders); new events
    # follow.
    await place_market(stub, "gap-1")
    nxt = await reader.next_event()
    await reader.close()
    assert nxt.order.client_order_id == "gap-1"
    assert nxt.sequence == before[-1].sequence + 1
    assert [m.WhichOneof("event") for m in reader.received].count("replay_gap") == 1


async def test_events_no_longer_held_give_a_replay_gap_then_the_held_ones(
    monkeypatch: pytest.MonkeyPatch, make_gateway: GatewayFactory
) -> None:
    monkeypatch.setattr(order_events, "DEFAULT_RETENTION", 5)
    gw = await make_gateway()
    assert event_log(gw).retention == 5
    async with gateway_channel(gw) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        first = await open_reader(stub)
        seen = await two_filled_orders(stub, first, "ret")
        await first.close()
        stats = event_log(gw).stats()
        assert (stats.held, stats.last_sequence) == (5, seen[-1].sequence)

        reader = EventReader(stub, stream_request(after_sequence=1, epoch=seen[0].epoch))
        opening = await reader.next(within=5)
        assert opening is not None and opening.WhichOneof("event") == "replay_gap"
        assert opening.replay_gap.first_available_sequence == seen[-1].sequence - 4
        held = [await reader.next_event() for _ in range(5)]
        await reader.close()
        assert [e.SerializeToString() for e in held] == [e.SerializeToString() for e in seen[-5:]]


async def test_a_sequence_never_issued_is_invalid(
    gateway: Gateway, stub: orders_pb2_grpc.OrderServiceAsyncStub
) -> None:
    epoch = event_log(gateway).epoch
    err = await expect_error(
        stub.StreamOrderEvents(stream_request(after_sequence=10**6, epoch=epoch)).read()
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "after_sequence" in err.violations


async def test_a_client_that_leaves_leaves_nothing_behind(
    gateway: Gateway, stub: orders_pb2_grpc.OrderServiceAsyncStub
) -> None:
    log = event_log(gateway)
    assert gateway.session is not None
    listeners = gateway.session.state_listener_count
    readers = [await open_reader(stub) for _ in range(3)]
    assert log.stats().streams == 3
    await readers[0].close()
    assert await wait_until(lambda: log.stats().streams == 2)
    # The others carry on.
    await place_market(stub, "leave-1")
    for reader in readers[1:]:
        assert (await reader.next_event()).order.client_order_id == "leave-1"
    for reader in readers[1:]:
        await reader.close()
    assert await wait_until(lambda: log.stats().streams == 0)
    assert gateway.session.state_listener_count == listeners  # streams add none


async def test_open_streams_end_cleanly_on_shutdown(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    async with gateway_channel(gw) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        readers = [await open_reader(stub) for _ in range(2)]
        loop = asyncio.get_running_loop()
        start = loop.time()
        stopping = asyncio.ensure_future(gw.stop(grace=5.0))
        codes = [await reader.finished(within=5) for reader in readers]
        await stopping
        assert codes == [grpc.StatusCode.OK, grpc.StatusCode.OK]
        assert loop.time() - start < 3.0  # ended by the gateway, not by the grace timeout
        assert event_log(gw).stats().streams == 0


async def test_connection_drop_is_reported_and_the_missed_fill_follows(
    gateway: Gateway,
    stub: orders_pb2_grpc.OrderServiceAsyncStub,
    simulator: TwsSimulator,
) -> None:
    reader = await open_reader(stub)
    placed = await place_resting_limit(stub, simulator, "drop-lmt")
    ack = await reader.next_event()
    assert (ack.type, ack.order.client_order_id) == (ACKNOWLEDGED, "drop-lmt")

    # TWS goes away; while the gateway is out, the market falls through the limit.
    simulator.faults.refuse_connections(0.5)
    assert simulator.faults.drop_all_connections() >= 1
    simulator.market.move_to(AAPL_CON_ID, float(placed.limit_price.value) * 0.9)
    lost = await reader.next_of("connection_state")
    assert lost.connection_state.state == common_pb2.CONNECTION_STATE_RECONNECTING
    back = await reader.next_of("connection_state", within=15)
    assert back.connection_state.state == common_pb2.CONNECTION_STATE_CONNECTED
    assert await wait_for_state(gateway, SessionState.CONNECTED)

    # After the re-sync: the fill, its commission and the new status, nothing repeated.
    missed = await reader.events_until(lambda evs: len(evs) == 3)
    assert kinds(missed) == ["FILLED", "COMMISSION", "STATUS_CHANGED"]
    assert [e.sequence for e in missed] == [ack.sequence + 1, ack.sequence + 2, ack.sequence + 3]
    assert all(e.order.status == orders_pb2.ORDER_STATUS_FILLED for e in missed)
    assert missed[0].fill.quantity.value == "5"
    assert missed[0].fill.execution_id == missed[1].fill.execution_id

    # Events keep flowing on the same stream.
    await place_market(stub, "drop-after")
    after = await reader.events_until(market_order_done("drop-after"))
    await reader.close()
    assert kinds(after) == ["ACKNOWLEDGED", "FILLED", "STATUS_CHANGED", "COMMISSION"]
    assert after[0].sequence == missed[-1].sequence + 1
    assert not of_order(after, "drop-lmt")
    everything = [m.order_event for m in reader.received if m.HasField("order_event")]
    assert len({e.sequence for e in everything}) == len(everything)
    assert {e.type for e in everything} <= {ACKNOWLEDGED, FILLED, COMMISSION, STATUS_CHANGED}


async def test_a_stalled_consumer_neither_blocks_others_nor_holds_memory(
    monkeypatch: pytest.MonkeyPatch, make_gateway: GatewayFactory
) -> None:
    monkeypatch.setattr(order_events, "DEFAULT_RETENTION", 100)
    gw = await make_gateway()
    log = event_log(gw)
    async with gateway_channel(gw) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        stalled: Any = stub.StreamOrderEvents(stream_request(heartbeat=3600))  # never read
        assert await wait_until(lambda: log.stats().streams == 1)
        healthy = await open_reader(stub)
        # Synthetic events (big ones, so that gRPC's buffers fill sooner), appended as
        # fast as the healthy consumer takes them, until the stalled one is out of the
        # retention window (gRPC has buffered what it could for it, then its writes wait).
        big = orders_pb2.Order(
            client_order_id="stall", account_id=ACCOUNT, status_message="x" * 4000
        )
        loop = asyncio.get_running_loop()
        end = loop.time() + 30
        while log.stats().max_lag <= log.retention:
            assert loop.time() < end, log.stats()
            for _ in range(20):
                log.append(FILLED, big)
            assert await wait_until(lambda: healthy_seen(healthy) == log.last_sequence, within=10)
        stats = log.stats()
        assert stats.held == 100  # what is kept does not grow with the lag

        # The healthy stream got everything, in order; the stalled one ends with a clear
        # status after what gRPC had buffered for it, and its resume starts with a gap.
        sequences = [m.order_event.sequence for m in healthy.received if m.HasField("order_event")]
        assert sequences == list(range(1, stats.last_sequence + 1))
        await healthy.close()
        received: list[int] = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for message in stalled:
                received.append(message.order_event.sequence)
        err = rich_error(caught.value)
        assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert err.info is not None and err.info.reason == "ORDER_EVENTS_CONSUMER_TOO_SLOW"
        assert received == list(range(1, len(received) + 1))
        assert err.info.metadata["next_sequence"] == str(len(received) + 1)
        resumed = EventReader(stub, stream_request(after_sequence=received[-1], epoch=log.epoch))
        opening = await resumed.next(within=5)
        await resumed.close()
        assert opening is not None and opening.WhichOneof("event") == "replay_gap"
        assert opening.replay_gap.first_available_sequence == stats.first_sequence


def healthy_seen(reader: EventReader) -> int:
    """The sequence of the newest order event ``reader`` has received (0: none)."""
    for message in reversed(reader.received):
        if message.HasField("order_event"):
            return int(message.order_event.sequence)
    return 0


async def test_a_stream_opened_while_tws_is_away_says_so_then_follows(
    gateway: Gateway, stub: orders_pb2_grpc.OrderServiceAsyncStub, simulator: TwsSimulator
) -> None:
    simulator.faults.refuse_connections(0.5)
    simulator.faults.drop_all_connections()
    assert await wait_for_state(gateway, SessionState.RECONNECTING)
    reader = EventReader(stub)  # no UNAVAILABLE: the log is the gateway's own
    first = await reader.next(within=5)
    assert first is not None and first.WhichOneof("event") == "connection_state"
    assert first.connection_state.state == common_pb2.CONNECTION_STATE_RECONNECTING
    back = await reader.next_of("connection_state", within=15)
    assert back.connection_state.state == common_pb2.CONNECTION_STATE_CONNECTED
    assert await wait_for_state(gateway, SessionState.CONNECTED)
    await place_market(stub, "away-1")
    events = await reader.events_until(market_order_done("away-1"))
    await reader.close()
    assert kinds(events) == ["ACKNOWLEDGED", "FILLED", "STATUS_CHANGED", "COMMISSION"]
