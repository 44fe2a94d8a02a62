"""A TCP server on asyncio Protocols, with limits, statistics and graceful shutdown.

Application logic lives in a :class:`Handler`, one per connection, which receives frames (raw
chunks, lines or length-prefixed frames, per ``framing``) and answers through its
:class:`Connection`. The server enforces :class:`~wirekit.limits.Limits`: maximum connections,
idle timeout, maximum frame/line size and write back-pressure. A handler that raises, or a peer
that breaks the framing, costs only its own connection.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import socket
import ssl as ssl_module
import time
from collections.abc import Callable
from typing import Any, Literal, cast

from ..errors import OversizeError, PeerError, UsageError
from ..limits import Limits
from ..proto.framing import Framer, LengthPrefixedFramer, LineFramer
from .sockets import bind_error, format_hostport
from .stats import ConnectionStats, ServerSnapshot, ServerStats
from .tls import TlsSession

log = logging.getLogger("wirekit.server")

Framing = Literal["raw", "line", "length"]
FRAMINGS: tuple[Framing, ...] = ("raw", "line", "length")


def make_framer(framing: Framing, limits: Limits) -> Framer | None:
    if framing == "raw":
        return None
    if framing == "line":
        return LineFramer(limits.max_line)
    if framing == "length":
        return LengthPrefixedFramer(limits.max_frame)
    raise UsageError(f"unknown framing {framing!r}; choose from {', '.join(FRAMINGS)}")


class Handler(abc.ABC):
    """Per-connection application logic. Subclass and implement :meth:`frame_received`."""

    __slots__ = ("conn",)

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    @abc.abstractmethod
    def frame_received(self, frame: bytes) -> None:
        """One frame (raw framing: one chunk of bytes) from the peer."""

    def connection_lost(self, reason: str) -> None:  # noqa: B027 - optional hook
        """The connection closed; ``reason`` is the same string counted in the metrics.

        Optional: the default does nothing.
        """

    def writing_paused(self) -> None:  # noqa: B027 - optional hook
        """The peer's write buffer passed ``write_buffer_high``: it is not keeping up."""

    def writing_resumed(self) -> None:  # noqa: B027 - optional hook
        """The write buffer drained below ``write_buffer_low``."""


HandlerFactory = Callable[["Connection"], Handler]


class Flusher:
    """Write coalescing for the connections of one or more servers.

    A coalescing connection's sends are queued and the connection is marked dirty. One flush,
    on the next loop turn, runs ``before`` (e.g. hand queued publications to their subscribers,
    then commit what is about to be delivered), then writes each dirty connection's queue in
    one system call. What arrives while a flush runs waits for the next one, so the busier the
    loop, the more each write carries. :meth:`request` asks for a flush with nothing dirty yet
    (work queued for ``before``). When ``before`` returns true it has more to do: another
    flush follows on the next loop turn, after the sockets have been read.
    """

    __slots__ = ("_dirty", "_scheduled", "before")

    def __init__(self, before: Callable[[], bool] | None = None) -> None:
        self.before = before
        self._dirty: list[Connection] = []
        self._scheduled = False

    def mark(self, conn: Connection) -> None:
        self._dirty.append(conn)
        self.request()

    def request(self) -> None:
        if self._scheduled:
            return
        self._scheduled = True
        asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        more = self.before is not None and self.before()  # its sends go out in this flush
        dirty, self._dirty = self._dirty, []
        self._scheduled = False
        for conn in dirty:
            conn.flush()
        if more:
            self.request()


class Connection(asyncio.Protocol):
    """One accepted connection: the protocol asyncio drives and the API handlers use."""

    __slots__ = (
        "_close_reason",
        "_flusher",
        "_framer",
        "_handler",
        "_on_frame",
        "_pending",
        "_registered",
        "_seen_out",
        "_server",
        "_time",
        "_tls",
        "stats",
        "transport",
    )

    def __init__(self, server: TcpServer) -> None:
        self._server = server
        self._framer = make_framer(server.framing, server.limits)
        self._time = asyncio.get_running_loop().time
        self._close_reason: str | None = None
        self._registered = False
        self._handler: Handler | None = None
        self._tls = TlsSession(server.ssl) if server.ssl is not None else None
        self._flusher = server.flusher
        self._pending: list[bytes] | None = None  # coalesced writes not yet flushed
        self._seen_out = 0  # bytes_out at the last idle sweep: sending is activity too
        self.transport: asyncio.Transport | None = None
        self.stats = ConnectionStats("", 0.0)

    # -- asyncio.Protocol ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._setup(cast(asyncio.Transport, transport))  # uvloop: not a subclass

    def _setup(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        server = self._server
        peer = transport.get_extra_info("peername")
        self.stats = ConnectionStats(format_peer(peer), self._time())
        if len(server.stats.live) >= server.limits.max_connections:
            server.stats.rejected += 1
            self._close_reason = "rejected"
            transport.abort()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(
            high=server.limits.write_buffer_high, low=server.limits.write_buffer_low
        )
        server._connection_opened(self)
        self._registered = True
        if self._tls is None:
            self._start_handler()

    def _start_handler(self) -> None:
        self._handler = self._server.handler_factory(self)
        self._on_frame = self._handler.frame_received

    def data_received(self, data: bytes) -> None:
        if self._tls is not None:
            data = self._decrypt(data)
            if not data:
                return
        stats = self.stats
        stats.bytes_in += len(data)
        stats.last_activity = self._time()
        framer = self._framer
        if framer is None:
            stats.frames_in += 1
            try:
                self._on_frame(data)
            except Exception as exc:
                self._handler_failed(exc)
            return
        try:
            frames = framer.receive_data(data)
        except OversizeError as exc:
            self._deliver(exc.frames)
            self._peer_failed(exc)
            return
        except PeerError as exc:
            self._peer_failed(exc)
            return
        self._deliver(frames)

    def eof_received(self) -> bool | None:
        self._close_reason = self._close_reason or "peer-closed"
        return None  # let asyncio close the transport once the write buffer drains

    def pause_writing(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()
        if self._handler is not None:
            self._handler.writing_paused()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        if self._handler is not None:
            self._handler.writing_resumed()

    def connection_lost(self, exc: Exception | None) -> None:
        reason = self._close_reason or ("reset" if exc is not None else "peer-closed")
        if not self._registered:
            return
        tls = self._tls
        if tls is not None and not tls.handshaken and not reason.startswith("tls-"):
            if tls.started:  # the peer gave up mid-handshake
                reason = "tls-handshake"
                self._server.stats.errors[reason] += 1
            else:  # connected and left without a hello: a port probe, not an error
                reason = "tls-no-hello"
        self._server._connection_closed(self, reason)
        if self._handler is None:
            return
        try:
            self._handler.connection_lost(reason)
        except Exception:
            log.exception("handler.connection_lost failed", extra={"peer": self.stats.peer})

    # -- what handlers use --------------------------------------------------------------------
    @property
    def peer(self) -> str:
        return self.stats.peer

    @property
    def server(self) -> TcpServer:
        return self._server

    def touch(self) -> None:
        """Count as activity for the idle timeout (for writes that bypass :meth:`send`)."""
        self.stats.last_activity = self._time()

    @property
    def handler(self) -> Handler | None:
        return self._handler

    def replace_handler(self, handler: Handler) -> None:
        """Hand the connection to another handler (a protocol upgrade); it gets what follows."""
        self._handler = handler
        self._on_frame = handler.frame_received

    def send(self, frame: bytes) -> None:
        """Frame ``frame`` per the server's framing and write it. Never blocks."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        data = frame if self._framer is None else self._framer.encode(frame)
        out = data if self._tls is None else self._tls.encrypt(data)
        if self._flusher is None:
            transport.write(out)
        elif self._pending is not None:
            self._pending.append(out)
        else:
            self._pending = [out]
            self._flusher.mark(self)
        stats = self.stats
        stats.bytes_out += len(data)
        stats.frames_out += 1

    def close(self, reason: str = "server-closed") -> None:
        """Close after flushing what was written; ``reason`` is logged and counted."""
        if self._close_reason is None or self._close_reason == "peer-closed":
            self._close_reason = reason
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self.flush()
        if self._tls is not None and self._tls.handshaken:
            transport.write(self._tls.close_notify())
        transport.close()

    def flush(self) -> None:
        """Write what :meth:`send` coalesced, in one write (coalescing servers only)."""
        pending, self._pending = self._pending, None
        transport = self.transport
        if pending and transport is not None and not transport.is_closing():
            transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def abort(self, reason: str) -> None:
        self._close_reason = reason
        if self.transport is not None:
            self.transport.abort()

    @property
    def handshaking(self) -> bool:
        """True while a TLS connection has not finished its handshake."""
        return self._tls is not None and not self._tls.handshaken

    # -- internals ----------------------------------------------------------------------------
    def _decrypt(self, data: bytes) -> bytes:
        tls = self._tls
        transport = self.transport
        assert tls is not None and transport is not None
        handshaken = tls.handshaken
        try:
            plaintext = tls.receive(data)
        except ssl_module.SSLError as exc:
            reason = "tls-error" if handshaken else "tls-handshake"
            self.stats.errors += 1
            self._server.stats.errors[reason] += 1
            log.info(
                "TLS failed: %s",
                exc.reason or exc,
                extra={"event": "tls_error", "reason": reason, "peer": self.stats.peer},
            )
            transport.write(tls.data_to_send())  # the alert, if any
            self._close_reason = reason
            transport.close()
            return b""
        pending = tls.data_to_send()
        if pending:
            transport.write(pending)
        if not handshaken and tls.handshaken:
            self._start_handler()
        if tls.peer_closed:
            self.close("peer-closed")
        return plaintext

    def _deliver(self, frames: list[bytes]) -> None:
        stats = self.stats
        on_frame = self._on_frame
        for frame in frames:
            stats.frames_in += 1
            started = time.perf_counter()
            try:
                on_frame(frame)
            except Exception as exc:
                self._handler_failed(exc)
                return
            stats.response_times.record(time.perf_counter() - started)

    def _peer_failed(self, exc: PeerError) -> None:
        self.stats.errors += 1
        self._server.stats.errors[exc.hint] += 1
        log.warning(
            "closing connection: %s",
            exc,
            extra={"event": "peer_error", "reason": exc.hint, "peer": self.stats.peer},
        )
        self.close(exc.hint)

    def _handler_failed(self, exc: Exception) -> None:
        self.stats.errors += 1
        self._server.stats.errors["handler-error"] += 1
        log.error(
            "handler failed: %r",
            exc,
            exc_info=exc,
            extra={"event": "handler_error", "peer": self.stats.peer},
        )
        self.abort("handler-error")


class ConnectionTransport(asyncio.Transport):
    """A :class:`Connection` seen as a transport, for a protocol running on top of it (aiohttp
    behind the HTTP front when TLS is on: the connection encrypts what it writes)."""

    def __init__(self, conn: Connection) -> None:
        super().__init__()
        self._conn = conn

    def _raw(self) -> asyncio.Transport:
        transport = self._conn.transport
        assert transport is not None
        return transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._conn.send(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self._conn.send(b"".join(list_of_data))

    def is_closing(self) -> bool:
        transport = self._conn.transport
        return transport is None or transport.is_closing()

    def close(self) -> None:
        self._conn.close("closed")

    def abort(self) -> None:
        self._conn.abort("aborted")

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._conn

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        tls = self._conn._tls
        if name == "sslcontext":
            return self._conn.server.ssl
        if name == "ssl_object":
            return None if tls is None else tls.ssl_object
        return self._raw().get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._raw().pause_reading()

    def resume_reading(self) -> None:
        self._raw().resume_reading()

    def is_reading(self) -> bool:
        return self._raw().is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._raw().set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._raw().get_write_buffer_size()

    def can_write_eof(self) -> bool:
        return False


def format_peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return format_hostport(str(peer[0]), int(peer[1]))
    return str(peer or "?")


class TcpServer:
    """A bounded TCP server. Use as ``async with TcpServer(...) as server:`` or call
    :meth:`start` and :meth:`shutdown`.

    ``start`` binds before it returns, so a bind error (port in use, bad address) reaches the
    caller as a :class:`~wirekit.errors.UsageError`.
    """

    def __init__(
        self,
        handler_factory: HandlerFactory,
        *,
        name: str = "tcp",
        framing: Framing = "raw",
        limits: Limits | None = None,
        ssl: ssl_module.SSLContext | None = None,
        ssl_handshake_timeout: float = 10.0,
        flusher: Flusher | None = None,
    ) -> None:
        self.handler_factory = handler_factory
        # With a flusher, sends are coalesced: one write per connection per flush instead of
        # one system call per send (see Flusher).
        self.flusher = flusher
        self.name = name
        self.framing = framing
        self.limits = limits or Limits()
        make_framer(framing, self.limits)  # validate early
        self.ssl = ssl
        self.ssl_handshake_timeout = ssl_handshake_timeout
        self.stats = ServerStats(name, "tcp")
        self._connections: dict[int, Connection] = {}
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._address: tuple[str, int] | None = None

    async def start(
        self, host: str, port: int, *, reuse_port: bool = False, backlog: int = 1024
    ) -> None:
        loop = self._loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: Connection(self),
                host,
                port,
                reuse_port=reuse_port or None,
                backlog=backlog,
            )
        except OSError as exc:
            raise bind_error(exc, host, port) from None
        name = self._server.sockets[0].getsockname()
        self._address = str(name[0]), int(name[1])
        self.stats.address = format_hostport(*self._address)
        self._schedule_sweep()
        log.info(
            "listening",
            extra={"event": "listening", "server": self.name, "address": self.stats.address},
        )

    @property
    def address(self) -> tuple[str, int]:
        """The first bound (host, port): the real port when started on port 0."""
        if self._address is None:
            raise UsageError("server is not started")
        return self._address

    def statistics(self, *, connections: bool = False) -> ServerSnapshot:
        now = self._loop.time() if self._loop else 0.0
        return self.stats.snapshot(now, connections=connections)

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting, let open connections finish for ``grace`` seconds, then close them."""
        if self._server is None:
            return
        grace = self.limits.shutdown_grace if grace is None else grace
        self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        log.info(
            "shutting down",
            extra={"event": "shutdown", "server": self.name, "open": len(self._connections)},
        )
        if self._connections:
            try:
                async with asyncio.timeout(grace):
                    await self._idle.wait()
            except TimeoutError:
                pass
        for conn in list(self._connections.values()):
            conn.close("shutdown")
        if self._connections:
            try:  # closing flushes write buffers; abort whoever does not read them
                async with asyncio.timeout(1.0):
                    await self._idle.wait()
            except TimeoutError:
                for conn in list(self._connections.values()):
                    conn.abort("shutdown")
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> TcpServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.shutdown(grace=0)

    # -- called by Connection -----------------------------------------------------------------
    def _connection_opened(self, conn: Connection) -> None:
        self._connections[conn.stats.id] = conn
        self.stats.opened(conn.stats)
        self._idle.clear()

    def _connection_closed(self, conn: Connection, reason: str) -> None:
        self._connections.pop(conn.stats.id, None)
        self.stats.closed_connection(conn.stats, reason)
        if not self._connections:
            self._idle.set()

    def _schedule_sweep(self) -> None:
        timeouts = [self.limits.idle_timeout] + ([self.ssl_handshake_timeout] if self.ssl else [])
        shortest = min((t for t in timeouts if t > 0), default=0.0)
        if shortest > 0 and self._loop is not None:
            period = min(1.0, max(0.05, shortest / 4))
            self._sweeper = self._loop.call_later(period, self._sweep)

    def _sweep(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        idle = self.limits.idle_timeout
        deadline = now - idle if idle > 0 else float("-inf")
        handshake_deadline = now - self.ssl_handshake_timeout
        for conn in list(self._connections.values()):
            stats = conn.stats
            if stats.bytes_out != conn._seen_out:  # it sent since the last sweep: not idle
                conn._seen_out = stats.bytes_out
                stats.last_activity = now
            if conn.handshaking and stats.opened < handshake_deadline:
                self.stats.errors["tls-handshake-timeout"] += 1
                conn.abort("tls-handshake-timeout")
            elif stats.last_activity < deadline:
                conn.close("idle-timeout")
        self._schedule_sweep()
