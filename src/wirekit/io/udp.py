"""UDP endpoints: unicast, broadcast and multicast, with bounded receive queues.

A :class:`UdpEndpoint` queues received datagrams up to ``queue_size``; when the application
falls behind, new datagrams are dropped and counted (UDP's own semantics, made visible) instead
of growing memory. Socket buffer sizes are settable because the kernel's defaults are what
drop datagrams first under load (seed 14.3.4).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from collections import deque
from dataclasses import dataclass

from ..errors import UsageError
from ..limits import DEFAULTS
from .sockets import bind_error

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class UdpStatistics:
    local: str
    datagrams_in: int
    datagrams_out: int
    bytes_in: int
    bytes_out: int
    dropped: int
    errors: int
    recv_buffer: int
    send_buffer: int


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: UdpEndpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        ep = self.endpoint
        ep.datagrams_in += 1
        ep.bytes_in += len(data)
        if len(ep._queue) >= ep.queue_size:
            ep.dropped += 1
            return
        ep._queue.append((data, (str(addr[0]), int(str(addr[1])))))
        waiter = ep._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def error_received(self, exc: Exception) -> None:
        self.endpoint.errors += 1

    def connection_lost(self, exc: Exception | None) -> None:
        ep = self.endpoint
        ep._closed = True
        if ep._waiter is not None and not ep._waiter.done():
            ep._waiter.set_result(None)


class UdpEndpoint:
    """A bound UDP socket. Create with :func:`open_udp` or :func:`open_multicast`."""

    def __init__(self, sock: socket.socket, queue_size: int) -> None:
        self.sock = sock
        self.queue_size = queue_size
        self._queue: deque[tuple[bytes, Address]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._closed = False
        self._groups: list[tuple[str, str]] = []
        self.datagrams_in = self.datagrams_out = self.bytes_in = self.bytes_out = 0
        self.dropped = self.errors = 0

    async def _attach(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), sock=self.sock
        )
        self._transport = transport

    @property
    def local_address(self) -> Address:
        name = self.sock.getsockname()
        return str(name[0]), int(name[1])

    def send(self, data: bytes, addr: Address | None = None) -> None:
        if self._transport is None or self._closed:
            raise UsageError("endpoint is closed")
        self._transport.sendto(data, addr)
        self.datagrams_out += 1
        self.bytes_out += len(data)

    async def receive(self, timeout: float | None = None) -> tuple[bytes, Address]:
        """The next datagram and its sender; ``TimeoutError`` after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while not self._queue:
                if self._closed:
                    raise UsageError("endpoint is closed")
                self._waiter = asyncio.get_running_loop().create_future()
                await self._waiter
            return self._queue.popleft()

    def join(self, group: str, interface: str = "0.0.0.0") -> None:
        """Join multicast ``group`` on the interface with address ``interface``."""
        self.sock.setsockopt(*_membership(socket.IP_ADD_MEMBERSHIP, group, interface))
        self._groups.append((group, interface))

    def leave(self, group: str, interface: str = "0.0.0.0") -> None:
        self.sock.setsockopt(*_membership(socket.IP_DROP_MEMBERSHIP, group, interface))
        self._groups.remove((group, interface))

    def statistics(self) -> UdpStatistics:
        host, port = self.local_address
        return UdpStatistics(
            local=f"{host}:{port}",
            datagrams_in=self.datagrams_in,
            datagrams_out=self.datagrams_out,
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            dropped=self.dropped,
            errors=self.errors,
            recv_buffer=self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            send_buffer=self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
        )

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
        else:
            self.sock.close()
        self._closed = True

    async def __aenter__(self) -> UdpEndpoint:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


def _membership(option: int, group: str, interface: str) -> tuple[int, int, bytes]:
    ip = ipaddress.ip_address(group)
    if not ip.is_multicast:
        raise UsageError(f"{group} is not a multicast address")
    if ip.version == 6:
        opt6 = (
            socket.IPV6_JOIN_GROUP
            if option == socket.IP_ADD_MEMBERSHIP
            else socket.IPV6_LEAVE_GROUP
        )
        index = socket.if_nametoindex(interface) if interface not in ("0.0.0.0", "") else 0
        return socket.IPPROTO_IPV6, opt6, ip.packed + struct.pack("@I", index)
    return socket.IPPROTO_IP, option, ip.packed + socket.inet_aton(interface)


def udp_socket(
    host: str,
    port: int,
    *,
    recv_buffer: int | None = None,
    send_buffer: int | None = None,
    broadcast: bool = False,
    reuse_port: bool = False,
) -> socket.socket:
    """A non-blocking UDP socket bound to ``host:port`` with the given options."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if broadcast:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        if recv_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
        if send_buffer:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise bind_error(exc, host, port) from None
    return sock


async def open_udp(
    host: str = "0.0.0.0",
    port: int = 0,
    *,
    recv_buffer: int | None = None,
    send_buffer: int | None = None,
    broadcast: bool = False,
    reuse_port: bool = False,
    queue_size: int = DEFAULTS.udp_queue,
) -> UdpEndpoint:
    """A UDP endpoint bound to ``host:port`` (port 0: any free port)."""
    sock = udp_socket(
        host,
        port,
        recv_buffer=recv_buffer,
        send_buffer=send_buffer,
        broadcast=broadcast,
        reuse_port=reuse_port,
    )
    endpoint = UdpEndpoint(sock, queue_size)
    await endpoint._attach()
    return endpoint


async def open_multicast(
    group: str,
    port: int,
    *,
    interface: str = "0.0.0.0",
    ttl: int = 1,
    loopback: bool = True,
    join: bool = True,
    queue_size: int = DEFAULTS.udp_queue,
) -> UdpEndpoint:
    """An endpoint on ``port`` that (with ``join``) receives ``group`` and can send to it.

    ``ttl`` bounds how many routers a datagram crosses (1: this LAN only); ``loopback`` makes
    this host's own listeners receive what it sends; ``interface`` is the local address whose
    interface carries the group (``127.0.0.1`` keeps everything on this machine).
    """
    ip = ipaddress.ip_address(group)
    if not ip.is_multicast:
        raise UsageError(f"{group} is not a multicast address (224.0.0.0/4 or ff00::/8)")
    if not 0 <= ttl <= 255:
        raise UsageError("multicast TTL must be 0-255")
    v6 = ip.version == 6
    sock = udp_socket("::" if v6 else "0.0.0.0", port, reuse_port=True)
    try:
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, int(loopback))
        else:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(loopback))
            if interface != "0.0.0.0":
                sock.setsockopt(
                    socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface)
                )
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot set up multicast on {interface}: {exc.strerror}") from None
    endpoint = UdpEndpoint(sock, queue_size)
    if join:
        try:
            endpoint.join(group, interface)
        except OSError as exc:
            sock.close()
            raise UsageError(f"cannot join {group} on {interface}: {exc.strerror}") from None
    await endpoint._attach()
    return endpoint
