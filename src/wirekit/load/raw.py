"""``tcp://`` and ``udp://`` request/response load: a payload out, one reply back.

TCP replies are framed (``line``: one ``\\n``-terminated line; ``length``: one u32-length-prefixed
frame) and complete in-flight requests in order. UDP sends one datagram per request and takes
the next datagram as its reply; a request without a reply within ``--timeout`` counts as
``timeout`` (lost or late) and the socket is replaced, so a late reply cannot be mistaken for
the next one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from ..errors import PeerError, UsageError
from ..io.server import make_framer
from ..limits import DEFAULTS
from ..proto.framing import Framer

if TYPE_CHECKING:
    from .engine import Engine


@dataclass(frozen=True)
class RawTarget:
    scheme: str  # tcp | udp
    host: str
    port: int
    payload: bytes
    framing: str = "line"  # tcp: line | length
    path: str = "/"  # ws

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def request(self) -> bytes:
        if self.scheme in ("udp", "ws"):
            return self.payload
        framer = make_framer(self.framing, DEFAULTS)  # type: ignore[arg-type]
        assert framer is not None
        return framer.encode(self.payload)


def parse_raw_target(url: str, payload: bytes, framing: str) -> RawTarget:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"bad port in URL {url!r}: expected 1-65535") from None
    if parts.scheme == "ws" and parts.hostname:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return RawTarget("ws", parts.hostname, port or 80, payload or b"ping", "", path)
    if parts.scheme not in ("tcp", "udp") or not parts.hostname or port is None:
        raise UsageError(
            f"bad URL {url!r}: expected tcp://HOST:PORT, udp://HOST:PORT or ws://HOST[:PORT]/PATH"
        )
    if framing not in ("line", "length"):
        raise UsageError("--framing must be line or length")
    if parts.scheme == "tcp" and framing == "line" and b"\n" in payload:
        raise UsageError("a line-framed payload cannot contain a newline")
    return RawTarget(parts.scheme, parts.hostname, port, payload or b"ping", framing)


class StreamConnection(asyncio.Protocol):
    """tcp://: every framed reply completes the oldest in-flight request."""

    __slots__ = ("_engine", "_framer", "_recorder", "_request", "inflight", "partial", "transport")

    def __init__(self, engine: Engine, request: bytes, framer: Framer) -> None:
        self._engine = engine
        self._recorder = engine.recorder
        self._request = request
        self._framer = framer
        self.inflight: deque[tuple[int, int]] = deque()
        self.partial = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        now = perf_counter_ns()
        self._recorder.received(len(data), now)
        try:
            frames = self._framer.receive_data(data)
        except PeerError:
            self._engine.broken(self, "malformed-response")
            return
        self.partial = self._framer.buffered > 0
        for _ in frames:
            if not self.inflight:
                self._engine.broken(self, "unsolicited-response")
                return
            intended, sent = self.inflight.popleft()
            self._recorder.response(intended, sent, now, None)
            self._engine.completed(self, True)

    def connection_lost(self, exc: Exception | None) -> None:
        self._engine.lost(self, exc)

    def send(self, intended: int) -> bool:
        transport = self.transport
        assert transport is not None
        transport.write(self._request)
        self.inflight.append((intended, perf_counter_ns()))
        self._recorder.sent += 1
        self._recorder.bytes_out += len(self._request)
        return True


class DatagramConnection(asyncio.DatagramProtocol):
    """udp://: the next datagram answers the oldest in-flight request."""

    __slots__ = ("_engine", "_recorder", "_request", "inflight", "partial", "transport")

    def __init__(self, engine: Engine, request: bytes) -> None:
        self._engine = engine
        self._recorder = engine.recorder
        self._request = request
        self.inflight: deque[tuple[int, int]] = deque()
        self.partial = False
        self.transport: Any = None  # an asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        now = perf_counter_ns()
        self._recorder.received(len(data), now)
        if not self.inflight:
            self._recorder.failure("unsolicited-reply", now)
            return
        intended, sent = self.inflight.popleft()
        self._recorder.response(intended, sent, now, None)
        self._engine.completed(self, True)

    def error_received(self, exc: Exception) -> None:
        self._engine.broken(
            self, "refused" if isinstance(exc, ConnectionRefusedError) else "udp-error"
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._engine.lost(self, exc)

    def send(self, intended: int) -> bool:
        self.transport.sendto(self._request)
        self.inflight.append((intended, perf_counter_ns()))
        self._recorder.sent += 1
        self._recorder.bytes_out += len(self._request)
        return True
