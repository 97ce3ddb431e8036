"""Follow order events as they happen, one line each. The stream resumes after the last
event it printed when the connection breaks; `--after SEQ --epoch EPOCH` starts after an
event printed earlier (e.g. by a previous run), so nothing is missed in between.

    python examples/follow_order_events.py
    python examples/follow_order_events.py --after 41 --epoch 20261121T042338Z-3f9a1c2b
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from ibgateway.client import AsyncClient, OrderEvent, StreamRestarted
from ibgateway.v1 import orders_pb2


async def main(args: argparse.Namespace) -> int:
    seen = 0
    async with AsyncClient(args.address, token=args.token) as gw:
        events = gw.orders.events(after_sequence=args.after, epoch=args.epoch)
        async for item in events:
            if isinstance(item, OrderEvent):
                o = item.order
                fill = f" {item.fill.quantity}@{item.fill.price}" if item.fill else ""
                print(
                    f"{item.epoch} {item.sequence} {item.type} {o.client_order_id} "
                    f"{o.side} {o.quantity} {o.symbol} {o.status}{fill}",
                    flush=True,
                )
                seen += 1
                if args.count and seen >= args.count:
                    return 0
            elif isinstance(item, orders_pb2.ReplayGap):
                print(
                    f"# gap: events before {item.first_available_sequence} are gone; "
                    "re-sync with ListOrders",
                    flush=True,
                )
            elif isinstance(item, StreamRestarted):
                print(f"# resumed after: {item.error}", flush=True)
            else:
                print(f"# IB connection: {item.message}", flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--after", type=int, default=0, help="resume after this sequence")
    parser.add_argument("--epoch", default="", help="the epoch of --after")
    parser.add_argument("--count", type=int, default=0, help="stop after this many events")
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--token", default=None)
    try:
        sys.exit(asyncio.run(main(parser.parse_args())))
    except KeyboardInterrupt:
        sys.exit(130)
