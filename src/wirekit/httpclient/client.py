"""The HTTP client: pooled keep-alive connections per origin, separate connect/read/total
timeouts, retries with backoff and jitter, redirects, bounded bodies."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from pathlib import Path
from time import perf_counter
from typing import BinaryIO
from urllib.parse import urljoin

from ..errors import (
    ConnectError,
    ConnectionClosed,
    OversizeError,
    PeerError,
    Timeout,
    UsageError,
)
from ..io.client import Timeouts
from ..io.pool import ConnectionPool
from ..io.tls import client_context
from ..limits import MiB
from ..proto.backoff import Backoff
from .connection import HttpConnection, StaleConnection, Timing, open_connection
from .request import Origin, Request, normalize_url, split_url
from .wire import ResponseHead

log = logging.getLogger("wirekit.httpclient")

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Headers that must not follow a redirect to another origin (curl drops the same).
_CREDENTIALS = frozenset({"authorization", "cookie", "proxy-authorization", "host"})


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Timeouts in seconds. ``total_timeout`` bounds one :meth:`HttpClient.fetch` with all its
    retries, waits and redirects (``None``: no bound); ``read_timeout`` bounds each wait for
    bytes (and each write). ``backoff_cap`` is also the longest ``Retry-After`` honoured."""

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    total_timeout: float | None = None
    retries: int = 0
    retry_any: bool = False
    backoff_base: float = 0.25
    backoff_cap: float = 10.0
    follow: bool = False
    max_redirects: int = 10
    max_body: int = 64 * MiB
    max_connections: int = 1
    ca: str | None = None
    insecure: bool = False

    def __post_init__(self) -> None:
        if self.connect_timeout <= 0 or self.read_timeout <= 0:
            raise UsageError("--connect-timeout and --read-timeout must be positive")
        if self.total_timeout is not None and self.total_timeout <= 0:
            raise UsageError("--timeout must be positive")
        if self.retries < 0 or self.max_redirects < 0:
            raise UsageError("--retries and --max-redirects must be 0 or more")
        if self.max_body < 1 or self.max_connections < 1:
            raise UsageError("--max-body and --concurrency must be at least 1")


@dataclass(frozen=True, slots=True)
class Response:
    request: Request  # the request this answers (the last one, after redirects)
    head: ResponseHead
    body: bytes  # empty when saved to a file
    body_size: int
    saved_to: Path | None
    timing: Timing  # of the exchange that got this response
    peer: str
    reused: bool  # came over a kept-alive connection
    attempts: int  # of the last request (1 + retries used)
    redirects: tuple[str, ...] = ()  # the URLs redirected from, in order
    elapsed: float = 0.0  # the whole fetch: attempts, backoff waits, redirects


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    exchanges: int  # requests written (every attempt, every redirect hop)
    connections_opened: int
    connections_reused: int  # checkouts that got an already open connection


class TooManyRedirects(PeerError):
    hint = "too-many-redirects"


class _Body:
    """Where one response body goes: memory (up to ``limit``), nowhere (counted), or a file."""

    __slots__ = ("data", "file", "keep", "limit", "size")

    def __init__(self, limit: int, keep: bool, file: BinaryIO | None = None) -> None:
        self.data = bytearray()
        self.file = file
        self.keep = keep
        self.limit = limit
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.file is not None:
            try:
                self.file.write(chunk)
            except OSError as exc:
                raise UsageError(f"cannot write {self.file.name}: {exc.strerror}") from None
            return
        if self.size > self.limit:
            raise OversizeError(
                f"response body exceeds the limit of {self.limit} bytes "
                "(raise --max-body, or save it with -o FILE)",
                self.size,
                self.limit,
            )
        if self.keep:
            self.data += chunk


class HttpClient:
    """``async with HttpClient(options) as client: response = await client.fetch(request)``."""

    def __init__(self, options: ClientOptions | None = None) -> None:
        self.options = options or ClientOptions()
        # The connect timeout is applied around the pool checkout (see _exchange).
        self._timeouts = Timeouts(
            connect=None, read=self.options.read_timeout, write=self.options.read_timeout
        )
        self._tls: ssl.SSLContext | None = None
        self._pools: dict[Origin, ConnectionPool[HttpConnection]] = {}
        self._exchanges = 0

    def statistics(self) -> ClientStatistics:
        pools = [pool.statistics() for pool in self._pools.values()]
        return ClientStatistics(
            exchanges=self._exchanges,
            connections_opened=sum(s.created for s in pools),
            connections_reused=sum(s.reused for s in pools),
        )

    async def fetch(self, request: Request, output: Path | None = None) -> Response:
        """Send ``request`` (retrying and following redirects as the options say) and return
        the final response; its body goes to ``output`` when given. Raises ``Timeout`` (phase
        ``connect``, ``read``, ``write`` or ``request`` for the total), ``ConnectError``,
        ``ConnectionClosed``, :class:`TooManyRedirects` or a ``PeerError``."""
        started = perf_counter()
        total = self.options.total_timeout
        deadline = asyncio.timeout(total)
        redirects: list[str] = []
        try:
            async with deadline:
                while True:
                    response = await self._retrying(request, output)
                    location = self._redirect(response.head)
                    if location is None:
                        break
                    if len(redirects) == self.options.max_redirects:
                        raise TooManyRedirects(
                            f"more than {self.options.max_redirects} redirects "
                            f"(last to {location}); raise --max-redirects"
                        )
                    redirects.append(request.url)
                    request = _redirected(request, response.head.status, location)
        except TimeoutError:
            if deadline.expired():
                raise Timeout("request", total or 0) from None
            raise
        return replace(response, redirects=tuple(redirects), elapsed=perf_counter() - started)

    async def fetch_many(
        self, request: Request, count: int, concurrency: int, output: Path | None = None
    ) -> list[Response]:
        """``count`` fetches of ``request``, ``concurrency`` at a time, in completion order."""
        responses: list[Response] = []
        left = count

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                responses.append(await self.fetch(request, output))

        try:
            async with asyncio.TaskGroup() as tasks:
                for _ in range(min(count, concurrency)):
                    tasks.create_task(worker())
        except ExceptionGroup as group:  # the first failure, as a lone fetch would raise it
            raise group.exceptions[0] from None
        return responses

    async def aclose(self) -> None:
        for pool in self._pools.values():
            await pool.aclose()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- one request, with retries ------------------------------------------------------------
    async def _retrying(self, request: Request, output: Path | None) -> Response:
        o = self.options
        backoff = Backoff(base=o.backoff_base, cap=o.backoff_cap, max_attempts=o.retries)
        replayable = o.retry_any or request.method in IDEMPOTENT
        while True:
            retries_left = backoff.attempts < o.retries
            try:
                response = await self._attempt(
                    request, output, retry_status=retries_left and replayable
                )
            except (ConnectError, Timeout, ConnectionClosed) as exc:
                # Nothing was sent when connecting failed: any method may go again.
                unsent = isinstance(exc, ConnectError) or (
                    isinstance(exc, Timeout) and exc.phase == "connect"
                )
                delay = backoff.next_delay() if unsent or replayable else None
                if delay is None:
                    raise
                reason = str(exc)
            else:
                if not (retries_left and replayable and self._retry_status(response.head)):
                    return replace(response, attempts=backoff.attempts + 1)
                delay = backoff.next_delay() or 0.0
                delay = _retry_after(response.head) or delay
                reason = response.head.status_line
            log.warning(
                "%s %s: %s; retrying in %.2fs (%d of %d)",
                request.method, request.url, reason, delay, backoff.attempts, o.retries,
            )  # fmt: skip
            await asyncio.sleep(delay)

    def _retry_status(self, head: ResponseHead) -> bool:
        after = _retry_after(head)
        return head.status in RETRY_STATUSES and (
            after is None or after <= self.options.backoff_cap
        )

    def _redirect(self, head: ResponseHead) -> str | None:
        """The Location this response redirects to, if the options say to follow it."""
        if not self.options.follow or head.status not in REDIRECT_STATUSES:
            return None
        return head.header("location")

    async def _attempt(self, request: Request, output: Path | None, retry_status: bool) -> Response:
        """One exchange. The body is kept (or saved to ``output``) only if this response is the
        final one: not a redirect to follow and not a status to retry."""
        body: _Body | None = None

        def sink_for(head: ResponseHead) -> _Body:
            nonlocal body
            final = not (
                self._redirect(head) is not None or (retry_status and self._retry_status(head))
            )
            file = None
            if final and output is not None:
                try:
                    file = output.open("wb")
                except OSError as exc:
                    raise UsageError(f"cannot write {output}: {exc.strerror}") from None
            body = _Body(self.options.max_body, keep=final, file=file)
            return body

        try:
            head, timing, conn = await self._exchange(request, sink_for)
        finally:
            if body is not None and body.file is not None:
                body.file.close()
        assert body is not None
        saved = output if body.file is not None else None
        return Response(
            request, head, bytes(body.data), body.size, saved, timing, conn.peer,
            conn.exchanges > 1, 1,
        )  # fmt: skip

    async def _exchange(
        self, request: Request, sink_for: Callable[[ResponseHead], _Body]
    ) -> tuple[ResponseHead, Timing, HttpConnection]:
        pool = self._pool(request.origin)
        while True:
            checkout = asyncio.timeout(self.options.connect_timeout)
            try:
                async with checkout:  # an idle connection comes at once; a new one connects
                    conn = await pool.acquire()
            except TimeoutError:
                if checkout.expired():
                    raise Timeout("connect", self.options.connect_timeout) from None
                raise
            self._exchanges += 1
            try:
                head, timing = await conn.exchange(request, sink_for)
            except StaleConnection:
                await pool.release(conn, discard=True)
                if self.options.retry_any or request.method in IDEMPOTENT:
                    continue  # the server closed it while idle; go again on another
                raise
            except BaseException:
                await pool.release(conn, discard=True)
                raise
            await pool.release(conn, discard=not conn.keep_alive)
            return head, timing, conn

    def _pool(self, origin: Origin) -> ConnectionPool[HttpConnection]:
        pool = self._pools.get(origin)
        if pool is None:
            tls = self._tls_context() if origin.tls else None

            async def connect() -> HttpConnection:
                return await open_connection(origin, self._timeouts, tls)

            async def close(conn: HttpConnection) -> None:
                await conn.aclose()

            async def usable(conn: HttpConnection) -> bool:
                return conn.usable

            pool = self._pools[origin] = ConnectionPool(
                connect,
                close,
                max_size=self.options.max_connections,
                # No request waits for a slot (at most max_connections run at once), so the
                # checkout takes as long as the connect: let the connect timeout fire first.
                pool_timeout=self.options.connect_timeout + 1.0,
                health_check=usable,
            )
        return pool

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = client_context(self.options.ca, insecure=self.options.insecure)
            self._tls.set_alpn_protocols(["http/1.1"])
        return self._tls


async def fetch_all(
    request: Request, options: ClientOptions, count: int, concurrency: int, output: Path | None
) -> tuple[list[Response], ClientStatistics]:
    """``count`` fetches of ``request`` on one client (``concurrency`` at a time), and the
    client's statistics: how many connections carried them."""
    async with HttpClient(options) as client:
        responses = await client.fetch_many(request, count, concurrency, output)
        return responses, client.statistics()


def _retry_after(head: ResponseHead) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), or ``None``."""
    value = (head.header("retry-after") or "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _redirected(request: Request, status: int, location: str) -> Request:
    """The request a redirect asks for, as browsers and curl do: 303 (and 301/302 after a
    POST) become a GET without body; credentials stay with their origin."""
    try:
        url = normalize_url(urljoin(request.url, location))
    except UsageError:
        raise PeerError(f"redirect to an unsupported URL: {location!r}") from None
    method, body, headers = request.method, request.body, request.headers
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, body = "GET", b""
        headers = tuple(
            h for h in headers if h[0].lower() not in ("content-type", "content-length")
        )
    if split_url(url)[0] != request.origin:
        headers = tuple(h for h in headers if h[0].lower() not in _CREDENTIALS)
    return Request(method, url, headers, body)
