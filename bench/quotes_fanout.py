"""The quote path at the limit: the gateway against a bare grpc.aio server, same run.

    python -m bench.quotes_fanout            # the full run (a few minutes), `make bench`
    python -m bench.quotes_fanout --quick    # seconds (the test suite's smoke run)

Processes: the server under test, pinned to CPU 0 where the machine has two or more
(``bench.gateway_server``: gateway + TWS simulator in one process, the simulator making
the quotes; or ``bench.baseline_server``: a bare grpc.aio server writing one
pre-serialized message of every contract's quote to each stream as fast as gRPC takes
it), and the clients on CPU 1 with this orchestrator: ``bench.drain``, a raw HTTP/2 client
that counts gRPC messages without parsing them (so that the server is the bottleneck), and
``bench.unary`` for unary calls.

Measured (streams watch ``--contracts`` contracts each; "quotes/s" are the quotes in the
messages the server wrote, over passes of ``--duration`` seconds, medians):

1. capacity at the small and large stream counts (100 and 1,000): the best delivered
   quotes/s over a sweep of source rates (simulator quote changes/s, doubling from
   ``--rate``) for the gateway; the bare server's flood for the baseline; their ratio;
2. overload: the gateway's delivered quotes/s with 3× the source rate of its capacity
   (small stream count), relative to its capacity;
3. an IB-like feed: the small stream count, updates spread out in time (one contract at a
   time), ``--iblike-rate`` a second in total: the gateway's CPU (% of one core);
4. latency p99 at the large stream count and half the capacity (a source rate that makes
   half the capacity's quotes/s: every contract moves at each step, each step reaching
   every stream), from each sampled quote's receive_time to the drain client's clock, with
   the gateway's garbage collector tuning and, in the full run, without it;
5. unary calls/s at 1 (and 64) in flight, GetConnectionStatus and GetQuotes, gateway vs
   the bare server.

The last line is the summary: ``capacity_ratio_100=<x> capacity_ratio_1000=<y>
iblike_cpu_pct=<z> overload_ratio=<w> p99_1000_ms=<v> unary_ratio=<u>`` (unary_ratio is
the lower of the two methods at 1 in flight).
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.common import symbols

ROOT = Path(__file__).resolve().parent.parent
OPEN_RATE = 1000.0  # source rate while streams open (opening is slow on a busy server)
PINNED = (os.cpu_count() or 1) >= 2
SERVER_CPU = ["--cpu", "0"] if PINNED else []
CLIENT_CPU = ["--cpu", "1"] if PINNED else []


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


def log(text: str) -> None:
    print(text, flush=True)


@dataclass
class Point:
    """One measurement window."""

    rate: float  # offered source rate (simulator quote changes/s; 0 for the baseline)
    quotes_per_s: float  # quotes in the messages the server wrote
    messages_per_s: float  # gRPC messages the drain client received
    mb_per_s: float
    server_cpu_pct: float
    client_cpu_pct: float
    source_per_s: float = 0.0  # IB updates the gateway received
    dropped_per_s: float = 0.0  # market steps the simulator could not make in time
    gc_full: int = 0  # full collections in the gateway during the window

    @property
    def quotes_per_message(self) -> float:
        return self.quotes_per_s / self.messages_per_s if self.messages_per_s else math.nan

    def describe(self) -> str:
        source = (
            f"; source {self.source_per_s:,.0f}/s of {self.rate:,.0f}/s offered"
            if self.rate
            else ""
        )
        return (
            f"{self.quotes_per_s:12,.0f} quotes/s ({self.messages_per_s:8,.0f} msgs/s, "
            f"{self.quotes_per_message:5.1f} quotes/msg, {self.mb_per_s:5.0f} MB/s; "
            f"cpu server {self.server_cpu_pct:3.0f}% client {self.client_cpu_pct:3.0f}%"
            f"{source})"
        )


def measure(server: Child, drain: Child, seconds: float, rate: float = 0.0) -> Point:
    m0, s0 = drain.ask("mark"), server.ask("stats")
    time.sleep(seconds)
    m1, s1 = drain.ask("mark"), server.ask("stats")
    if m1["ended"] > m0["ended"] or m1["goaway"]:
        raise RuntimeError(f"the server ended streams while measuring: {m1}")
    elapsed = m1["t"] - m0["t"]
    return Point(
        rate=rate,
        quotes_per_s=(s1["quotes_sent"] - s0["quotes_sent"]) / elapsed,
        messages_per_s=(m1["messages"] - m0["messages"]) / elapsed,
        mb_per_s=(m1["bytes"] - m0["bytes"]) / elapsed / 1e6,
        server_cpu_pct=100 * (s1["cpu_s"] - s0["cpu_s"]) / elapsed,
        client_cpu_pct=100 * (m1["cpu_s"] - m0["cpu_s"]) / elapsed,
        source_per_s=(s1.get("source_quotes", 0) - s0.get("source_quotes", 0)) / elapsed,
        dropped_per_s=(s1.get("dropped_steps", 0) - s0.get("dropped_steps", 0)) / elapsed,
        gc_full=s1["gc"][2] - s0["gc"][2] if "gc" in s1 else 0,
    )


def per_core(point: Point) -> str:
    """Quotes per second of server CPU: what the server would do with a core to itself
    (on a machine shared with other work the pinned core is not all the server's)."""
    if not point.server_cpu_pct:
        return "n/a per core"
    return f"{point.quotes_per_s * 100 / point.server_cpu_pct:,.0f} quotes per CPU-second"


def median_point(points: list[Point]) -> Point:
    """The pass with the median delivered quotes/s."""
    ordered = sorted(points, key=lambda p: p.quotes_per_s)
    return ordered[(len(ordered) - 1) // 2]


@dataclass
class Results:
    baseline: dict[int, Point] = field(default_factory=dict)
    gateway: dict[int, Point] = field(default_factory=dict)
    sweeps: dict[int, list[Point]] = field(default_factory=dict)
    overload: Point | None = None
    iblike: Point | None = None
    latency: dict[str, dict[str, float]] = field(default_factory=dict)
    unary: dict[str, dict[str, float]] = field(default_factory=dict)

    def capacity_ratio(self, streams: int) -> float:
        gw, base = self.gateway.get(streams), self.baseline.get(streams)
        if gw is None or base is None or not base.quotes_per_s:
            return math.nan
        return gw.quotes_per_s / base.quotes_per_s

    def overload_ratio(self, streams: int) -> float:
        cap = self.gateway.get(streams)
        if self.overload is None or cap is None or not cap.quotes_per_s:
            return math.nan
        return self.overload.quotes_per_s / cap.quotes_per_s

    def unary_ratio(self, method: str, in_flight: int) -> float:
        gw = self.unary.get(f"gateway {method} {in_flight}")
        base = self.unary.get(f"baseline {method} {in_flight}")
        if not gw or not base or not base["calls_per_s"]:
            return math.nan
        return float(gw["calls_per_s"] / base["calls_per_s"])


def start_server(kind: str, args: argparse.Namespace) -> tuple[Child, str]:
    if kind == "gateway":
        extra = ["--rate", f"{args.rate:g}", *(["--no-gc-freeze"] if args.no_gc_tuning else [])]
        child = Child(
            "bench.gateway_server",
            "--instruments",
            str(args.contracts),
            *extra,
            *SERVER_CPU,
            name=kind,
        )
    else:
        child = Child(
            "bench.baseline_server", "--instruments", str(args.contracts), *SERVER_CPU, name=kind
        )
    hello = child.read(timeout=60)
    return child, str(hello["address"])


def start_drain(
    address: str,
    streams: int,
    contracts: list[str],
    send_window_ms: float | None = None,
    server: Child | None = None,
) -> Child:
    window = [] if send_window_ms is None else ["--send-window-ms", f"{send_window_ms:g}"]
    child = Child(
        "bench.drain",
        "--address",
        address,
        "--streams",
        str(streams),
        "--symbols",
        ",".join(contracts),
        *window,
        *CLIENT_CPU,
        name=f"drain-{streams}",
    )
    ready = child.read(timeout=300)
    if not ready.get("ready"):
        child.close("stop")
        tail = server._tail() if server is not None else ""
        raise RuntimeError(f"drain client did not start: {ready}{tail}")
    if ready.get("ended"):
        log(
            f"  ({ready['ended']} of {streams} streams were ended by the server while opening; "
            f"the others are measured; first trailer {ready['trailer']})"
        )
    return child


def run_unary(kind: str, address: str, args: argparse.Namespace, res: Results) -> None:
    for method in ("status", "quotes"):
        for in_flight in args.in_flight:
            child = Child(
                "bench.unary",
                "--address",
                address,
                "--method",
                method,
                "--in-flight",
                str(in_flight),
                "--seconds",
                f"{args.unary_seconds:g}",
                "--warmup",
                f"{min(1.0, args.warmup):g}",
                *CLIENT_CPU,
                name=f"unary-{method}",
            )
            try:
                result = child.read(timeout=60 + args.unary_seconds)
            finally:
                child.close("stop")
            if result["errors"]:
                raise RuntimeError(f"{kind} {method}: {result['errors']}")
            res.unary[f"{kind} {method} {in_flight}"] = result
            log(
                f"  {kind:8s} {method:6s} {in_flight:3d} in flight: "
                f"{result['calls_per_s']:7,.0f} calls/s, p50 {result['p50_ms']:.2f} ms, "
                f"p99 {result['p99_ms']:.2f} ms"
            )


def run_baseline(args: argparse.Namespace, res: Results, contracts: list[str]) -> None:
    server, address = start_server("baseline", args)
    try:
        for n in args.streams:
            drain = start_drain(address, n, contracts, server=server)
            try:
                time.sleep(args.warmup)
                point = median_point([measure(server, drain, args.duration) for _ in args.passes])
            finally:
                drain.close("stop")
            res.baseline[n] = point
            log(f"  baseline {n:5d} streams: {point.describe()}; {per_core(point)}")
        run_unary("baseline", address, args, res)
    finally:
        server.close()


def sweep(server: Child, drain: Child, n: int, args: argparse.Namespace, res: Results) -> Point:
    """The best delivered quotes/s over doubling source rates (stops once it falls)."""
    points: list[Point] = []
    rate = args.rate
    for _ in range(args.sweep_points):
        server.ask(f"market {rate:g} 0")
        time.sleep(args.warmup)
        point = measure(server, drain, args.duration, rate)
        points.append(point)
        log(f"  gateway  {n:5d} streams, source {rate:9,.0f}/s: {point.describe()}")
        best = max(points, key=lambda p: p.quotes_per_s)
        if point.quotes_per_s < 0.9 * best.quotes_per_s:
            break
        rate *= 2
    res.sweeps[n] = points
    best = max(points, key=lambda p: p.quotes_per_s)
    server.ask(f"market {best.rate:g} 0")
    time.sleep(args.warmup / 2)
    passes = [best] + [measure(server, drain, args.duration, best.rate) for _ in args.passes[1:]]
    return median_point(passes)


def run_gateway(args: argparse.Namespace, res: Results, contracts: list[str]) -> None:
    small, large = args.streams[0], args.streams[-1]
    server, address = start_server("gateway", args)
    try:
        for n in args.streams:
            # capacity: streams without a send window (they send whenever they can; at
            # the limit, conflation fills their messages). Streams open on a quiet market.
            server.ask(f"market {OPEN_RATE:g} 0")
            drain = start_drain(address, n, contracts, send_window_ms=0, server=server)
            try:
                cap = sweep(server, drain, n, args, res)
                res.gateway[n] = cap
                log(
                    f"  gateway  {n:5d} streams: capacity {cap.quotes_per_s:,.0f} quotes/s "
                    f"at source {cap.rate:,.0f}/s; {per_core(cap)}"
                )
                if n == small:
                    run_overload(server, drain, cap, n, args, res)
            finally:
                drain.close("stop")
            # IB-like feed and latency: streams with the default send window
            server.ask(f"market {OPEN_RATE:g} 0")
            drain = start_drain(address, n, contracts, server=server)
            try:
                if n == small:
                    res.iblike = run_iblike(server, drain, n, args, "default")
                if n == large:
                    run_latency(server, drain, res.gateway[n], n, args, res)
            finally:
                drain.close("stop")
            if n == small:
                for window in args.iblike_windows:  # what a longer window buys
                    server.ask(f"market {OPEN_RATE:g} 0")
                    drain = start_drain(address, n, contracts, window, server=server)
                    try:
                        run_iblike(server, drain, n, args, f"{window:g} ms")
                    finally:
                        drain.close("stop")
        run_unary("gateway", address, args, res)
    finally:
        server.close()


def run_overload(
    server: Child, drain: Child, cap: Point, n: int, args: argparse.Namespace, res: Results
) -> None:
    rate = 3 * cap.rate
    server.ask(f"market {rate:g} 0")
    time.sleep(args.warmup)
    res.overload = median_point([measure(server, drain, args.duration, rate) for _ in args.passes])
    log(f"  gateway  {n:5d} streams, 3x capacity's source: {res.overload.describe()}")


def run_iblike(server: Child, drain: Child, n: int, args: argparse.Namespace, window: str) -> Point:
    server.ask(f"market {args.iblike_rate:g} 1")
    time.sleep(args.warmup)
    points = [measure(server, drain, args.iblike_seconds, args.iblike_rate) for _ in args.passes]
    point = sorted(points, key=lambda p: p.server_cpu_pct)[(len(points) - 1) // 2]
    per_message = point.server_cpu_pct * 1e4 / point.messages_per_s if point.messages_per_s else 0
    log(
        f"  gateway  {n:5d} streams, IB-like feed ({args.iblike_rate:g} updates/s spread "
        f"out), send window {window}: {point.describe()}; {per_message:.0f} µs CPU per message"
    )
    return point


def run_latency(
    server: Child, drain: Child, cap: Point, n: int, args: argparse.Namespace, res: Results
) -> None:
    # every update reaches every stream below capacity: n × rate quotes/s delivered
    rate = max(100.0, cap.quotes_per_s / 2 / n)
    modes = ["tuned"] + ([] if args.quick or args.no_gc_tuning else ["untuned"])
    for mode in modes:
        server.ask(f"gc {mode}")
        server.ask(f"market {rate:g} 0")
        time.sleep(args.warmup)
        drain.ask("latency_reset")
        server.ask("lag")
        point = measure(server, drain, args.latency_seconds, rate)
        summary = drain.ask("latency")
        lag = server.ask("lag")
        summary["gc_full"] = point.gc_full
        summary["quotes_per_s"] = point.quotes_per_s
        summary["loop_late_p99_ms"] = lag["loop_late"]["p99_ms"]
        summary["gc_max_ms"] = max(lag[f"gc{g}"]["max_ms"] for g in range(3))
        res.latency[mode] = summary
        log(
            f"  gateway  {n:5d} streams, source {rate:,.0f}/s (half capacity), GC {mode}: "
            f"p50 {summary['p50_ms']:.2f} ms, p99 {summary['p99_ms']:.2f} ms, "
            f"p99.9 {summary['p99_9_ms']:.2f} ms, max {summary['max_ms']:.2f} ms "
            f"({summary['count']:,} sampled quotes; {point.quotes_per_s:,.0f} quotes/s, "
            f"{point.messages_per_s:,.0f} msgs/s, server CPU {point.server_cpu_pct:.0f}%)"
        )
        log(
            "           the loop ran a 5 ms timer late by p50 "
            f"{lag['loop_late']['p50_ms']:.1f} / p99 {lag['loop_late']['p99_ms']:.1f} / "
            f"max {lag['loop_late']['max_ms']:.1f} ms; garbage collections (count, longest): "
            + ", ".join(
                f"gen{g} {lag[f'gc{g}']['count']} ({lag[f'gc{g}']['max_ms']:.1f} ms)"
                for g in range(3)
            )
        )
    server.ask("gc tuned")


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
        "load": os.getloadavg()[0],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--contracts", type=int, help="contracts per stream (100)")
    parser.add_argument("--streams", help="the small and large stream counts (100,1000)")
    parser.add_argument("--rate", type=float, help="first source rate of the sweep (10000)")
    parser.add_argument("--sweep-points", type=int, help="source rates tried at most (6)")
    parser.add_argument("--warmup", type=float, help="seconds before each measurement (1.5)")
    parser.add_argument("--duration", type=float, help="seconds per measurement pass (2)")
    parser.add_argument("--passes", type=int, help="passes per figure, median (3)")
    parser.add_argument("--iblike-rate", type=float, help="IB-like updates/s in total (400)")
    parser.add_argument("--iblike-seconds", type=float, help="seconds per IB-like pass (4)")
    parser.add_argument("--latency-seconds", type=float, help="seconds of latency samples (5)")
    parser.add_argument("--unary-seconds", type=float, help="seconds per unary figure (3)")
    parser.add_argument(
        "--no-gc-tuning",
        action="store_true",
        help="run the gateway without its garbage-collector tuning (as before this issue)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args(argv)
    full = {
        "contracts": 100,
        "streams": "100,1000",
        "rate": 10_000.0,
        "sweep_points": 6,
        "warmup": 1.5,
        "duration": 2.0,
        "passes": 3,
        "iblike_rate": 400.0,
        "iblike_seconds": 4.0,
        "latency_seconds": 5.0,
        "unary_seconds": 3.0,
    }
    quick = {
        "contracts": 10,
        "streams": "4,20",
        "rate": 2_000.0,
        "sweep_points": 2,
        "warmup": 0.4,
        "duration": 0.6,
        "passes": 1,
        "iblike_rate": 100.0,
        "iblike_seconds": 0.6,
        "latency_seconds": 0.8,
        "unary_seconds": 0.6,
    }
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    counts = sorted({int(s) for s in str(args.streams).split(",") if s.strip()})
    args.streams = [counts[0], counts[-1]] if len(counts) > 1 else counts
    args.passes = list(range(max(1, args.passes)))
    args.in_flight = [1] if args.quick else [1, 64]
    args.iblike_windows = [] if args.quick else [25.0, 50.0]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if PINNED:
        os.sched_setaffinity(0, {1})  # the orchestrator shares the clients' CPU
    contracts = symbols(args.contracts)
    res = Results()
    info = machine()
    log(
        f"quote path benchmark: {args.contracts} contracts per stream, streams "
        f"{args.streams}; {info['nproc']} CPUs ({info['cpu']}), load {info['load']:.2f}, "
        f"Python {info['python']}, grpcio {info['grpcio']}, protobuf {info['protobuf']}; "
        + ("server on CPU 0, clients on CPU 1" if PINNED else "one CPU: nothing pinned")
        + ("; gateway without GC tuning" if args.no_gc_tuning else "")
    )
    log("bare grpc.aio server (pre-serialized messages, as fast as gRPC takes them):")
    run_baseline(args, res, contracts)
    log("gateway (simulator in the same process):")
    run_gateway(args, res, contracts)
    small, large = args.streams[0], args.streams[-1]
    for n in args.streams:
        gw, base = res.gateway.get(n), res.baseline.get(n)
        cpu_ratio = (
            (gw.quotes_per_s / gw.server_cpu_pct) / (base.quotes_per_s / base.server_cpu_pct)
            if gw and base and gw.server_cpu_pct and base.server_cpu_pct and base.quotes_per_s
            else math.nan
        )
        log(
            f"  capacity ratio gateway/bare at {n} streams: {res.capacity_ratio(n):.3f} "
            f"(per CPU-second: {cpu_ratio:.3f})"
        )
    for method in ("status", "quotes"):
        for in_flight in args.in_flight:
            log(
                f"  unary ratio {method} at {in_flight} in flight: "
                f"{res.unary_ratio(method, in_flight):.3f}"
            )
    unary = min(res.unary_ratio("status", 1), res.unary_ratio("quotes", 1))
    iblike_cpu = res.iblike.server_cpu_pct if res.iblike else math.nan
    p99 = res.latency.get("tuned", {}).get("p99_ms", math.nan)
    summary = {
        "capacity_ratio_100": res.capacity_ratio(small),
        "capacity_ratio_1000": res.capacity_ratio(large),
        "iblike_cpu_pct": iblike_cpu,
        "overload_ratio": res.overload_ratio(small),
        "p99_1000_ms": p99,
        "unary_ratio": unary,
    }
    if args.json is not None:
        payload = {
            "machine": info,
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "baseline": {n: asdict(p) for n, p in res.baseline.items()},
            "gateway": {n: asdict(p) for n, p in res.gateway.items()},
            "sweeps": {n: [asdict(p) for p in ps] for n, ps in res.sweeps.items()},
            "overload": asdict(res.overload) if res.overload else None,
            "iblike": asdict(res.iblike) if res.iblike else None,
            "latency": res.latency,
            "unary": res.unary,
            "summary": summary,
        }
        args.json.write_text(json.dumps(payload, indent=2))
    print(
        f"capacity_ratio_100={summary['capacity_ratio_100']:.3f} "
        f"capacity_ratio_1000={summary['capacity_ratio_1000']:.3f} "
        f"iblike_cpu_pct={summary['iblike_cpu_pct']:.1f} "
        f"overload_ratio={summary['overload_ratio']:.3f} "
        f"p99_1000_ms={summary['p99_1000_ms']:.2f} "
        f"unary_ratio={summary['unary_ratio']:.3f}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
