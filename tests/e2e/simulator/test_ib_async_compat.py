"""The same core flow with the latest ib_async (API up to v178), from its own venv."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tws_simulator import TwsSimulator

ROOT = Path(__file__).resolve().parents[3]
COMPAT_PYTHON = ROOT / ".venv-compat" / "bin" / "python"
FLOW = Path(__file__).with_name("ib_async_flow.py")

pytestmark = pytest.mark.skipif(
    not COMPAT_PYTHON.exists(), reason="no .venv-compat: run `make compat` (make test does)"
)


async def run_flow(sim: TwsSimulator, script: Path = FLOW) -> dict:
    """Run one of the ib_async scripts next to this file in the compat venv; what it
    printed last, as JSON."""
    # The simulator keeps serving on this loop while the subprocess talks to it.
    proc = await asyncio.create_subprocess_exec(
        str(COMPAT_PYTHON),
        str(script),
        sim.host,
        str(sim.port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()[-3000:]
    sys.stderr.write(stderr.decode()[-2000:])
    return json.loads(stdout.decode().strip().splitlines()[-1])


@pytest.mark.sim_config(positions={"AAPL": (50, 180.0)})
async def test_ib_async_core_flow(simulator: TwsSimulator) -> None:
    seen = await run_flow(simulator)
    assert seen["server_version"] == 178
    assert seen["timed_out"] == [] and seen["synced"] is True
    assert seen["accounts"] == [simulator.account.account_id]
    assert seen["con_ids"] == [265598, 12087792]
    assert seen["primary"] == "NASDAQ"
    assert seen["updates"] >= 5
    assert 0 < seen["bid"] < seen["ask"] and seen["last"] > 0
    assert 0 < seen["eur"][0] < seen["eur"][1]
    assert {"NetLiquidation", "BuyingPower", "AvailableFunds"} <= set(seen["summary_tags"])
    assert float(seen["net_liquidation"]) > 1_000_000
    assert seen["positions"] == [["AAPL", 50.0, 180.0]]
    assert seen["portfolio"][0][0] == "AAPL" and seen["portfolio"][0][1] > 0


async def test_ib_async_reads_derivatives_and_depth(simulator: TwsSimulator) -> None:
    seen = await run_flow(simulator, FLOW.with_name("ib_async_derivatives.py"))
    assert seen["server_version"] == 178
    assert seen["chain"][:2] == ["AAPL", "100"] and seen["chain"][2] > 10
    con_id, multiplier, local = seen["option"]
    assert simulator.universe.by_con_id(con_id) is not None and multiplier == "100"
    assert local.startswith("AAPL  ") and "C00190000" in local
    assert 0 < seen["quote"][0] < seen["quote"][1]
    vol, delta, gamma, vega, theta, und = seen["model"]
    assert 0.05 < vol < 1 and 0 < delta < 1 and gamma > 0 and vega > 0 and theta < 0
    assert abs(und - simulator.market.quote(265598).midpoint) < 5
    assert seen["bid_vol"] is None or 0 < seen["bid_vol"] < 2
    assert seen["front"][0] == "CONTFUT" and seen["front"][1].startswith("ES")
    bids, asks = seen["depth"], seen["depth_asks"]
    assert len(bids) == len(asks) == 5 and all(mm for _, _, mm in bids)
    assert [p for p, _, _ in bids] == sorted((p for p, _, _ in bids), reverse=True)
    assert bids[0][0] < asks[0][0]
