"""The bounded queue behind WatchConnectionStatus: a consumer that falls behind keeps at
most MAX_PENDING_UPDATES messages, always including the newest."""

from __future__ import annotations

import asyncio

from ibgateway.v1 import common_pb2, connection_pb2
from ibgateway_server.api.connection import MAX_PENDING_UPDATES, StatusFeed


def update(n: int) -> connection_pb2.WatchConnectionStatusResponse:
    change = common_pb2.ConnectionStateChange(message=f"change {n}")
    return connection_pb2.WatchConnectionStatusResponse(
        update=connection_pb2.ConnectionUpdate(change=change)
    )


def drain(feed: StatusFeed) -> list[str]:
    out = []
    while (message := feed.pop()) is not None:
        out.append(message.update.change.message)
    return out


def test_a_consumer_that_falls_behind_keeps_the_newest_updates_only() -> None:
    feed = StatusFeed()
    for n in range(100):
        feed.push(update(n))
    kept = drain(feed)
    assert kept == [f"change {n}" for n in range(100 - MAX_PENDING_UPDATES, 100)]
    assert feed.dropped == 100 - MAX_PENDING_UPDATES


def test_nothing_is_dropped_while_the_consumer_keeps_up() -> None:
    feed = StatusFeed(limit=4)
    seen = []
    for n in range(20):
        feed.push(update(n))
        seen += drain(feed)
    assert seen == [f"change {n}" for n in range(20)]
    assert feed.dropped == 0


async def test_wait_returns_on_push_on_end_or_after_the_timeout() -> None:
    loop = asyncio.get_running_loop()
    feed = StatusFeed()
    start = loop.time()
    await feed.wait(0.05)
    assert loop.time() - start >= 0.04  # nothing happened: the heartbeat is due

    loop.call_later(0.01, feed.push, update(1))
    start = loop.time()
    await feed.wait(5)
    assert loop.time() - start < 1
    assert drain(feed) == ["change 1"]

    loop.call_later(0.01, feed.end)
    start = loop.time()
    await feed.wait(5)
    assert feed.ended and loop.time() - start < 1

    feed = StatusFeed()
    feed.push(update(2))
    feed.end()
    feed.push(update(3))  # after the end: ignored; what was pending still drains
    assert drain(feed) == ["change 2"]
