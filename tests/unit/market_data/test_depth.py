"""The gateway's depth book: IB's row operations applied, books conflated (pure)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from ibgateway_server.ib.insync import Contract
from ibgateway_server.market_data.depth import DepthLine, DepthStream, Row, apply_ticks


def tick(op: int, side: int, pos: int, price: float = 0.0, size: float = 0.0) -> Any:
    return SimpleNamespace(
        operation=op, side=side, position=pos, price=price, size=size, marketMaker=""
    )


def test_insert_update_delete_by_position() -> None:
    bids: list[Row] = []
    asks: list[Row] = []
    apply_ticks(
        bids,
        asks,
        [
            tick(0, 1, 0, 10.0, 100),
            tick(0, 1, 1, 9.99, 200),
            tick(0, 0, 0, 10.01, 300),
            tick(0, 1, 0, 10.005, 50),  # a better bid: everything moves down
            tick(1, 1, 2, 9.99, 250),
            tick(2, 1, 1, 10.0, 0),
            tick(2, 0, 5),  # a row that does not exist: dropped, not guessed
            tick(1, 0, 3, 10.2, 1),  # ditto
        ],
    )
    assert bids == [(10.005, 50, ""), (9.99, 250, "")]
    assert asks == [(10.01, 300, "")]


class _Hub:
    def release(self, line: Any, stream: Any) -> None: ...
    def unregister(self, stream: Any) -> None: ...


async def test_a_slow_reader_gets_the_newest_book_and_the_count_it_missed() -> None:
    line = DepthLine((1, False), Contract(conId=1, symbol="X"))
    ticker = SimpleNamespace(domTicks=[], time=None)
    line.ticker = ticker
    stream = DepthStream(_Hub(), Contract(conId=1), rows=5, heartbeat=5.0)  # type: ignore[arg-type]
    stream.line = line
    line.streams.append(stream)
    for n in range(4):
        ticker.domTicks = [tick(0, 1, 0, 10.0 + n, 100)]
        line.on_update(ticker)
        if n == 0:
            message, _ = stream._next()
            assert message is not None and message.book.conflated_updates == 0
    message, last = stream._next()
    assert message is not None and not last
    assert message.book.conflated_updates == 2  # versions 2 and 3 were never sent
    assert [lv.price.value for lv in message.book.bids][:1] == ["13"]
    assert stream._next() == (None, False)  # nothing new
    await asyncio.sleep(0)
