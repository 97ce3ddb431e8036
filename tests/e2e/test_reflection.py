"""A client that knows nothing but server reflection, the way grpcurl works: list the
services, fetch their file descriptors, build the message types at run time and invoke a
method with JSON in and JSON out. No generated stubs on the client side. Both protocol
versions (grpc.reflection.v1, which grpcurl tries first, and v1alpha) are served, from
descriptors that keep the .proto comments (what `grpcurl describe` prints)."""

from __future__ import annotations

import json
from typing import Any

import grpc
import grpc.aio
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha import reflection_pb2

# v1 and v1alpha have the same messages (field numbers and all) under two package names
VERSIONS = ["grpc.reflection.v1", "grpc.reflection.v1alpha"]


class ReflectionClient:
    """Just enough of grpcurl: list, describe, invoke (unary)."""

    def __init__(self, channel: grpc.aio.Channel, version: str = "grpc.reflection.v1") -> None:
        self.channel = channel
        self.info: Any = channel.stream_stream(
            f"/{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        self.pool = descriptor_pool.DescriptorPool()  # empty: not the stubs' default pool
        self._files: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    async def _ask(self, request: reflection_pb2.ServerReflectionRequest) -> Any:
        call = self.info(iter([request]))
        async for response in call:
            return response
        raise AssertionError("no reflection answer")

    async def list_services(self) -> list[str]:
        response = await self._ask(reflection_pb2.ServerReflectionRequest(list_services=""))
        return sorted(s.name for s in response.list_services_response.service)

    async def load_symbol(self, symbol: str) -> None:
        response = await self._ask(
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
        )
        for raw in response.file_descriptor_response.file_descriptor_proto:
            proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
            self._files.setdefault(proto.name, proto)
        for name in list(self._files):
            self._add(name)

    def _add(self, name: str) -> None:
        try:
            self.pool.FindFileByName(name)
            return
        except KeyError:
            pass
        proto = self._files[name]
        for dep in proto.dependency:  # dependencies first
            self._add(dep)
        self.pool.Add(proto)

    async def describe(self, service: str) -> dict[str, tuple[str, str]]:
        await self.load_symbol(service)
        desc = self.pool.FindServiceByName(service)
        return {m.name: (m.input_type.full_name, m.output_type.full_name) for m in desc.methods}

    async def invoke(self, service: str, method: str, request_json: str) -> dict[str, Any]:
        await self.load_symbol(service)
        m = self.pool.FindServiceByName(service).methods_by_name[method]
        request_cls = message_factory.GetMessageClass(m.input_type)
        response_cls = message_factory.GetMessageClass(m.output_type)
        request = json_format.Parse(request_json, request_cls())
        call: Any = self.channel.unary_unary(
            f"/{service}/{method}",
            request_serializer=lambda msg: msg.SerializeToString(),
            response_deserializer=response_cls.FromString,
        )
        response = await call(request, timeout=5)
        result: dict[str, Any] = json_format.MessageToDict(response)
        return result


@pytest.mark.parametrize("version", VERSIONS)
async def test_lists_every_service(channel: grpc.aio.Channel, version: str) -> None:
    services = await ReflectionClient(channel, version).list_services()
    assert {
        "ibgateway.v1.ConnectionService",
        "ibgateway.v1.AccountService",
        "ibgateway.v1.PortfolioService",
        "ibgateway.v1.MarketDataService",
        "ibgateway.v1.OrderService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    } <= set(services)


@pytest.mark.parametrize("version", VERSIONS)
async def test_describes_a_service(channel: grpc.aio.Channel, version: str) -> None:
    methods = await ReflectionClient(channel, version).describe("ibgateway.v1.ConnectionService")
    assert methods["GetConnectionStatus"] == (
        "ibgateway.v1.GetConnectionStatusRequest",
        "ibgateway.v1.GetConnectionStatusResponse",
    )
    assert {"Connect", "Disconnect", "TestConnection"} <= set(methods)


async def test_invokes_dynamically_with_json(channel: grpc.aio.Channel) -> None:
    client = ReflectionClient(channel)
    status = await client.invoke("ibgateway.v1.ConnectionService", "GetConnectionStatus", "{}")
    assert status["status"]["connected"] is True
    assert status["status"]["state"] == "CONNECTION_STATE_CONNECTED"
    assert status["status"]["accounts"] == ["DU1234567"]

    summary = await client.invoke(
        "ibgateway.v1.AccountService",
        "GetAccountSummary",
        json.dumps({"accountId": "DU1234567", "tags": ["NetLiquidation"]}),
    )
    assert [v["tag"] for v in summary["values"]] == ["NetLiquidation"]
    assert summary["values"][0]["currency"] == "USD"


@pytest.mark.parametrize("version", VERSIONS)
async def test_every_registered_service_resolves(channel: grpc.aio.Channel, version: str) -> None:
    client = ReflectionClient(channel, version)
    for service in await client.list_services():
        methods = await client.describe(service)
        assert methods, service


def _comments(proto: descriptor_pb2.FileDescriptorProto) -> dict[str, str]:
    """{symbol: leading comment} for the services, RPCs, messages and fields of a file."""
    by_path = {
        tuple(loc.path): loc.leading_comments.strip() for loc in proto.source_code_info.location
    }
    pkg = proto.package
    found: dict[str, str] = {}
    for i, service in enumerate(proto.service):
        found[f"{pkg}.{service.name}"] = by_path.get((6, i), "")
        for j, method in enumerate(service.method):
            found[f"{pkg}.{service.name}.{method.name}"] = by_path.get((6, i, 2, j), "")
    for i, message in enumerate(proto.message_type):
        found[f"{pkg}.{message.name}"] = by_path.get((4, i), "")
        for j, field in enumerate(message.field):
            found[f"{pkg}.{message.name}.{field.name}"] = by_path.get((4, i, 2, j), "")
    return found


@pytest.mark.parametrize("version", VERSIONS)
async def test_descriptors_carry_the_proto_comments(
    channel: grpc.aio.Channel, version: str
) -> None:
    client = ReflectionClient(channel, version)
    for service in await client.list_services():
        if service.startswith("ibgateway."):
            await client.load_symbol(service)
    ours = [f for name, f in client._files.items() if name.startswith("ibgateway/v1/")]
    assert len(ours) == 6  # account, common, connection, market_data, orders, portfolio
    comments: dict[str, str] = {}
    for proto in ours:
        comments.update(_comments(proto))
    missing = sorted(symbol for symbol, text in comments.items() if not text)
    assert not missing, f"no comment served for {missing[:10]}"
    assert comments["ibgateway.v1.MarketDataService"].startswith(
        "Resolves instruments and delivers quotes"
    )
    assert comments["ibgateway.v1.PlaceOrderRequest.client_order_id"].startswith(
        "Required. The client's idempotency key"
    )
    # and the reflection service describes itself in the version asked
    methods = await client.describe(f"{version}.ServerReflection")
    assert methods["ServerReflectionInfo"][0] == f"{version}.ServerReflectionRequest"


@pytest.mark.parametrize("version", VERSIONS)
async def test_a_method_resolves_to_its_file(channel: grpc.aio.Channel, version: str) -> None:
    # `grpcurl describe ibgateway.v1.OrderService.PlaceOrder` asks for the method's file
    client = ReflectionClient(channel, version)
    response = await client._ask(
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="ibgateway.v1.OrderService.PlaceOrder"
        )
    )
    names = [
        descriptor_pb2.FileDescriptorProto.FromString(raw).name
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]
    assert names[0] == "ibgateway/v1/orders.proto"
    missing = await client._ask(
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="ibgateway.v1.OrderService.NoSuchMethod"
        )
    )
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
