"""OrderEventLog and its streams, without IB: sequences, retention, where a resumed stream
starts (replay gap or not), replay racing with new events, slow consumers, the account
filter, connection changes, heartbeats and shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest

from ibgateway.v1 import common_pb2, orders_pb2
from ibgateway_server.errors import GatewayError
from ibgateway_server.orders.events import OrderEventLog, OrderEventStream, Resume, plan_resume

Response = orders_pb2.StreamOrderEventsResponse
FILLED = orders_pb2.ORDER_EVENT_TYPE_FILLED


def order(account: str = "DU1", key: str = "k") -> orders_pb2.Order:
    return orders_pb2.Order(client_order_id=key, account_id=account)


def fill_log(log: OrderEventLog, count: int, account: str = "DU1") -> None:
    for _ in range(count):
        log.append(FILLED, order(account))


def connection(state: common_pb2.ConnectionState.ValueType) -> common_pb2.ConnectionStateChange:
    return common_pb2.ConnectionStateChange(state=state, message=f"state {state}")


def what(message: Response) -> str:
    """A message in short: "5" for event 5, "gap@3", "conn:2", "beat"."""
    kind = message.WhichOneof("event")
    if kind == "order_event":
        return str(message.order_event.sequence)
    if kind == "replay_gap":
        return f"gap@{message.replay_gap.first_available_sequence}"
    if kind == "connection_state":
        return f"conn:{message.connection_state.state}"
    return "beat"


async def collect(
    stream: OrderEventStream,
    count: int,
    *,
    on_write: Callable[[Response], None] | None = None,
    within: float = 2.0,
) -> list[str]:
    """Run the stream until it has written ``count`` messages."""
    got: list[str] = []

    async def write(message: Response) -> None:
        got.append(what(message))
        if on_write is not None:
            on_write(message)
        if len(got) >= count:
            stream.end()
        await asyncio.sleep(0)

    await asyncio.wait_for(stream.run(write), within)
    return got


# ------------------------------------------------------------------------- the log


def test_sequences_start_at_one_and_increase_by_one_within_an_epoch() -> None:
    log = OrderEventLog()
    logged = [log.append(FILLED, order()) for _ in range(3)]
    assert [e.sequence for e in logged] == [1, 2, 3]
    events = [e.message.order_event for e in logged]
    assert {e.epoch for e in events} == {log.epoch}
    assert all(e.event_time.seconds > 0 and e.type == FILLED for e in events)
    assert OrderEventLog().epoch != log.epoch  # another run, another epoch


def test_retention_keeps_the_newest_events_only() -> None:
    log = OrderEventLog(retention=4)
    assert (log.first_sequence, log.last_sequence) == (1, 0)
    fill_log(log, 10)
    stats = log.stats()
    assert (stats.first_sequence, stats.last_sequence, stats.held) == (7, 10, 4)
    assert log.event(6) is None and log.event(11) is None
    held = log.event(7)
    assert held is not None and held.message.order_event.sequence == 7
    with pytest.raises(ValueError):
        OrderEventLog(retention=0)


@pytest.mark.parametrize(
    ("after", "epoch", "expected"),
    [
        (0, "", Resume(11, gap=False)),  # from now on
        (3, "", Resume(11, gap=True)),  # a sequence without its epoch means nothing
        (8, "other", Resume(11, gap=True)),  # another run
        (8, "E", Resume(9, gap=False)),  # held: replay 9, 10
        (10, "E", Resume(11, gap=False)),  # up to date
        (5, "E", Resume(6, gap=False)),  # exactly the oldest held is next
        (4, "E", Resume(6, gap=True)),  # 5 is gone
        (0, "E", Resume(6, gap=True)),  # from the start of the epoch: 1-5 are gone
    ],
)
def test_plan_resume(after: int, epoch: str, expected: Resume) -> None:
    assert plan_resume(after_sequence=after, epoch=epoch, current_epoch="E", first=6, last=10) == (
        expected
    )


def test_plan_resume_from_the_start_of_an_epoch_that_lost_nothing() -> None:
    resume = plan_resume(after_sequence=0, epoch="E", current_epoch="E", first=1, last=3)
    assert resume == Resume(1, gap=False)


def test_plan_resume_refuses_a_sequence_never_issued() -> None:
    with pytest.raises(GatewayError) as caught:
        plan_resume(after_sequence=11, epoch="E", current_epoch="E", first=6, last=10)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.field_violations[0][0] == "after_sequence"


# ------------------------------------------------------------------------- streams


async def test_replay_then_new_events_without_loss_or_repeat() -> None:
    log = OrderEventLog()
    log.connection_changed(connection(common_pb2.CONNECTION_STATE_CONNECTED))
    fill_log(log, 5)
    stream = log.open_stream(after_sequence=2, epoch=log.epoch)

    def append_while_replaying(message: Response) -> None:
        if message.order_event.sequence in (3, 4):
            fill_log(log, 2)  # new events arrive in the middle of the replay

    got = await collect(stream, 7, on_write=append_while_replaying)
    assert got == ["3", "4", "5", "6", "7", "8", "9"]
    stream.close()


async def test_a_new_event_wakes_a_waiting_stream() -> None:
    log = OrderEventLog()
    log.connection_changed(connection(common_pb2.CONNECTION_STATE_CONNECTED))
    stream = log.open_stream(heartbeat=60)
    asyncio.get_running_loop().call_later(0.02, fill_log, log, 1)
    assert await collect(stream, 1, within=1) == ["1"]


async def test_a_stream_that_falls_behind_the_retention_ends_resource_exhausted() -> None:
    log = OrderEventLog(retention=3)
    log.connection_changed(connection(common_pb2.CONNECTION_STATE_CONNECTED))
    stream = log.open_stream()  # from now on: next is 1
    fill_log(log, 5)  # 1 and 2 are dropped before the stream reads
    assert log.stats().max_lag == 5
    with pytest.raises(GatewayError) as caught:
        await collect(stream, 1)
    err = caught.value
    assert err.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.reason == "ORDER_EVENTS_CONSUMER_TOO_SLOW"
    assert err.metadata["next_sequence"] == "1"
    assert err.metadata["first_available_sequence"] == "3"
    assert err.metadata["epoch"] == log.epoch
    stream.close()
    assert log.stats().streams == 0
    # Resuming where it stopped gets the gap, then what is held.
    again = log.open_stream(after_sequence=0, epoch=log.epoch)
    assert await collect(again, 4) == ["gap@3", "3", "4", "5"]


async def test_the_account_filter_skips_other_accounts() -> None:
    log = OrderEventLog()
    log.connection_changed(connection(common_pb2.CONNECTION_STATE_CONNECTED))
    stream = log.open_stream(account="DU1")
    for account in ("DU1", "DU2", "DU2", "DU1"):
        log.append(FILLED, order(account))
    assert await collect(stream, 2) == ["1", "4"]


async def test_connection_changes_come_after_the_events_before_them() -> None:
    log = OrderEventLog()
    connected = common_pb2.CONNECTION_STATE_CONNECTED
    lost = common_pb2.CONNECTION_STATE_RECONNECTING
    log.connection_changed(connection(connected))
    stream = log.open_stream()
    fill_log(log, 2)
    log.connection_changed(connection(lost))
    log.connection_changed(connection(lost))  # a repeat says nothing
    log.connection_changed(connection(connected))
    fill_log(log, 1)
    got = await collect(stream, 5)
    assert got == ["1", "2", f"conn:{lost}", f"conn:{connected}", "3"]


async def test_a_stream_opened_while_disconnected_is_told_first() -> None:
    log = OrderEventLog()  # never connected
    fill_log(log, 1)
    stream = log.open_stream(after_sequence=7, epoch="old", heartbeat=0.05)
    got = await collect(stream, 3)
    disconnected = common_pb2.CONNECTION_STATE_DISCONNECTED
    assert got == ["gap@1", f"conn:{disconnected}", "beat"]


async def test_heartbeat_after_silence() -> None:
    log = OrderEventLog()
    log.connection_changed(connection(common_pb2.CONNECTION_STATE_CONNECTED))
    stream = log.open_stream(heartbeat=0.05)
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await collect(stream, 2) == ["beat", "beat"]
    assert 0.09 <= loop.time() - start < 1.0


async def test_close_ends_every_stream_and_refuses_new_ones() -> None:
    log = OrderEventLog()
    log.connection_changed(connection(common_pb2.CONNECTION_STATE_CONNECTED))
    streams = [log.open_stream(heartbeat=60) for _ in range(3)]
    written: list[Response] = []

    async def write(message: Response) -> None:
        written.append(message)

    runs = [asyncio.ensure_future(s.run(write)) for s in streams]
    await asyncio.sleep(0.01)
    log.close()
    await asyncio.wait_for(asyncio.gather(*runs), 1)
    assert written == []
    for stream in streams:
        stream.close()
    assert log.stats().streams == 0
    with pytest.raises(GatewayError) as caught:
        log.open_stream()
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE


async def test_a_cancelled_stream_leaves_the_log_once_closed() -> None:
    log = OrderEventLog()
    stream = log.open_stream(heartbeat=60)

    async def write(message: Response) -> None:
        pass

    run = asyncio.ensure_future(stream.run(write))
    await asyncio.sleep(0.01)
    assert log.stats().streams == 1
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    stream.close()
    stream.close()  # idempotent
    assert log.stats().streams == 0
    fill_log(log, 1)  # nobody to wake: no error
