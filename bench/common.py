"""Shared pieces of the quote fan-out benchmark: instruments, process figures, a tiny
line protocol between the orchestrator and its child processes, percentiles."""

from __future__ import annotations

import json
import math
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from tws_simulator.instruments import DEFAULT_INSTRUMENTS, Instrument

SYNTHETIC_CON_ID_BASE = 910_000_000


def instruments(count: int) -> tuple[Instrument, ...]:
    """The simulator's built-in instruments, topped up with synthetic US stocks to ``count``."""
    builtin = [i for i in DEFAULT_INSTRUMENTS if not i.is_cash]
    if count <= len(builtin):
        return tuple(builtin[:count])
    template = builtin[0]
    extra = [
        replace(
            template,
            con_id=SYNTHETIC_CON_ID_BASE + n,
            symbol=f"SYN{n:03d}",
            local_symbol=f"SYN{n:03d}",
            long_name=f"SYNTHETIC STOCK {n}",
            isin="",
            start_price=20.0 + 3.7 * n,
        )
        for n in range(count - len(builtin))
    ]
    return (*builtin, *extra)


def symbols(count: int) -> list[str]:
    return [i.symbol for i in instruments(count)]


def rss_kb(pid: int | None = None) -> int:
    """Resident set size of a process, in KiB (Linux /proc)."""
    path = f"/proc/{pid or os.getpid()}/status"
    with open(path) as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds() -> float:
    """CPU time (user + system) this process has used."""
    times = os.times()
    return times.user + times.system


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of already sorted values (nearest rank)."""
    if not sorted_values:
        return math.nan
    rank = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


def latency_summary(samples_ms: list[float]) -> dict[str, float]:
    values = sorted(samples_ms)
    return {
        "count": len(values),
        "p50_ms": percentile(values, 50),
        "p99_ms": percentile(values, 99),
        "p99_9_ms": percentile(values, 99.9),
        "max_ms": values[-1] if values else math.nan,
    }


def emit(payload: dict[str, Any]) -> None:
    """One JSON line to the orchestrator."""
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def serve_commands(
    loop: Any, handle: Callable[[str], None], *, on_eof: Callable[[], None] | None = None
) -> threading.Thread:
    """Read commands (one per line) from stdin in a thread; handle each on the loop."""

    def reader() -> None:
        for line in sys.stdin:
            command = line.strip()
            if command:
                loop.call_soon_threadsafe(handle, command)
        if on_eof is not None:
            loop.call_soon_threadsafe(on_eof)

    thread = threading.Thread(target=reader, name="commands", daemon=True)
    thread.start()
    return thread
