"""`ibgw quotes / orders / positions` as subprocesses: the live table through a
pseudo-terminal (updates in place, Ctrl-C ends it with exit 0), plain lines when piped, and
exit 1 with one line when the gateway goes away."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import re
import signal
import struct
import sys
import termios
from pathlib import Path

import pytest

from ibgateway.client import AsyncClient
from tests.e2e.conftest import GatewayFactory

IBGW = str(Path(sys.executable).with_name("ibgw"))
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("IBGW_", "IBKR_"))}


class Piped:
    """``ibgw ...`` with stdout and stderr piped (plain lines)."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []

    async def start(self) -> Piped:
        self.proc = await asyncio.create_subprocess_exec(
            IBGW, *self.args, env=ENV,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return self

    async def until(self, pattern: str, within: float = 15) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        async with asyncio.timeout(within):
            while True:
                raw = await self.proc.stdout.readline()
                assert raw, f"ended before {pattern!r}: {self.lines}"
                self.lines.append(raw.decode().rstrip("\n"))
                if re.search(pattern, self.lines[-1]):
                    return self.lines[-1]

    async def interrupt(self) -> tuple[int, str]:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        return await self.end()

    async def end(self, within: float = 20) -> tuple[int, str]:
        assert self.proc is not None
        _, err = await asyncio.wait_for(self.proc.communicate(), within)
        assert self.proc.returncode is not None
        return self.proc.returncode, err.decode()


async def test_quotes_live_table_in_a_terminal(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    loop = asyncio.get_running_loop()
    master, slave = pty.openpty()
    # a 40 x 140 terminal, so that no column is cut short
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
    os.set_blocking(master, False)
    proc = await asyncio.create_subprocess_exec(
        IBGW, "quotes", "AAPL", "MSFT", "NOSUCH", "--address", gw.address,
        env={**ENV, "TERM": "xterm"}, stdin=slave, stdout=slave, stderr=slave,
    )  # fmt: skip
    os.close(slave)
    screen = ""
    try:
        deadline = loop.time() + 20
        # the table redrawn in place: cursor-up sequences, and prices in the rows
        while not (
            re.search(r"AAPL\s*│\s*\d+\.\d+", screen)
            and re.search(r"MSFT\s*│\s*\d+\.\d+", screen)
            and "NOT_FOUND" in screen
            and screen.count("\x1b[") > 10
        ):
            assert loop.time() < deadline, screen[-3000:]
            with contextlib.suppress(BlockingIOError):
                screen += os.read(master, 65536).decode(errors="replace")
            await asyncio.sleep(0.05)
        assert "quotes (live)" in screen
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        ending = asyncio.ensure_future(proc.wait())
        deadline = loop.time() + 15
        while not ending.done():  # keep reading, as a terminal does, or its writes block
            assert loop.time() < deadline, "no exit after Ctrl-C"
            with contextlib.suppress(BlockingIOError, OSError):
                screen += os.read(master, 65536).decode(errors="replace")
            await asyncio.sleep(0.05)
        code = ending.result()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(master)
    assert code == 0 and "Traceback" not in screen


async def test_quotes_piped_and_the_gateway_going_away(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    view = await Piped(
        "quotes", "AAPL", "EUR.USD", "--retries", "1", "--address", gw.address
    ).start()
    assert await view.until(r"^AAPL ACTIVE$")
    line = await view.until(r"^EUR\.USD bid \d+\.\d+ ask \d+\.\d+")
    assert line.startswith("EUR.USD bid 1.")
    await gw.stop(0.5)
    code, err = await view.end()
    assert code == 1 and err.strip().startswith("ibgw: the gateway went away: UNAVAILABLE")
    assert "Traceback" not in err


async def test_no_gateway_is_one_line_and_exit_1() -> None:
    view = await Piped("quotes", "AAPL", "--address", "127.0.0.1:1").start()
    code, err = await view.end()
    assert code == 1 and err.strip() == (
        "ibgw: the gateway went away: UNAVAILABLE: no gateway at 127.0.0.1:1 within 5.0s"
    )


async def test_orders_working_and_the_event_tail(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    async with AsyncClient(gw.address) as client:
        await client.orders.place("watch-1", "AAPL", "BUY", 3, limit_price="100")
        view = await Piped("orders", "--address", gw.address).start()
        line = await view.until(r"^working watch-1 ")
        assert line == "working watch-1 BUY 3 AAPL LIMIT SUBMITTED"
        await asyncio.sleep(0.5)  # the event stream is open
        await client.orders.place("watch-2", "MSFT", "SELL", 2)  # a market order: fills
        assert re.match(r"^\d+ ACKNOWLEDGED watch-2 ", await view.until(r"ACKNOWLEDGED watch-2"))
        await view.until(r" FILLED watch-2 \w+ 2@\d+")
        code, err = await view.interrupt()
    assert code == 0 and "Traceback" not in err


@pytest.mark.sim_config(positions={"AAPL": (100, 150.0)})
async def test_positions(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    view = await Piped("positions", "--interval", "0.2", "--address", gw.address).start()
    assert (await view.until(r"net liquidation")).startswith("DU1234567 net liquidation ")
    assert (await view.until(r"^  AAPL ")).startswith("  AAPL 100 @ 150")
    code, err = await view.interrupt()
    assert code == 0 and "Traceback" not in err
