"""HTTP/1.1 for the load generator: requests encoded once, responses parsed by httptools.

:class:`HttpConnection` is an asyncio Protocol. It keeps a FIFO of in-flight requests (more than
one with pipelining) as ``(intended_ns, sent_ns)`` pairs; each parsed response completes the
oldest. No Task or Future per request: the engine is called back directly.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from dataclasses import dataclass, field
from time import perf_counter_ns
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

import httptools

from ..errors import UsageError

if TYPE_CHECKING:
    from .engine import Engine
    from .scenario import RequestSpec, VirtualUser

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
        "_fd",
        "_now",
        "_parser",
        "_recorder",
        "_request",
        "_socket_fd",
        "_unrecorded",
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
        self._socket_fd = -1  # the plain TCP socket's
        self._fd = -1  # requests go out with os.write here while >= 0 (see connection_made)
        self._now = 0  # when the bytes being parsed arrived: a response completes then
        self._unrecorded = 0  # of those bytes, how many the recorder has not been given
        self.transport: asyncio.Transport | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        # Plain TCP: requests go out with os.write on the socket while the transport's buffer is
        # empty (more requests per core than transport.write); TLS must use the transport.
        # With a high-water mark of 0 the transport tells us (pause_writing) as soon as it
        # buffers anything, and again (resume_writing) once it has written all of it.
        sock = transport.get_extra_info("socket")
        if sock is not None and transport.get_extra_info("sslcontext") is None:
            self._fd = self._socket_fd = sock.fileno()
            self.transport.set_write_buffer_limits(high=0)

    def pause_writing(self) -> None:
        self._fd = -1

    def resume_writing(self) -> None:
        self._fd = self._socket_fd

    def data_received(self, data: bytes) -> None:
        now = self._now = perf_counter_ns()
        self._unrecorded = len(data)  # the first response completed in it takes them
        self.partial = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._engine.broken(self, "upgrade")
        except httptools.HttpParserError:
            self._engine.broken(self, "malformed-response")
        if self._unrecorded:  # no response completed: part of one, or not one at all
            self._recorder.received(self._unrecorded, now)

    def connection_lost(self, exc: Exception | None) -> None:
        self._engine.lost(self, exc)

    # -- httptools callbacks ------------------------------------------------------------------
    def on_message_complete(self) -> None:
        if not self.inflight:  # a response nobody asked for
            self._engine.broken(self, "unsolicited-response")
            return
        intended, sent = self.inflight.popleft()
        self.partial = False
        parser = self._parser
        self._recorder.response(
            intended, sent, self._now, parser.get_status_code(), self._unrecorded
        )
        self._unrecorded = 0
        engine = self._engine
        if engine.refill and parser.should_keep_alive():
            self._write(0, self._request)  # as engine.completed() would, without the calls
        else:
            engine.completed(self, parser.should_keep_alive())

    # -- what the engine uses -----------------------------------------------------------------
    def send(self, intended: int) -> bool:
        """Write the request; ``False`` if there was nothing to send (scenarios)."""
        self._write(intended, self._request)
        return True

    def _write(self, intended: int, data: bytes) -> None:
        """Send ``data``, due at ``intended`` (0: now)."""
        now = perf_counter_ns()
        n, fd = 0, self._fd
        if fd >= 0:
            try:
                n = os.write(fd, data)
            except OSError:  # full, or broken: the transport buffers it, or reports the loss
                pass
        if n < len(data):
            assert self.transport is not None
            self.transport.write(data[n:] if n else data)
        self.inflight.append((intended or now, now))
        rec = self._recorder
        rec.sent += 1
        rec.bytes_out += len(data)


MAX_CAPTURE = 1 << 20  # bytes of a response body kept for extraction


class ScenarioConnection(HttpConnection):
    """A connection driven by a scenario's virtual user: requests are rendered per send, and
    responses whose request extracts values are captured (headers and up to 1 MiB of body)."""

    __slots__ = ("_body", "_headers", "specs", "user")

    def __init__(self, engine: Engine, user: VirtualUser) -> None:
        self.user = user
        self.specs: deque[RequestSpec] = deque()
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        super().__init__(engine, b"")

    def on_message_begin(self) -> None:
        self._headers = {}
        self._body = bytearray()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        if len(self._body) < MAX_CAPTURE:
            self._body += body

    def on_message_complete(self) -> None:
        if self.specs:
            spec = self.specs.popleft()
            self._recorder.names[spec.name] += 1
            if spec.extract:
                self.user.extracted(spec, self._headers, bytes(self._body))
        super().on_message_complete()

    def send(self, intended: int) -> bool:
        spec, data = self.user.next()
        if data is None:
            return False
        self._write(intended, data)
        self.specs.append(spec)
        return True
