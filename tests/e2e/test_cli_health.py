"""`ibgw health` as Docker's HEALTHCHECK and Kubernetes' exec probe run it: a subprocess
that follows the gateway's settings (IBGW_LISTEN, IBGW_TLS_*), exit code 0 = SERVING."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import GatewayFactory

IBGW = str(Path(sys.executable).with_name("ibgw"))


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


def _env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IBGW_", "IBKR_"))}
    env.update(settings)
    return env


async def ibgw(*args: str, env: dict[str, str]) -> tuple[int, str]:
    # the gateway keeps serving on this loop while the command runs
    proc = await asyncio.create_subprocess_exec(
        IBGW, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_health_follows_the_listen_address(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    env = _env(IBGW_LISTEN=f"0.0.0.0:{gw.port}")  # as in the container: a wildcard
    code, out = await ibgw("health", env=env)
    assert code == 0 and out.strip() == f"127.0.0.1:{gw.port}: the process: SERVING"
    code, out = await ibgw("health", "--service", "ibgateway.v1.OrderService", env=env)
    assert code == 0 and out.strip().endswith("ibgateway.v1.OrderService: SERVING")
    code, out = await ibgw("health", "--service", "no.such.Service", env=env)
    assert code == 1 and "NOT_FOUND" in out
    code, out = await ibgw("health", "-q", "--address", "127.0.0.1:1", env=_env())
    assert code == 1 and out == ""


async def test_health_readiness_follows_the_ib_session(make_gateway: GatewayFactory) -> None:
    gw = await make_gateway()
    assert gw.session is not None
    env = _env(IBGW_LISTEN=gw.address)
    await gw.session.disconnect()
    code, out = await ibgw("health", "--service", "ibgateway.v1.OrderService", env=env)
    assert code == 1 and "NOT_SERVING" in out
    code, _ = await ibgw("health", env=env)  # the process itself is alive
    assert code == 0


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
async def test_health_over_tls_and_mutual_tls(make_gateway: GatewayFactory, pki: Path) -> None:
    gw = await make_gateway(
        tls_cert=pki / "server.pem", tls_key=pki / "server.key", tls_client_ca=pki / "ca.pem"
    )
    env = _env(
        IBGW_LISTEN=gw.address,
        IBGW_TLS_CERT=str(pki / "server.pem"),
        IBGW_TLS_KEY=str(pki / "server.key"),
        IBGW_TLS_CLIENT_CA=str(pki / "ca.pem"),
        IBGW_TLS_CA=str(pki / "ca.pem"),
    )
    code, out = await ibgw("health", env=env)  # TLS, but no client certificate
    assert code == 1 and "UNAVAILABLE" in out and "(TLS)" in out
    env.update(
        IBGW_TLS_CLIENT_CERT=str(pki / "client.pem"), IBGW_TLS_CLIENT_KEY=str(pki / "client.key")
    )
    code, out = await ibgw("health", env=env)
    assert code == 0 and out.strip() == f"{gw.address} (TLS): the process: SERVING"
    code, out = await ibgw("health", "--tls-server-name", "other.example", env=env)
    assert code == 1  # the certificate is for 127.0.0.1 / localhost


async def test_version() -> None:
    code, out = await ibgw("--version", env=_env())
    assert code == 0 and out.startswith("ibgw, version ")
