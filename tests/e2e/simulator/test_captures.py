"""The messages the simulator sends, compared field by field with recordings of a real TWS.

Values that depend on the account or the moment (ids, amounts, dates) are compared by
shape; everything else — message id, version field, number and order of fields, unset
conventions — must be identical.
"""

from __future__ import annotations

import re

import pytest

from tws_simulator import TwsSimulator

from .helpers import RawClient, capture

ACCOUNT_ID = re.compile(r"^DU\d{7}$")
DECIMAL = re.compile(r"^-?\d+(\.\d+)?$")


def assert_same_layout(
    ours: list[str], theirs: list[str], variable: dict[int, re.Pattern[str]]
) -> None:
    """Same length; every field equal except those listed, which must match their pattern."""
    assert len(ours) == len(theirs), f"{len(ours)} fields, the capture has {len(theirs)}:\n{ours}"
    for i, (mine, real) in enumerate(zip(ours, theirs, strict=True)):
        if i in variable:
            assert variable[i].match(mine), f"field {i}: {mine!r} !~ {variable[i].pattern}"
        else:
            assert mine == real, f"field {i}: {mine!r} != {real!r} (capture)"


@pytest.fixture
async def raw(simulator: TwsSimulator):
    client = await RawClient.connect(simulator.host, simulator.port, client_id=None)
    yield client
    await client.close()


async def test_connect_messages_match_the_captures(raw: RawClient) -> None:
    await raw.start_api(1)
    managed = await raw.expect("15")
    assert_same_layout(managed, capture("managed_accounts.txt"), {2: ACCOUNT_ID})
    next_id = await raw.expect("9")
    assert_same_layout(next_id, capture("next_valid_id.txt"), {2: re.compile(r"^\d+$")})
    farm = await raw.expect("4", lambda f: f[3] == "2104")
    assert_same_layout(
        farm,
        capture("error_2104_data_farm_ok.txt"),
        {4: re.compile("^Market data farm connection is OK:")},
    )


async def test_account_summary_row_matches_the_capture(raw: RawClient) -> None:
    await raw.start_api(1)
    await raw.send(62, 1, 10001, "All", "NetLiquidation")
    row = await raw.expect("63")
    assert_same_layout(
        row, capture("account_summary_net_liquidation.txt"), {3: ACCOUNT_ID, 5: DECIMAL}
    )
    assert (await raw.expect("64")) == ["64", "1", "10001"]


@pytest.mark.sim_config(positions={"EUR.USD": (0, 0.0)})
async def test_position_matches_the_eurusd_capture(raw: RawClient) -> None:
    await raw.start_api(1)
    await raw.send(61, 1)
    position = await raw.expect("61")
    assert_same_layout(position, capture("position_eurusd.txt"), {2: ACCOUNT_ID})
    assert (await raw.expect("62")) == ["62", "1"]


@pytest.mark.sim_config(positions={"AAPL": (1.24115341, 37950.0114333)})
async def test_position_with_fractional_quantity_matches_the_btc_capture_layout(
    raw: RawClient,
) -> None:
    await raw.start_api(1)
    await raw.send(61, 1)
    position = await raw.expect("61")
    real = capture("position_btc.txt")
    # Same layout; the contract fields naturally differ (AAPL is not BTC).
    assert len(position) == len(real)
    assert position[:2] == real[:2] == ["61", "3"]
    assert position[7:12] == real[7:12]  # strike "0.0", right, multiplier, exchange all unset
    assert position[-2:] == ["1.24115341", "37950.0114333"]


def _contract_details_variable() -> dict[int, re.Pattern[str]]:
    hours = re.compile(r"^(;\d{8}:\d{4}-\d{8}:\d{4})+$")
    return {1: re.compile(r"^\d+$"), 26: hours, 27: hours}


async def test_contract_details_match_the_eurusd_capture(raw: RawClient) -> None:
    await raw.start_api(1)
    await raw.send(
        9, 8, 10000, 0, "EUR", "CASH", "", 0.0, "", "", "IDEALPRO", "", "USD", "", "", 0, "", ""
    )
    details = await raw.expect("10")
    assert_same_layout(
        details, capture("contract_details_eurusd.txt"), _contract_details_variable()
    )
    assert (await raw.expect("52")) == ["52", "1", "10000"]


async def test_stock_contract_details_have_the_same_layout(raw: RawClient) -> None:
    await raw.start_api(1)
    await raw.send(
        9, 8, 7, 0, "AAPL", "STK", "", 0.0, "", "", "SMART", "", "USD", "", "", 0, "", ""
    )
    details = await raw.expect("10")
    real = capture("contract_details_eurusd.txt")
    # One security id (ISIN) adds two fields after numSecIds.
    assert len(details) == len(real) + 2
    assert details[:14] == [
        "10",
        "7",
        "AAPL",
        "STK",
        "",
        "0",
        "",
        "SMART",
        "USD",
        "AAPL",
        "NMS",
        "NMS",
        "265598",
        "0.01",
    ]
    assert details[19:21] == ["APPLE INC", "NASDAQ"]
    assert details[30:33] == ["1", "ISIN", "US0378331005"]
    assert details[-3:] == ["0.0001", "0.0001", "100"]


async def test_tick_by_tick_bid_ask_matches_the_capture(raw: RawClient) -> None:
    await raw.start_api(1)
    await raw.send(
        97,
        10002,
        12087792,
        "EUR",
        "CASH",
        "",
        0.0,
        "",
        "",
        "IDEALPRO",
        "",
        "USD",
        "",
        "",
        "BidAsk",
        0,
        0,
    )
    tick = await raw.expect("99")
    price = re.compile(r"^1\.\d{1,5}$")
    size = re.compile(r"^\d+$")
    for name in ("tick_by_tick_bid_ask_1.txt", "tick_by_tick_bid_ask_2.txt"):
        assert_same_layout(
            tick, capture(name), {3: re.compile(r"^\d{10}$"), 4: price, 5: price, 6: size, 7: size}
        )
    assert float(tick[4]) < float(tick[5])
