"""The order-event journal end to end: a gateway process killed (SIGKILL) while its order
fills, restarted on the same journal, and a client resuming with its old epoch and
sequence receives the fill exactly once; a journal of another account is set aside."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import grpc
import grpc.aio
import pytest

from ibgateway.v1 import orders_pb2, orders_pb2_grpc
from ibgateway_server.app import Gateway
from ibgateway_server.orders.journal import SqliteJournal
from tests.e2e.conftest import GatewayFactory, gateway_channel
from tests.e2e.orders.test_order_events_support import (
    ACKNOWLEDGED,
    COMMISSION,
    FILLED,
    EventReader,
    kinds,
    market_order_done,
    of_order,
    open_reader,
    place_market,
    place_resting_limit,
    stream_request,
)
from tests.e2e.orders.test_orders_support import AAPL_CON_ID, simulator_orders
from tests.polling import wait_until
from tws_simulator import TwsSimulator

pytestmark = pytest.mark.timeout(90)

IBGW = [sys.executable, "-m", "ibgateway_server"]
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("IBKR_", "IBGW_"))}


class GatewayProcess:
    """`ibgw serve` in a child process against ``sim``, journaling to ``journal``."""

    def __init__(self, sim: TwsSimulator, journal: Path) -> None:
        self.sim, self.journal = sim, journal
        self.proc: asyncio.subprocess.Process | None = None
        self.address = ""
        self.lines: list[str] = []
        self._drain: asyncio.Task[None] | None = None

    async def start(self) -> str:
        self.proc = await asyncio.create_subprocess_exec(
            *IBGW,
            "serve",
            "--backend",
            "tws",
            "--ibkr-host",
            self.sim.host,
            "--ibkr-port",
            str(self.sim.port),
            "--ibkr-client-id",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--order-journal",
            str(self.journal),
            "--heartbeat-seconds",
            "1",
            env={**CLEAN_ENV, "IBGW_RECONNECT_INITIAL_DELAY": "0.1"},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        found = asyncio.get_running_loop().create_future()
        self._drain = asyncio.ensure_future(self._read(found))
        self.address = await asyncio.wait_for(found, 30)
        return self.address

    async def _read(self, found: asyncio.Future[str]) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while raw := await self.proc.stderr.readline():
            line = raw.decode(errors="replace")
            self.lines.append(line)
            match = re.search(r"order book synchronised", line)
            listening = re.search(r"ibgateway listening on (\S+)", line)
            if listening:
                self.address = listening.group(1)
            if match and self.address and not found.done():
                found.set_result(self.address)
        if not found.done():
            found.set_exception(AssertionError("gateway ended:\n" + "".join(self.lines)))

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        if self._drain is not None:
            await self._drain

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._drain is not None:
            with contextlib.suppress(Exception):
                await self._drain


@contextlib.asynccontextmanager
async def gateway_process(sim: TwsSimulator, journal: Path) -> AsyncIterator[GatewayProcess]:
    process = GatewayProcess(sim, journal)
    try:
        await process.start()
        yield process
    finally:
        await process.stop()


@contextlib.asynccontextmanager
async def order_stub(address: str) -> AsyncIterator[orders_pb2_grpc.OrderServiceAsyncStub]:
    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), 10)
        yield orders_pb2_grpc.OrderServiceStub(channel)


async def test_a_fill_while_the_gateway_was_killed_arrives_once_after_restart(
    simulator: TwsSimulator, tmp_path: Path
) -> None:
    journal = tmp_path / "state" / "order-journal.sqlite3"
    first = GatewayProcess(simulator, journal)
    await first.start()
    try:
        async with order_stub(first.address) as stub:
            reader = await open_reader(stub)
            placed = await place_resting_limit(stub, simulator, "jk-1")
            ack = await reader.next_event()
            assert ack.type == ACKNOWLEDGED and ack.order.client_order_id == "jk-1"
            await reader.close()
        await first.kill()
    finally:
        await first.stop()

    # While no gateway runs, the market falls through the limit: the order fills in TWS.
    simulator.market.move_to(AAPL_CON_ID, float(placed.limit_price.value) * 0.9)

    async def filled() -> bool:
        trades = await simulator_orders(simulator, "jk-1")
        return any(t.orderStatus.status == "Filled" for t in trades)

    for _ in range(50):
        if await filled():
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the simulator did not fill the order")

    async with gateway_process(simulator, journal) as second, order_stub(second.address) as stub:
        resumed = EventReader(stub, stream_request(after_sequence=ack.sequence, epoch=ack.epoch))
        events = await resumed.events_until(market_order_done("jk-1"), within=20)
        assert not any(m.WhichOneof("event") == "replay_gap" for m in resumed.received)
        assert [e.sequence for e in events] == list(
            range(ack.sequence + 1, ack.sequence + 1 + len(events))
        )
        assert {e.epoch for e in events} == {ack.epoch}  # the same epoch after the restart
        mine = of_order(events, "jk-1")
        fills = [e.fill.execution_id for e in mine if e.type == FILLED]
        assert fills and len(fills) == len(set(fills)), kinds(mine)
        assert sorted(fills) == sorted(e.fill.execution_id for e in mine if e.type == COMMISSION)
        assert sum(Decimal(e.fill.quantity.value) for e in mine if e.type == FILLED) == 5
        assert mine[-1].order.status == orders_pb2.ORDER_STATUS_FILLED
        await resumed.next_of("heartbeat", within=10)  # a second of silence: all is said
        last = max(
            m.order_event.sequence
            for m in resumed.received
            if m.WhichOneof("event") == "order_event"
        )
        await resumed.close()
        await second.kill()

    # Killed again right after: a third run repeats nothing of it.
    async with gateway_process(simulator, journal) as third, order_stub(third.address) as stub:
        again = EventReader(
            stub, stream_request(after_sequence=last, epoch=ack.epoch, heartbeat=0.2)
        )
        await again.next_of("heartbeat", within=10)
        await place_market(stub, "jk-next")
        following = await again.next_event()
        await again.close()
        assert following.order.client_order_id == "jk-next", kinds([following])
        assert following.sequence == last + 1 and following.epoch == ack.epoch


async def test_a_journal_of_another_account_is_set_aside(
    make_gateway: GatewayFactory,
    simulator: TwsSimulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "journal.sqlite3"
    other = SqliteJournal(path)
    other.claim_accounts(["U9999999"])
    old_epoch = other.epoch
    other.close()
    gw: Gateway = await make_gateway(order_journal=str(path))
    assert gw.order_book is not None
    assert await wait_until(
        lambda: gw.order_book is not None and gw.order_book.events.epoch != old_epoch
    )
    aside = [p for p in os.listdir(tmp_path) if p.startswith("journal.sqlite3.other-account-")]
    assert len(aside) == 1
    assert any(
        "U9999999" in r.getMessage() and "set aside" in r.getMessage() for r in caplog.records
    )
    async with gateway_channel(gw) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        reader = await open_reader(stub)
        await place_market(stub, "acct-1")
        event = await reader.next_event()
        await reader.close()
        assert event.epoch == gw.order_book.events.epoch and event.sequence == 1


async def test_a_corrupt_journal_is_set_aside(
    make_gateway: GatewayFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "journal.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    gw = await make_gateway(order_journal=str(path))
    assert gw.order_book is not None and gw.order_book.events.last_sequence == 0
    assert len([p for p in os.listdir(tmp_path) if p.startswith("journal.sqlite3.corrupt-")]) == 1
    assert any("not a valid journal" in r.getMessage() for r in caplog.records)
