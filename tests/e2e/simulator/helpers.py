"""Test helpers: polling, log capture, and a bare wire-level TWS API client."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ib_insync import Contract

from tests.polling import wait_until  # noqa: F401  (re-exported for the tests)

CAPTURES = Path("/work/shared/reference/tws-captures")
if not CAPTURES.is_dir():  # a clean clone keeps a copy next to the repository's shared dir
    CAPTURES = Path(__file__).resolve().parents[4] / "shared" / "reference" / "tws-captures"


def capture(name: str) -> list[str]:
    """The fields of one recorded real-TWS message (``\\x00`` spelled out in the file)."""
    text = (CAPTURES / name).read_text().strip()
    fields = text.split("\\x00")
    assert fields[-1] == "", f"{name}: a message ends with a NUL"
    return fields[:-1]


def contract_of(item: Any) -> Contract:
    """The contract of a ticker / contract details / description (typed as optional)."""
    contract = item.contract
    assert contract is not None
    return contract


class RawClient:
    """A bare TWS API client over a real socket: sends fields, returns the exact fields read."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.server_version = 0
        self.connection_time = ""
        self.pending: list[list[str]] = []

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        versions: str = "v157..176",
        client_id: int | None = 1,
    ) -> RawClient:
        """Open a socket and handshake; with ``client_id`` also startApi (and drain it)."""
        reader, writer = await asyncio.open_connection(host, port)
        client = cls(reader, writer)
        payload = versions.encode()
        writer.write(b"API\0" + struct.pack(">I", len(payload)) + payload)
        first = await client.recv()
        if len(first) != 2:  # refused: the answer is an error, not (version, time)
            client.pending.append(first)
            return client
        client.server_version, client.connection_time = int(first[0]), first[1]
        if client_id is not None:
            await client.start_api(client_id)
            # managedAccounts, nextValidId, then the farm messages, 2158 last: skip them all
            await client.expect("4", lambda f: f[3] == "2158")
            client.pending.clear()
        return client

    async def start_api(self, client_id: int) -> None:
        await self.send(71, 2, client_id, "")

    async def send(self, *fields: object) -> None:
        payload = b"".join(str(f).encode() + b"\0" for f in fields)
        self.writer.write(struct.pack(">I", len(payload)) + payload)
        await self.writer.drain()

    async def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self, within: float = 5.0) -> list[str]:
        if self.pending:
            return self.pending.pop(0)
        header = await asyncio.wait_for(self.reader.readexactly(4), within)
        (length,) = struct.unpack(">I", header)
        payload = await asyncio.wait_for(self.reader.readexactly(length), within)
        fields = payload.decode().split("\0")
        assert fields[-1] == "", "every field is NUL-terminated"
        return fields[:-1]

    async def expect(
        self, msg_id: str, where: Callable[[list[str]], bool] = lambda f: True, within: float = 5.0
    ) -> list[str]:
        """The next message with this id (and matching ``where``); others are kept for later."""
        loop = asyncio.get_running_loop()
        end = loop.time() + within
        skipped: list[list[str]] = []
        kept = self.pending
        self.pending = []
        try:
            for fields in kept:
                if fields[0] == msg_id and where(fields):
                    kept.remove(fields)
                    return fields
            while True:
                fields = await self.recv(max(0.01, end - loop.time()))
                if fields[0] == msg_id and where(fields):
                    return fields
                skipped.append(fields)
        finally:
            self.pending = [f for f in kept] + skipped + self.pending

    async def closed(self, within: float = 5.0) -> bool:
        """True once the server has closed the socket (everything sent is read first)."""
        try:
            while True:
                data = await asyncio.wait_for(self.reader.read(65536), within)
                if not data:
                    return True
        except (TimeoutError, ConnectionError):
            return False

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass
