"""Small socket helpers shared by the servers and clients."""

from __future__ import annotations

import errno
import socket

from ..errors import UsageError

_BIND_HINTS = {
    errno.EADDRINUSE: "address already in use",
    errno.EADDRNOTAVAIL: "address not available on this machine",
    errno.EACCES: "permission denied (ports below 1024 need privileges)",
}


def bind_error(exc: OSError, host: str, port: int) -> UsageError:
    """Turn a bind failure into a one-line :class:`UsageError` naming the address."""
    what = _BIND_HINTS.get(exc.errno or 0, exc.strerror or str(exc))
    return UsageError(f"cannot listen on {format_hostport(host, port)}: {what}")


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def sockname(sock: socket.socket) -> tuple[str, int]:
    name = sock.getsockname()
    return str(name[0]), int(name[1])


def reserve_port(host: str, port: int, kind: socket.SocketKind) -> socket.socket:
    """Bind (without listening) a SO_REUSEPORT socket on ``host:port``.

    Worker processes then bind the same address with SO_REUSEPORT. Holding this socket keeps
    the port (and a concrete number when ``port`` is 0) reserved; an unlistened socket takes no
    share of the connections.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise bind_error(exc, host, port) from None
    return sock
