"""The committed stubs must be exactly what `make proto` generates from the .proto files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]
PROTO_ROOT = ROOT / "protos"
STUBS = ROOT / "client_stubs" / "python" / "ibgateway" / "v1"
BIN = Path(sys.executable).parent


def _generate(out: Path) -> None:
    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.glob("ibgateway/v1/*.proto"))
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--mypy_out={out}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    assert protoc.main(args) == 0, "protoc failed"
    # the descriptor set with source info (comments) that server reflection serves
    descriptor_set = out / "ibgateway" / "v1" / "ibgateway.binpb"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        "--include_source_info",
        f"--descriptor_set_out={descriptor_set}",
        *protos,
    ]
    assert protoc.main(args) == 0, "protoc failed"


def test_committed_stubs_match_the_protos(tmp_path: Path) -> None:
    _generate(tmp_path)
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "ibgateway" / "v1").iterdir()}
    committed = {
        p.name: p.read_bytes() for p in STUBS.iterdir() if p.name != "__init__.py" and p.is_file()
    }
    assert sorted(fresh) == sorted(committed), "stub files differ: run `make proto`"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stubs out of date, run `make proto`: {stale}"


@pytest.mark.parametrize(
    "service",
    [
        "ConnectionService",
        "AccountService",
        "PortfolioService",
        "MarketDataService",
        "OrderService",
    ],
)
def test_every_service_is_in_package_ibgateway_v1(service: str) -> None:
    from google.protobuf import descriptor_pool

    import ibgateway.v1.account_pb2
    import ibgateway.v1.connection_pb2
    import ibgateway.v1.market_data_pb2
    import ibgateway.v1.orders_pb2
    import ibgateway.v1.portfolio_pb2  # noqa: F401  (registers the descriptors)

    desc = descriptor_pool.Default().FindServiceByName(f"ibgateway.v1.{service}")
    assert desc.methods, f"{service} has no RPCs"
