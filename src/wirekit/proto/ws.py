"""RFC 6455 WebSocket framing, sans-I/O, for both roles.

:class:`FrameParser` turns bytes into whole messages and control events. It never raises on
peer input: a violation becomes a :class:`Violation` with the close code to send, after which
the parser ignores further input. Fragmented messages are reassembled up to ``max_message``
bytes (past it: 1009); text messages must be valid UTF-8 (1007). A server-role parser requires
masked frames, a client-role one unmasked frames (1002 otherwise).

Frames out: :func:`frame` (unmasked, what servers send) and :func:`client_frame` (masked).
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from dataclasses import dataclass

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0

# Close codes (RFC 6455 section 7.4.1)
NORMAL = 1000
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
UNSUPPORTED = 1003
INVALID_DATA = 1007
POLICY = 1008
TOO_BIG = 1009
INTERNAL_ERROR = 1011
# Codes a peer may send in a close frame: 1000-1003, 1007-1011, 3000-4999.
_SENDABLE = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011}


def accept_key(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` value for a ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def valid_key(key: str) -> bool:
    """A ``Sec-WebSocket-Key`` must be 16 random bytes in base64."""
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        return False


def _head(first: int, mask_bit: int, n: int) -> bytes:
    if n < 126:
        return struct.pack("!BB", first, mask_bit | n)
    if n < 1 << 16:
        return struct.pack("!BBH", first, mask_bit | 126, n)
    return struct.pack("!BBQ", first, mask_bit | 127, n)


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame: what a server sends."""
    return _head(0x80 | opcode, 0, len(payload)) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    return frame(CLOSE, struct.pack("!H", code) + reason.encode()[:123])


def mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(keys, "little")).to_bytes(
        n, "little"
    )


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked frame (clients must mask), with a fresh random key."""
    key = os.urandom(4)
    return _head(0x80 | opcode, 0x80, len(payload)) + key + mask(payload, key)


@dataclass(frozen=True, slots=True)
class Message:
    """A complete data message: ``text`` for a text message, else ``None`` and ``data``."""

    text: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """The peer closed: answer with the same ``code`` (or 1000 when it sent none)."""

    code: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class Violation:
    """The peer broke the protocol: close with ``code``; the parser is done."""

    code: int
    reason: str


Event = Message | Ping | Pong | Close | Violation


class FrameParser:
    __slots__ = ("_buf", "_done", "_fragments", "_fragments_size", "_opcode", "_server",
                 "max_message")  # fmt: skip

    def __init__(self, *, server: bool, max_message: int = 64 * 1024) -> None:
        self._server = server
        self.max_message = max_message
        self._buf = bytearray()
        self._done = False
        self._fragments: list[bytes] = []
        self._fragments_size = 0
        self._opcode: int | None = None  # of the fragmented message in progress

    @property
    def partial(self) -> bool:
        """True while a frame or a fragmented message is incomplete."""
        return bool(self._buf) or self._opcode is not None

    def receive_data(self, data: bytes) -> list[Event]:
        if self._done:
            return []
        buf = self._buf
        buf += data
        events: list[Event] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            masked = second & 0x80
            size, start = second & 0x7F, pos + 2
            if size == 126:
                if end - pos < 4:
                    break
                size, start = struct.unpack_from("!H", buf, pos + 2)[0], pos + 4
            elif size == 127:
                if end - pos < 10:
                    break
                size, start = struct.unpack_from("!Q", buf, pos + 2)[0], pos + 10
            violation = self._check_head(first, bool(masked), size)
            if violation is not None:
                return self._fail(events, violation)
            body = start + (4 if masked else 0)
            if end < body + size:
                break
            payload = bytes(buf[body : body + size])
            if masked:
                payload = mask(payload, bytes(buf[start:body]))
            pos = body + size
            event = self._frame(first & 0x0F, bool(first & 0x80), payload)
            if event is not None:
                if isinstance(event, Violation):
                    return self._fail(events, event)
                events.append(event)
                if isinstance(event, Close):
                    self._done = True
                    buf.clear()
                    return events
        del buf[:pos]
        return events

    def _check_head(self, first: int, masked: bool, size: int) -> Violation | None:
        opcode = first & 0x0F
        if first & 0x70:
            return Violation(PROTOCOL_ERROR, "reserved bits set without an extension")
        if masked != self._server:
            return Violation(PROTOCOL_ERROR, "client frames must be masked, server frames not")
        if opcode >= 0x8:
            if opcode not in (CLOSE, PING, PONG):
                return Violation(PROTOCOL_ERROR, f"unknown control opcode {opcode}")
            if size > 125 or not first & 0x80:
                return Violation(PROTOCOL_ERROR, "control frames are final and at most 125 bytes")
        elif opcode not in (TEXT, BINARY, CONTINUATION):
            return Violation(PROTOCOL_ERROR, f"unknown data opcode {opcode}")
        elif self._fragments_size + size > self.max_message:
            return Violation(TOO_BIG, f"message larger than {self.max_message} bytes")
        return None

    def _frame(self, opcode: int, final: bool, payload: bytes) -> Event | None:
        if opcode == PING:
            return Ping(payload)
        if opcode == PONG:
            return Pong(payload)
        if opcode == CLOSE:
            return self._close(payload)
        if opcode == CONTINUATION:
            if self._opcode is None:
                return Violation(PROTOCOL_ERROR, "continuation frame with no message to continue")
        elif self._opcode is not None:
            return Violation(PROTOCOL_ERROR, "new message before the last one's final fragment")
        if not final:
            if self._opcode is None:
                self._opcode = opcode
            self._fragments.append(payload)
            self._fragments_size += len(payload)
            return None
        if opcode == CONTINUATION:
            opcode = self._opcode  # type: ignore[assignment]
            payload = b"".join([*self._fragments, payload])
            self._fragments, self._fragments_size, self._opcode = [], 0, None
        if opcode == BINARY:
            return Message(None, payload)
        try:
            return Message(payload.decode(), payload)
        except UnicodeDecodeError:
            return Violation(INVALID_DATA, "text message is not valid UTF-8")

    def _close(self, payload: bytes) -> Event:
        if not payload:
            return Close(None, "")
        if len(payload) == 1:
            return Violation(PROTOCOL_ERROR, "close payload of one byte")
        (code,) = struct.unpack_from("!H", payload)
        if code not in _SENDABLE and not 3000 <= code <= 4999:
            return Violation(PROTOCOL_ERROR, f"close code {code} may not be sent")
        try:
            return Close(code, payload[2:].decode())
        except UnicodeDecodeError:
            return Violation(INVALID_DATA, "close reason is not valid UTF-8")

    def _fail(self, events: list[Event], violation: Violation) -> list[Event]:
        self._done = True
        self._buf.clear()
        events.append(violation)
        return events
