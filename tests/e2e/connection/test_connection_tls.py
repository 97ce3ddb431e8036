"""TLS and mutual TLS on the gateway's listener (certificates made with openssl)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import grpc
import grpc.aio
import pytest

from ibgateway.v1 import account_pb2, account_pb2_grpc
from tests.e2e.conftest import GatewayFactory

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=d)  # fmt: skip
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "san.ext",
                 "-out", f"{name}.pem", cwd=d)  # fmt: skip
    return d


async def _list_accounts(address: str, credentials: grpc.ChannelCredentials) -> str:
    async with grpc.aio.secure_channel(address, credentials) as channel:
        stub = account_pb2_grpc.AccountServiceStub(channel)
        response = await stub.ListAccounts(account_pb2.ListAccountsRequest(), timeout=5)
        return response.accounts[0].account_id


async def test_tls(make_gateway: GatewayFactory, pki: Path) -> None:
    gw = await make_gateway(tls_cert=pki / "server.pem", tls_key=pki / "server.key")
    trust = grpc.ssl_channel_credentials((pki / "ca.pem").read_bytes())
    assert await _list_accounts(gw.address, trust) == "DU1234567"
    with pytest.raises(grpc.aio.AioRpcError):  # plaintext is refused
        async with grpc.aio.insecure_channel(gw.address) as channel:
            stub = account_pb2_grpc.AccountServiceStub(channel)
            await stub.ListAccounts(account_pb2.ListAccountsRequest(), timeout=2)


async def test_mutual_tls_needs_a_client_certificate(
    make_gateway: GatewayFactory, pki: Path
) -> None:
    gw = await make_gateway(
        tls_cert=pki / "server.pem", tls_key=pki / "server.key", tls_client_ca=pki / "ca.pem"
    )
    ca = (pki / "ca.pem").read_bytes()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _list_accounts(gw.address, grpc.ssl_channel_credentials(ca))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    with_cert = grpc.ssl_channel_credentials(
        ca, (pki / "client.key").read_bytes(), (pki / "client.pem").read_bytes()
    )
    assert await _list_accounts(gw.address, with_cert) == "DU1234567"
