"""A seconds-long run of the quote path benchmark (``make bench`` is the full one): the
same processes and phases (bare server and gateway, the raw HTTP/2 drain client, the
source-rate sweep, overload, IB-like feed, latency, unary calls), few streams and
contracts. Checks the summary line's shape and that every figure was measured."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"(-?\d+\.\d+|nan)"
SUMMARY = re.compile(
    rf"^capacity_ratio_100={NUMBER} capacity_ratio_1000={NUMBER} iblike_cpu_pct={NUMBER} "
    rf"overload_ratio={NUMBER} p99_1000_ms={NUMBER} unary_ratio={NUMBER}$"
)


@pytest.mark.timeout(120)
def test_quick_benchmark_summary() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.quotes_fanout", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.strip().splitlines()
    match = SUMMARY.match(lines[-1])
    assert match, f"bad summary line: {lines[-1]!r}"
    values = [float(v) for v in match.groups()]
    assert all(math.isfinite(v) and v > 0 for v in values), lines[-1]
    iblike_cpu, p99 = values[2], values[4]
    assert iblike_cpu < 400 and p99 < 10_000  # percent of one core; milliseconds
    # Both servers were measured, with the drain client and the unary client.
    for text in ("baseline     4 streams", "gateway      4 streams", "IB-like feed", "p99"):
        assert text in run.stdout, run.stdout
    assert "baseline status   1 in flight" in run.stdout
    assert "gateway  quotes   1 in flight" in run.stdout
