"""Options, futures and depth with ib_async (API up to v178), run by the compat venv.

    .venv-compat/bin/python tests/e2e/simulator/ib_async_derivatives.py HOST PORT

Prints one JSON object with what the client saw; the test asserts on it.
"""

from __future__ import annotations

import asyncio
import json
import sys

from ib_async import IB, ContFuture, Option, Stock


async def main(host: str, port: int) -> dict[str, object]:
    ib = IB()
    await ib.connectAsync(host, port, clientId=12, timeout=5)
    try:
        [aapl] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
        chains = await ib.reqSecDefOptParamsAsync("AAPL", "", "STK", aapl.conId)
        smart = next(c for c in chains if c.exchange == "SMART")
        expiry = sorted(smart.expirations)[-1]
        [option] = await ib.qualifyContractsAsync(Option("AAPL", expiry, 190, "C", "SMART"))
        [ticker] = await ib.reqTickersAsync(option)
        model = ticker.modelGreeks
        [front] = await ib.reqContractDetailsAsync(ContFuture("ES", "CME"))
        depth = ib.reqMktDepth(aapl, numRows=5, isSmartDepth=True)
        await asyncio.sleep(0.5)
        return {
            "server_version": ib.client.serverVersion(),
            "chain": [smart.tradingClass, smart.multiplier, len(smart.strikes)],
            "option": [option.conId, option.multiplier, option.localSymbol],
            "quote": [ticker.bid, ticker.ask],
            "model": [
                model.impliedVol,
                model.delta,
                model.gamma,
                model.vega,
                model.theta,
                model.undPrice,
            ]
            if model
            else None,
            "bid_vol": ticker.bidGreeks.impliedVol if ticker.bidGreeks else None,
            "front": [front.contract.secType, front.contract.localSymbol]
            if front.contract
            else None,
            "depth": [[lv.price, lv.size, lv.marketMaker] for lv in depth.domBids],
            "depth_asks": [[lv.price, lv.size] for lv in depth.domAsks],
        }
    finally:
        ib.disconnect()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], int(sys.argv[2])))))
