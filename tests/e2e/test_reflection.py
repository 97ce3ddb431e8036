"""A client that knows nothing but server reflection, the way grpcurl works: list the
services, fetch their file descriptors, build the message types at run time and invoke a
method with JSON in and JSON out. No generated stubs on the client side."""

from __future__ import annotations

import json
from typing import Any

import grpc
import grpc.aio
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


class ReflectionClient:
    """Just enough of grpcurl: list, describe, invoke (unary)."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.stub: Any = reflection_pb2_grpc.ServerReflectionStub(channel)
        self.pool = descriptor_pool.DescriptorPool()  # empty: not the stubs' default pool
        self._files: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    async def _ask(self, request: reflection_pb2.ServerReflectionRequest) -> Any:
        call = self.stub.ServerReflectionInfo(iter([request]))
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


async def test_lists_every_service(channel: grpc.aio.Channel) -> None:
    services = await ReflectionClient(channel).list_services()
    assert {
        "ibgateway.v1.ConnectionService",
        "ibgateway.v1.AccountService",
        "ibgateway.v1.PortfolioService",
        "ibgateway.v1.MarketDataService",
        "ibgateway.v1.OrderService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= set(services)


async def test_describes_a_service(channel: grpc.aio.Channel) -> None:
    methods = await ReflectionClient(channel).describe("ibgateway.v1.ConnectionService")
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


async def test_every_registered_service_resolves(channel: grpc.aio.Channel) -> None:
    client = ReflectionClient(channel)
    for service in await client.list_services():
        methods = await client.describe(service)
        assert methods, service
