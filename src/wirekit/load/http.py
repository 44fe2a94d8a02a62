"""HTTP/1.1 for the load generator: requests encoded once, responses parsed by httptools.

:class:`HttpConnection` is an asyncio Protocol. It keeps a FIFO of in-flight requests (more than
one with pipelining) as ``(intended_ns, sent_ns)`` pairs; each parsed response completes the
oldest. No Task or Future per request: the engine is called back directly.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

import httptools

from ..errors import UsageError

if TYPE_CHECKING:
    from .engine import Engine

USER_AGENT = "wirekit-load"


@dataclass(frozen=True)
class HttpRequest:
    method: str = "GET"
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def encode(self, host_header: str) -> bytes:
        """The request's bytes, built once and written as is for every send."""
        names = {name.lower() for name, _ in self.headers}
        lines = [f"{self.method} {self.path} HTTP/1.1"]
        if "host" not in names:
            lines.append(f"Host: {host_header}")
        if "user-agent" not in names:
            lines.append(f"User-Agent: {USER_AGENT}")
        if self.body and "content-length" not in names:
            lines.append(f"Content-Length: {len(self.body)}")
        lines += [f"{name}: {value}" for name, value in self.headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


@dataclass(frozen=True)
class HttpTarget:
    scheme: str  # http | https
    host: str
    port: int
    request: HttpRequest = field(default_factory=HttpRequest)

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def parse_target(url: str, request: HttpRequest) -> HttpTarget:
    """``http(s)://HOST[:PORT]/PATH?QUERY`` with ``request`` (whose path is replaced)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"bad port in URL {url!r}: expected 1-65535") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"bad URL {url!r}: expected http://HOST[:PORT]/PATH or https://...")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    req = HttpRequest(request.method, path, request.headers, request.body)
    port = port or (443 if parts.scheme == "https" else 80)
    return HttpTarget(parts.scheme, parts.hostname, port, req)


class HttpConnection(asyncio.Protocol):
    __slots__ = (
        "_engine",
        "_parser",
        "_recorder",
        "_request",
        "_status",
        "inflight",
        "partial",
        "transport",
    )

    def __init__(self, engine: Engine, request: bytes) -> None:
        self._engine = engine
        self._recorder = engine.recorder
        self._request = request
        self._parser = httptools.HttpResponseParser(self)
        self.inflight: deque[tuple[int, int]] = deque()
        self.partial = False  # bytes of the oldest response have arrived
        self.transport: asyncio.Transport | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        now = perf_counter_ns()
        self._recorder.received(len(data), now)
        self.partial = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._engine.broken(self, "upgrade")
        except httptools.HttpParserError:
            self._engine.broken(self, "malformed-response")

    def connection_lost(self, exc: Exception | None) -> None:
        self._engine.lost(self, exc)

    # -- httptools callbacks ------------------------------------------------------------------
    def on_message_complete(self) -> None:
        if not self.inflight:  # a response nobody asked for
            self._engine.broken(self, "unsolicited-response")
            return
        intended, sent = self.inflight.popleft()
        self.partial = False
        self._recorder.response(intended, sent, perf_counter_ns(), self._parser.get_status_code())
        self._engine.completed(self, self._parser.should_keep_alive())

    # -- what the engine uses -----------------------------------------------------------------
    def send(self, intended: int) -> None:
        transport = self.transport
        assert transport is not None
        transport.write(self._request)
        self.inflight.append((intended, perf_counter_ns()))
        rec = self._recorder
        rec.sent += 1
        rec.bytes_out += len(self._request)
