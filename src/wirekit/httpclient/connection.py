"""One HTTP/1.1 connection, opened phase by phase so each phase is timed for real: name
resolution (``getaddrinfo``), the TCP handshake (``sock_connect``), then the TLS handshake
(``start_tls``) on the connected stream. Reads and writes go through
:class:`~wirekit.io.client.TcpClient` (its read and write timeouts)."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any, Protocol

from ..errors import ConnectError, ConnectionClosed
from ..io.client import TcpClient, Timeouts
from ..io.sockets import format_hostport
from .request import Origin, Request
from .wire import ResponseHead, ResponseParser


class BodySink(Protocol):
    def write(self, data: bytes, /) -> object: ...


@dataclass(frozen=True, slots=True)
class Timing:
    """Seconds spent in each phase of one exchange. ``dns``/``connect``/``tls`` are ``None``
    on a reused connection, and ``tls`` is ``None`` for ``http://``."""

    dns: float | None
    connect: float | None
    tls: float | None
    wait: float  # from starting to send the request to the first byte of the response
    transfer: float  # from the first byte to the last

    @property
    def first_byte(self) -> float:
        """From the start (before name resolution on a new connection) to the first byte."""
        return (self.dns or 0.0) + (self.connect or 0.0) + (self.tls or 0.0) + self.wait

    @property
    def total(self) -> float:
        return self.first_byte + self.transfer


class StaleConnection(ConnectionClosed):
    """A kept-alive connection closed before any byte of the response: the server dropped it
    while it sat idle, so the request can go again on a new connection."""


class HttpConnection:
    """Open with :func:`open_connection`; :meth:`exchange` one request at a time."""

    def __init__(
        self, tcp: TcpClient, peer: str, phases: tuple[float, float, float | None]
    ) -> None:
        self.tcp = tcp
        self.peer = peer
        self.phases: tuple[float, float, float | None] | None = phases  # until the first use
        self.exchanges = 0
        self.keep_alive = True

    @property
    def usable(self) -> bool:
        """Still open and willing to carry another request (the pool's health check)."""
        return self.keep_alive and not self.tcp.is_closed

    async def exchange(
        self, request: Request, sink_for: Callable[[ResponseHead], BodySink]
    ) -> tuple[ResponseHead, Timing]:
        """Send ``request``; stream the body of its response into ``sink_for(head)``."""
        reused, self.exchanges = self.exchanges > 0, self.exchanges + 1
        (dns, connect, tls), self.phases = self.phases or (None, None, None), None
        parser = ResponseParser(request.method)
        sink: BodySink | None = None
        first = 0.0
        started = perf_counter()
        try:
            await self.tcp.send(request.encode())
            while not parser.complete:
                try:
                    data = await self.tcp.receive()
                except ConnectionClosed:
                    if parser.feed_eof():
                        break
                    raise
                first = first or perf_counter()
                parser.feed(data)
                if parser.head is not None and sink is None:
                    sink = sink_for(parser.head)
                for chunk in parser.take_body():
                    assert sink is not None
                    sink.write(chunk)
        except ConnectionClosed as exc:
            if reused and not first:
                raise StaleConnection(str(exc)) from None
            raise
        assert parser.head is not None
        self.keep_alive = parser.keep_alive
        timing = Timing(dns, connect, tls, wait=first - started, transfer=perf_counter() - first)
        return parser.head, timing

    async def aclose(self) -> None:
        await self.tcp.aclose()


async def open_connection(
    origin: Origin, timeouts: Timeouts, tls: ssl.SSLContext | None
) -> HttpConnection:
    """Resolve, connect and (for https) handshake, timing each phase; ``timeouts`` bound the
    reads and writes that follow. The caller bounds the whole (``asyncio.timeout``).

    Raises :class:`~wirekit.errors.ConnectError`.
    """
    loop = asyncio.get_running_loop()
    t0 = perf_counter()
    try:
        infos = await loop.getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConnectError(f"cannot resolve {origin.host!r}: {exc.strerror}") from None
    t1 = perf_counter()
    sock, peer = await _connect_first(loop, infos, origin)
    t2 = perf_counter()
    try:
        reader, writer = await asyncio.open_connection(sock=sock)
    except BaseException:
        sock.close()
        raise
    try:
        if tls is not None:
            await writer.start_tls(tls, server_hostname=origin.host)
    except ssl.SSLCertVerificationError as exc:
        writer.close()
        raise ConnectError(
            f"TLS verification of {origin.address} failed: {exc.verify_message} "
            "(trust a local CA with --ca, or skip checks with --insecure)"
        ) from None
    except (ssl.SSLError, ConnectionError) as exc:
        writer.close()
        raise ConnectError(f"TLS handshake with {origin.address} failed: {exc}") from None
    except BaseException:
        writer.close()
        raise
    t3 = perf_counter()
    tcp = TcpClient(reader, writer, None, timeouts, origin.address)
    return HttpConnection(tcp, peer, (t1 - t0, t2 - t1, t3 - t2 if tls else None))


_AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]


async def _connect_first(
    loop: asyncio.AbstractEventLoop, infos: Sequence[_AddrInfo], origin: Origin
) -> tuple[socket.socket, str]:
    """Connect to the addresses in resolver order; the first that accepts wins."""
    last: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, format_hostport(str(address[0]), int(address[1]))
    reason = os.strerror(last.errno) if last is not None and last.errno else str(last)
    raise ConnectError(f"cannot connect to {origin.address}: {reason}")
