"""The order codec against real TWS captures and against what real clients send and read.

* Encoders are compared field by field with the recorded TWS messages.
* placeOrder decoding is fed the exact bytes ib_insync's own ``Client.placeOrder`` writes
  for every server version it negotiates (157..176), and messages recorded from
  ib_async 2.1 at versions 177 and 178 (which ib_insync cannot speak).
* Encoded messages are read back with ib_insync's own ``Decoder`` to prove the layouts
  line up for every version (values land in the right attributes).
"""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from ib_insync import (
    ComboLeg,
    Contract,
    Forex,
    LimitOrder,
    MarketOrder,
    Order,
    OrderComboLeg,
    PriceCondition,
    Stock,
    StopLimitOrder,
    StopOrder,
    TagValue,
    TimeCondition,
)
from ib_insync.client import Client
from ib_insync.decoder import Decoder

from tws_simulator.order_codec import (
    ContractFields,
    DecodeError,
    ExecutionFields,
    OrderRequest,
    WhatIfState,
    decode_cancel_order,
    decode_place_order,
    decode_req_executions,
    encode_commission_report,
    encode_completed_order,
    encode_completed_orders_end,
    encode_exec_details,
    encode_exec_details_end,
    encode_open_order,
    encode_open_order_end,
    encode_order_status,
)

CAPTURES = Path(__file__).resolve().parents[3] / "shared" / "reference" / "tws-captures"
if not CAPTURES.is_dir():  # the captures live next to the repository in this workspace
    CAPTURES = Path("/work/shared/reference/tws-captures")


def capture(name: str) -> list[str]:
    """A recorded message as its list of fields (the text spells NULs as \\x00)."""
    text = (CAPTURES / name).read_text().strip()
    parts = text.split("\\x00")
    assert parts[-1] == "", "every field is NUL-terminated"
    return parts[:-1]


def assert_same_fields(ours: list[str], theirs: list[str]) -> None:
    diffs = [(i, a, b) for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b]
    assert not diffs, f"fields differ (index, ours, TWS): {diffs}"
    assert len(ours) == len(theirs)


# --------------------------------------------------------------------------- captures

SPY = ContractFields(
    con_id=756733,
    symbol="SPY",
    sec_type="STK",
    exchange="SMART",
    currency="USD",
    local_symbol="SPY",
    trading_class="SPY",
)
EURUSD = ContractFields(
    con_id=12087792,
    symbol="EUR",
    sec_type="CASH",
    exchange="IDEALPRO",
    currency="USD",
    local_symbol="EUR.USD",
    trading_class="EUR.USD",
)


def spy_mkt_order() -> OrderRequest:
    """The order behind the open_order_spy_mkt capture, as its client sent it."""
    order = OrderRequest(order_id=190, contract=decode_contract_stub())
    order.action = "BUY"
    order.total_quantity = Decimal(1000)
    order.order_type = "MKT"
    order.tif = "IOC"
    order.account = "DU1234567"
    order.order_ref = "O-20231203-1921-001-000-2:190"
    return order


def decode_contract_stub() -> Any:
    from tws_simulator.order_codec import ContractSpec

    return ContractSpec(symbol="SPY", sec_type="STK", exchange="SMART", currency="USD")


def test_open_order_matches_the_capture_field_by_field() -> None:
    ours = encode_open_order(
        176,
        spy_mkt_order(),
        SPY,
        client_id=2,
        perm_id=1351823328,
        status="PendingCancel",
    )
    theirs = capture("open_order_spy_mkt.txt")
    assert len(theirs) == 136
    assert_same_fields(ours, theirs)


@pytest.mark.parametrize(
    ("version", "count"),
    [
        (157, 128),
        (158, 129),
        (160, 130),
        (162, 131),
        (170, 136),
        (176, 136),
        (177, 135),
        (178, 135),
    ],
)
def test_open_order_field_count_follows_the_version(version: int, count: int) -> None:
    fields = encode_open_order(
        version, spy_mkt_order(), SPY, client_id=2, perm_id=1, status="Submitted"
    )
    assert len(fields) == count


def test_order_status_matches_the_capture() -> None:
    ours = encode_order_status(
        order_id=216,
        status="Filled",
        filled=Decimal(3000),
        remaining=Decimal(0),
        avg_fill_price=1.08725,
        perm_id=1351823369,
        parent_id=0,
        last_fill_price=1.08725,
        client_id=2,
    )
    assert_same_fields(ours, capture("order_status_filled.txt"))


def eurusd_execution() -> ExecutionFields:
    return ExecutionFields(
        exec_id="0000e215.656d0000.01.01",
        time="20231203 20:15:20 US/Eastern",
        account="DU5524716",
        exchange="IDEALPRO",
        side="BOT",
        shares=Decimal(1000),
        price=1.08735,
        perm_id=1351823368,
        client_id=2,
        order_id=215,
        cum_qty=Decimal(1000),
        avg_price=1.08735,
        order_ref="O-20231204-0115-001-000-3:215",
        last_liquidity=2,
    )


def test_exec_details_matches_the_capture() -> None:
    ours = encode_exec_details(176, -1, EURUSD, eurusd_execution())
    assert_same_fields(ours, capture("execution_details_eurusd.txt"))


def test_exec_details_gains_pending_price_revision_at_178() -> None:
    ours = encode_exec_details(178, -1, EURUSD, eurusd_execution())
    assert ours[:-1] == capture("execution_details_eurusd.txt")
    assert ours[-1] == "0"


def test_commission_report_matches_the_capture() -> None:
    ours = encode_commission_report("0000e215.656d0002.01.01", 2.5, "USD", None)
    assert_same_fields(ours, capture("commission_report.txt"))


def test_end_markers() -> None:
    assert encode_open_order_end() == ["53", "1"]
    assert encode_exec_details_end(7) == ["55", "1", "7"]
    assert encode_completed_orders_end() == ["102"]


# --------------------------------------------------------------------------- placeOrder


def ib_insync_place_order(version: int, contract: Contract, order: Order) -> list[str]:
    """The fields ib_insync's real Client writes for placeOrder at ``version``."""
    client = Client(None)
    client.connState = Client.CONNECTED
    client._serverVersion = version
    sent: list[str] = []
    client.sendMsg = sent.append  # type: ignore[method-assign,assignment]
    client.placeOrder(7, contract, order)
    (msg,) = sent
    fields = msg.split("\0")
    assert fields[-1] == "" and fields[0] == "3"
    return fields[1:-1]


def sample_orders() -> dict[str, tuple[Contract, Order]]:
    aapl = Stock("AAPL", "SMART", "USD")
    conditional = LimitOrder("BUY", 1, 100.0)
    conditional.conditions = [
        PriceCondition(price=101.0, conId=265598, exch="SMART"),
        TimeCondition(time="20300101 10:00:00 US/Eastern"),
    ]
    bag = Contract(
        secType="BAG",
        symbol="AAPL",
        exchange="SMART",
        currency="USD",
        comboLegs=[
            ComboLeg(conId=1, ratio=1, action="BUY", exchange="SMART"),
            ComboLeg(conId=2, ratio=1, action="SELL", exchange="SMART"),
        ],
    )
    bag_order = LimitOrder("BUY", 1, 1.0)
    bag_order.orderComboLegs = [OrderComboLeg(price=1.0)]
    bag_order.smartComboRoutingParams = [TagValue("NonGuaranteed", "1")]
    return {
        "mkt": (aapl, MarketOrder("BUY", 100, orderRef="key-1", account="DU123")),
        "lmt": (aapl, LimitOrder("SELL", 25, 187.25, tif="GTC", outsideRth=True)),
        "stp": (aapl, StopOrder("SELL", 10, 150.0)),
        "stplmt": (aapl, StopLimitOrder("BUY", 10, 151.0, 150.5)),
        "trail_pct": (
            aapl,
            Order(
                action="SELL",
                totalQuantity=5,
                orderType="TRAIL",
                trailingPercent=1.5,
                trailStopPrice=148.0,
            ),
        ),
        "trail_amt": (
            aapl,
            Order(action="SELL", totalQuantity=5, orderType="TRAIL", auxPrice=0.75),
        ),
        "fx": (Forex("EURUSD"), MarketOrder("BUY", 20000, tif="IOC")),
        "conditions": (aapl, conditional),
        "algo": (
            aapl,
            LimitOrder(
                "BUY",
                1,
                100.0,
                algoStrategy="Adaptive",
                algoParams=[TagValue("adaptivePriority", "Normal")],
            ),
        ),
        "pegmid": (
            Stock("AAPL", "IBKRATS", "USD"),
            Order(
                action="BUY",
                totalQuantity=1,
                orderType="PEG MID",
                midOffsetAtWhole=0.01,
                midOffsetAtHalf=0.005,
            ),
        ),
        "pegbest": (
            aapl,
            Order(
                action="BUY",
                totalQuantity=1,
                orderType="PEG BEST",
                minCompeteSize=100,
                competeAgainstBestOffset=math.inf,
                midOffsetAtWhole=0.01,
                midOffsetAtHalf=0.005,
            ),
        ),
        "bag": (bag, bag_order),
        "exotic": (
            aapl,
            LimitOrder(
                "BUY",
                1,
                1.0,
                hedgeType="D",
                hedgeParam="0.5",
                deltaNeutralOrderType="MKT",
                scalePriceIncrement=0.05,
                scaleInitLevelSize=10,
            ),
        ),
        "whatif": (aapl, MarketOrder("BUY", 10, whatIf=True)),
    }


@pytest.mark.parametrize("version", range(157, 177))
@pytest.mark.parametrize("name", list(sample_orders()))
def test_decodes_every_ib_insync_place_order_exactly(version: int, name: str) -> None:
    contract, order = sample_orders()[name]
    fields = ib_insync_place_order(version, contract, order)
    # strict: every field ib_insync sent is consumed, none is missing.
    decoded = decode_place_order(fields, version, strict=True)
    assert decoded.order_id == 7
    assert decoded.action == order.action
    assert decoded.total_quantity == Decimal(str(order.totalQuantity))
    assert decoded.order_type == order.orderType


def test_decoded_values_of_a_limit_order() -> None:
    contract, order = sample_orders()["lmt"]
    o = decode_place_order(ib_insync_place_order(176, contract, order), 176, strict=True)
    assert (o.contract.symbol, o.contract.sec_type, o.contract.exchange) == ("AAPL", "STK", "SMART")
    assert o.contract.currency == "USD" and o.contract.con_id == 0
    assert o.lmt_price == 187.25 and o.aux_price is None
    assert o.tif == "GTC" and o.outside_rth and o.transmit
    assert o.total_quantity == Decimal(25)


def test_decoded_values_of_order_ref_account_and_what_if() -> None:
    contract, order = sample_orders()["mkt"]
    o = decode_place_order(ib_insync_place_order(176, contract, order), 176)
    assert o.order_ref == "key-1" and o.account == "DU123" and not o.what_if
    contract, order = sample_orders()["whatif"]
    assert decode_place_order(ib_insync_place_order(176, contract, order), 176).what_if


def test_decoded_values_of_trailing_orders() -> None:
    contract, order = sample_orders()["trail_pct"]
    o = decode_place_order(ib_insync_place_order(170, contract, order), 170, strict=True)
    assert o.order_type == "TRAIL" and o.trailing_percent == 1.5 and o.trail_stop_price == 148.0
    contract, order = sample_orders()["trail_amt"]
    o = decode_place_order(ib_insync_place_order(170, contract, order), 170, strict=True)
    assert o.aux_price == 0.75 and o.trailing_percent is None and o.trail_stop_price is None


def test_decoded_peg_best_reads_its_conditional_tail() -> None:
    contract, order = sample_orders()["pegbest"]
    o = decode_place_order(ib_insync_place_order(176, contract, order), 176, strict=True)
    assert o.min_compete_size == 100 and o.compete_against_best_offset == math.inf
    assert (o.mid_offset_at_whole, o.mid_offset_at_half) == (0.01, 0.005)


# Recorded from ib_async 2.1.0's Client.placeOrder (it offers versions up to 178).
IB_ASYNC_177_LMT = (
    "7|0|AAPL|STK||0.0|||SMART||USD|||||SELL|25.5|LMT|187.25||GTC|||O|0||1|0|0|0|0|0|1|0||0.0"
    "|||||||0||-1|0|||0|||0|0||0||||||0|||||0|||||||||||0|||0|0|||0||0|0|0|0|||||||0|||||||||"
    "0|0|0|0|||0||"
)
IB_ASYNC_178_TRAIL = (
    "7|0|AAPL|STK||0.0|||SMART||USD|||||SELL|5|TRAIL||||||O|0||1|0|0|0|0|0|0|0||0.0|||||||0||"
    "-1|0|||0|||0|0||0||||||0|||||0||148.0|1.5||||||||0|||0|0|||0||0|0|0|0|||||||0|||||||||0|"
    "0|0|0|||0||"
)
IB_ASYNC_178_PEG_BEST = (
    "7|0|AAPL|STK||0.0|||SMART||USD|||||BUY|1|PEG BEST||||||O|0||1|0|0|0|0|0|0|0||0.0|||||||0"
    "||-1|0|||0|||0|0||0||||||0|||||0|||||||||||0|||0|0|||0||0|0|0|0|||||||0|||||||||0|0|0|0|"
    "||0|||100|Infinite|0.01|0.005"
)


@pytest.mark.parametrize(
    ("version", "message"),
    [(177, IB_ASYNC_177_LMT), (178, IB_ASYNC_178_TRAIL), (178, IB_ASYNC_178_PEG_BEST)],
)
def test_decodes_ib_async_place_orders_at_177_and_178(version: int, message: str) -> None:
    o = decode_place_order(message.split("|"), version, strict=True)
    assert o.order_id == 7 and o.contract.symbol == "AAPL"


def test_ib_async_178_values() -> None:
    o = decode_place_order(IB_ASYNC_178_TRAIL.split("|"), 178, strict=True)
    assert (o.order_type, o.trailing_percent, o.trail_stop_price) == ("TRAIL", 1.5, 148.0)
    o = decode_place_order(IB_ASYNC_177_LMT.split("|"), 177, strict=True)
    assert (o.lmt_price, o.total_quantity, o.tif) == (187.25, Decimal("25.5"), "GTC")
    # The same message is one field short for a version that still has faProfile.
    with pytest.raises(DecodeError):
        decode_place_order(IB_ASYNC_177_LMT.split("|"), 176)


def test_truncated_and_malformed_place_orders_are_decode_errors() -> None:
    contract, order = sample_orders()["lmt"]
    fields = ib_insync_place_order(176, contract, order)
    with pytest.raises(DecodeError):
        decode_place_order(fields[:40], 176)
    bad = list(fields)
    assert bad[15] == "SELL"
    bad[16] = "lots"  # totalQuantity
    with pytest.raises(DecodeError):
        decode_place_order(bad, 176)
    with pytest.raises(DecodeError):
        decode_place_order([*fields, "extra"], 176, strict=True)


def test_cancel_order_and_req_executions() -> None:
    assert decode_cancel_order(["1", "42", ""], 176).order_id == 42
    assert decode_cancel_order(["1", "42"], 157).order_id == 42
    req_id, flt = decode_req_executions(["3", "9", "2", "DU1", "", "AAPL", "STK", "", "BUY"])
    assert req_id == 9
    assert (flt.client_id, flt.account, flt.symbol, flt.sec_type, flt.side) == (
        2,
        "DU1",
        "AAPL",
        "STK",
        "BUY",
    )


# ------------------------------------------------------- read back by ib_insync's decoder


class RecordingWrapper:
    """Stands in for ib_insync's Wrapper: records what the Decoder hands over."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def record(*args: Any) -> None:
            self.calls.append((name, args))

        return record


def decode_with_ib_insync(version: int, fields: list[str]) -> tuple[str, tuple[Any, ...]]:
    wrapper = RecordingWrapper()
    decoder = Decoder(wrapper, version)  # type: ignore[arg-type]
    handler = decoder.handlers[int(fields[0])]
    handler(fields)
    assert len(wrapper.calls) == 1, wrapper.calls
    return wrapper.calls[0]


def trail_order() -> OrderRequest:
    contract, order = sample_orders()["trail_pct"]
    o = decode_place_order(ib_insync_place_order(176, contract, order), 176)
    o.order_ref = "idem-42"
    o.account = "DU1234567"
    o.duration = 30
    o.post_to_ats = 1
    o.auto_cancel_parent = True
    o.min_trade_qty = 5
    o.mid_offset_at_half = 0.25
    return o


@pytest.mark.parametrize("version", [157, 158, 160, 162, 166, 170, 176])
def test_ib_insync_reads_our_open_order(version: int) -> None:
    fields = encode_open_order(
        version,
        trail_order(),
        SPY,
        client_id=3,
        perm_id=987654,
        status="PreSubmitted",
        trail_stop_price=149.5,
    )
    name, (order_id, contract, order, state) = decode_with_ib_insync(version, fields)
    assert name == "openOrder" and order_id == 7 == order.orderId
    assert (contract.conId, contract.symbol, contract.secType) == (756733, "SPY", "STK")
    assert (contract.exchange, contract.localSymbol, contract.tradingClass) == (
        "SMART",
        "SPY",
        "SPY",
    )
    assert (order.action, order.totalQuantity, order.orderType) == ("SELL", 5.0, "TRAIL")
    assert (order.orderRef, order.account, order.clientId, order.permId) == (
        "idem-42",
        "DU1234567",
        3,
        987654,
    )
    assert order.trailingPercent == 1.5 and order.trailStopPrice == 149.5
    assert state.status == "PreSubmitted" and not order.whatIf
    # The version-dependent tail lands where ib_insync reads it (it reads duration from
    # 159 on, one version later than TWS sends it: at 158 it is left unread).
    if version >= 159:
        assert order.duration == 30
    if version >= 160:
        assert order.postToAts == 1
    if version >= 162:
        assert order.autoCancelParent is True
    if version >= 170:
        assert order.minTradeQty == 5 and order.midOffsetAtHalf == 0.25


def test_ib_insync_reads_a_what_if_answer() -> None:
    order = spy_mkt_order()
    order.what_if = True
    state = WhatIfState(
        init_margin_change="25000.0",
        maint_margin_change="25000.0",
        commission=5.0,
        commission_currency="USD",
    )
    fields = encode_open_order(
        176, order, SPY, client_id=1, perm_id=5, status="PreSubmitted", what_if=state
    )
    _, (_, _, decoded, st) = decode_with_ib_insync(176, fields)
    assert decoded.whatIf and st.initMarginChange == "25000.0" and st.commission == 5.0


@pytest.mark.parametrize("version", [157, 162, 170, 176])
def test_ib_insync_reads_our_completed_order(version: int) -> None:
    fields = encode_completed_order(
        version,
        trail_order(),
        SPY,
        perm_id=987654,
        status="Filled",
        filled_quantity=Decimal(5),
        completed_time="20240102 15:30:00 US/Eastern",
        completed_status="Filled",
    )
    name, (contract, order, state) = decode_with_ib_insync(version, fields)
    assert name == "completedOrder"
    assert contract.symbol == "SPY" and contract.conId == 756733
    assert (order.permId, order.orderRef, order.filledQuantity) == (987654, "idem-42", 5.0)
    assert (state.status, state.completedStatus) == ("Filled", "Filled")
    assert state.completedTime == "20240102 15:30:00 US/Eastern"
    assert order.autoCancelParent is True
    if version >= 170:
        assert order.minTradeQty == 5 and order.midOffsetAtHalf == 0.25


def test_ib_insync_reads_our_order_status_exec_details_and_commission() -> None:
    status = encode_order_status(
        order_id=9,
        status="Submitted",
        filled=Decimal(300),
        remaining=Decimal(700),
        avg_fill_price=189.51,
        perm_id=77,
        parent_id=0,
        last_fill_price=189.52,
        client_id=4,
    )
    name, args = decode_with_ib_insync(176, status)
    assert name == "orderStatus"
    assert args == (9, "Submitted", 300.0, 700.0, 189.51, 77, 0, 189.52, 4, "", 0.0)

    name, (req_id, contract, ex) = decode_with_ib_insync(
        176, encode_exec_details(176, 12, EURUSD, eurusd_execution())
    )
    assert name == "execDetails" and req_id == 12
    assert contract.localSymbol == "EUR.USD"
    assert (ex.execId, ex.side, ex.shares, ex.price, ex.permId) == (
        "0000e215.656d0000.01.01",
        "BOT",
        1000.0,
        1.08735,
        1351823368,
    )
    assert ex.time.isoformat() == "2023-12-04T01:15:20+00:00"

    name, (report,) = decode_with_ib_insync(
        176, encode_commission_report("0000e215.656d0000.01.01", 1.0, "USD", -12.5)
    )
    assert name == "commissionReport"
    assert (report.commission, report.realizedPNL, report.currency) == (1.0, -12.5, "USD")


# ------------------------------------------------------- ib_async (v177/v178), own venv

COMPAT_PYTHON = Path(__file__).resolve().parents[3] / ".venv-compat" / "bin" / "python"

# Runs under ib_async 2.x: records what its Client.placeOrder writes for every version it
# offers, and reads our encoded messages back with its Decoder.
IB_ASYNC_SCRIPT = r"""
import json, math, sys
from datetime import timezone
from ib_async import (ComboLeg, Contract, Forex, LimitOrder, MarketOrder, Order, OrderComboLeg,
                      PriceCondition, Stock, StopLimitOrder, StopOrder, TagValue, TimeCondition)
from ib_async.client import Client
from ib_async.decoder import Decoder

aapl = Stock("AAPL", "SMART", "USD")
cond = LimitOrder("BUY", 1, 100.0)
cond.conditions = [PriceCondition(price=101.0, conId=265598, exch="SMART"),
                   TimeCondition(time="20300101 10:00:00 US/Eastern")]
bag = Contract(secType="BAG", symbol="AAPL", exchange="SMART", currency="USD",
               comboLegs=[ComboLeg(conId=1, ratio=1, action="BUY", exchange="SMART")])
bag_order = LimitOrder("BUY", 1, 1.0)
bag_order.orderComboLegs = [OrderComboLeg(price=1.0)]
orders = {
    "mkt": (aapl, MarketOrder("BUY", 100, orderRef="key-1")),
    "lmt": (aapl, LimitOrder("SELL", 25.5, 187.25, tif="GTC", outsideRth=True)),
    "stp": (aapl, StopOrder("SELL", 10, 150.0)),
    "stplmt": (aapl, StopLimitOrder("BUY", 10, 151.0, 150.5)),
    "trail": (aapl, Order(action="SELL", totalQuantity=5, orderType="TRAIL",
                          trailingPercent=1.5, trailStopPrice=148.0)),
    "fx": (Forex("EURUSD"), MarketOrder("BUY", 20000, tif="IOC")),
    "conditions": (aapl, cond),
    "algo": (aapl, LimitOrder("BUY", 1, 100.0, algoStrategy="Adaptive",
                              algoParams=[TagValue("adaptivePriority", "Normal")])),
    "pegmid": (Stock("AAPL", "IBKRATS", "USD"), Order(action="BUY", totalQuantity=1,
               orderType="PEG MID", midOffsetAtWhole=0.01, midOffsetAtHalf=0.005)),
    "pegbest": (aapl, Order(action="BUY", totalQuantity=1, orderType="PEG BEST",
                minCompeteSize=100, competeAgainstBestOffset=math.inf,
                midOffsetAtWhole=0.01, midOffsetAtHalf=0.005)),
    "bag": (bag, bag_order),
}
sent = {}
for version in range(157, 179):
    for name, (contract, order) in orders.items():
        client = Client(None)
        client.connState = Client.CONNECTED
        client._serverVersion = version
        out = []
        client.sendMsg = out.append
        client.placeOrder(7, contract, order)
        sent[f"{version}:{name}"] = out[0].split("\0")[1:-1]

class Wrapper:
    defaultTimezone = timezone.utc
    def __init__(self):
        self.calls = []
    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args: self.calls.append((name, args))

read = {}
for key, fields in json.loads(sys.stdin.read()).items():
    version = int(key.split(":")[0])
    wrapper = Wrapper()
    Decoder(wrapper, version).handlers[int(fields[0])](fields)
    name, args = wrapper.calls[-1]
    if name == "openOrder":
        _, c, o, st = args
        read[key] = [c.symbol, o.orderRef, o.permId, o.clientId, o.trailStopPrice,
                     st.status, o.autoCancelParent, o.minTradeQty, o.midOffsetAtHalf]
    elif name == "completedOrder":
        c, o, st = args
        read[key] = [c.symbol, o.orderRef, o.permId, o.filledQuantity, st.completedStatus,
                     o.minTradeQty, o.midOffsetAtHalf]
    elif name == "execDetails":
        _, c, ex = args
        read[key] = [c.localSymbol, ex.execId, ex.shares, ex.price, ex.orderRef,
                     ex.lastLiquidity, getattr(ex, "pendingPriceRevision", None)]
print(json.dumps({"sent": sent, "read": read}))
"""


@pytest.fixture(scope="module")
def ib_async_results() -> dict[str, Any]:
    if not COMPAT_PYTHON.exists():
        pytest.skip("no .venv-compat with ib_async: run `make compat` (make test does)")
    import json
    import subprocess

    ours: dict[str, list[str]] = {}
    for version in (176, 177, 178):
        ours[f"{version}:open"] = encode_open_order(
            version,
            trail_order(),
            SPY,
            client_id=3,
            perm_id=99,
            status="Submitted",
            trail_stop_price=149.5,
        )
        ours[f"{version}:completed"] = encode_completed_order(
            version,
            trail_order(),
            SPY,
            perm_id=99,
            status="Filled",
            filled_quantity=Decimal(5),
            completed_time="20240102 15:30:00 US/Eastern",
            completed_status="Filled",
        )
        ours[f"{version}:exec"] = encode_exec_details(version, -1, EURUSD, eurusd_execution())
    done = subprocess.run(
        [str(COMPAT_PYTHON), "-c", IB_ASYNC_SCRIPT],
        input=json.dumps(ours),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_decodes_every_ib_async_place_order_exactly(ib_async_results: dict[str, Any]) -> None:
    sent = ib_async_results["sent"]
    assert len(sent) == 22 * 11
    for key, fields in sent.items():
        version = int(key.split(":")[0])
        decoded = decode_place_order(fields, version, strict=True)
        assert decoded.order_id == 7, key
    trail = decode_place_order(sent["178:trail"], 178, strict=True)
    assert (trail.trailing_percent, trail.trail_stop_price) == (1.5, 148.0)


@pytest.mark.parametrize("version", [176, 177, 178])
def test_ib_async_reads_our_order_messages(ib_async_results: dict[str, Any], version: int) -> None:
    read = ib_async_results["read"]
    assert read[f"{version}:open"] == ["SPY", "idem-42", 99, 3, 149.5, "Submitted", True, 5, 0.25]
    assert read[f"{version}:completed"] == ["SPY", "idem-42", 99, 5.0, "Filled", 5, 0.25]
    pending = False  # pendingPriceRevision: read at 178, ib_async's default before
    assert read[f"{version}:exec"] == [
        "EUR.USD",
        "0000e215.656d0000.01.01",
        1000.0,
        1.08735,
        "O-20231204-0115-001-000-3:215",
        2,
        pending,
    ]


def test_non_finite_doubles_a_client_sent_encode_without_crashing() -> None:
    """placeOrder accepts "Infinite"/"nan" doubles; echoing them back must not raise."""
    from tws_simulator.order_codec import _compact

    assert _compact(float("inf")) == "Infinity"
    assert _compact(float("nan")) == "NaN"
    assert _compact(2.0) == "2"


# --------------------------------------------------------------------------- advanced orders


def child_trail_limit() -> tuple[Contract, Order]:
    """A bracket's trailing-stop-limit exit: every field the advanced orders use."""
    contract, _ = sample_orders()["lmt"]
    order = Order(
        orderId=7,
        action="SELL",
        totalQuantity=25,
        orderType="TRAIL LIMIT",
        auxPrice=1.25,
        lmtPriceOffset=0.05,
        tif="GTD",
        goodTillDate="20261130-21:00:00",
        ocaGroup="b-1:oca",
        ocaType=2,
        parentId=6,
        transmit=False,
        orderRef="b-1:sl",
    )
    return contract, order


@pytest.mark.parametrize("version", range(157, 177))
def test_decodes_the_advanced_fields_at_every_version(version: int) -> None:
    o = decode_place_order(
        ib_insync_place_order(version, *child_trail_limit()), version, strict=True
    )
    assert (o.order_type, o.aux_price, o.lmt_price_offset) == ("TRAIL LIMIT", 1.25, 0.05)
    assert (o.tif, o.good_till_date) == ("GTD", "20261130-21:00:00")
    assert (o.oca_group, o.oca_type, o.parent_id, o.transmit) == ("b-1:oca", 2, 6, False)


@pytest.mark.parametrize("version", [157, 162, 170, 176])
def test_ib_insync_reads_the_advanced_fields_of_our_open_and_completed_orders(
    version: int,
) -> None:
    o = decode_place_order(ib_insync_place_order(176, *child_trail_limit()), 176)
    o.account = "DU1234567"
    fields = encode_open_order(
        version, o, SPY, client_id=1, perm_id=42, status="PreSubmitted", trail_stop_price=98.75
    )
    _, (_, _, order, _) = decode_with_ib_insync(version, fields)
    assert (order.lmtPriceOffset, order.trailStopPrice, order.auxPrice) == (0.05, 98.75, 1.25)
    assert (order.ocaGroup, order.ocaType, order.parentId) == ("b-1:oca", 2, 6)
    assert (order.tif, order.goodTillDate) == ("GTD", "20261130-21:00:00")
    done = encode_completed_order(
        version,
        o,
        SPY,
        perm_id=42,
        status="Cancelled",
        filled_quantity=Decimal(0),
        completed_time="20261130 16:00:00 US/Eastern",
        completed_status="Cancelled",
        parent_perm_id=41,
    )
    _, (_, completed, _) = decode_with_ib_insync(version, done)
    assert (completed.lmtPriceOffset, completed.ocaGroup, completed.parentPermId) == (
        0.05,
        "b-1:oca",
        41,
    )
