"""Place one limit order safely: the client_order_id is chosen once, and every retry
(after a timeout or a lost gateway) sends the same one, so the order is placed at most
once. Prints the order as TWS has it; `--cancel` cancels it afterwards.

    python examples/limit_order_with_retry.py AAPL BUY 10 150.25 --key demo-0001
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from decimal import Decimal

import grpc

from ibgateway.client import Client, GatewayError, Order

# worth another try with the same key; anything else (a rejected or invalid order) is not
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


def place_with_retry(
    gw: Client, key: str, symbol: str, side: str, qty: Decimal, price: Decimal, attempts: int
) -> Order:
    for attempt in range(1, attempts + 1):
        try:
            return gw.orders.place(key, symbol, side, qty, limit_price=price)
        except GatewayError as err:
            if err.code not in RETRYABLE or attempt == attempts:
                raise
            delay = err.retry_delay or min(2.0, 0.25 * 2**attempt)
            print(f"attempt {attempt}: {err}; retrying in {delay:.2f}s", file=sys.stderr)
            time.sleep(delay)
    raise AssertionError("unreachable")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("symbol")
    parser.add_argument("side", choices=["BUY", "SELL"])
    parser.add_argument("quantity", type=Decimal)
    parser.add_argument("limit_price", type=Decimal)
    parser.add_argument("--key", default=None, help="client_order_id (default: a new one)")
    parser.add_argument("--attempts", type=int, default=5)
    parser.add_argument("--cancel", action="store_true", help="cancel it afterwards")
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--token", default=None)
    args = parser.parse_args()
    key = args.key or f"example-{uuid.uuid4().hex[:12]}"
    with Client(args.address, token=args.token) as gw:
        try:
            order = place_with_retry(
                gw, key, args.symbol, args.side, args.quantity, args.limit_price, args.attempts
            )
        except GatewayError as err:
            print(f"refused: {err}", file=sys.stderr)
            for v in err.field_violations:
                print(f"  {v.field}: {v.description}", file=sys.stderr)
            return 1
        print(
            f"{order.client_order_id} order {order.order_id}: {order.side} {order.quantity} "
            f"{order.symbol} LMT {order.limit_price} {order.status}"
            + (" (replayed: placed before with this key)" if order.replayed else "")
        )
        if args.cancel:
            cancelled = gw.orders.cancel(key)
            print(f"{cancelled.client_order_id} {cancelled.status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
