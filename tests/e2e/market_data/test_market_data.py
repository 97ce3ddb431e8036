"""MarketDataService end to end: ResolveContract, GetQuotes, StreamQuotes over a real
channel to a real gateway over the TWS simulator (real ib_insync, nothing mocked)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from ibgateway.v1 import common_pb2, market_data_pb2
from tests.e2e.conftest import expect_error, gateway_channel
from tests.e2e.market_data import test_market_data_support as support
from tests.e2e.market_data.test_market_data_support import (
    QuotesGateway,
    StreamReader,
    contracts,
    hub_of,
    stream_request,
    wait_for,
)
from tws_simulator import TwsSimulator
from tws_simulator.instruments import DEFAULT_INSTRUMENTS, Instrument

# fixtures shared with the other market-data test modules
make_quotes_gateway = support.make_quotes_gateway
quotes_gateway = support.quotes_gateway
md_stub = support.md_stub

pytestmark = pytest.mark.timeout(60)

AAPL_CON_ID = 265598
MSFT_CON_ID = 272093

# ----------------------------------------------------------------------- ResolveContract


async def test_resolve_contract_from_symbol(md_stub) -> None:
    response = await md_stub.ResolveContract(
        market_data_pb2.ResolveContractRequest(contract=common_pb2.Contract(symbol="aapl"))
    )
    c = response.contract
    assert (c.con_id, c.symbol, c.sec_type) == (
        AAPL_CON_ID,
        "AAPL",
        common_pb2.SECURITY_TYPE_STOCK,
    )
    assert c.currency == "USD" and c.primary_exchange == "NASDAQ"
    d = response.details
    assert d.long_name == "APPLE INC"
    assert d.min_tick.value == "0.01"
    assert d.time_zone_id and d.trading_hours and d.liquid_hours
    assert "SMART" in d.valid_exchanges and "LMT" in d.order_types


async def test_resolve_contract_by_con_id_and_forex(md_stub) -> None:
    by_id = await md_stub.ResolveContract(
        market_data_pb2.ResolveContractRequest(contract=common_pb2.Contract(con_id=MSFT_CON_ID))
    )
    assert by_id.contract.symbol == "MSFT"
    fx = await md_stub.ResolveContract(
        market_data_pb2.ResolveContractRequest(
            contract=common_pb2.Contract(symbol="EUR", sec_type=common_pb2.SECURITY_TYPE_FOREX)
        )
    )
    assert fx.contract.local_symbol == "EUR.USD"
    assert fx.details.min_tick.value == "0.00005"


async def test_resolve_contract_errors(md_stub) -> None:
    missing = await expect_error(
        md_stub.ResolveContract(
            market_data_pb2.ResolveContractRequest(contract=common_pb2.Contract(symbol="NOSUCH"))
        )
    )
    assert missing.code == grpc.StatusCode.NOT_FOUND
    assert missing.info is not None and missing.info.reason == "CONTRACT_NOT_FOUND"
    empty = await expect_error(md_stub.ResolveContract(market_data_pb2.ResolveContractRequest()))
    assert empty.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "contract.symbol" in empty.violations


_TWIN = Instrument(
    con_id=999001,
    symbol="AAPL",
    sec_type="STK",
    exchange="SMART",
    primary_exchange="NYSE",
    currency="USD",
    local_symbol="AAPL",
    trading_class="NMS",
    market_name="NMS",
    min_tick=0.01,
    long_name="ANOTHER AAPL",
)


@pytest.mark.sim_config(instruments=(*DEFAULT_INSTRUMENTS, _TWIN))
async def test_resolve_contract_ambiguous(md_stub) -> None:
    err = await expect_error(
        md_stub.ResolveContract(
            market_data_pb2.ResolveContractRequest(contract=common_pb2.Contract(symbol="AAPL"))
        )
    )
    assert err.code == grpc.StatusCode.INVALID_ARGUMENT
    assert err.info is not None and err.info.reason == "AMBIGUOUS_CONTRACT"
    # In a stream the same ambiguity is a per-subscription status; MSFT still flows.
    reader = StreamReader(md_stub.StreamQuotes(stream_request("AAPL", "MSFT")))
    try:
        await wait_for(lambda: len(reader.statuses) >= 2 and MSFT_CON_ID in reader.latest)
        assert reader.states(0) == [market_data_pb2.SUBSCRIPTION_STATE_AMBIGUOUS]
        assert reader.states(1) == [market_data_pb2.SUBSCRIPTION_STATE_ACTIVE]
    finally:
        await reader.close()


# ---------------------------------------------------------------------------- GetQuotes


def _is_decimal(value: common_pb2.Decimal) -> bool:
    try:
        float(value.value)
    except ValueError:
        return False
    return "e" not in value.value.lower()


async def test_get_quotes_many_contracts(quotes_gateway: QuotesGateway, md_stub) -> None:
    before = datetime.now(UTC)
    response = await md_stub.GetQuotes(
        market_data_pb2.GetQuotesRequest(contracts=contracts("AAPL", "NOSUCH", "MSFT")),
        timeout=10,
    )
    assert [q.contract.symbol for q in response.quotes] == ["AAPL", "MSFT"]
    for quote in response.quotes:
        for field in ("bid", "ask", "last", "bid_size", "ask_size", "volume", "close"):
            assert _is_decimal(getattr(quote, field)), (field, quote)
        assert float(quote.bid.value) < float(quote.ask.value)
        assert quote.market_data_type == common_pb2.MARKET_DATA_TYPE_LIVE
        receive = quote.receive_time.ToDatetime(tzinfo=UTC)
        assert before.timestamp() - 1 <= receive.timestamp() <= datetime.now(UTC).timestamp()
        assert quote.HasField("tick_time")
    [failure] = response.failures
    assert failure.index == 1
    assert failure.state == market_data_pb2.SUBSCRIPTION_STATE_NOT_FOUND
    assert failure.ib_code == 200
    # The snapshot lines are released (after the hub's short linger).
    hub = hub_of(quotes_gateway)
    await wait_for(lambda: hub.stats().lines == 0)


async def test_get_quotes_reuses_a_live_line(
    simulator: TwsSimulator, quotes_gateway: QuotesGateway, md_stub
) -> None:
    reader = StreamReader(md_stub.StreamQuotes(stream_request("AAPL")))
    try:
        await wait_for(lambda: AAPL_CON_ID in reader.latest)
        assert simulator.market_data.lines_in_use == 1
        response = await md_stub.GetQuotes(
            market_data_pb2.GetQuotesRequest(contracts=contracts("AAPL", "AAPL")), timeout=5
        )
        assert len(response.quotes) == 2
        assert simulator.market_data.lines_in_use == 1
        assert hub_of(quotes_gateway).stats().lines == 1
    finally:
        await reader.close()


@pytest.mark.sim_config(live_market_data=False)
async def test_get_quotes_market_data_types(md_stub) -> None:
    delayed = await md_stub.GetQuotes(
        market_data_pb2.GetQuotesRequest(
            contracts=contracts("AAPL"),
            market_data_type=common_pb2.MARKET_DATA_TYPE_DELAYED,
        ),
        timeout=10,
    )
    [quote] = delayed.quotes
    assert quote.market_data_type == common_pb2.MARKET_DATA_TYPE_DELAYED
    assert _is_decimal(quote.bid)
    # Without a live subscription IB refuses live data: a per-contract failure.
    live = await md_stub.GetQuotes(
        market_data_pb2.GetQuotesRequest(contracts=contracts("AAPL")), timeout=10
    )
    assert not live.quotes
    [failure] = live.failures
    assert failure.state == market_data_pb2.SUBSCRIPTION_STATE_PERMISSION_DENIED
    assert failure.ib_code == 354


async def test_get_quotes_validation_and_not_connected(
    quotes_gateway: QuotesGateway, md_stub
) -> None:
    empty = await expect_error(md_stub.GetQuotes(market_data_pb2.GetQuotesRequest()))
    assert empty.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "contracts" in empty.violations
    bad = await expect_error(
        md_stub.GetQuotes(
            market_data_pb2.GetQuotesRequest(
                contracts=[common_pb2.Contract(symbol="AAPL"), common_pb2.Contract()]
            )
        )
    )
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT
    assert set(bad.violations) == {"contracts[1].symbol"}
    unknown = await expect_error(
        md_stub.GetQuotes(
            market_data_pb2.GetQuotesRequest(
                contracts=[common_pb2.Contract(symbol="A" * 33)],
                market_data_type=42,  # type: ignore[arg-type]
            )
        )
    )
    assert set(unknown.violations) == {"contracts[0].symbol", "market_data_type"}
    assert quotes_gateway.session is not None
    await quotes_gateway.session.disconnect()
    down = await expect_error(
        md_stub.GetQuotes(market_data_pb2.GetQuotesRequest(contracts=contracts("AAPL")))
    )
    assert down.code == grpc.StatusCode.UNAVAILABLE
    stream_down = await expect_error(_first(md_stub.StreamQuotes(stream_request("AAPL"))))
    assert stream_down.code == grpc.StatusCode.UNAVAILABLE


async def _first(call: grpc.aio.UnaryStreamCall) -> object:
    async for message in call:
        return message
    return None


async def test_get_quotes_honours_deadline(simulator: TwsSimulator, md_stub) -> None:
    simulator.faults.set_delay(3.0)  # TWS answers nothing for 3 s
    loop = asyncio.get_running_loop()
    start = loop.time()
    err = await expect_error(
        md_stub.GetQuotes(market_data_pb2.GetQuotesRequest(contracts=contracts("TSLA")), timeout=1)
    )
    assert loop.time() - start < 2.5
    assert err.code == grpc.StatusCode.DEADLINE_EXCEEDED
    # our own status (with ErrorInfo), not grpc's bare deadline error
    assert err.info is not None and err.info.reason == "IB_TIMEOUT"


# -------------------------------------------------------------------------- StreamQuotes


async def test_stream_reports_statuses_then_quotes(md_stub) -> None:
    reader = StreamReader(md_stub.StreamQuotes(stream_request("AAPL", "NOSUCH", "MSFT")))
    try:
        await wait_for(lambda: {AAPL_CON_ID, MSFT_CON_ID} <= set(reader.latest))
        assert reader.events[:3] == ["subscription_status"] * 3
        assert [s.index for s in reader.statuses[:3]] == [0, 1, 2]
        assert reader.states(1) == [market_data_pb2.SUBSCRIPTION_STATE_NOT_FOUND]
        assert reader.statuses[1].ib_code == 200
        assert reader.states(0) == reader.states(2) == [market_data_pb2.SUBSCRIPTION_STATE_ACTIVE]
        assert reader.statuses[0].contract.con_id == AAPL_CON_ID
        quote = reader.latest[AAPL_CON_ID]
        assert quote.contract.symbol == "AAPL" and _is_decimal(quote.bid)
        assert quote.HasField("tick_time") and quote.HasField("receive_time")
        # a consumer that keeps up misses nothing
        assert all(b.conflated_updates == 0 for b in reader.batches)
    finally:
        await reader.close()


def _ib_stamped(quote: market_data_pb2.Quote) -> bool:
    return quote.tick_time != quote.receive_time


async def test_stream_quotes_carry_ib_trade_time(md_stub) -> None:
    """tick_time is IB's own (RT volume, millisecond) trade time, not the receive time."""
    reader = StreamReader(md_stub.StreamQuotes(stream_request("AAPL")))
    try:
        await wait_for(
            lambda: any(_ib_stamped(q) for b in reader.batches for q in b.quotes), within=10
        )
        stamped = next(q for b in reader.batches for q in b.quotes if _ib_stamped(q))
        tick = stamped.tick_time.ToDatetime(tzinfo=UTC)
        receive = stamped.receive_time.ToDatetime(tzinfo=UTC)
        assert stamped.tick_time.nanos % 1_000_000 == 0  # IB stamps trades in milliseconds
        assert timedelta(0) <= receive - tick < timedelta(seconds=2)
    finally:
        await reader.close()


async def test_stream_request_validation(md_stub) -> None:
    empty = await expect_error(_first(md_stub.StreamQuotes(market_data_pb2.StreamQuotesRequest())))
    assert empty.code == grpc.StatusCode.INVALID_ARGUMENT
    too_fast = await expect_error(
        _first(md_stub.StreamQuotes(stream_request("AAPL", heartbeat=0.01)))
    )
    assert too_fast.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "heartbeat_interval" in too_fast.violations
    for seconds in (-0.001, 1.5):
        bad_window = stream_request("AAPL")
        bad_window.send_window.FromNanoseconds(int(seconds * 1e9))
        err = await expect_error(_first(md_stub.StreamQuotes(bad_window)))
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "send_window" in err.violations


def _reflective_stream(address: str, count: int) -> list[tuple[str, int, str]]:
    """Like grpcurl: learn the method's types from reflection, call it, decode dynamically."""
    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName("ibgateway.v1.MarketDataService")
        method = service.methods_by_name["StreamQuotes"]
        request_cls = message_factory.GetMessageClass(method.input_type)
        response_cls = message_factory.GetMessageClass(method.output_type)
        request: Any = request_cls()
        request.contracts.add(symbol="AAPL")
        request.contracts.add(symbol="EUR", sec_type=4)
        call = channel.unary_stream(
            f"/{service.full_name}/{method.name}",
            request_serializer=request_cls.SerializeToString,
            response_deserializer=response_cls.FromString,
        )(request, timeout=20)
        seen: list[tuple[str, int, str]] = []
        message: Any
        for message in call:
            kind = message.WhichOneof("event")
            if kind == "quotes":
                for quote in message.quotes.quotes:
                    seen.append((quote.contract.symbol, quote.contract.con_id, quote.bid.value))
            if len(seen) >= count:
                call.cancel()
                break
        return seen


async def test_stream_decodes_through_reflection(quotes_gateway: QuotesGateway) -> None:
    seen = await asyncio.to_thread(_reflective_stream, quotes_gateway.address, 6)
    symbols = {symbol for symbol, _, _ in seen}
    assert symbols == {"AAPL", "EUR"}
    assert all(con_id and float(bid) > 0 for _, con_id, bid in seen)


async def test_stream_bytes_equal_generated_encoding(quotes_gateway: QuotesGateway) -> None:
    """The hand-assembled messages are canonical: re-serializing them with the generated
    class gives the same bytes (so any protobuf library reads them the same way)."""
    async with gateway_channel(quotes_gateway) as channel:
        raw: Any = channel.unary_stream(
            "/ibgateway.v1.MarketDataService/StreamQuotes",
            request_serializer=market_data_pb2.StreamQuotesRequest.SerializeToString,
            response_deserializer=None,  # the raw bytes
        )(stream_request("AAPL", "MSFT", "EUR"))
        batches = 0
        async for data in raw:
            message = market_data_pb2.StreamQuotesResponse.FromString(data)
            if message.WhichOneof("event") == "quotes":
                assert message.quotes.quotes
                assert message.SerializeToString() == data
                batches += 1
                if batches == 5:
                    break
        raw.cancel()
