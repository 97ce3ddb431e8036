"""`python -m tws_simulator` as a user runs it, with an ib_insync client pointed at it."""

from __future__ import annotations

import asyncio
import re
import signal
import sys

import pytest
from ib_insync import IB


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
async def test_standalone_simulator_serves_an_ib_insync_client(stop_signal: int) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tws_simulator",
        "--port",
        "0",
        "--seed",
        "3",
        "--tick-rate",
        "50",
        "--cash",
        "5000",
        "--position",
        "AAPL:10:100.5",
        "--log-level",
        "WARNING",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        banner = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
        match = re.search(r"on (127\.0\.0\.1):(\d+) \(account (DU\d+)", banner)
        assert match, banner
        ib = IB()
        await ib.connectAsync(match[1], int(match[2]), clientId=1, timeout=5)
        try:
            assert ib.managedAccounts() == [match[3]]
            [position] = ib.positions()
            assert (position.contract.symbol, position.position, position.avgCost) == (
                "AAPL",
                10.0,
                100.5,
            )
            cash = [v for v in ib.accountValues() if v.tag == "TotalCashValue"]
            assert float(cash[0].value) == 5000.0
        finally:
            ib.disconnect()
    finally:
        proc.send_signal(stop_signal)
        code = await asyncio.wait_for(proc.wait(), 10)
    assert code == 0
    assert proc.stdout is not None
    assert b"stopped" in await proc.stdout.read()


async def test_bad_position_flag_is_a_usage_error() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tws_simulator",
        "--port",
        "0",
        "--position",
        "AAPL-10",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert b"SYMBOL:QUANTITY:AVERAGE_COST" in stderr
