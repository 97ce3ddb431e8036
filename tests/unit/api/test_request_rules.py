"""The declared field rules: every key names a real field; bounds, enums, decimals,
sentinels, timestamps and quoting behave as documented in api/request_rules.py."""

from __future__ import annotations

import pytest
from google.protobuf import descriptor_pool

from ibgateway.v1 import common_pb2, connection_pb2, market_data_pb2, orders_pb2
from ibgateway_server.api import request_rules
from ibgateway_server.api.request_rules import RULES, check_request, request_violations
from ibgateway_server.errors import GatewayError
from tests.e2e.hardening.rpcs import all_rpcs


def test_every_rule_names_a_field_of_a_request() -> None:
    pool = descriptor_pool.Default()
    reachable = {
        f.full_name
        for rpc in all_rpcs()
        for message in request_rules.request_types(rpc.request)
        for f in message.fields
    }
    for key in RULES:
        assert pool.FindFieldByName(key) is not None, key
        assert key in reachable, f"{key} is in no request of any RPC"


def fields(message: object) -> set[str]:
    return {path for path, _ in request_violations(message)}  # type: ignore[arg-type]


def place(**kw: object) -> orders_pb2.PlaceOrderRequest:
    return orders_pb2.PlaceOrderRequest(**kw)  # type: ignore[arg-type]


D = common_pb2.Decimal


@pytest.mark.parametrize(
    "text",
    ["1e5", "Infinity", "NaN", "1,000", "\u0661\u0662", "0x10", "--1", "1.2.3", "9" * 33, " "],
)
def test_decimals_must_be_plain_ascii_and_short(text: str) -> None:
    assert fields(place(quantity=D(value=text))) == {"quantity"}


@pytest.mark.parametrize(
    ("name", "text", "ok"),
    [
        ("quantity", "1", True),
        ("quantity", "0.00000001", True),
        ("quantity", "0.000000001", False),  # 9 digits after the point
        ("quantity", "0", False),
        ("quantity", "1000000000", True),
        ("quantity", "1000000001", False),
        ("quantity", "9" * 30, False),
        ("limit_price", "-37.5", True),  # negative prices exist (spreads, futures)
        ("limit_price", "1000000001", False),
        ("trailing_percent", "99.9999", True),
        ("trailing_percent", "100", False),
        ("trailing_percent", "0", False),
    ],
)
def test_decimal_bounds(name: str, text: str, ok: bool) -> None:
    assert fields(place(**{name: D(value=text)})) == (set() if ok else {name})


def test_ib_unset_sentinels_are_refused() -> None:
    key = orders_pb2.OrderKey(order_id=2147483647)
    assert fields(orders_pb2.GetOrderRequest(order=key)) == {"order.order_id"}
    contract = common_pb2.Contract(con_id=2**63 - 1, symbol="AAPL")
    assert fields(market_data_pb2.ResolveContractRequest(contract=contract)) == {"contract.con_id"}
    assert fields(connection_pb2.ConnectRequest(client_id=2147483647)) == {"client_id"}
    assert fields(connection_pb2.ConnectRequest(port=70000)) == {"port"}
    assert fields(place(quantity=D(value="1.7976931348623157E308"))) == {"quantity"}


def test_unknown_enum_values_are_refused() -> None:
    request = place(side=3, order_type=99, time_in_force=-1)
    assert fields(request) == {"side", "order_type", "time_in_force"}


def test_strings_are_bounded_and_free_of_control_characters() -> None:
    contracts = [common_pb2.Contract(symbol="AAPL"), common_pb2.Contract(symbol="A\x00B")]
    request = market_data_pb2.GetQuotesRequest(contracts=contracts)
    assert fields(request) == {"contracts[1].symbol"}
    long = place(client_order_id="k" * 41, account_id="U" * 33)
    assert fields(long) == {"client_order_id", "account_id"}
    assert fields(place(client_order_id="k" * 40)) == set()


def test_repeated_fields_are_bounded() -> None:
    many = [common_pb2.Contract(symbol="AAPL")] * 1001
    assert fields(market_data_pb2.GetQuotesRequest(contracts=many)) == {"contracts"}


def test_timestamps_and_durations_in_range() -> None:
    late = orders_pb2.ListExecutionsRequest()
    late.since_time.seconds = 5_000_000_000
    assert fields(late) == {"since_time"}
    early = orders_pb2.ListExecutionsRequest()
    early.since_time.seconds = -1
    assert fields(early) == {"since_time"}
    odd = orders_pb2.ListExecutionsRequest()
    odd.since_time.seconds, odd.since_time.nanos = 1, -5
    assert fields(odd) == {"since_time"}
    beat = orders_pb2.StreamOrderEventsRequest()
    beat.heartbeat_interval.seconds = 3601
    assert fields(beat) == {"heartbeat_interval"}
    beat.heartbeat_interval.seconds = -1
    assert fields(beat) == {"heartbeat_interval"}


def test_messages_quote_only_a_short_prefix() -> None:
    secret_tail = "Z" * 5000
    with pytest.raises(GatewayError) as failure:
        check_request(place(client_order_id="abc" + secret_tail, quantity=D(value="x" * 5000)))
    err = failure.value
    assert len(err.message) < 400
    assert "ZZZZZZZZZZZZZZZZZZ" not in err.message
    assert {f for f, _ in err.field_violations} == {"client_order_id", "quantity"}


def test_violations_listed_in_one_error_are_capped() -> None:
    bad = [common_pb2.Contract(symbol="\x01")] * 100
    with pytest.raises(GatewayError) as failure:
        check_request(market_data_pb2.GetQuotesRequest(contracts=bad))
    assert len(failure.value.field_violations) == 20
    assert failure.value.message.endswith("and 80 more")


def test_a_valid_request_passes() -> None:
    request = place(
        client_order_id="k-1",
        contract=common_pb2.Contract(symbol="AAPL", currency="USD", strike=D(value="150.5")),
        side=orders_pb2.ORDER_SIDE_BUY,
        order_type=orders_pb2.ORDER_TYPE_LIMIT,
        quantity=D(value="10"),
        limit_price=D(value=" 150.25 "),
    )
    check_request(request)


def test_connect_targets() -> None:
    from ibgateway_server.api.connection import ConnectTargets

    only = ConnectTargets.only("127.0.0.1", 7497)
    assert only.allows("127.0.0.1", 7497) and not only.allows("127.0.0.1", 7496)
    listed = ConnectTargets.parse("tws.internal:4001, 10.0.0.5, [::1]:7497", "127.0.0.1", 7497)
    assert listed.allows("TWS.internal", 4001) and not listed.allows("tws.internal", 4002)
    assert listed.allows("10.0.0.5", 1234) and listed.allows("::1", 7497)
    assert listed.allows("127.0.0.1", 7497) and not listed.allows("127.0.0.2", 7497)
    assert ConnectTargets.parse("*", "h", 1).allows("anything", 9)
