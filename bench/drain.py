"""Benchmark process: a raw HTTP/2 client that opens StreamQuotes calls and drains them.

    python -m bench.drain --address 127.0.0.1:50051 --streams 100 --symbols AAPL,MSFT

It speaks just enough HTTP/2 (RFC 9113) for gRPC over cleartext: the preface, SETTINGS
with 2 MiB stream windows (64 MiB for the connection), one HEADERS (HPACK literals, no
Huffman, no table) and one DATA frame per call, WINDOW_UPDATEs as data is consumed, PING
and SETTINGS acks. It walks
the 5-byte gRPC length prefixes in the DATA frames and does not parse the messages, so it
costs far less per message than the server that produces them (a grpc client parses every
message and would be the bottleneck). One message in ``--sample-every`` is parsed, to
measure latency (each quote's receive_time → now) and quotes per message.

Prints ``{"ready": ...}`` once every stream has received more than its opening statuses
(one per contract: the first quote message follows them), then answers commands
on stdin with one JSON line each: ``mark`` (messages, bytes, CPU so far), ``latency_reset``
/ ``latency``, ``stop``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import struct
import time
from typing import Any

from bench.common import cpu_seconds, emit, latency_summary, serve_commands
from ibgateway.v1 import common_pb2, market_data_pb2

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
WINDOW_UPDATE = 0x8
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
# Flow-control windows: large enough never to slow a reader that keeps up, small enough
# that a server writing faster than we read is held back by HTTP/2 (not by its memory:
# grpc-core cancels calls when its buffers grow without bound). Credit is given back as
# soon as half a window has been consumed.
STREAM_WINDOW = 1 << 21
CONNECTION_WINDOW = 1 << 26
STREAM_CREDIT = STREAM_WINDOW // 2
CONNECTION_CREDIT = CONNECTION_WINDOW // 2


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return (
        len(payload).to_bytes(3, "big")
        + bytes((kind, flags))
        + stream_id.to_bytes(4, "big")
        + payload
    )


def _hpack_literal(name: str, value: str) -> bytes:
    # "Literal Header Field without Indexing — New Name" (RFC 7541 6.2.2), no Huffman.
    n, v = name.encode(), value.encode()
    assert len(n) < 127 and len(v) < 127
    return bytes((0x00, len(n))) + n + bytes((len(v),)) + v


def request_headers(authority: str, path: str) -> bytes:
    return b"".join(
        _hpack_literal(name, value)
        for name, value in (
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", authority),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        )
    )


class Stream:
    __slots__ = ("credit", "header", "messages", "remaining", "sample")

    def __init__(self) -> None:
        self.remaining = 0  # bytes left of the current message's body
        self.header = b""  # a gRPC prefix split across two DATA frames
        self.sample: bytearray | None = None  # the body of a message being sampled
        self.messages = 0
        self.credit = 0  # bytes consumed since the last WINDOW_UPDATE


class Totals:
    def __init__(self, sample_every: int) -> None:
        self.messages = 0
        self.bytes = 0
        self.opening = 0  # messages a stream opens with (one status per contract)
        self.started = 0  # streams that have received more than their opening messages
        self.ended = 0  # streams the server ended (trailers or RST_STREAM)
        self.trailer = b""  # the first such trailer block (HPACK, for a diagnosis)
        self.goaway = 0
        self.sample_every = sample_every
        self.sampled_messages = 0
        self.sampled_quotes = 0
        self.latency = False
        self.samples: list[float] = []

    def sampled(self, body: bytes) -> None:
        message = market_data_pb2.StreamQuotesResponse.FromString(body)
        if message.WhichOneof("event") != "quotes":
            return
        quotes = message.quotes.quotes
        self.sampled_messages += 1
        self.sampled_quotes += len(quotes)
        if self.latency:
            now = time.time()
            for quote in quotes:
                received = quote.receive_time
                self.samples.append((now - received.seconds - received.nanos * 1e-9) * 1000)


class Connection(asyncio.Protocol):
    """One HTTP/2 connection carrying ``streams`` StreamQuotes calls."""

    def __init__(self, authority: str, request: bytes, streams: int, totals: Totals) -> None:
        self.authority = authority
        self.request = request
        self.count = streams
        self.totals = totals
        self.streams: dict[int, Stream] = {}
        self.buffer = bytearray()
        self.credit = 0
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        settings = struct.pack(">HI", SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW)
        out = [
            PREFACE,
            frame(SETTINGS, 0, 0, settings),
            frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", CONNECTION_WINDOW - 65_535)),
        ]
        headers = request_headers(self.authority, "/ibgateway.v1.MarketDataService/StreamQuotes")
        body = b"\x00" + struct.pack(">I", len(self.request)) + self.request
        for n in range(self.count):
            stream_id = 1 + 2 * n
            self.streams[stream_id] = Stream()
            out.append(frame(HEADERS, END_HEADERS, stream_id, headers))
            out.append(frame(DATA, END_STREAM, stream_id, body))
        transport.write(b"".join(out))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        size = len(buffer)
        pos = 0
        view = memoryview(buffer)
        out: list[bytes] = []
        totals = self.totals
        try:
            while size - pos >= 9:
                length = (buffer[pos] << 16) | (buffer[pos + 1] << 8) | buffer[pos + 2]
                end = pos + 9 + length
                if end > size:
                    break
                kind, flags = buffer[pos + 3], buffer[pos + 4]
                stream_id = int.from_bytes(view[pos + 5 : pos + 9]) & 0x7FFFFFFF
                start = pos + 9
                pos = end
                if kind == DATA:
                    stream = self.streams.get(stream_id)
                    self.credit += length
                    totals.bytes += length
                    if stream is None:
                        continue
                    stream.credit += length
                    if flags & PADDED:
                        end -= buffer[start]
                        start += 1
                    self._data(stream, view, start, end)
                    if stream.credit >= STREAM_CREDIT:
                        out.append(
                            frame(WINDOW_UPDATE, 0, stream_id, struct.pack(">I", stream.credit))
                        )
                        stream.credit = 0
                elif kind == HEADERS:
                    if flags & END_STREAM and stream_id in self.streams:
                        del self.streams[stream_id]
                        totals.ended += 1
                        totals.trailer = totals.trailer or bytes(view[start:end])
                elif kind == RST_STREAM:
                    if self.streams.pop(stream_id, None) is not None:
                        totals.ended += 1
                elif kind == SETTINGS:
                    if not flags & ACK:
                        out.append(frame(SETTINGS, ACK, 0))
                elif kind == PING:
                    if not flags & ACK:
                        out.append(frame(PING, ACK, 0, bytes(view[start:end])))
                elif kind == GOAWAY:
                    totals.goaway += 1
        finally:
            view.release()
        del buffer[:pos]
        if self.credit >= CONNECTION_CREDIT:
            out.append(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", self.credit)))
            self.credit = 0
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def _data(self, stream: Stream, view: memoryview, start: int, end: int) -> None:
        totals = self.totals
        while start < end:
            remaining = stream.remaining
            if remaining:
                take = min(remaining, end - start)
                if stream.sample is not None:
                    stream.sample += view[start : start + take]
                start += take
                stream.remaining = remaining - take
                if stream.remaining == 0 and stream.sample is not None:
                    body, stream.sample = bytes(stream.sample), None
                    totals.sampled(body)
                continue
            # a gRPC prefix: 1 byte compressed flag, 4 bytes length
            need = 5 - len(stream.header)
            if end - start < need:
                stream.header += bytes(view[start:end])
                return
            if stream.header:
                prefix = stream.header + bytes(view[start : start + need])
                stream.header = b""
                length = int.from_bytes(prefix[1:5])
            else:
                length = int.from_bytes(view[start + 1 : start + 5])
            start += need
            stream.messages += 1
            if stream.messages == totals.opening + 1:
                totals.started += 1  # its opening statuses are through: quotes flow
            totals.messages += 1
            stream.remaining = length
            if totals.messages % totals.sample_every == 0:
                stream.sample = bytearray()
                if length == 0:
                    stream.sample = None


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--symbols", required=True, help="comma-separated")
    parser.add_argument("--send-window-ms", type=float, help="StreamQuotes send_window")
    parser.add_argument("--streams-per-connection", type=int, default=100)
    parser.add_argument("--sample-every", type=int, default=64)
    parser.add_argument("--ready-timeout", type=float, default=120.0)
    parser.add_argument("--cpu", type=int, help="pin this process to one CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    loop = asyncio.get_running_loop()
    request = market_data_pb2.StreamQuotesRequest(
        contracts=[common_pb2.Contract(symbol=s) for s in args.symbols.split(",")]
    )
    if args.send_window_ms is not None:
        request.send_window.FromNanoseconds(int(args.send_window_ms * 1e6))
    payload = request.SerializeToString()
    totals = Totals(args.sample_every)
    totals.opening = len(request.contracts)
    stop = asyncio.Event()

    def handle(command: str) -> None:
        if command == "mark":
            emit(
                {
                    "t": time.monotonic(),
                    "messages": totals.messages,
                    "bytes": totals.bytes,
                    "started": totals.started,
                    "ended": totals.ended,
                    "goaway": totals.goaway,
                    "sampled_messages": totals.sampled_messages,
                    "sampled_quotes": totals.sampled_quotes,
                    "cpu_s": cpu_seconds(),
                }
            )
        elif command == "latency_reset":
            totals.samples = []
            totals.latency = True
            emit({"ok": True})
        elif command == "latency":
            totals.latency = False
            emit(latency_summary(totals.samples))
        elif command == "stop":
            stop.set()

    serve_commands(loop, handle, on_eof=stop.set)
    host, port = args.address.rsplit(":", 1)
    # One connection (of up to 100 calls) at a time, each opened once the previous ones
    # are streaming: a busy grpc.aio server takes new calls slowly, and grpc-core cancels a
    # call that waits more than 30 s to be taken (server_max_unrequested_time_in_server).
    connections: list[Connection] = []
    left = args.streams
    start = loop.time()
    error = ""
    while left > 0 and not error:
        count = min(left, args.streams_per_connection)
        left -= count
        conn = Connection(args.address, payload, count, totals)
        await loop.create_connection(lambda conn=conn: conn, host, int(port))  # type: ignore[misc]
        connections.append(conn)
        opened = args.streams - left
        while totals.started + totals.ended < opened and not stop.is_set():
            if loop.time() - start > args.ready_timeout:
                error = f"only {totals.started}/{args.streams} streams started"
                break
            if totals.ended > args.streams // 10:
                error = f"{totals.ended} streams ended by the server"
                break
            await asyncio.sleep(0.02)
    emit(
        {
            "ready": not error,
            "streams": args.streams,
            "open_s": loop.time() - start,
            "error": error,
            "ended": totals.ended,
            "trailer": repr(totals.trailer[:300]),
        }
    )
    await stop.wait()
    for conn in connections:
        if conn.transport is not None:
            conn.transport.close()
    for conn in connections:
        await asyncio.wait_for(conn.closed, 5)


if __name__ == "__main__":
    asyncio.run(main())
