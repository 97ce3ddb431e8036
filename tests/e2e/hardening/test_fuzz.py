"""Property-based fuzzing of every RPC (hypothesis), requests generated from the message
descriptors, plus raw garbage bytes.

Properties: no call ends UNKNOWN or INTERNAL, nothing in the log carries a traceback, and
the gateway is still SERVING at the end. The bounded run here is part of ``make test``
(deterministic: ``derandomize``); ``make fuzz`` runs many more random examples
(IBGW_FUZZ_EXAMPLES).

The gateway runs on its own event loop in a thread, so that hypothesis drives a plain
synchronous test (and can shrink a failure to a minimal request).

Connect and Disconnect get only garbage bytes: well-formed ones would move the session
(Connect to an arbitrary local port could reach another program on this machine).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ibgateway_server.app import Gateway
from tests.e2e.conftest import gateway_settings, sim_config
from tests.e2e.hardening.rpcs import Rpc, all_rpcs
from tws_simulator import TwsSimulator

EXAMPLES = int(os.environ.get("IBGW_FUZZ_EXAMPLES", "0")) or None
FUZZ_DEADLINE = 2.0  # seconds per call; DEADLINE_EXCEEDED is an acceptable outcome
SESSION_MOVERS = frozenset({"Connect", "Disconnect"})
RPCS = all_rpcs()
STRUCTURED = [r for r in RPCS if r.name not in SESSION_MOVERS]
FORBIDDEN = frozenset({grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL})

EDGE_TEXT = [
    "",
    "AAPL",
    "DU1234567",
    "U7654321",
    "k-1",
    " ",
    "\x00",
    "A\nB",
    "\u0661\u0662",
    "é😀",
    "x" * 65,
    "y" * 300,
    "2147483647",
    "1.7976931348623157E308",
]
EDGE_DECIMALS = [
    "",
    "1",
    "0",
    "-1",
    "150.25",
    "0.000000001",
    "1e5",
    "NaN",
    "Infinity",
    "-Infinity",
    "1.7976931348623157E308",
    "2147483647",
    "9" * 400,
    "\u0661\u0662",
    " 5 ",
    "1,000",
    ".5",
    "5.",
    "+3",
]
EDGE_INTS = [0, 1, -1, 2**31 - 1, 2**31 - 2, -(2**31), 2**53, 2**63 - 1, -(2**63)]


def _int_range(field: FieldDescriptor) -> tuple[int, int]:
    kind = field.type
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return 0, 2**32 - 1
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return 0, 2**64 - 1
    if kind in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_ENUM,
    ):
        return -(2**31), 2**31 - 1
    return -(2**63), 2**63 - 1


def _scalar(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return st.one_of(st.sampled_from(EDGE_TEXT), st.text(max_size=80))
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=80)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.floats(width=32 if kind == FieldDescriptor.TYPE_FLOAT else 64)
    low, high = _int_range(field)
    ints = st.one_of(
        st.sampled_from([i for i in EDGE_INTS if low <= i <= high]), st.integers(low, high)
    )
    if kind == FieldDescriptor.TYPE_ENUM:
        assert field.enum_type is not None
        defined = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(defined), st.integers(-3, 40), ints)
    if kind == FieldDescriptor.TYPE_MESSAGE:
        assert field.message_type is not None
        return message_strategy(field.message_type, depth + 1)
    return ints


def message_strategy(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of this type with any subset of fields set to edge or random values."""
    cls = GetMessageClass(descriptor)
    name = descriptor.full_name
    if name == "ibgateway.v1.Decimal":
        return st.builds(
            lambda v: cls(value=v), st.one_of(st.sampled_from(EDGE_DECIMALS), st.text(max_size=40))
        )
    if name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
        return st.builds(
            lambda s, n: cls(seconds=s, nanos=n),
            st.one_of(
                st.sampled_from([0, 1, -1, 3600, 1_700_000_000, 2**40, -(2**40)]),
                st.integers(-(2**63), 2**63 - 1),
            ),
            st.one_of(st.just(0), st.integers(-(2**31), 2**31 - 1)),
        )
    if depth > 3:
        return st.just(cls())
    parts: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        value = _scalar(field, depth)
        if field.is_repeated:
            parts[field.name] = st.lists(value, max_size=3)
        else:
            parts[field.name] = st.one_of(st.none(), value)

    def build(values: dict[str, Any]) -> Message:
        message = cls()
        for key, value in values.items():
            if value is None:
                continue
            field = descriptor.fields_by_name[key]
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                if field.is_repeated:
                    getattr(message, key).extend(value)
                else:
                    getattr(message, key).CopyFrom(value)
            elif field.is_repeated:
                getattr(message, key).extend(value)
            else:
                setattr(message, key, value)
        return message

    return st.fixed_dictionaries(parts).map(build)


def request_bytes(rpc: Rpc) -> st.SearchStrategy[bytes]:
    garbage = st.binary(max_size=96)
    if rpc.name in SESSION_MOVERS:
        # Only bytes that cannot decode (a field tag with the invalid wire type 7 first).
        return garbage.map(lambda b: b"\x0f" + b)
    structured = message_strategy(rpc.request).map(lambda m: m.SerializeToString())
    return st.one_of(structured, structured, garbage)


class _Trouble(logging.Handler):
    """Collects log records that carry a traceback or an internal error."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        internal = record.name.startswith("ibgateway_server") and record.levelno >= logging.ERROR
        if record.exc_info or "Traceback" in text or internal or "INTERNAL" in text:
            self.records.append(record)


class LiveGateway:
    """A simulator and a gateway on an event loop in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.sim: TwsSimulator | None = None
        self.gateway: Gateway | None = None

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)  # ib_insync asks for "the current" loop
        self.loop.run_forever()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> str:
        self.thread.start()

        async def start() -> str:
            self.sim = TwsSimulator(sim_config())
            await self.sim.start()
            self.gateway = Gateway(gateway_settings(self.sim, ibkr_timeout=1.5))
            await self.gateway.start()
            assert self.gateway.session is not None
            assert await self.gateway.session.wait_connected(10)
            return self.gateway.address

        address: str = self.run(start())
        return address

    def stop(self) -> None:
        async def stop() -> None:
            if self.gateway is not None:
                await self.gateway.stop(0.5)
            if self.sim is not None:
                await self.sim.stop()

        try:
            self.run(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture(scope="module")
def fuzz_target() -> Iterator[tuple[grpc.Channel, _Trouble]]:
    trouble = _Trouble()
    root = logging.getLogger()
    root.addHandler(trouble)
    previous = root.level
    root.setLevel(logging.INFO)
    live = LiveGateway()
    try:
        address = live.start()
        with grpc.insecure_channel(address) as channel:
            yield channel, trouble
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "ibgateway.v1.OrderService", "ibgateway.v1.MarketDataService"):
                answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
    finally:
        live.stop()
        root.removeHandler(trouble)
        root.setLevel(previous)


def _call(channel: grpc.Channel, rpc: Rpc, raw: bytes) -> grpc.StatusCode:
    try:
        if rpc.server_streaming:
            stream: Any = channel.unary_stream(rpc.path)
            call = stream(raw, timeout=FUZZ_DEADLINE)
            try:
                next(iter(call))  # the first message (or the error) is enough
            except StopIteration:
                pass
            finally:
                call.cancel()
            return grpc.StatusCode.OK
        unary: Any = channel.unary_unary(rpc.path)
        unary(raw, timeout=FUZZ_DEADLINE)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code


@settings(
    max_examples=EXAMPLES or 150,
    derandomize=EXAMPLES is None,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_no_input_gets_unknown_or_internal(
    fuzz_target: tuple[grpc.Channel, _Trouble], data: st.DataObject
) -> None:
    channel, trouble = fuzz_target
    rpc = data.draw(st.sampled_from(RPCS), label="rpc")
    raw = data.draw(request_bytes(rpc), label="request bytes")
    code = _call(channel, rpc, raw)
    assert code not in FORBIDDEN, (rpc.path, raw, code)
    if rpc.name in SESSION_MOVERS:
        assert code is grpc.StatusCode.INVALID_ARGUMENT, (rpc.path, code)
    assert not trouble.records, [r.getMessage() for r in trouble.records]


def test_every_rpc_is_fuzzed() -> None:
    assert {r.name for r in RPCS} >= {"PlaceOrder", "StreamOrderEvents", "GetQuotes"}
    assert len(STRUCTURED) == len(RPCS) - len(SESSION_MOVERS)
