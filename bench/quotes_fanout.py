"""Quote fan-out benchmark: the gateway against a bare grpc.aio server, same run, same
machine, same messages, same consumers.

    python -m bench.quotes_fanout            # the full run (a few minutes), `make bench`
    python -m bench.quotes_fanout --quick    # seconds (the test suite's smoke run)

Processes: the server under test (``bench.gateway_server``: gateway + TWS simulator in one
process; or ``bench.baseline_server``: a bare grpc.aio server with no IB and no hub), and
the consumers in another (``bench.consumers``, generated stubs, every message parsed).

Measured:
1. delivered quotes/s with 1, 100 and 1,000 concurrent streams of 100 contracts each, the
   market moving every contract ``--rate / contracts`` times a second, for both servers;
2. latency (the quote's receive_time → the consumer's clock) p50/p99/p99.9 at 10,000
   quotes/s delivered to 100 streams, for both; for the gateway also the IB leg
   (simulator step → the gateway's receipt of the tick, same process, same clock);
3. IB market-data lines in use (the simulator's count) while 1,000 streams watch the
   contracts;
4. the gateway's RSS with 1,000 streams, and its growth while one more consumer is stalled
   (reads nothing) for 30 s.

The last line is the summary:
``fanout_ratio=<x> p99_added_ms=<y> lines=<n> stalled_rss_growth_pct=<z>``, where
fanout_ratio is the lowest gateway/baseline throughput ratio over the stream counts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import symbols

ROOT = Path(__file__).resolve().parent.parent


class Child:
    """A benchmark child process speaking one JSON object per line on stdout."""

    def __init__(self, module: str, *args: str, name: str) -> None:
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def read(self, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(
                    f"{self.name}: no answer in {timeout:g}s{self._tail()}"
                ) from None
            if line is None:
                raise RuntimeError(f"{self.name} exited ({self.proc.wait()}){self._tail()}")
            line = line.strip()
            if line.startswith("{"):
                return dict(json.loads(line))

    def ask(self, command: str, timeout: float = 60.0) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read(timeout)

    def close(self, command: str = "quit") -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(command + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=15)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        os.unlink(self.log.name)

    def _tail(self) -> str:
        self.log.flush()
        text = Path(self.log.name).read_text(errors="replace")[-2000:]
        return f"\n--- {self.name} stderr ---\n{text}" if text else ""


GATEWAY_ARGS: list[str] = []  # extra arguments of bench.gateway_server (e.g. --no-gc-freeze)


def start_server(kind: str, instruments: int, tick_interval: float) -> tuple[Child, str]:
    module = "bench.gateway_server" if kind == "gateway" else "bench.baseline_server"
    extra = GATEWAY_ARGS if kind == "gateway" else []
    child = Child(
        module,
        "--instruments",
        str(instruments),
        "--tick-interval",
        f"{tick_interval:.6f}",
        *extra,
        name=kind,
    )
    hello = child.read(timeout=60)
    return child, str(hello["address"])


def start_consumers(
    address: str, streams: int, contracts: list[str], *, stalled: bool = False
) -> Child:
    args = ["--address", address, "--streams", str(streams), "--symbols", ",".join(contracts)]
    if stalled:
        args.append("--stalled")
    child = Child("bench.consumers", *args, name="stalled" if stalled else f"consumers-{streams}")
    ready = child.read(timeout=300)
    if not ready.get("ready"):
        child.close("stop")
        raise RuntimeError(f"consumers did not start: {ready}")
    return child


@dataclass
class Throughput:
    streams: int
    quotes_per_s: float
    messages_per_s: float
    conflated_per_s: float
    server_cpu_pct: float
    consumer_cpu_pct: float
    source_per_s: float  # quote updates the server had to fan out (market / IB side)
    open_s: float = 0.0

    @property
    def delivered_share(self) -> float:
        """Delivered quotes per (source update × stream): 1.0 = every update reached
        every stream; less = conflated (or not yet delivered)."""
        offered = self.source_per_s * self.streams
        return self.quotes_per_s / offered if offered else math.nan


def measure(
    server: Child, consumers: Child, streams: int, warmup: float, duration: float
) -> Throughput:
    time.sleep(warmup)
    m0, s0 = consumers.ask("mark"), server.ask("stats")
    time.sleep(duration)
    m1, s1 = consumers.ask("mark"), server.ask("stats")
    if m1["errors"]:
        raise RuntimeError(f"consumer errors: {m1['errors']}")
    elapsed = m1["t"] - m0["t"]
    return Throughput(
        streams=streams,
        quotes_per_s=(m1["quotes"] - m0["quotes"]) / elapsed,
        messages_per_s=(m1["messages"] - m0["messages"]) / elapsed,
        conflated_per_s=(m1["conflated"] - m0["conflated"]) / elapsed,
        server_cpu_pct=100 * (s1["cpu_s"] - s0["cpu_s"]) / elapsed,
        consumer_cpu_pct=100 * (m1["cpu_s"] - m0["cpu_s"]) / elapsed,
        source_per_s=(s1["source_quotes"] - s0["source_quotes"]) / elapsed,
    )


@dataclass
class Results:
    throughput: dict[str, list[Throughput]] = field(default_factory=dict)
    latency: dict[str, dict[str, float]] = field(default_factory=dict)
    ib_leg: dict[str, float] = field(default_factory=dict)
    lines: int = -1
    contracts: int = 0
    rss_kb_1000: int = 0
    baseline_rss_kb_1000: int = 0
    stall_lag: int = 0  # updates the stalled stream was behind at the end
    rss_before_stall_kb: int = 0
    rss_after_stall_kb: int = 0
    stall_s: float = 0.0
    stall_streams: int = 0

    def ratio(self, streams: int) -> float:
        gw = {t.streams: t for t in self.throughput.get("gateway", [])}
        base = {t.streams: t for t in self.throughput.get("baseline", [])}
        if streams not in gw or streams not in base or not base[streams].quotes_per_s:
            return math.nan
        return gw[streams].quotes_per_s / base[streams].quotes_per_s

    @property
    def fanout_ratio(self) -> float:
        ratios = [self.ratio(t.streams) for t in self.throughput.get("gateway", [])]
        return min(ratios) if ratios else math.nan

    @property
    def p99_added_ms(self) -> float:
        gw, base = self.latency.get("gateway"), self.latency.get("baseline")
        if not gw or not base:
            return math.nan
        return gw["p99_ms"] - base["p99_ms"]

    @property
    def stalled_rss_growth_pct(self) -> float:
        if not self.rss_before_stall_kb:
            return math.nan
        return 100 * (self.rss_after_stall_kb - self.rss_before_stall_kb) / self.rss_before_stall_kb


def log(text: str) -> None:
    print(text, flush=True)


def run_throughput(kind: str, args: argparse.Namespace, res: Results, contracts: list[str]) -> None:
    tick = args.contracts / args.rate
    res.throughput[kind] = []
    largest = max(args.streams)
    for n in args.streams:
        server, address = start_server(kind, args.contracts, tick)
        consumers: Child | None = None
        try:
            started = time.monotonic()
            consumers = start_consumers(address, n, contracts)
            open_s = time.monotonic() - started
            result = measure(server, consumers, n, args.warmup, args.duration)
            result.open_s = open_s
            res.throughput[kind].append(result)
            log(
                f"  {kind:8s} {n:5d} streams: {result.quotes_per_s:12,.0f} quotes/s "
                f"({result.messages_per_s:9,.0f} msgs/s, "
                f"conflated {result.conflated_per_s:9,.0f}/s; "
                f"cpu server {result.server_cpu_pct:3.0f}% "
                f"consumers {result.consumer_cpu_pct:3.0f}%; opened in {open_s:.1f}s; "
                f"source {result.source_per_s:,.0f} updates/s, "
                f"delivered share {result.delivered_share:.3f})"
            )
            if kind == "baseline" and n == largest:
                res.baseline_rss_kb_1000 = int(server.ask("stats")["rss_kb"])
            if kind == "gateway" and n == largest:
                stats = server.ask("stats")
                res.lines, res.rss_kb_1000 = int(stats["lines"]), int(stats["rss_kb"])
                res.stall_streams = n
                log(
                    f"  gateway with {n} streams: IB lines in use {res.lines} "
                    f"(contracts {args.contracts}), RSS {res.rss_kb_1000 / 1024:.1f} MiB "
                    f"(baseline {res.baseline_rss_kb_1000 / 1024:.1f} MiB)"
                )
                stall(server, address, args, res, contracts)
        finally:
            if consumers is not None:
                consumers.close("stop")
            server.close()


def stall(
    server: Child, address: str, args: argparse.Namespace, res: Results, contracts: list[str]
) -> None:
    stalled = start_consumers(address, 1, contracts, stalled=True)
    try:
        time.sleep(args.stall_settle)
        res.rss_before_stall_kb = int(server.ask("stats")["rss_kb"])
        time.sleep(args.stall_seconds)
        after = server.ask("stats")
        res.rss_after_stall_kb = int(after["rss_kb"])
        res.stall_lag = int(after.get("max_lag", 0))
        res.stall_s = args.stall_seconds
        log(
            f"  gateway RSS with one consumer stalled {args.stall_seconds:g}s: "
            f"{res.rss_before_stall_kb / 1024:.1f} → {res.rss_after_stall_kb / 1024:.1f} MiB "
            f"({res.stalled_rss_growth_pct:+.2f}%); the stalled stream is "
            f"{res.stall_lag:,} updates behind (conflated, not queued)"
        )
    finally:
        stalled.close("stop")


def run_latency(kind: str, args: argparse.Namespace, res: Results) -> None:
    # delivered = streams × contracts / tick  →  tick = streams × contracts / delivered
    count = args.latency_contracts
    tick = args.latency_streams * count / args.latency_delivered
    server, address = start_server(kind, count, tick)
    consumers: Child | None = None
    try:
        consumers = start_consumers(address, args.latency_streams, symbols(count))
        time.sleep(args.warmup)
        consumers.ask("latency_reset")
        if kind == "gateway":
            server.ask("ib_leg_reset")
        m0 = consumers.ask("mark")
        time.sleep(args.latency_seconds)
        m1 = consumers.ask("mark")
        summary = consumers.ask("latency")
        summary["delivered_per_s"] = (m1["quotes"] - m0["quotes"]) / (m1["t"] - m0["t"])
        res.latency[kind] = summary
        log(
            f"  {kind:8s} {args.latency_streams} streams, {summary['delivered_per_s']:,.0f} "
            f"quotes/s: p50 {summary['p50_ms']:.2f} ms, p99 {summary['p99_ms']:.2f} ms, "
            f"p99.9 {summary['p99_9_ms']:.2f} ms ({summary['count']:,} quotes)"
        )
        if kind == "gateway":
            res.ib_leg = server.ask("ib_leg")
            log(
                f"           IB leg (simulator step → gateway receipt): "
                f"p50 {res.ib_leg['p50_ms']:.2f} ms, p99 {res.ib_leg['p99_ms']:.2f} ms"
            )
    finally:
        if consumers is not None:
            consumers.close("stop")
        server.close()


def machine() -> dict[str, Any]:
    import google.protobuf
    import grpc

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "protobuf": google.protobuf.__version__,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--contracts", type=int, help="contracts per stream (default 100)")
    parser.add_argument("--streams", help="stream counts, comma-separated (default 1,100,1000)")
    parser.add_argument("--rate", type=float, help="market quote changes/s, all contracts (1000)")
    parser.add_argument("--warmup", type=float, help="seconds before measuring (3)")
    parser.add_argument("--duration", type=float, help="seconds measured per stream count (10)")
    parser.add_argument("--latency-streams", type=int, help="streams of the latency run (100)")
    parser.add_argument(
        "--latency-contracts", type=int, help="contracts per stream in the latency run (10)"
    )
    parser.add_argument("--latency-delivered", type=float, help="quotes/s delivered (10000)")
    parser.add_argument("--latency-seconds", type=float, help="seconds measured (20)")
    parser.add_argument("--stall-seconds", type=float, help="how long one consumer stalls (30)")
    parser.add_argument("--stall-settle", type=float, help="seconds before the first RSS (3)")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument(
        "--no-gc-freeze",
        action="store_true",
        help="skip the gc.freeze() the gateway process does once up (as `ibgw serve` does)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)
    full = {
        "contracts": 100,
        "streams": "1,100,1000",
        "rate": 1000.0,
        "warmup": 3.0,
        "duration": 10.0,
        "latency_streams": 100,
        "latency_contracts": 10,
        "latency_delivered": 10_000.0,
        "latency_seconds": 20.0,
        "stall_seconds": 30.0,
        "stall_settle": 3.0,
    }
    quick = {
        "contracts": 10,
        "streams": "1,5",
        "rate": 200.0,
        "warmup": 0.5,
        "duration": 1.0,
        "latency_streams": 5,
        "latency_contracts": 5,
        "latency_delivered": 1000.0,
        "latency_seconds": 1.5,
        "stall_seconds": 1.5,
        "stall_settle": 0.5,
    }
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.streams = sorted({int(s) for s in str(args.streams).split(",") if s.strip()})
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    GATEWAY_ARGS[:] = ["--no-gc-freeze"] if args.no_gc_freeze else []
    contracts = symbols(args.contracts)
    res = Results(contracts=args.contracts)
    info = machine()
    log(
        f"quote fan-out benchmark: {args.contracts} contracts per stream, streams "
        f"{args.streams}, market {args.rate:g} quote changes/s; {info['nproc']} CPUs "
        f"({info['cpu']}), Python {info['python']}, grpcio {info['grpcio']}"
        + ("; gateway process without gc.freeze()" if args.no_gc_freeze else "")
    )
    log("throughput (delivered quotes/s; consumers in another process):")
    for kind in ("baseline", "gateway"):
        run_throughput(kind, args, res, contracts)
    for n in args.streams:
        log(f"  ratio gateway/baseline at {n} streams: {res.ratio(n):.3f}")
    if not args.skip_latency:
        log(f"latency at {args.latency_delivered:g} quotes/s delivered (receive_time → consumer):")
        for kind in ("baseline", "gateway"):
            run_latency(kind, args, res)
    if args.json is not None:
        payload = {
            "machine": info,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "throughput": {
                k: [{**vars(t), "delivered_share": t.delivered_share} for t in v]
                for k, v in res.throughput.items()
            },
            "latency": res.latency,
            "ib_leg": res.ib_leg,
            "lines": res.lines,
            "rss_kb_1000": res.rss_kb_1000,
            "baseline_rss_kb_1000": res.baseline_rss_kb_1000,
            "stall_lag": res.stall_lag,
            "rss_before_stall_kb": res.rss_before_stall_kb,
            "rss_after_stall_kb": res.rss_after_stall_kb,
            "summary": {
                "fanout_ratio": res.fanout_ratio,
                "p99_added_ms": res.p99_added_ms,
                "lines": res.lines,
                "stalled_rss_growth_pct": res.stalled_rss_growth_pct,
            },
        }
        args.json.write_text(json.dumps(payload, indent=2))
    print(
        f"fanout_ratio={res.fanout_ratio:.3f} p99_added_ms={res.p99_added_ms:.3f} "
        f"lines={res.lines} stalled_rss_growth_pct={res.stalled_rss_growth_pct:.2f}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
