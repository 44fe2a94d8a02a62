"""A TCP client with separate connect, read and write timeouts, and the same framings as
:class:`~wirekit.io.server.TcpServer`."""

from __future__ import annotations

import asyncio
import socket
import ssl as ssl_module
from dataclasses import dataclass

from ..errors import ConnectError, ConnectionClosed, Timeout, UsageError
from ..limits import Limits
from ..proto.framing import Framer
from .server import Framing, make_framer
from .sockets import format_hostport

_READ_CHUNK = 65536


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds for each phase; ``None`` waits forever."""

    connect: float | None = 10.0
    read: float | None = 30.0
    write: float | None = 30.0


class TcpClient:
    """One client connection. Create with :func:`connect`."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        framer: Framer | None,
        timeouts: Timeouts,
        address: str,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._framer = framer
        self._frames: list[bytes] = []
        self.timeouts = timeouts
        self.address = address
        self.bytes_in = 0
        self.bytes_out = 0

    @property
    def is_closed(self) -> bool:
        """True once the connection closed or the server sent EOF (a pool's health check)."""
        return self._writer.is_closing() or self._reader.at_eof()

    async def send(self, frame: bytes) -> None:
        """Frame and write ``frame``, waiting (up to the write timeout) for buffer space."""
        data = frame if self._framer is None else self._framer.encode(frame)
        self._writer.write(data)
        self.bytes_out += len(data)
        try:
            async with asyncio.timeout(self.timeouts.write):
                await self._writer.drain()
        except TimeoutError:
            raise Timeout("write", self.timeouts.write or 0) from None
        except ConnectionError as exc:
            raise ConnectionClosed(f"connection to {self.address} lost: {exc}") from None

    async def receive(self) -> bytes:
        """The next frame (raw framing: the next chunk of bytes), within the read timeout.

        Raises :class:`~wirekit.errors.ConnectionClosed` at end of stream and a
        :class:`~wirekit.errors.PeerError` when the server breaks the framing.
        """
        try:
            async with asyncio.timeout(self.timeouts.read):
                while not self._frames:
                    data = await self._reader.read(_READ_CHUNK)
                    if not data:
                        raise ConnectionClosed(f"{self.address} closed the connection")
                    self.bytes_in += len(data)
                    if self._framer is None:
                        return data
                    self._frames.extend(self._framer.receive_data(data))
        except TimeoutError:
            raise Timeout("read", self.timeouts.read or 0) from None
        except ConnectionError as exc:
            raise ConnectionClosed(f"connection to {self.address} lost: {exc}") from None
        return self._frames.pop(0)

    async def receive_exactly(self, size: int) -> bytes:
        """Raw framing: read until ``size`` bytes have arrived (an echo of ``size`` bytes)."""
        if self._framer is not None:
            raise UsageError("receive_exactly is for raw framing")
        try:
            async with asyncio.timeout(self.timeouts.read):
                data = await self._reader.readexactly(size)
        except TimeoutError:
            raise Timeout("read", self.timeouts.read or 0) from None
        except asyncio.IncompleteReadError:
            raise ConnectionClosed(f"{self.address} closed the connection") from None
        except ConnectionError as exc:
            raise ConnectionClosed(f"connection to {self.address} lost: {exc}") from None
        self.bytes_in += len(data)
        return data

    async def request(self, frame: bytes) -> bytes:
        """Send one frame and return the next one received."""
        await self.send(frame)
        return await self.receive()

    async def aclose(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, ssl_module.SSLError):
            pass

    async def __aenter__(self) -> TcpClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def connect(
    host: str,
    port: int,
    *,
    framing: Framing = "raw",
    limits: Limits | None = None,
    timeouts: Timeouts | None = None,
    ssl: ssl_module.SSLContext | None = None,
    server_hostname: str | None = None,
) -> TcpClient:
    """Open a connection; :class:`~wirekit.errors.ConnectError` or ``Timeout("connect")``."""
    limits = limits or Limits()
    timeouts = timeouts or Timeouts()
    framer = make_framer(framing, limits)
    address = format_hostport(host, port)
    try:
        async with asyncio.timeout(timeouts.connect):
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=ssl,
                server_hostname=(server_hostname or host) if ssl else None,
                limit=max(limits.max_frame, limits.max_line) + 8,
            )
    except TimeoutError:
        raise Timeout("connect", timeouts.connect or 0) from None
    except ssl_module.SSLCertVerificationError as exc:
        raise ConnectError(f"TLS verification of {address} failed: {exc.verify_message}") from None
    except (OSError, ssl_module.SSLError) as exc:
        raise ConnectError(f"cannot connect to {address}: {exc.strerror or exc}") from None
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return TcpClient(reader, writer, framer, timeouts, address)
