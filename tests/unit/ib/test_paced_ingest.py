"""PacedIngest: TWS data reaches ib_insync's decoder a bounded amount per loop pass, in
order, with the socket paused while a large backlog waits, and all of it before a
disconnect. The client stands in for ib_insync's (it records what it is fed)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from ibgateway_server.ib.insync import PacedIngest


class Event:
    def __init__(self) -> None:
        self.handlers: list[Callable[..., None]] = []

    def __iadd__(self, handler: Callable[..., None]) -> Event:
        self.handlers.append(handler)
        return self

    def __isub__(self, handler: Callable[..., None]) -> Event:
        self.handlers.remove(handler)
        return self

    def emit(self, *args: Any) -> None:
        for handler in list(self.handlers):
            handler(*args)


class Transport:
    def __init__(self) -> None:
        self.paused = False
        self.pauses = 0

    def pause_reading(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return False


class Client:
    """ib_insync's Client as PacedIngest sees it."""

    def __init__(self) -> None:
        self.conn = SimpleNamespace(hasData=Event(), disconnected=Event(), transport=Transport())
        self.fed: list[bytes] = []
        self.log: list[str] = []
        self.conn.hasData += self._onSocketHasData
        self.conn.disconnected += self._onSocketDisconnected

    def _onSocketHasData(self, data: bytes) -> None:
        self.fed.append(data)
        self.log.append("data")

    def _onSocketDisconnected(self, message: str) -> None:
        self.log.append(f"disconnected {message}")


def paced(chunk: int = 1000, backlog: int = 5000, pause: float = 0.0) -> tuple[PacedIngest, Client]:
    client = Client()
    ingest = PacedIngest(
        SimpleNamespace(client=client),  # type: ignore[arg-type]
        chunk=chunk,
        backlog=backlog,
        pause=pause,
    )
    return ingest, client


async def test_small_reads_go_straight_through() -> None:
    _, client = paced()
    client.conn.hasData.emit(b"x" * 1000)
    assert client.fed == [b"x" * 1000]


async def test_a_large_read_is_fed_one_chunk_per_loop_pass_in_order() -> None:
    ingest, client = paced()
    data = bytes(range(256)) * 16  # 4096 bytes
    client.conn.hasData.emit(data)
    assert [len(piece) for piece in client.fed] == [1000]  # the rest waits for the loop
    await asyncio.sleep(0)
    assert len(client.fed) == 2
    client.conn.hasData.emit(b"tail")  # a newer read queues behind the backlog
    for _ in range(5):
        await asyncio.sleep(0)
    assert max(len(piece) for piece in client.fed) <= 1000
    assert b"".join(client.fed) == data + b"tail"
    assert ingest.pending == 0


async def test_between_chunks_the_loop_may_go_idle() -> None:
    """With a pause, the next chunk waits for a timer, not the next pass: a loop with
    nothing else to do sleeps (and gRPC's completion thread gets the GIL)."""
    _, client = paced(pause=0.01)
    client.conn.hasData.emit(b"c" * 2500)
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(client.fed) == 1
    await asyncio.sleep(0.05)
    assert b"".join(client.fed) == b"c" * 2500


async def test_a_backlog_pauses_the_socket_until_it_is_decoded() -> None:
    ingest, client = paced()
    transport = client.conn.transport
    client.conn.hasData.emit(b"a" * 8000)
    assert transport.paused
    for _ in range(8):  # one chunk per pass
        await asyncio.sleep(0)
    assert ingest.pending == 0
    assert not transport.paused
    assert transport.pauses == 1
    assert sum(len(piece) for piece in client.fed) == 8000


async def test_everything_received_is_decoded_before_the_disconnect() -> None:
    _, client = paced()
    client.conn.hasData.emit(b"b" * 3500)
    client.conn.disconnected.emit("")
    assert client.log == ["data"] * 4 + ["disconnected "]
    assert b"".join(client.fed) == b"b" * 3500
