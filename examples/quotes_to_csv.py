"""Stream quotes to CSV (stdout or a file), one row per quote update.

    python examples/quotes_to_csv.py AAPL MSFT EUR.USD --count 100 > quotes.csv

The stream re-opens itself if the gateway restarts (a `# stream restarted` comment row
marks where quotes may have been missed); Ctrl-C ends it.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from typing import TextIO

from ibgateway.client import AsyncClient, Quote, StreamRestarted, contract_msg
from ibgateway.v1 import common_pb2

FIELDS = ["time", "symbol", "con_id", "bid", "ask", "last", "bid_size", "ask_size", "volume"]


def contract(text: str) -> common_pb2.Contract:
    """AAPL = a US stock; EUR.USD = a currency pair on IDEALPRO."""
    base, dot, quote = text.partition(".")
    if dot and len(base) == 3 and len(quote) == 3:
        return common_pb2.Contract(
            symbol=base, currency=quote, sec_type=common_pb2.SECURITY_TYPE_FOREX
        )
    return contract_msg(text)


async def main(args: argparse.Namespace, out: TextIO) -> int:
    writer = csv.writer(out)
    writer.writerow(FIELDS)
    rows = 0
    async with AsyncClient(args.address, token=args.token) as gw:
        async for item in gw.market_data.stream_quotes([contract(s) for s in args.symbols]):
            if isinstance(item, StreamRestarted):
                out.write(f"# stream restarted: {item.error}\n")
            elif isinstance(item, Quote):
                when = item.tick_time.isoformat() if item.tick_time else ""
                writer.writerow(
                    [
                        when,
                        item.symbol,
                        item.con_id,
                        item.bid,
                        item.ask,
                        item.last,
                        item.bid_size,
                        item.ask_size,
                        item.volume,
                    ]
                    # None (not quoted yet) is an empty cell; Decimals print exactly
                )
                out.flush()
                rows += 1
                if args.count and rows >= args.count:
                    return 0
            else:  # a subscription status or an IB connection change
                print(f"{type(item).__name__}: {item}".strip(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("symbols", nargs="+")
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--token", default=None)
    parser.add_argument("--count", type=int, default=0, help="stop after this many rows")
    try:
        sys.exit(asyncio.run(main(parser.parse_args(), sys.stdout)))
    except KeyboardInterrupt:
        sys.exit(130)
