"""A bounded connection pool (seed 14.2.3, done with limits and health checks).

* at most ``max_size`` connections exist at once (idle + in use);
* an idle connection older than ``idle_timeout`` is closed instead of reused;
* every checkout of an idle connection runs ``health_check`` first; failures are replaced;
* a checkout waits at most ``pool_timeout`` for a free slot, then raises
  :class:`~wirekit.errors.PoolTimeout`;
* a connection whose ``with`` block raised is discarded, not returned to the pool.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..errors import PoolClosed, PoolTimeout, UsageError

C = TypeVar("C")


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    max_size: int
    size: int
    idle: int
    in_use: int
    waiting: int
    created: int
    reused: int
    expired: int
    unhealthy: int
    discarded: int
    timeouts: int


class ConnectionPool(Generic[C]):
    def __init__(
        self,
        connect: Callable[[], Awaitable[C]],
        close: Callable[[C], Awaitable[None]],
        *,
        max_size: int = 10,
        idle_timeout: float = 60.0,
        pool_timeout: float = 5.0,
        health_check: Callable[[C], Awaitable[bool]] | None = None,
    ) -> None:
        if max_size < 1:
            raise UsageError("pool max_size must be at least 1")
        self._connect = connect
        self._close = close
        self._health_check = health_check
        self.max_size = max_size
        self.idle_timeout = idle_timeout
        self.pool_timeout = pool_timeout
        self._idle: deque[tuple[C, float]] = deque()
        self._size = 0
        self._in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        self._created = self._reused = self._expired = 0
        self._unhealthy = self._discarded = self._timeouts = 0

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(
            max_size=self.max_size,
            size=self._size,
            idle=len(self._idle),
            in_use=self._in_use,
            waiting=len(self._waiters),
            created=self._created,
            reused=self._reused,
            expired=self._expired,
            unhealthy=self._unhealthy,
            discarded=self._discarded,
            timeouts=self._timeouts,
        )

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[C]:
        """Check a connection out for the ``async with`` block."""
        conn = await self.acquire()
        try:
            yield conn
        except BaseException:
            await self.release(conn, discard=True)
            raise
        await self.release(conn)

    async def acquire(self) -> C:
        if self._closed:
            raise PoolClosed("pool is closed")
        try:
            async with asyncio.timeout(self.pool_timeout) as deadline:
                return await self._acquire()
        except TimeoutError:
            if not deadline.expired():
                raise  # a connect that timed out by itself: not the pool's wait
            self._timeouts += 1
            raise PoolTimeout(self.pool_timeout) from None

    async def _acquire(self) -> C:
        loop = asyncio.get_running_loop()
        while True:
            while self._idle:
                conn, since = self._idle.pop()  # LIFO: the warmest connection first
                if loop.time() - since > self.idle_timeout:
                    self._expired += 1
                    await self._drop(conn)
                    continue
                if self._health_check is not None and not await self._health_check(conn):
                    self._unhealthy += 1
                    await self._drop(conn)
                    continue
                self._reused += 1
                self._in_use += 1
                return conn
            if self._size < self.max_size:
                self._size += 1  # reserve the slot before awaiting the connect
                try:
                    conn = await self._connect()
                except BaseException:
                    self._size -= 1
                    self._wake_one()
                    raise
                self._created += 1
                self._in_use += 1
                return conn
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake_one()  # we were woken but are leaving: pass the turn on
                raise

    async def release(self, conn: C, *, discard: bool = False) -> None:
        """Return ``conn``; with ``discard`` (or after :meth:`aclose`) close it instead."""
        self._in_use -= 1
        if discard or self._closed:
            self._discarded += discard
            await self._drop(conn)
            return
        self._idle.append((conn, asyncio.get_running_loop().time()))
        self._wake_one()

    async def prune(self) -> int:
        """Close idle connections past ``idle_timeout``; returns how many."""
        now = asyncio.get_running_loop().time()
        keep: deque[tuple[C, float]] = deque()
        stale: list[C] = []
        for conn, since in self._idle:
            if now - since > self.idle_timeout:
                stale.append(conn)
            else:
                keep.append((conn, since))
        self._idle = keep
        for conn in stale:
            self._expired += 1
            await self._drop(conn)
        return len(stale)

    async def aclose(self) -> None:
        """Close idle connections now; in-use ones close when released."""
        self._closed = True
        while self._idle:
            conn, _ = self._idle.pop()
            await self._drop(conn)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(PoolClosed("pool is closed"))
        self._waiters.clear()

    async def __aenter__(self) -> ConnectionPool[C]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _drop(self, conn: C) -> None:
        self._size -= 1
        self._wake_one()
        try:
            await self._close(conn)
        except Exception:  # closing a broken connection may fail; the slot is free anyway
            pass

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
