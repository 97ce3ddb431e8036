"""Graceful shutdown and the `ibgw` command end to end: open quote and connection-status
streams end cleanly with OK when the gateway stops; `ibgw serve` (embedded simulator)
answers `ibgw check` and exits 0 on SIGTERM; `ibgw check --direct` talks straight to a
TWS."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from typing import Any

import grpc
import grpc.aio
import pytest

from ibgateway.v1 import (
    common_pb2,
    connection_pb2,
    connection_pb2_grpc,
    market_data_pb2,
    market_data_pb2_grpc,
)
from tests.e2e.conftest import GatewayFactory, gateway_channel
from tws_simulator import TwsSimulator

IBGW = [sys.executable, "-m", "ibgateway_server"]
# the subprocesses must not pick up the developer's settings
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("IBKR_", "IBGW_"))}


async def test_open_streams_end_cleanly_on_shutdown(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    async with gateway_channel(gw) as channel:
        stub: Any = market_data_pb2_grpc.MarketDataServiceStub(channel)
        stream = stub.StreamQuotes(
            market_data_pb2.StreamQuotesRequest(contracts=[common_pb2.Contract(symbol="AAPL")])
        )
        watch: Any = connection_pb2_grpc.ConnectionServiceStub(channel).WatchConnectionStatus(
            connection_pb2.WatchConnectionStatusRequest()
        )
        assert (await asyncio.wait_for(watch.read(), 5)).update.status.connected
        got_quotes = False
        async for message in stream:
            if message.WhichOneof("event") == "quotes" and message.quotes.quotes:
                got_quotes = True
                break
        assert got_quotes

        loop = asyncio.get_running_loop()
        start = loop.time()
        stopping = asyncio.ensure_future(gw.stop(grace=5.0))
        async for _ in stream:  # drain: the streams must end, not hang or fail
            pass
        while await asyncio.wait_for(watch.read(), 5) is not grpc.aio.EOF:
            pass
        assert await stream.code() == grpc.StatusCode.OK
        assert await watch.code() == grpc.StatusCode.OK
        await stopping
        assert loop.time() - start < 3.0  # ended by the gateway, not by the grace timeout


async def _read_until(stream: asyncio.StreamReader, pattern: str, within: float) -> re.Match[str]:
    lines: list[str] = []

    async def scan() -> re.Match[str]:
        while True:
            raw = await stream.readline()
            if not raw:
                raise AssertionError("process ended early:\n" + "".join(lines))
            line = raw.decode()
            lines.append(line)
            found = re.search(pattern, line)
            if found:
                return found

    return await asyncio.wait_for(scan(), within)


async def _run(*args: str, within: float = 60) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *IBGW,
        *args,
        env=CLEAN_ENV,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), within)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.mark.timeout(90)
async def test_serve_check_and_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        *IBGW,
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--shutdown-grace",
        "2",
        "--sim-seed",
        "7",
        env=CLEAN_ENV,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        found = await _read_until(proc.stderr, r"ibgateway listening on (127\.0\.0\.1:\d+)", 30)
        address = found.group(1)
        await _read_until(proc.stderr, r"health: ibgateway services SERVING", 30)

        code, report = await _run("check", "--address", address, "--symbol", "MSFT")
        assert code == 0, report
        assert "simulator at 127.0.0.1" in report
        assert "result: OK (4/4 checks passed)" in report

        proc.send_signal(signal.SIGTERM)
        await _read_until(proc.stderr, r"ibgateway stopped", 10)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_check_fails_when_no_gateway_listens() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, report = await _run("check", "--address", f"127.0.0.1:{port}", "--timeout", "2")
    assert code == 1
    assert "UNAVAILABLE" in report or "DEADLINE_EXCEEDED" in report


async def test_check_direct_against_tws(simulator: TwsSimulator) -> None:
    code, report = await _run(
        "check", "--direct", "--ibkr-host", simulator.host, "--ibkr-port", str(simulator.port)
    )
    assert code == 0, report
    assert "PASS  positions" in report


async def test_check_direct_reports_an_unreachable_tws() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, report = await _run("check", "--direct", "--ibkr-port", str(port), "--ibkr-timeout", "2")
    assert code == 1
    assert "FAIL  connection" in report
    assert "SKIP  account" in report
    assert "Enable ActiveX and Socket Clients" in report


@pytest.mark.timeout(60)
async def test_sigterm_while_tws_keeps_start_up_waiting() -> None:
    """A TWS that accepts the socket but never answers must not delay a shutdown."""
    silent_peers: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent_peers.append(writer)

    silent_tws = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = silent_tws.sockets[0].getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        *IBGW,
        "serve",
        "--backend",
        "tws",
        "--ibkr-port",
        str(port),
        "--ibkr-timeout",
        "20",
        "--listen",
        "127.0.0.1:0",
        env=CLEAN_ENV,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        await _read_until(proc.stderr, r"IB session connecting", 30)
        loop = asyncio.get_running_loop()
        start = loop.time()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 15) == 0
        assert loop.time() - start < 5
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        for writer in silent_peers:
            writer.close()
        silent_tws.close()
        await silent_tws.wait_closed()
