"""ib_async's own reqHistoricalData (and util.df) against the simulator, from its venv."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.simulator.test_ib_async_compat import COMPAT_PYTHON, run_flow
from tws_simulator import TwsSimulator

SCRIPT = Path(__file__).with_name("ib_async_history.py")

pytestmark = pytest.mark.skipif(
    not COMPAT_PYTHON.exists(), reason="no .venv-compat: run `make compat` (make test does)"
)


async def test_ib_async_historical_bars_are_time_zone_aware(simulator: TwsSimulator) -> None:
    seen = await run_flow(simulator, SCRIPT)
    # two sessions of 15-minute bars: the previous trading day's 04:00-20:00, and today's
    assert seen["count"] >= 64
    assert seen["first_tz"] == "US/Eastern"
    assert seen["ascending"] and seen["ohlc_ok"]
    assert seen["rows"] == seen["count"]
    assert {"date", "open", "high", "low", "close", "volume", "average", "barCount"} <= set(
        seen["columns"]
    )
    assert seen["frame_tz"] == "US/Eastern"
    assert 18 <= seen["daily_count"] <= 25 and seen["daily_type"] == "date"
    # keepUpToDate: the forming bar is updated (historicalDataUpdate, message 90)
    assert seen["live_updates"] >= 1 and seen["live_tz"] == "US/Eastern"
    # a request the simulator does not implement fails at once (ib_async: not a warning)
    assert seen["unsupported"].startswith("RequestError: 503")
    assert seen["unsupported_seconds"] < 5
