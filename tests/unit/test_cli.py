"""`ibgw check`'s client side with grpcio-testing (a fake ConnectionService), and the
start-up validation of `ibgw serve`."""

from __future__ import annotations

import threading
from typing import Any

import grpc
import grpc_testing
import pytest
from click.testing import CliRunner
from google.protobuf import duration_pb2

from ibgateway.v1 import connection_pb2
from ibgateway_server.cli import check_via_gateway, format_report, main

SERVICE = connection_pb2.DESCRIPTOR.services_by_name["ConnectionService"]
TEST_CONNECTION = SERVICE.methods_by_name["TestConnection"]


def _response(ok: bool) -> connection_pb2.TestConnectionResponse:
    passed, failed = connection_pb2.CHECK_OUTCOME_PASSED, connection_pb2.CHECK_OUTCOME_FAILED
    return connection_pb2.TestConnectionResponse(
        ok=ok,
        status=connection_pb2.ConnectionStatus(
            connected=True,
            host="127.0.0.1",
            port=4002,
            client_id=3,
            backend=connection_pb2.BACKEND_TWS,
        ),
        checks=[
            connection_pb2.CheckResult(
                name="connection",
                outcome=passed,
                detail="connected",
                duration=duration_pb2.Duration(nanos=2_000_000),
            ),
            connection_pb2.CheckResult(
                name="market_data",
                outcome=passed if ok else failed,
                detail="AAPL: bid 1 ask 2" if ok else "no market data permission",
                fields=["bid", "ask"] if ok else [],
                ib_code=0 if ok else 354,
            ),
        ],
    )


def _serve_one(
    answer: Any, code: grpc.StatusCode = grpc.StatusCode.OK, details: str = ""
) -> tuple[str, bool, Any]:
    """Run check_via_gateway against a grpc_testing channel that answers once."""
    channel = grpc_testing.channel([SERVICE], grpc_testing.strict_real_time())
    result: dict[str, Any] = {}

    def client() -> None:
        result["out"] = check_via_gateway(
            channel, "MSFT", 5.0, metadata=[("authorization", "Bearer t0ken")]
        )

    thread = threading.Thread(target=client)
    thread.start()
    metadata, request, rpc = channel.take_unary_unary(TEST_CONNECTION)
    rpc.terminate(answer, (), code, details)
    thread.join(5)
    report, ok = result["out"]
    return report, ok, (metadata, request)


def test_check_reports_every_check_and_passes() -> None:
    report, ok, (metadata, request) = _serve_one(_response(ok=True))
    assert ok
    assert request.sample_symbol == "MSFT"
    assert ("authorization", "Bearer t0ken") in metadata
    assert "TWS at 127.0.0.1:4002 (client id 3)" in report
    assert "PASS  connection" in report and "(2 ms)" in report
    assert "fields: bid, ask" in report
    assert report.endswith("result: OK (2/2 checks passed)")


def test_check_fails_when_a_check_fails() -> None:
    report, ok, _ = _serve_one(_response(ok=False))
    assert not ok
    assert "FAIL  market_data  no market data permission [IB 354]" in report
    assert "result: FAILED (1/2 checks passed)" in report


def test_check_fails_when_the_gateway_errors() -> None:
    report, ok, _ = _serve_one(
        connection_pb2.TestConnectionResponse(), grpc.StatusCode.UNAVAILABLE, "down"
    )
    assert not ok
    assert "UNAVAILABLE: down" in report


def test_report_hints_when_not_connected() -> None:
    response = _response(ok=False)
    response.status.connected = False
    assert "Enable ActiveX and Socket Clients" in format_report(response, "gateway")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["serve", "--ibkr-port", "0"], "IBKR_PORT=0"),
        (["serve", "--listen", "nowhere"], "IBGW_LISTEN='nowhere'"),
        (["serve", "--sim-tick-interval", "-1"], "IBGW_SIM_TICK_INTERVAL"),
    ],
)
def test_serve_rejects_bad_settings_with_exit_code_2(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert needle in result.output
    assert len(result.output.strip().splitlines()) == 1  # one readable line


def test_unknown_backend_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["serve", "--backend", "paper"])
    assert result.exit_code == 2


def test_bad_environment_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBGW_BACKEND", "nope")
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 2
    assert "IBGW_BACKEND='nope'" in result.output


def test_sim_is_the_simulator_command() -> None:
    result = CliRunner().invoke(main, ["sim", "--help"])
    assert result.exit_code == 0
    assert "--seed" in result.output and "--drop-every" in result.output


def test_serve_help_names_every_env_var() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0
    for name in ("IBKR_HOST", "IBKR_PORT", "IBKR_CLIENT_ID", "IBGW_BACKEND", "IBGW_LISTEN"):
        assert name in result.output
