"""ib_async's own reqHistoricalData against the simulator, run by the compat venv's
interpreter (not by pytest):

    .venv-compat/bin/python tests/e2e/simulator/ib_async_history.py HOST PORT

Prints one JSON object with what the client saw; test_history_ib_async.py asserts on it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time

from ib_async import IB, Forex, Stock, util


async def main(host: str, port: int) -> dict[str, object]:
    ib = IB()
    ib.RaiseRequestErrors = True
    await ib.connectAsync(host, port, clientId=12, timeout=5)
    try:
        aapl, eur = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"), Forex("EURUSD"))
        bars = await ib.reqHistoricalDataAsync(aapl, "", "2 D", "15 mins", "TRADES", False)
        frame = util.df(bars)
        daily = await ib.reqHistoricalDataAsync(eur, "", "1 M", "1 day", "MIDPOINT", True)
        live = await ib.reqHistoricalDataAsync(
            aapl, "", "60 S", "5 secs", "MIDPOINT", False, keepUpToDate=True
        )
        updates: list[bool] = []
        live.updateEvent += lambda _bars, new_bar: updates.append(new_bar)
        for _ in range(60):
            if updates:
                break
            await asyncio.sleep(0.05)
        ib.cancelHistoricalData(live)
        started = time.monotonic()
        unsupported = ""
        try:
            await asyncio.wait_for(ib.reqFundamentalDataAsync(aapl, "ReportSnapshot"), 10)
        except TimeoutError:
            unsupported = "timeout"
        except Exception as exc:  # RequestError: the call failed at once, as it should
            unsupported = f"{type(exc).__name__}: {getattr(exc, 'code', '')}"
        return {
            "count": len(bars),
            "first_tz": str(bars[0].date.tzinfo) if bars else "",
            "ascending": all(a.date < b.date for a, b in itertools.pairwise(bars)),
            "columns": list(frame.columns) if frame is not None else [],
            "rows": len(frame) if frame is not None else 0,
            "frame_tz": str(frame["date"].dt.tz) if frame is not None else "",
            "ohlc_ok": all(
                b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high for b in bars
            ),
            "daily_count": len(daily),
            "daily_type": type(daily[0].date).__name__ if daily else "",
            "live_updates": len(updates),
            "live_tz": str(live[-1].date.tzinfo) if live else "",
            "unsupported": unsupported,
            "unsupported_seconds": time.monotonic() - started,
        }
    finally:
        ib.disconnect()


if __name__ == "__main__":
    result = asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    print(json.dumps(result))
