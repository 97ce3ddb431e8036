"""Every order type and time in force beyond MKT/LMT/STP/STP LMT/TRAIL, through the gateway
to its final state, on a simulator with trading hours and a clock the test drives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
import grpc.aio
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from ibgateway.v1 import common_pb2, orders_pb2, orders_pb2_grpc
from tests.e2e.conftest import expect_error
from tests.e2e.orders.test_orders_support import AAPL_CON_ID, order_request, wait_for_order
from tws_simulator import TwsSimulator
from tws_simulator.clock import eastern

MONDAY_3PM = eastern(2026, 11, 30, 15, 0)
pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.sim_config(tick_interval=60.0, trading_hours=True, clock_start=MONDAY_3PM),
]

T = orders_pb2
FILLED = T.ORDER_STATUS_FILLED
CANCELLED = T.ORDER_STATUS_CANCELLED


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> orders_pb2_grpc.OrderServiceAsyncStub:
    return orders_pb2_grpc.OrderServiceStub(channel)


def mid_of(simulator: TwsSimulator) -> float:
    return round(simulator.market.quote(AAPL_CON_ID).midpoint, 2)


def stamp(when: datetime) -> Timestamp:
    result = Timestamp()
    result.FromDatetime(when)
    return result


async def test_triggered_pegged_and_midpoint_types_reach_their_final_state(
    simulator: TwsSimulator, stub: orders_pb2_grpc.OrderServiceAsyncStub
) -> None:
    mid = mid_of(simulator)
    size = int(simulator.market.quote(AAPL_CON_ID).ask_size)
    requests = [
        order_request("mit", T.ORDER_TYPE_MARKET_IF_TOUCHED, stop_price=f"{mid - 1:.2f}"),
        order_request(
            "lit",
            T.ORDER_TYPE_LIMIT_IF_TOUCHED,
            side=T.ORDER_SIDE_SELL,
            stop_price=f"{mid + 1:.2f}",
            limit_price=f"{mid + 1:.2f}",
        ),
        order_request(
            "trail-limit",
            T.ORDER_TYPE_TRAILING_STOP_LIMIT,
            side=T.ORDER_SIDE_SELL,
            trailing_amount="1",
        ),
        order_request("rel", T.ORDER_TYPE_RELATIVE),
        order_request("fok", T.ORDER_TYPE_MARKET, quantity=str(size + 100)),
    ]
    requests[2].limit_offset.value = "0.05"
    requests[3].peg_offset.value = "0.01"
    requests[4].time_in_force = T.TIME_IN_FORCE_FOK
    placed = {}
    for req in requests:
        placed[req.client_order_id] = (await stub.PlaceOrder(req, timeout=10)).order
    assert placed["mit"].status == T.ORDER_STATUS_PRE_SUBMITTED
    assert placed["trail-limit"].limit_offset.value == "0.05"
    assert placed["rel"].peg_offset.value == "0.01"
    fok = await wait_for_order(stub, "fok", lambda o: o.status == CANCELLED)
    assert not fok.fills  # not all of it was there: none of it executes

    midprice = await stub.PlaceOrder(order_request("mid", T.ORDER_TYPE_MIDPRICE), timeout=10)
    got = await wait_for_order(stub, "mid", lambda o: o.status == FILLED)
    assert midprice.order.order_type == T.ORDER_TYPE_MIDPRICE
    assert float(got.average_fill_price.value) == pytest.approx(
        simulator.market.quote(AAPL_CON_ID).midpoint
    )

    simulator.market.move_to(AAPL_CON_ID, mid + 1.50)  # touches the LIT
    await wait_for_order(stub, "lit", lambda o: o.status == FILLED)
    simulator.market.move_to(AAPL_CON_ID, mid - 1.50)  # touches the MIT, hits the trail
    await wait_for_order(stub, "mit", lambda o: o.status == FILLED)
    await wait_for_order(stub, "rel", lambda o: o.status == FILLED)  # the ask came through
    # The trail followed the LIT's peak (mid + 1.50) to a stop at mid + 0.50, so its limit is
    # mid + 0.45; the market comes back above it.
    simulator.market.move_to(AAPL_CON_ID, mid + 1.00)
    await wait_for_order(stub, "trail-limit", lambda o: o.status == FILLED)


async def test_clock_driven_types_day_expiry_and_auctions(
    simulator: TwsSimulator, stub: orders_pb2_grpc.OrderServiceAsyncStub
) -> None:
    mid = mid_of(simulator)
    low = f"{mid - 10:.2f}"
    sim_now = datetime.fromtimestamp(simulator.clock.now(), UTC)
    gtd = order_request("gtd", T.ORDER_TYPE_LIMIT, limit_price=low)
    gtd.time_in_force = T.TIME_IN_FORCE_GTD
    gtd.good_till_time.CopyFrom(stamp(sim_now + timedelta(minutes=30)))
    opg = order_request("opg", T.ORDER_TYPE_MARKET, time_in_force=T.TIME_IN_FORCE_OPG)
    for req in (
        order_request("day", T.ORDER_TYPE_LIMIT, limit_price=low),
        order_request("moc", T.ORDER_TYPE_MARKET_ON_CLOSE),
        order_request("loc", T.ORDER_TYPE_LIMIT_ON_CLOSE, limit_price=low),
        gtd,
        opg,
    ):
        await stub.PlaceOrder(req, timeout=10)
    simulator.clock.set(MONDAY_3PM + 31 * 60)
    expired = await wait_for_order(stub, "gtd", lambda o: o.status == CANCELLED)
    expiry = (sim_now + timedelta(minutes=30)).replace(microsecond=0)
    assert expired.good_till_time.ToDatetime(UTC) == expiry
    assert (await wait_for_order(stub, "moc", lambda o: True)).status != FILLED

    simulator.clock.set(eastern(2026, 11, 30, 16, 0) + 1)  # the close
    close = await wait_for_order(stub, "moc", lambda o: o.status == FILLED)
    assert float(close.average_fill_price.value) == pytest.approx(
        simulator.market.quote(AAPL_CON_ID).last
    )
    await wait_for_order(stub, "loc", lambda o: o.status == CANCELLED)  # close above its limit
    await wait_for_order(stub, "day", lambda o: o.status == CANCELLED)  # DAY ends at the close
    simulator.clock.set(eastern(2026, 12, 1, 9, 30) + 1)  # Tuesday's opening auction
    await wait_for_order(stub, "opg", lambda o: o.status == FILLED)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        (
            {"order_type": T.ORDER_TYPE_MARKET_ON_CLOSE, "time_in_force": T.TIME_IN_FORCE_GTC},
            "time_in_force",
        ),
        (
            {
                "order_type": T.ORDER_TYPE_STOP,
                "stop_price": "1",
                "time_in_force": T.TIME_IN_FORCE_OPG,
            },
            "time_in_force",
        ),
        (
            {"order_type": T.ORDER_TYPE_MARKET_IF_TOUCHED, "time_in_force": T.TIME_IN_FORCE_FOK},
            "stop_price",
        ),
        ({"order_type": T.ORDER_TYPE_LIMIT_IF_TOUCHED, "stop_price": "1"}, "limit_price"),
        ({"order_type": T.ORDER_TYPE_TRAILING_STOP_LIMIT, "trailing_amount": "1"}, "limit_offset"),
        (
            {
                "order_type": T.ORDER_TYPE_LIMIT,
                "limit_price": "1",
                "time_in_force": T.TIME_IN_FORCE_GTD,
            },
            "good_till_time",
        ),
        ({"order_type": T.ORDER_TYPE_MARKET, "oca_type": T.OCA_TYPE_CANCEL_WITH_BLOCK}, "oca_type"),
        ({"order_type": T.ORDER_TYPE_MARKET, "oca_group": "bad group!"}, "oca_group"),
    ],
    ids=[
        "moc-gtc",
        "stop-opg",
        "mit-no-trigger",
        "lit-no-limit",
        "trail-limit-no-offset",
        "gtd-no-time",
        "oca-type-alone",
        "oca-group-chars",
    ],
)
async def test_type_rules_are_field_violations(
    stub: orders_pb2_grpc.OrderServiceAsyncStub, fields: dict[str, object], field: str
) -> None:
    values = dict(fields)
    order_type = values.pop("order_type")
    req = order_request("rules", order_type, **values)  # type: ignore[arg-type]
    error = await expect_error(stub.PlaceOrder(req, timeout=10))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert field in error.violations


async def test_gtd_in_the_past_and_reserved_keys(
    stub: orders_pb2_grpc.OrderServiceAsyncStub,
) -> None:
    req = order_request("gtd-past", T.ORDER_TYPE_LIMIT, limit_price="1")
    req.time_in_force = T.TIME_IN_FORCE_GTD
    req.good_till_time.CopyFrom(stamp(datetime.now(UTC) - timedelta(minutes=1)))
    error = await expect_error(stub.PlaceOrder(req, timeout=10))
    assert "must be in the future" in error.violations["good_till_time"]
    reserved = order_request("mine:tp", T.ORDER_TYPE_MARKET)
    error = await expect_error(stub.PlaceOrder(reserved, timeout=10))
    assert "reserved" in error.violations["client_order_id"]


async def test_an_order_type_the_instrument_does_not_take_is_ibs_387(
    stub: orders_pb2_grpc.OrderServiceAsyncStub,
) -> None:
    eurusd = common_pb2.Contract(
        symbol="EUR", sec_type=common_pb2.SECURITY_TYPE_FOREX, currency="USD"
    )
    req = order_request("fx-moc", T.ORDER_TYPE_MARKET_ON_CLOSE, quantity="20000", contract=eurusd)
    error = await expect_error(stub.PlaceOrder(req, timeout=10))
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.info is not None and error.info.reason == "ORDER_TYPE_NOT_SUPPORTED"
    assert error.info.metadata["ib_code"] == "387"


async def test_modify_the_new_terms(
    simulator: TwsSimulator, stub: orders_pb2_grpc.OrderServiceAsyncStub
) -> None:
    mid = mid_of(simulator)
    await stub.PlaceOrder(
        order_request(
            "m-trail",
            T.ORDER_TYPE_TRAILING_STOP_LIMIT,
            side=T.ORDER_SIDE_SELL,
            trailing_amount="1",
            limit_offset=common_pb2.Decimal(value="0.05"),
        ),
        timeout=10,
    )
    await stub.PlaceOrder(
        order_request("m-rel", T.ORDER_TYPE_RELATIVE, limit_price=f"{mid - 5:.2f}"), timeout=10
    )
    await stub.PlaceOrder(
        order_request("m-day", T.ORDER_TYPE_LIMIT, limit_price=f"{mid - 10:.2f}"), timeout=10
    )

    def modify(key: str, **fields: object) -> orders_pb2.ModifyOrderRequest:
        return T.ModifyOrderRequest(order=T.OrderKey(client_order_id=key), **fields)  # type: ignore[arg-type]

    trail = await stub.ModifyOrder(
        modify("m-trail", limit_offset=common_pb2.Decimal(value="0.10")), timeout=10
    )
    assert trail.order.limit_offset.value == "0.1"
    rel = await stub.ModifyOrder(
        modify("m-rel", peg_offset=common_pb2.Decimal(value="0.02")), timeout=10
    )
    assert rel.order.peg_offset.value == "0.02"
    until = datetime.fromtimestamp(simulator.clock.now(), UTC) + timedelta(minutes=10)
    gtd = await stub.ModifyOrder(
        modify("m-day", time_in_force=T.TIME_IN_FORCE_GTD, good_till_time=stamp(until)),
        timeout=10,
    )
    assert gtd.order.time_in_force == T.TIME_IN_FORCE_GTD
    assert gtd.order.good_till_time.ToDatetime(UTC) == until.replace(microsecond=0)
    simulator.clock.advance(11 * 60)  # the new expiry, well before the close
    await wait_for_order(stub, "m-day", lambda o: o.status == CANCELLED)
    # A field the order's type does not use is a violation, as in PlaceOrder.
    error = await expect_error(
        stub.ModifyOrder(modify("m-rel", limit_offset=common_pb2.Decimal(value="1")), timeout=10)
    )
    assert "limit_offset" in error.violations
    error = await expect_error(
        stub.ModifyOrder(modify("m-rel", time_in_force=T.TIME_IN_FORCE_GTD), timeout=10)
    )
    assert "good_till_time" in error.violations
