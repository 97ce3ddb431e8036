"""AccountService end to end against the simulator's paper account."""

from __future__ import annotations

from decimal import Decimal

import grpc
import grpc.aio
import pytest

from ibgateway.v1 import account_pb2, account_pb2_grpc, connection_pb2, connection_pb2_grpc
from tests.e2e.conftest import expect_error
from tws_simulator import TwsSimulator

ACCOUNT = "DU1234567"


@pytest.fixture
def accounts(channel: grpc.aio.Channel) -> account_pb2_grpc.AccountServiceAsyncStub:
    return account_pb2_grpc.AccountServiceStub(channel)


async def test_list_accounts(accounts: account_pb2_grpc.AccountServiceAsyncStub) -> None:
    response = await accounts.ListAccounts(account_pb2.ListAccountsRequest())
    assert [(a.account_id, a.paper) for a in response.accounts] == [(ACCOUNT, True)]


async def test_summary_has_every_tag_with_value_and_currency(
    accounts: account_pb2_grpc.AccountServiceAsyncStub,
) -> None:
    response = await accounts.GetAccountSummary(account_pb2.GetAccountSummaryRequest())
    values = list(response.values)
    assert len(values) > 20
    assert {v.account_id for v in values} == {ACCOUNT}
    tags = {(v.tag, v.currency): v.value for v in values}
    assert Decimal(tags[("NetLiquidation", "USD")]) > 0
    assert tags[("TotalCashValue", "USD")] == "1000000.00"
    assert tags[("AccountType", "")] == "INDIVIDUAL"
    assert ("CashBalance", "BASE") in tags  # per-currency ledger rows too
    keys = [(v.account_id, v.tag, v.currency) for v in values]
    assert keys == sorted(keys)


async def test_summary_filters_by_tag_and_account(
    accounts: account_pb2_grpc.AccountServiceAsyncStub,
) -> None:
    response = await accounts.GetAccountSummary(
        account_pb2.GetAccountSummaryRequest(
            account_id=ACCOUNT, tags=["NetLiquidation", "BuyingPower"]
        )
    )
    assert {v.tag for v in response.values} == {"NetLiquidation", "BuyingPower"}


async def test_balance_matches_the_account(
    accounts: account_pb2_grpc.AccountServiceAsyncStub, simulator: TwsSimulator
) -> None:
    balance = await accounts.GetBalance(account_pb2.GetBalanceRequest())
    assert balance.account_id == ACCOUNT
    assert balance.currency == "USD"
    assert balance.cash.value == "1000000"
    assert Decimal(balance.net_liquidation.value) == Decimal("1000000")  # no positions
    assert Decimal(balance.buying_power.value) == Decimal(f"{simulator.account.buying_power():.2f}")
    for field in ("available_funds", "excess_liquidity", "gross_position_value"):
        assert getattr(balance, field).value != "", field


@pytest.mark.parametrize("method", ["GetBalance", "GetAccountSummary"])
async def test_unknown_account_is_a_field_violation(
    accounts: account_pb2_grpc.AccountServiceAsyncStub, method: str
) -> None:
    request_type = getattr(account_pb2, f"{method}Request")
    err = await expect_error(getattr(accounts, method)(request_type(account_id="U7654321")))
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.info is not None and err.info.reason == "UNKNOWN_ACCOUNT"
    assert err.info.domain == "ibgateway"
    assert err.info.metadata["account"] == "U7654321"
    assert "account_id" in err.violations


async def test_not_connected_is_unavailable(
    accounts: account_pb2_grpc.AccountServiceAsyncStub, channel: grpc.aio.Channel
) -> None:
    await connection_pb2_grpc.ConnectionServiceStub(channel).Disconnect(
        connection_pb2.DisconnectRequest()
    )
    for call in (
        accounts.ListAccounts(account_pb2.ListAccountsRequest()),
        accounts.GetAccountSummary(account_pb2.GetAccountSummaryRequest()),
        accounts.GetBalance(account_pb2.GetBalanceRequest()),
    ):
        err = await expect_error(call)
        assert err.code == grpc.StatusCode.UNAVAILABLE
        assert err.info is not None and err.info.reason == "NOT_CONNECTED"
        assert err.retry is not None
