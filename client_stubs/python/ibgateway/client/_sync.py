"""The blocking client: the asyncio client run on its own event loop in a background
thread, so blocking code (scripts, notebooks, threads) gets the same behaviour."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar

from ibgateway.client import _aio

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S", bound="_aio._Service")


class _Loop:
    """An event loop in a daemon thread; runs coroutines for the calling thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="ibgateway-client", daemon=True
        )
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. Ctrl-C in the calling thread: stop the call too
            raise

    def iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        async def next_item() -> T:
            return await anext(iterator)

        try:
            while True:
                try:
                    yield self.run(next_item())
                except StopAsyncIteration:
                    return
        finally:
            closer = getattr(iterator, "aclose", None)
            if closer is not None and self.loop.is_running():
                self.run(closer())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        self.loop.close()


class _Blocking(Generic[S]):
    def __init__(self, loop: _Loop, service: S) -> None:
        self._loop = loop
        self._async = service


def _call(
    method: Callable[Concatenate[S, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[_Blocking[S], P], T]:
    def blocking(self: _Blocking[S], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._loop.run(method(self._async, *args, **kwargs))

    blocking.__doc__ = method.__doc__
    return blocking


def _stream(
    method: Callable[Concatenate[S, P], AsyncIterator[T]],
) -> Callable[Concatenate[_Blocking[S], P], Iterator[T]]:
    def blocking(self: _Blocking[S], /, *args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
        return self._loop.iterate(method(self._async, *args, **kwargs))

    blocking.__doc__ = method.__doc__
    return blocking


class ConnectionService(_Blocking[_aio.ConnectionService]):
    status = _call(_aio.ConnectionService.status)
    test = _call(_aio.ConnectionService.test)


class AccountService(_Blocking[_aio.AccountService]):
    list = _call(_aio.AccountService.list)
    balance = _call(_aio.AccountService.balance)
    pnl = _call(_aio.AccountService.pnl)
    summary = _call(_aio.AccountService.summary)


class PortfolioService(_Blocking[_aio.PortfolioService]):
    positions = _call(_aio.PortfolioService.positions)


class MarketDataService(_Blocking[_aio.MarketDataService]):
    resolve = _call(_aio.MarketDataService.resolve)
    get_quotes = _call(_aio.MarketDataService.get_quotes)
    stream_quotes = _stream(_aio.MarketDataService.stream_quotes)


class OrderService(_Blocking[_aio.OrderService]):
    place = _call(_aio.OrderService.place)
    modify = _call(_aio.OrderService.modify)
    cancel = _call(_aio.OrderService.cancel)
    get = _call(_aio.OrderService.get)
    list = _call(_aio.OrderService.list)
    events = _stream(_aio.OrderService.events)


class Client:
    """A connection to one gateway, for blocking code; the same services and methods as
    :class:`AsyncClient`, without ``await`` (streams are plain iterators).

        with Client("127.0.0.1:50051") as gw:
            for q in gw.market_data.get_quotes(["AAPL", "MSFT"]):
                print(q.symbol, q.bid, q.ask)
    """

    def __init__(self, target: str = "127.0.0.1:50051", **options: Any) -> None:
        self._loop = _Loop()

        async def make() -> _aio.AsyncClient:
            return _aio.AsyncClient(target, **options)  # the channel belongs to that loop

        try:
            self.aio = self._loop.run(make())
        except BaseException:
            self._loop.stop()
            raise
        self.target = target
        self.connection = ConnectionService(self._loop, self.aio.connection)
        self.accounts = AccountService(self._loop, self.aio.accounts)
        self.portfolio = PortfolioService(self._loop, self.aio.portfolio)
        self.market_data = MarketDataService(self._loop, self.aio.market_data)
        self.orders = OrderService(self._loop, self.aio.orders)

    def wait_ready(self, timeout: float = 10.0) -> None:
        self._loop.run(self.aio.wait_ready(timeout))

    def close(self) -> None:
        if self._loop.loop.is_closed():
            return
        self._loop.run(self.aio.close())
        self._loop.stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__: Sequence[str] = ["Client"]
