"""Benchmark process: the gateway with the TWS simulator producing ticks, in one process.

    python -m bench.gateway_server --instruments 100 --rate 10000 --cpu 0

Prints ``{"address": ..., "pid": ...}`` once serving, then answers commands on stdin with
one JSON line each: ``stats`` (IB lines in use per the simulator, hub state, quotes sent,
RSS, CPU, garbage collections), ``market <rate> <step_size>`` (the simulator's quote
changes per second; step_size 0 moves every instrument at each step, 1 one at a time,
spread out like IB's feed), ``ib_leg_reset`` / ``ib_leg`` (simulator step → gateway
receipt latency), ``quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import time
from dataclasses import asdict
from typing import Any

from bench.common import cpu_seconds, emit, instruments, latency_summary, rss_kb, serve_commands
from ibgateway_server.app import GC_THRESHOLD, Gateway, freeze_startup_objects
from ibgateway_server.config import Settings
from tws_simulator import SimulatorConfig, TwsSimulator

DEFAULT_GC_THRESHOLD = gc.get_threshold()  # (Python's, before any tuning)


def tick_interval(count: int, rate: float, step_size: int) -> float:
    """The market step interval that makes ``rate`` quote changes a second."""
    return (step_size or count) / rate


def make_simulator(count: int, tick_interval: float, seed: int) -> TwsSimulator:
    """A simulator quoting ``count`` instruments, every one moving at every market step."""
    config = SimulatorConfig(
        host="127.0.0.1",
        port=0,
        seed=seed,
        tick_interval=tick_interval,
        line_limit=max(100, count),
        instruments=instruments(count),
    )
    return TwsSimulator(config)


class IbLeg:
    """Simulator step → ib_insync receipt of its ticks, measured in this one process."""

    def __init__(self, sim: TwsSimulator, gateway: Gateway) -> None:
        self.samples: list[float] = []
        self._step_time = 0.0
        self._steps = -1
        self._market = sim.market
        sim.market.add_listener(self._on_quote)
        assert gateway.session is not None
        gateway.session.ib.pendingTickersEvent += self._on_tickers

    def _on_quote(self, con_id: int, quote: Any) -> None:
        if self._market.steps != self._steps:  # the first quote of a step
            self._steps = self._market.steps
            self._step_time = time.time()

    def _on_tickers(self, tickers: Any) -> None:
        if self._step_time and len(self.samples) < 1_000_000:
            for ticker in tickers:
                if ticker.time is not None:
                    self.samples.append((ticker.time.timestamp() - self._step_time) * 1000)


class LoopWatch:
    """How late the event loop runs a 5 ms timer (its stalls), and how long each garbage
    collection takes, since the last ``lag`` command."""

    def __init__(self) -> None:
        self.late_ms: list[float] = []
        self.gc_ms: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._gc_start = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_ms[info["generation"]].append((time.perf_counter() - self._gc_start) * 1000)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.005
            await asyncio.sleep(0.005)
            self.late_ms.append((loop.time() - due) * 1000)

    def report(self) -> dict[str, Any]:
        late = latency_summary(self.late_ms)
        out = {"loop_late": late}
        for gen, pauses in self.gc_ms.items():
            out[f"gc{gen}"] = {"count": len(pauses), "max_ms": max(pauses, default=0.0)}
        self.late_ms = []
        self.gc_ms = {0: [], 1: [], 2: []}
        return out


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instruments", type=int, default=100)
    parser.add_argument("--rate", type=float, default=1000.0, help="quote changes/s")
    parser.add_argument("--step-size", type=int, default=0)
    parser.add_argument("--cpu", type=int, help="pin this process to one CPU")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--heartbeat", type=float, default=5.0)
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="skip the gc.freeze() that `ibgw serve` does once started",
    )
    parser.add_argument("--switch-interval", type=float)
    args = parser.parse_args()
    if args.switch_interval:
        import sys

        sys.setswitchinterval(args.switch_interval)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    logging.basicConfig(level=logging.WARNING)
    loop = asyncio.get_running_loop()
    sim = make_simulator(
        args.instruments, tick_interval(args.instruments, args.rate, args.step_size), args.seed
    )
    sim.market.step_size = args.step_size
    await sim.start()
    values: dict[str, Any] = {
        "backend": "tws",
        "ibkr_host": sim.host,
        "ibkr_port": sim.port,
        "ibkr_client_id": 1,
        "ibkr_timeout": 10.0,
        "ibkr_account": "",
        "listen": "127.0.0.1:0",
        "quote_line_budget": max(100, args.instruments),
        "heartbeat_seconds": args.heartbeat,
        "log_level": "WARNING",
        "metrics_port": None,
        "auth_tokens": None,
        "auth_tokens_file": None,
        "tls_cert": None,
        "tls_key": None,
        "tls_client_ca": None,
        "order_journal": "off",
        # the benchmark measures the quote path itself, not the admission limits
        "max_streams": 0,
        "max_streams_per_client": 0,
        "rate_limit": 0,
    }
    settings = Settings(**values)
    gateway = Gateway(settings)
    await gateway.start()
    assert gateway.session is not None
    if not await gateway.session.wait_connected(20):
        raise SystemExit("the gateway did not connect to the simulator")
    logging.getLogger("ibgateway_server.access").setLevel(logging.WARNING)
    logging.getLogger("ib_insync").setLevel(logging.CRITICAL)
    ib_leg = IbLeg(sim, gateway)
    if not args.no_gc_freeze:
        freeze_startup_objects()  # as `ibgw serve` does
    done = asyncio.Event()
    watch = LoopWatch()
    watch_task = loop.create_task(watch.run())

    def handle(command: str) -> None:
        if command == "stats":
            hub = gateway.hub
            assert hub is not None
            stats = hub.stats()
            emit(
                {
                    "lines": sim.market_data.lines_in_use,
                    "source_quotes": stats.updates,
                    "quotes_sent": stats.quotes_sent,
                    "quote_messages": stats.quote_messages,
                    "hub": asdict(stats),
                    "rss_kb": rss_kb(),
                    "cpu_s": cpu_seconds(),
                    "steps": sim.market.steps,
                    "dropped_steps": sim.market.dropped,
                    "gc": [g["collections"] for g in gc.get_stats()],
                }
            )
        elif command.startswith("market "):
            _, rate, step_size = command.split()
            sim.market.step_size = int(step_size)
            sim.market.tick_interval = tick_interval(args.instruments, float(rate), int(step_size))
            emit({"ok": True})
        elif command == "gc tuned":
            if gc.get_threshold() != GC_THRESHOLD:  # (tuned at start-up unless told not to)
                freeze_startup_objects()
            emit({"ok": True, "threshold": gc.get_threshold()})
        elif command == "gc untuned":
            gc.unfreeze()
            gc.set_threshold(*DEFAULT_GC_THRESHOLD)
            emit({"ok": True, "threshold": gc.get_threshold()})
        elif command == "ib_leg_reset":
            ib_leg.samples.clear()
            emit({"ok": True})
        elif command == "lag":
            emit(watch.report())
        elif command == "ib_leg":
            emit(latency_summary(ib_leg.samples))
        elif command == "quit":
            done.set()

    serve_commands(loop, handle, on_eof=done.set)
    emit({"address": gateway.address, "pid": os.getpid()})
    await done.wait()
    watch_task.cancel()
    with contextlib.suppress(Exception):
        await gateway.stop(0.5)
    await sim.stop()
    emit({"bye": True})


if __name__ == "__main__":
    asyncio.run(main())
