"""Pure pieces of the cluster: settings of the roles, subject names, and the error a
forwarded call raises on the edge (the owner's own rich status, rebuilt)."""

from __future__ import annotations

import grpc
import pytest

from ibgateway_server.cluster.forwarding import status_to_error
from ibgateway_server.cluster.subjects import Subjects, line_token, parse_line_token
from ibgateway_server.config import ConfigError, load
from ibgateway_server.errors import GatewayError, from_ib_error, invalid_argument


def test_all_in_one_is_the_default_and_needs_no_nats() -> None:
    settings = load()
    assert settings.role == "all-in-one"
    assert not settings.reuse_port_effective


@pytest.mark.parametrize("role", ["owner", "edge"])
def test_cluster_roles_need_a_nats_url(role: str) -> None:
    with pytest.raises(ConfigError, match="IBGW_NATS_URL"):
        load(role=role)
    assert load(role=role, nats_url="nats://127.0.0.1:4222").role == role


def test_edges_share_their_port_unless_told_otherwise() -> None:
    assert load(role="edge", nats_url="nats://x:1").reuse_port_effective
    assert not load(role="edge", nats_url="nats://x:1", reuse_port=False).reuse_port_effective
    assert not load(role="owner", nats_url="nats://x:1").reuse_port_effective


@pytest.mark.parametrize("name", ["", "a.b", "a b", "x" * 33, "star*"])
def test_a_cluster_name_must_be_one_subject_token(name: str) -> None:
    with pytest.raises(ConfigError, match="IBGW_CLUSTER"):
        load(cluster=name)


def test_subjects() -> None:
    subjects = Subjects("paper1")
    assert subjects.quotes((265598, "SMART", 1)) == "ibgw.paper1.quotes.265598_SMART_1"
    assert parse_line_token(line_token((12087792, "", 3))) == (12087792, "", 3)
    method = "/ibgateway.v1.OrderService/PlaceOrder"
    assert subjects.rpc(method) == "ibgw.paper1.rpc.ibgateway.v1.OrderService.PlaceOrder"
    assert subjects.method_of(subjects.rpc(method)) == method


@pytest.mark.parametrize(
    "error",
    [
        from_ib_error(200, "No security definition has been found"),
        from_ib_error(100, "Max rate of messages per second has been exceeded"),
        invalid_argument([("quantity", "must be positive"), ("side", "required")]),
        GatewayError(grpc.StatusCode.UNAVAILABLE, "NOT_CONNECTED", "down", metadata={"a": "b"}),
    ],
)
def test_an_owner_error_is_raised_unchanged_on_the_edge(error: GatewayError) -> None:
    rebuilt = status_to_error(error.to_status_proto())
    assert rebuilt.to_status_proto() == error.to_status_proto()
