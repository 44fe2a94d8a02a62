"""HTTP/1.1 connections of the load generator: requests (encoded once, :mod:`.target`) written
as they are, responses parsed by httptools.

:class:`HttpConnection` is an asyncio Protocol. It keeps a FIFO of in-flight requests (more than
one with pipelining) as ``(intended_ns, sent_ns)`` pairs; each parsed response completes the
oldest. No Task or Future per request: the engine is called back directly.

Replay: a load test mostly gets the same response again and again (a static file, a fixed API
reply; nginx's ``Date`` header changes once a second). When the bytes of one ``data_received``
are exactly one whole keep-alive response, started and ended between responses, they are kept
with their status; when the next bytes are equal to them and the parser is again between
responses, parsing them would give the same response and leave the parser where it is, so the
response is completed without parsing (one compare instead of httptools' callbacks; about 5%
more requests per CPU-second). Anything else (pipelined or split responses, other bytes) is
parsed as usual.

This module and :mod:`.recorder` are the per-response path, compiled with mypyc when wirekit
is installed (``setup.py``; pure Python where no C compiler is found). So that mypyc makes
:class:`HttpConnection` a native class it is an asyncio Protocol by its methods, not by
inheritance (native classes cannot subclass ``asyncio.Protocol``); event loops only call them.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Callable
from time import perf_counter_ns
from typing import TYPE_CHECKING, cast

import httptools

if TYPE_CHECKING:
    from .engine import Engine
    from .scenario import RequestSpec, VirtualUser


class HttpConnection:
    __slots__ = (
        "_clock",
        "_engine",
        "_fd",
        "_feed",
        "_keep_alive",
        "_now",
        "_os_write",
        "_pop_oldest",
        "_push",
        "_recorder",
        "_replay",
        "_replay_status",
        "_replayable",
        "_request",
        "_socket_fd",
        "_sole_status",
        "_status_code",
        "_unrecorded",
        "inflight",
        "partial",
        "transport",
    )

    def __init__(self, engine: Engine, request: bytes) -> None:
        self._engine = engine
        self._recorder = engine.recorder
        self._request = request
        parser = httptools.HttpResponseParser(self)  # kept alive by its bound methods below
        self.inflight: deque[tuple[int, int]] = deque()
        # The functions the per-response path calls, looked up once: compiled by mypyc, a call
        # through an attribute costs no dict lookup (a method or module attribute costs two).
        self._feed: Callable[[bytes], None] = parser.feed_data
        self._status_code: Callable[[], int] = parser.get_status_code
        self._keep_alive: Callable[[], bool] = parser.should_keep_alive
        self._pop_oldest = self.inflight.popleft
        self._push = self.inflight.append
        self._clock = perf_counter_ns
        self._os_write = os.write
        self.partial = False  # a response has begun to arrive and not ended
        self._replayable = True  # (a scenario's responses are not: see ScenarioConnection)
        self._replay = b""  # the last bytes that were exactly one whole keep-alive response
        self._replay_status = 0  # that response's status
        # Of the responses completed in the bytes being parsed: the status of the only one if it
        # was keep-alive, 0 if there was none, -1 if more than one or one that closes.
        self._sole_status = 0
        self._socket_fd = -1  # the plain TCP socket's
        self._fd = -1  # requests go out with os.write here while >= 0 (see connection_made)
        self._now = 0  # when the bytes being parsed arrived: a response completes then
        self._unrecorded = 0  # of those bytes, how many the recorder has not been given
        self.transport: asyncio.Transport | None = None

    # -- asyncio.Protocol's methods -----------------------------------------------------------
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
        now = self._now = self._clock()
        if data == self._replay and not self.partial and self.inflight:  # (see the docstring)
            intended, sent = self._pop_oldest()
            self._recorder.response(intended, sent, now, self._replay_status, len(data))
            self._next(True)
            return
        self._unrecorded = len(data)  # the first response completed in it takes them
        self._sole_status = 0
        between = not self.partial
        try:
            self._feed(data)
        except httptools.HttpParserUpgrade:
            self._engine.broken(self, "upgrade")
        except httptools.HttpParserError:
            self._engine.broken(self, "malformed-response")
        else:
            if between and self._sole_status > 0 and not self.partial and self._replayable:
                self._replay, self._replay_status = data, self._sole_status
        if self._unrecorded:  # no response completed: part of one, or not one at all
            self._recorder.received(self._unrecorded, now)

    def connection_lost(self, exc: Exception | None) -> None:
        self._engine.lost(self, exc)

    # -- httptools callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.partial = True

    def on_message_complete(self) -> None:
        if not self.inflight:  # a response nobody asked for
            self._engine.broken(self, "unsolicited-response")
            return
        intended, sent = self._pop_oldest()
        self.partial = False
        status, keep_alive = self._status_code(), self._keep_alive()
        self._sole_status = status if keep_alive and not self._sole_status else -1
        self._recorder.response(intended, sent, self._now, status, self._unrecorded)
        self._unrecorded = 0
        self._next(keep_alive)

    def _next(self, keep_alive: bool) -> None:
        """After a response: the next request at once, as engine.completed() would do in the
        closed model (without the calls), or whatever the engine decides."""
        if keep_alive and self._engine.refill:
            self._write(0, self._request)
        else:
            self._engine.completed(self, keep_alive)

    # -- what the engine uses -----------------------------------------------------------------
    def send(self, intended: int) -> bool:
        """Write the request; ``False`` if there was nothing to send (scenarios)."""
        self._write(intended, self._request)
        return True

    def _write(self, intended: int, data: bytes) -> None:
        """Send ``data``, due at ``intended`` (0: now)."""
        now = self._clock()
        n, fd = 0, self._fd
        if fd >= 0:
            try:
                n = self._os_write(fd, data)
            except OSError:  # full, or broken: the transport buffers it, or reports the loss
                pass
        if n < len(data):
            assert self.transport is not None
            self.transport.write(data[n:] if n else data)
        self._push((intended or now, now))
        rec = self._recorder
        rec.sent += 1
        rec.bytes_out += len(data)


MAX_CAPTURE = 1 << 20  # bytes of a response body kept for extraction


class ScenarioConnection(HttpConnection):
    """A connection driven by a scenario's virtual user: requests are rendered per send, and
    responses whose request extracts values are captured (headers and up to 1 MiB of body), so
    every response is parsed (no replay)."""

    __slots__ = ("_body", "_headers", "specs", "user")

    def __init__(self, engine: Engine, user: VirtualUser) -> None:
        self.user = user
        self.specs: deque[RequestSpec] = deque()
        self._headers: dict[str, str] = {}
        self._body = bytearray()
        super().__init__(engine, b"")
        self._replayable = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
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
