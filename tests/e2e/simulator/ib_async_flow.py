"""The core client flow with ib_async, run by the compat venv's interpreter (not by pytest).

    .venv-compat/bin/python tests/e2e/simulator/ib_async_flow.py HOST PORT

Prints one JSON object with what the client saw; the test asserts on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

from ib_async import IB, Forex, Stock


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


async def main(host: str, port: int) -> dict[str, object]:
    recorder = Recorder()
    logging.getLogger("ib_async").addHandler(recorder)
    logging.getLogger("ib_async").setLevel(logging.INFO)
    ib = IB()
    await ib.connectAsync(host, port, clientId=11, timeout=5)
    try:
        aapl, eur = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"), Forex("EURUSD"))
        updates = 0

        def count(_ticker: object) -> None:
            nonlocal updates
            updates += 1

        ticker = ib.reqMktData(aapl)
        ticker.updateEvent += count
        for _ in range(250):
            if updates >= 5 and ticker.last == ticker.last:
                break
            await asyncio.sleep(0.02)
        [snapshot] = await ib.reqTickersAsync(eur)
        summary = await ib.accountSummaryAsync()
        values = {v.tag: v.value for v in ib.accountValues() if v.currency == "USD"}
        return {
            "server_version": ib.client.serverVersion(),
            "timed_out": [m for m in recorder.messages if "timed out" in m],
            "synced": "Synchronization complete" in recorder.messages,
            "accounts": ib.managedAccounts(),
            "con_ids": [aapl.conId, eur.conId],
            "primary": aapl.primaryExchange,
            "updates": updates,
            "bid": ticker.bid,
            "ask": ticker.ask,
            "last": ticker.last,
            "eur": [snapshot.bid, snapshot.ask],
            "summary_tags": sorted({v.tag for v in summary}),
            "net_liquidation": values.get("NetLiquidation"),
            "positions": [[p.contract.symbol, p.position, p.avgCost] for p in ib.positions()],
            "portfolio": [[i.contract.symbol, i.marketPrice] for i in ib.portfolio()],
        }
    finally:
        ib.disconnect()


if __name__ == "__main__":
    result = asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    print(json.dumps(result))
