"""wirekit: a Python network toolkit.

The building blocks are a public API::

    from wirekit import TcpServer, Handler, connect, ConnectionPool, ReconnectingClient

See docs/library.md for a guide and examples/ for runnable programs.
"""

from __future__ import annotations

from .errors import (
    BadMessage,
    ConnectError,
    ConnectionClosed,
    FrameTooLarge,
    GaveUp,
    LineTooLong,
    PeerError,
    PoolClosed,
    PoolTimeout,
    Timeout,
    TransportError,
    UsageError,
    WirekitError,
)
from .io.client import TcpClient, Timeouts, connect
from .io.loop import run
from .io.pool import ConnectionPool, PoolStatistics
from .io.server import Connection, Handler, TcpServer
from .io.session import ReconnectingClient, SessionServer
from .io.tls import client_context, server_context
from .io.udp import UdpEndpoint, open_multicast, open_udp
from .limits import Limits
from .proto.backoff import Backoff
from .proto.framing import LengthPrefixedFramer, LineFramer
from .proto.heartbeat import Beat, Heartbeat

__version__ = "0.1.0"

__all__ = [
    "Backoff",
    "BadMessage",
    "Beat",
    "ConnectError",
    "Connection",
    "ConnectionClosed",
    "ConnectionPool",
    "FrameTooLarge",
    "GaveUp",
    "Handler",
    "Heartbeat",
    "LengthPrefixedFramer",
    "Limits",
    "LineFramer",
    "LineTooLong",
    "PeerError",
    "PoolClosed",
    "PoolStatistics",
    "PoolTimeout",
    "ReconnectingClient",
    "SessionServer",
    "TcpClient",
    "TcpServer",
    "Timeout",
    "Timeouts",
    "TransportError",
    "UdpEndpoint",
    "UsageError",
    "WirekitError",
    "__version__",
    "client_context",
    "connect",
    "open_multicast",
    "open_udp",
    "run",
    "server_context",
]
