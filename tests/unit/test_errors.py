"""The IB-code mapping and the rich status built from a GatewayError."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2

from ibgateway_server import errors
from ibgateway_server.errors import GatewayError
from ibgateway_server.ib import failures
from ibgateway_server.ib.insync import RequestError


@pytest.mark.parametrize(
    ("ib_code", "code", "reason"),
    [
        (200, grpc.StatusCode.NOT_FOUND, "CONTRACT_NOT_FOUND"),
        (201, grpc.StatusCode.FAILED_PRECONDITION, "ORDER_REJECTED"),
        (326, grpc.StatusCode.UNAVAILABLE, "CLIENT_ID_IN_USE"),
        (502, grpc.StatusCode.UNAVAILABLE, "TWS_UNREACHABLE"),
        (504, grpc.StatusCode.UNAVAILABLE, "NOT_CONNECTED"),
        (1100, grpc.StatusCode.UNAVAILABLE, "IB_CONNECTIVITY_LOST"),
        (354, grpc.StatusCode.PERMISSION_DENIED, "MARKET_DATA_NOT_SUBSCRIBED"),
        (10168, grpc.StatusCode.PERMISSION_DENIED, "MARKET_DATA_NOT_SUBSCRIBED"),
        (100, grpc.StatusCode.RESOURCE_EXHAUSTED, "PACING_VIOLATION"),
        (162, grpc.StatusCode.RESOURCE_EXHAUSTED, "PACING_VIOLATION"),
        (420, grpc.StatusCode.RESOURCE_EXHAUSTED, "PACING_VIOLATION"),
        (110, grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PRICE"),
        (10147, grpc.StatusCode.NOT_FOUND, "ORDER_NOT_FOUND"),
        (99999, grpc.StatusCode.FAILED_PRECONDITION, "IB_ERROR"),
    ],
)
def test_ib_codes_map_deliberately(ib_code: int, code: grpc.StatusCode, reason: str) -> None:
    err = errors.from_ib_error(ib_code, "text from IB")
    assert (err.code, err.reason, err.ib_code) == (code, reason, ib_code)
    assert err.message.startswith("text from IB")


def test_pacing_carries_retry_info_and_connectivity_a_hint() -> None:
    assert errors.from_ib_error(100, "slow down").retry_after == 1.0
    assert "Enable ActiveX" in errors.from_ib_error(502, "Couldn't connect to TWS").message


def test_rich_status_has_error_info_bad_request_and_retry_info() -> None:
    err = GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ORDER",
        "quantity must be positive",
        ib_code=321,
        metadata={"symbol": "AAPL"},
        field_violations=[("quantity", "must be greater than 0")],
        retry_after=2.5,
    )
    status = err.to_status_proto()
    assert status.code == code_pb2.INVALID_ARGUMENT
    assert status.message == "quantity must be positive"
    info, bad, retry = (
        error_details_pb2.ErrorInfo(),
        error_details_pb2.BadRequest(),
        error_details_pb2.RetryInfo(),
    )
    assert [d.Unpack(m) for d, m in zip(status.details, (info, bad, retry), strict=True)] == [
        True
    ] * 3
    assert (info.reason, info.domain) == ("INVALID_ORDER", "ibgateway")
    assert dict(info.metadata) == {"symbol": "AAPL", "ib_code": "321"}
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("quantity", "must be greater than 0")
    ]
    assert (retry.retry_delay.seconds, retry.retry_delay.nanos) == (2, 500_000_000)
    grpc_status = err.to_grpc_status()
    assert grpc_status.code is grpc.StatusCode.INVALID_ARGUMENT
    assert grpc_status.trailing_metadata[0][0] == "grpc-status-details-bin"


def test_unknown_is_not_allowed() -> None:
    with pytest.raises(ValueError):
        GatewayError(grpc.StatusCode.UNKNOWN, "X", "y")


def test_exceptions_map_or_are_internal() -> None:
    nf = failures.from_exception(RequestError(3, 200, "No security definition"))
    assert nf is not None and nf.code is grpc.StatusCode.NOT_FOUND and nf.ib_code == 200
    timeout = failures.from_exception(TimeoutError())
    assert timeout is not None and timeout.code is grpc.StatusCode.DEADLINE_EXCEEDED
    lost = failures.from_exception(ConnectionResetError("reset"))
    assert lost is not None and lost.code is grpc.StatusCode.UNAVAILABLE
    assert failures.from_exception(ZeroDivisionError()) is None
    assert errors.internal_error().code is grpc.StatusCode.INTERNAL


def test_invalid_argument_joins_violations() -> None:
    err = errors.invalid_argument([("a", "required"), ("b", "too big")])
    assert err.code is grpc.StatusCode.INVALID_ARGUMENT
    assert err.message == "a: required; b: too big"
    assert err.field_violations == (("a", "required"), ("b", "too big"))
