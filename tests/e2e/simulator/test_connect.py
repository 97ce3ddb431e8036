"""Connecting: handshake and version negotiation, connect-time sync, several clients,
client id conflicts, and requests the simulator cannot serve."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from ib_insync import IB

from tws_simulator import TwsSimulator

from .conftest import Connect
from .helpers import RawClient, wait_until


async def test_ib_insync_connects_and_syncs_without_timeouts(
    simulator: TwsSimulator, ib_log: pytest.LogCaptureFixture
) -> None:
    ib = IB()
    try:
        await ib.connectAsync(simulator.host, simulator.port, clientId=3, timeout=5)
        messages = [r.getMessage() for r in ib_log.records]
        assert not [m for m in messages if "timed out" in m], messages
        assert "Synchronization complete" in messages
        assert ib.client.serverVersion() == 176  # ib_insync 0.9.86 offers v157..176
        assert ib.managedAccounts() == [simulator.account.account_id]
        assert ib.client.getReqId() >= 1
        farms = [
            r.getMessage() for r in ib_log.records if "farm connection is OK" in r.getMessage()
        ]
        assert any("2104" in m for m in farms)
        assert any("2106" in m for m in farms)
        assert any("2158" in m for m in farms)
    finally:
        ib.disconnect()


async def test_connect_as_client_zero_binds_manual_orders(connect: Connect) -> None:
    ib = await connect(client_id=0)
    assert ib.isConnected()
    assert ib.client.clientId == 0


async def test_current_time_and_next_ids(simulator: TwsSimulator, ib: IB) -> None:
    server_time = await ib.reqCurrentTimeAsync()
    assert abs(server_time.timestamp() - time.time()) < 5
    raw = await RawClient.connect(simulator.host, simulator.port, client_id=5)
    try:
        simulator.reserve_order_id(41)
        await raw.send(8, 1, 1)  # reqIds
        assert await raw.expect("9") == ["9", "1", "42"]
        await raw.send(17, 1)  # reqManagedAccts
        assert await raw.expect("15") == ["15", "1", simulator.account.account_id]
    finally:
        await raw.close()


@pytest.mark.parametrize(
    ("offered", "agreed"),
    [("v157..176", 176), ("v157..178", 178), ("v100..200", 178), ("v160..170", 170), ("v165", 165)],
)
async def test_version_negotiation_picks_the_highest_common_version(
    simulator: TwsSimulator, offered: str, agreed: int
) -> None:
    raw = await RawClient.connect(simulator.host, simulator.port, versions=offered, client_id=None)
    try:
        assert raw.server_version == agreed
        # "20231203 19:21:41 EST": date, time and a zone name
        day, clock, _zone = raw.connection_time.split(" ", 2)
        assert len(day) == 8 and day.isdigit() and clock.count(":") == 2
    finally:
        await raw.close()


@pytest.mark.parametrize("offered", ["v100..150", "v179..190", "banana"])
async def test_a_version_range_that_cannot_be_served_is_refused_clearly(
    simulator: TwsSimulator, offered: str
) -> None:
    raw = await RawClient.connect(simulator.host, simulator.port, versions=offered, client_id=None)
    try:
        assert raw.server_version == 0
        error = await raw.recv()
        assert error[:4] == ["4", "2", "-1", "503"]
        assert "157..178" in error[4] or "Unreadable" in error[4]
        assert await raw.closed()
    finally:
        await raw.close()


@pytest.mark.sim_config(max_server_version=170)
async def test_max_version_can_be_lowered(connect: Connect) -> None:
    ib = await connect(client_id=4)
    assert ib.client.serverVersion() == 170


async def test_several_clients_at_once_each_with_its_own_id(
    simulator: TwsSimulator, connect: Connect
) -> None:
    clients = await asyncio.gather(*(connect(client_id=n) for n in (1, 2, 3)))
    assert sorted(c.client_id for c in simulator.clients) == [1, 2, 3]
    times = await asyncio.gather(*(ib.reqCurrentTimeAsync() for ib in clients))
    assert len(times) == 3
    clients[1].disconnect()
    assert await wait_until(lambda: len(simulator.clients) == 2)
    assert await clients[0].reqCurrentTimeAsync()


async def test_duplicate_client_id_gets_326_and_is_disconnected(
    simulator: TwsSimulator, ib: IB, ib_log: pytest.LogCaptureFixture
) -> None:
    raw = await RawClient.connect(simulator.host, simulator.port, client_id=None)
    try:
        await raw.send(71, 2, 1, "")  # clientId 1 is `ib`'s
        error = await raw.expect("4")
        assert error[:4] == ["4", "2", "-1", "326"]
        assert "client id is already in use" in error[4]
        assert await raw.closed()
    finally:
        await raw.close()
    # ib_insync sees the same thing: error 326, then the peer closes.
    second = IB()
    with pytest.raises((ConnectionError, asyncio.TimeoutError)):
        await second.connectAsync(simulator.host, simulator.port, clientId=1, timeout=1)
    second.disconnect()
    assert any("Error 326" in r.getMessage() for r in ib_log.records)
    # The first client is untouched.
    assert ib.isConnected()
    assert await ib.reqCurrentTimeAsync()


async def test_malformed_and_unknown_messages_are_answered_and_harm_nobody(
    simulator: TwsSimulator, ib: IB, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tws_simulator")
    raw = await RawClient.connect(simulator.host, simulator.port, client_id=9)
    try:
        await raw.send("abc", 1)  # not a number
        error = await raw.expect("4")
        assert error[3] == "321"
        await raw.send(555, 1, 2)  # no such request: 503 fails the waiting call at once
        error = await raw.expect("4")
        assert error[3] == "503" and "555" in error[4]
        await raw.send(1, 11, 42, "265598")  # reqMktData cut short
        error = await raw.expect("4")
        assert error[2:4] == ["42", "321"]
        await raw.send(52, 2, 77, "0", "AAPL")  # fundamental data: not simulated, named
        error = await raw.expect("4")
        assert error[2:4] == ["77", "503"] and "REQ_FUNDAMENTAL_DATA" in error[4]
        await raw.send(20, 78, "0", "AAPL")  # historical data cut short
        error = await raw.expect("4")
        assert error[2:4] == ["78", "321"]
        await raw.send()  # an empty message
        await raw.send(49, 1)  # still served
        current = await raw.expect("49")
        assert abs(int(current[2]) - time.time()) < 5
    finally:
        await raw.close()
    assert any("555" in r.getMessage() for r in caplog.records)
    assert await ib.reqCurrentTimeAsync()


async def test_a_socket_without_the_api_prefix_is_closed_alone(
    simulator: TwsSimulator, ib: IB
) -> None:
    reader, writer = await asyncio.open_connection(simulator.host, simulator.port)
    writer.write(b"GET / HTTP/1.1\r\n\r\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert await ib.reqCurrentTimeAsync()


async def test_an_oversized_frame_disconnects_only_its_sender(
    simulator: TwsSimulator, ib: IB
) -> None:
    raw = await RawClient.connect(simulator.host, simulator.port, client_id=8)
    try:
        await raw.send_bytes((100 * 1024 * 1024).to_bytes(4, "big"))
        error = await raw.expect("4")
        assert error[3] == "507"
        assert await raw.closed()
    finally:
        await raw.close()
    assert await ib.reqCurrentTimeAsync()
