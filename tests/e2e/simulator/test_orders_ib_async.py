"""The order flow with the latest ib_async, which negotiates server version 178 (the
openOrder/completedOrder layouts without faProfile, execDetails with
pendingPriceRevision). ib_async runs from its own venv, as in test_ib_async_compat."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tws_simulator import TwsSimulator

from .test_orders import FROZEN

COMPAT_PYTHON = Path(__file__).resolve().parents[3] / ".venv-compat" / "bin" / "python"

pytestmark = [
    pytest.mark.sim_config(**FROZEN),
    pytest.mark.skipif(
        not COMPAT_PYTHON.exists(), reason="no .venv-compat: run `make compat` (make test does)"
    ),
]

FLOW = r"""
import asyncio, json, sys
from ib_async import IB, LimitOrder, MarketOrder, Order, Stock

async def until(predicate, within=5.0):
    for _ in range(int(within / 0.01)):
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return False

async def main(host, port):
    out = {}
    ib = IB()
    await ib.connectAsync(host, port, clientId=1, timeout=5)
    out["version"] = ib.client.serverVersion()
    errors = []
    ib.errorEvent += lambda req_id, code, msg, contract: errors.append([req_id, code, msg])
    [aapl] = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))

    mkt = ib.placeOrder(aapl, MarketOrder("BUY", 100, orderRef="async-mkt"))
    await until(lambda: mkt.isDone() and mkt.fills and mkt.fills[0].commissionReport.execId)
    fill = mkt.fills[0]
    out["mkt"] = [mkt.orderStatus.status, fill.execution.shares, fill.execution.price,
                  fill.execution.orderRef, fill.commissionReport.commission,
                  [entry.status for entry in mkt.log]]

    ticker_price = fill.execution.price
    resting_order = LimitOrder("BUY", 10, round(ticker_price - 5, 2), orderRef="async-lmt")
    resting = ib.placeOrder(aapl, resting_order)
    await until(lambda: resting.orderStatus.status == "Submitted")
    resting_order.lmtPrice = round(ticker_price - 4, 2)
    ib.placeOrder(aapl, resting_order)
    await until(lambda: any(e.message == "Modified" for e in resting.log))
    trail = ib.placeOrder(aapl, Order(action="SELL", totalQuantity=10, orderType="TRAIL",
                                      auxPrice=2.0, orderRef="async-trail"))
    await until(lambda: trail.orderStatus.status == "PreSubmitted")

    other = IB()
    await other.connectAsync(host, port, clientId=2, timeout=5)
    seen = await other.reqAllOpenOrdersAsync()
    out["open"] = sorted([t.order.orderRef, t.order.lmtPrice, t.order.auxPrice,
                          t.orderStatus.status] for t in seen)
    out["modified_price"] = resting_order.lmtPrice

    ib.cancelOrder(resting_order)
    ib.cancelOrder(trail.order)
    await until(lambda: resting.isDone() and trail.isDone())
    out["cancelled"] = [resting.orderStatus.status, trail.orderStatus.status]

    state = await ib.whatIfOrderAsync(aapl, MarketOrder("BUY", 100))
    out["what_if"] = [float(state.initMarginChange), state.commission]

    bad = ib.placeOrder(Stock("ZZZZ", "SMART", "USD"), MarketOrder("BUY", 1))
    off_tick = ib.placeOrder(aapl, LimitOrder("BUY", 1, 100.005))
    await until(lambda: {200, 110} <= {code for _, code, _ in errors})
    out["errors"] = sorted(code for req_id, code, _ in errors
                           if req_id in (bad.order.orderId, off_tick.order.orderId))

    completed = await other.reqCompletedOrdersAsync(apiOnly=True)
    out["completed"] = [[t.order.orderRef, t.orderStatus.status] for t in completed]
    fills = await other.reqExecutionsAsync()
    out["executions"] = [[f.execution.orderRef, f.execution.shares] for f in fills]
    ib.disconnect()
    other.disconnect()
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def run_flow(sim: TwsSimulator) -> dict[str, Any]:
    # The simulator keeps serving on this loop while the subprocess talks to it.
    proc = await asyncio.create_subprocess_exec(
        str(COMPAT_PYTHON),
        "-c",
        FLOW,
        sim.host,
        str(sim.port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()[-3000:]
    result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    return result


async def test_ib_async_order_flow_at_version_178(simulator: TwsSimulator) -> None:
    aapl = simulator.universe.by_symbol("AAPL")
    assert aapl is not None
    ask = simulator.market.quote(aapl.con_id).ask
    out = await run_flow(simulator)

    assert out["version"] == 178
    status, shares, price, ref, commission, log = out["mkt"]
    assert (status, shares, price, ref, commission) == ("Filled", 100, ask, "async-mkt", 1.0)
    assert log[0] == "PendingSubmit" and "Submitted" in log and log[-1] == "Filled"
    assert out["open"] == [
        ["async-lmt", out["modified_price"], 0.0, "Submitted"],
        ["async-trail", 0.0, 2.0, "PreSubmitted"],
    ]
    assert out["cancelled"] == ["Cancelled", "Cancelled"]
    assert out["what_if"] == [pytest.approx(0.25 * 100 * ask, abs=0.01), 1.0]
    assert out["errors"] == [110, 200]
    assert out["completed"] == [
        ["async-mkt", "Filled"],
        ["async-lmt", "Cancelled"],
        ["async-trail", "Cancelled"],
    ]
    assert out["executions"] == [["async-mkt", 100]]
