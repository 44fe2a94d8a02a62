"""``ws://`` echo round trips: the RFC 6455 client side, just enough for load.

After the opening handshake each request is one masked text frame with ``--body`` as payload,
and each data frame from the server completes the oldest request in flight. Frames are
pre-encoded: a pool of 256 frames, each masked with its own random key, is cycled through.
Server pings are answered; a close frame ends the connection.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections import deque
from time import perf_counter_ns
from typing import TYPE_CHECKING, cast

from ..proto.ws import (
    PONG,
    TEXT,
    TOO_BIG,
    Close,
    FrameParser,
    Message,
    Ping,
    Violation,
    accept_key,
    client_frame,
)  # fmt: skip

if TYPE_CHECKING:
    from .engine import Engine

MASKED_POOL = 256
MAX_FRAME = 16 << 20
MAX_HANDSHAKE = 16 << 10


def handshake(host_header: str, path: str) -> tuple[bytes, bytes]:
    """The upgrade request and the ``Sec-WebSocket-Accept`` value that must come back."""
    key = base64.b64encode(os.urandom(16))
    accept = accept_key(key)
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\nUser-Agent: wirekit-load\r\n\r\n"
    ).encode()
    return request, accept


class FrameError(Exception):
    """The server broke RFC 6455; ``kind`` is the error counted."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def frame_error_kind(violation: Violation) -> str:
    return "frame-too-large" if violation.code == TOO_BIG else "malformed-response"


def upgrade_response(buf: bytearray, accept: bytes) -> bool | None:
    """Consume the server's handshake answer from ``buf``: ``None`` while incomplete, then
    whether it accepted the upgrade. Raises :class:`FrameError` on an oversized answer."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HANDSHAKE:
            raise FrameError("ws-handshake")
        return None
    head = bytes(buf[:end]).lower()
    del buf[: end + 4]
    return head.startswith(b"http/1.1 101") and accept.lower() in head


class WsConnection(asyncio.Protocol):
    __slots__ = (
        "_accept",
        "_buf",
        "_engine",
        "_frames",
        "_next",
        "_reader",
        "_recorder",
        "_upgraded",
        "inflight",
        "partial",
        "transport",
    )

    def __init__(self, engine: Engine, host_header: str, path: str, payload: bytes) -> None:
        self._engine = engine
        self._recorder = engine.recorder
        request, self._accept = handshake(host_header, path)
        self._frames = [client_frame(TEXT, payload) for _ in range(MASKED_POOL)]
        self._next = 0
        self._buf = bytearray(request)  # sent on connection_made, then reused for input
        self._upgraded = False
        self._reader = FrameParser(server=False, max_message=MAX_FRAME)
        self.inflight: deque[tuple[int, int]] = deque()
        self.partial = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(bytes(self._buf))
        self._buf.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self._engine.lost(self, exc)

    def data_received(self, data: bytes) -> None:
        now = perf_counter_ns()
        self._recorder.received(len(data), now)
        try:
            if not self._upgraded:
                self._buf += data
                accepted = upgrade_response(self._buf, self._accept)
                if accepted is None:
                    return
                if not accepted:
                    self._engine.handshake_failed(self, "ws-handshake")
                    return
                self._upgraded = True
                self._engine.ready(self)
                data, self._buf = bytes(self._buf), bytearray()
        except FrameError as exc:
            self._engine.broken(self, exc.kind)
            return
        events = self._reader.receive_data(data)
        self.partial = self._reader.partial
        for event in events:
            if type(event) is Message:
                if not self.inflight:
                    self._engine.broken(self, "unsolicited-response")
                    return
                intended, sent = self.inflight.popleft()
                self._recorder.response(intended, sent, now, None)
                self._engine.completed(self, True)
            elif type(event) is Ping:
                assert self.transport is not None
                self.transport.write(client_frame(PONG, event.payload))
            elif type(event) is Close:
                self._engine.broken(self, "closed-by-server")
                return
            elif type(event) is Violation:
                self._engine.broken(self, frame_error_kind(event))
                return

    def send(self, intended: int) -> bool:
        transport = self.transport
        assert transport is not None
        frame = self._frames[self._next]
        self._next = (self._next + 1) % MASKED_POOL
        transport.write(frame)
        self.inflight.append((intended, perf_counter_ns()))
        self._recorder.sent += 1
        self._recorder.bytes_out += len(frame)
        return True
