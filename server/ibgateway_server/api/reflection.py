"""Server reflection, v1 and v1alpha, served from descriptors that keep the .proto
comments, so that `grpcurl describe` prints them.

grpcio-reflection serves v1alpha only, and from the generated modules' descriptors, which
protoc strips of source info. Here the ibgateway files come from the descriptor set that
`make proto` writes with ``--include_source_info`` (ibgateway/v1/ibgateway.binpb, shipped
in the client package); every other file (google/protobuf, google/rpc, health) as before.
grpc.reflection.v1 is the same protocol as v1alpha under another package name (identical
messages and field numbers), so one servicer answers both.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterable
from typing import Any

import grpc
import grpc.aio
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha._async import ReflectionServicer

V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
V1 = "grpc.reflection.v1.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"


def load_source_files() -> dict[str, bytes]:
    """The ibgateway .proto files with source info: {file name: FileDescriptorProto}."""
    raw = (importlib.resources.files("ibgateway.v1") / "ibgateway.binpb").read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(raw).file
    return {f.name: f.SerializeToString() for f in files}


def _register_v1_descriptor(pool: Any) -> None:
    """Put grpc/reflection/v1/reflection.proto in the pool (built from v1alpha's by
    renaming the package), so that clients can also describe the v1 service itself."""
    try:
        pool.FindFileByName(_V1_FILE)
        return
    except KeyError:
        pass
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name, proto.package = _V1_FILE, "grpc.reflection.v1"
    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):  # scalars have none (setting "" would add one)
                field.type_name = field.type_name.replace(old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    pool.AddSerializedFile(proto.SerializeToString())


class SourceInfoReflection(ReflectionServicer):
    """grpcio-reflection's asyncio servicer, answering file requests with the
    source-info descriptors where it has them."""

    def __init__(self, service_names: Iterable[str], source_files: dict[str, bytes]) -> None:
        super().__init__(service_names)
        self._source_files = source_files

    def _response(self, descriptor: Any, request: Any) -> reflection_pb2.ServerReflectionResponse:
        files: dict[str, Any] = {}
        pending = [descriptor]
        while pending:  # the file and everything it imports, each once
            current = pending.pop()
            if current.name in files:
                continue
            files[current.name] = current
            pending.extend(current.dependencies)
        serialized = []
        for name, file in files.items():
            source = self._source_files.get(name)
            if source is None:
                proto = descriptor_pb2.FileDescriptorProto()
                file.CopyToProto(proto)
                source = proto.SerializeToString()
            serialized.append(source)
        return reflection_pb2.ServerReflectionResponse(
            file_descriptor_response=reflection_pb2.FileDescriptorResponse(
                file_descriptor_proto=serialized
            ),
            original_request=request,
        )

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        try:
            descriptor = self._pool.FindFileByName(filename)
        except KeyError:
            return super()._file_by_filename(request, filename)  # its NOT_FOUND answer
        return self._response(descriptor, request)

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        try:
            descriptor = self._pool.FindFileContainingSymbol(fully_qualified_name)
        except KeyError:
            # a method (`grpcurl describe pkg.Service.Method`): the pool finds only its
            # service; the file is the same
            parent, _, method = fully_qualified_name.rpartition(".")
            try:
                service = self._pool.FindServiceByName(parent)
                if method not in service.methods_by_name:
                    raise KeyError(fully_qualified_name)
            except KeyError:
                return super()._file_containing_symbol(request, fully_qualified_name)
            descriptor = service.file
        return self._response(descriptor, request)


def add_reflection(server: grpc.aio.Server, service_names: Iterable[str]) -> None:
    """Serve reflection v1 and v1alpha for ``service_names`` (and for themselves)."""
    _register_v1_descriptor(descriptor_pool.Default())
    servicer = SourceInfoReflection([*service_names, V1, V1ALPHA], load_source_files())
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.method_handlers_generic_handler(
        V1,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((v1,))
