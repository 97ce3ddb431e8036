"""Benchmark process: the TWS simulator alone, quoting ``--instruments`` instruments.

    python -m bench.scale_sim --instruments 20 --tick-interval 0.1

Prints ``{"port": ...}`` once listening; stops on ``quit`` or end of stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import logging

from bench.common import emit, serve_commands
from bench.gateway_server import make_simulator


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instruments", type=int, default=20)
    parser.add_argument("--tick-interval", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sim = make_simulator(args.instruments, args.tick_interval, args.seed)
    await sim.start()
    done = asyncio.Event()
    serve_commands(asyncio.get_running_loop(), lambda c: done.set(), on_eof=done.set)
    emit({"port": sim.port})
    await done.wait()
    await sim.stop()


if __name__ == "__main__":
    asyncio.run(main())
