"""Print the account's balance and positions every few seconds, with exact values.

python examples/portfolio_monitor.py --interval 5
"""

from __future__ import annotations

import argparse
import sys
import time

from ibgateway.client import Client, GatewayError


def report(gw: Client, account_id: str) -> str:
    balance = gw.accounts.balance(account_id)
    lines = [
        f"{balance.account_id} net liquidation {balance.net_liquidation} {balance.currency}, "
        f"cash {balance.cash}, buying power {balance.buying_power}"
    ]
    for p in gw.portfolio.positions(account_id):
        lines.append(
            f"  {p.symbol:<10} {p.quantity:>10} @ {p.average_cost}  "
            f"value {p.market_value}  unrealized {p.unrealized_pnl}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--account", default="", help="default: the gateway's account")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--count", type=int, default=0, help="stop after this many reports")
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--token", default=None)
    args = parser.parse_args()
    done = 0
    with Client(args.address, token=args.token) as gw:
        while True:
            try:
                print(report(gw, args.account), flush=True)
            except GatewayError as err:
                # e.g. UNAVAILABLE while TWS reconnects: say so and keep watching
                print(f"unavailable: {err}", file=sys.stderr, flush=True)
            done += 1
            if args.count and done >= args.count:
                return 0
            try:
                time.sleep(args.interval)
            except KeyboardInterrupt:
                return 130


if __name__ == "__main__":
    sys.exit(main())
