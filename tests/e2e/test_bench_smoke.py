"""A seconds-long run of the quote fan-out benchmark (``make bench`` is the full one): the
same processes and phases, few streams and contracts. Checks the summary line's shape and
that the gateway used exactly one IB line per distinct contract."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(
    r"^fanout_ratio=(?P<ratio>\d+\.\d+) p99_added_ms=(?P<p99>-?\d+\.\d+) "
    r"lines=(?P<lines>\d+) stalled_rss_growth_pct=(?P<rss>-?\d+\.\d+)$"
)


@pytest.mark.timeout(120)
def test_quick_benchmark_summary() -> None:
    contracts = 6
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.quotes_fanout",
            "--quick",
            "--contracts",
            str(contracts),
            "--streams",
            "1,4",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.strip().splitlines()
    match = SUMMARY.match(lines[-1])
    assert match, f"bad summary line: {lines[-1]!r}"
    assert int(match["lines"]) == contracts
    # Everything was measured: throughput for both servers, latency, RSS.
    assert float(match["ratio"]) > 0
    assert "baseline     4 streams" in run.stdout and "gateway      4 streams" in run.stdout
    assert "p99" in run.stdout and "RSS" in run.stdout
