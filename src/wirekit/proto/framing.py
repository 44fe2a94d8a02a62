"""Message framing over a byte stream.

Two framers with the same shape: feed bytes with :meth:`receive_data`, get back the complete
frames it closed (possibly none); build wire bytes with :meth:`encode`. Both bound what they
buffer and raise a :class:`~wirekit.errors.PeerError` subclass when the peer exceeds the bound;
after that the framer is *broken* and refuses further input. The error's ``frames`` attribute
holds the complete frames that preceded the oversized one in the same chunk.
"""

from __future__ import annotations

from typing import Protocol

from ..errors import FrameTooLarge, LineTooLong, UsageError
from ..limits import DEFAULTS

HEADER_SIZE = 4
_MAX_U32 = 0xFFFFFFFF


class Framer(Protocol):
    """What every framer offers."""

    def receive_data(self, data: bytes) -> list[bytes]: ...

    def encode(self, frame: bytes) -> bytes: ...

    @property
    def buffered(self) -> int: ...


class LengthPrefixedFramer:
    """Frames as a 4-byte big-endian unsigned length followed by that many bytes.

    >>> f = LengthPrefixedFramer(max_frame=16)
    >>> f.receive_data(f.encode(b"hi") + b"\\x00\\x00")
    [b'hi']
    >>> f.receive_data(b"\\x00\\x01!")
    [b'!']
    """

    __slots__ = ("_broken", "_buf", "max_frame")

    def __init__(self, max_frame: int = DEFAULTS.max_frame) -> None:
        if not 0 < max_frame <= _MAX_U32:
            raise UsageError(f"max_frame must be between 1 and {_MAX_U32}, got {max_frame}")
        self.max_frame = max_frame
        self._buf = bytearray()
        self._broken: FrameTooLarge | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buf)

    def encode(self, frame: bytes) -> bytes:
        if len(frame) > self.max_frame:
            raise UsageError(
                f"cannot send a frame of {len(frame)} bytes: limit is {self.max_frame}"
            )
        return len(frame).to_bytes(HEADER_SIZE, "big") + frame

    def receive_data(self, data: bytes) -> list[bytes]:
        if self._broken is not None:
            raise self._broken
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        while end - pos >= HEADER_SIZE:
            size = int.from_bytes(buf[pos : pos + HEADER_SIZE], "big")
            if size > self.max_frame:
                buf.clear()
                self._broken = FrameTooLarge(size, self.max_frame)
                self._broken.frames = frames
                raise self._broken
            if end - pos - HEADER_SIZE < size:
                break
            start = pos + HEADER_SIZE
            frames.append(bytes(buf[start : start + size]))
            pos = start + size
        if pos:
            del buf[:pos]
        return frames


class LineFramer:
    """Frames as lines ending in ``\\n`` (a preceding ``\\r`` is dropped too).

    ``max_line`` bounds a line without its terminator. Frames are returned without the
    terminator; :meth:`encode` appends ``\\n``.
    """

    __slots__ = ("_broken", "_buf", "_scanned", "max_line")

    def __init__(self, max_line: int = DEFAULTS.max_line) -> None:
        if max_line <= 0:
            raise UsageError(f"max_line must be positive, got {max_line}")
        self.max_line = max_line
        self._buf = bytearray()
        self._scanned = 0
        self._broken: LineTooLong | None = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def encode(self, frame: bytes) -> bytes:
        if b"\n" in frame:
            raise UsageError("a line frame cannot contain a newline")
        if len(frame) > self.max_line:
            raise UsageError(f"cannot send a line of {len(frame)} bytes: limit is {self.max_line}")
        return frame + b"\n"

    def receive_data(self, data: bytes) -> list[bytes]:
        if self._broken is not None:
            raise self._broken
        buf = self._buf
        buf += data
        lines: list[bytes] = []
        start = 0
        # Only scan bytes not already known to hold no newline: O(n) over any chunking.
        search_from = self._scanned
        while True:
            nl = buf.find(b"\n", search_from)
            if nl < 0:
                break
            end = nl - 1 if nl > start and buf[nl - 1] == 0x0D else nl
            if end - start > self.max_line:
                self._fail(end - start, lines)
            lines.append(bytes(buf[start:end]))
            start = search_from = nl + 1
        if start:
            del buf[:start]
        self._scanned = len(buf)
        # A trailing "\r" may still be the first half of "\r\n": allow one byte of slack.
        pending = len(buf) - (1 if buf.endswith(b"\r") else 0)
        if pending > self.max_line:
            self._fail(pending, lines)
        return lines

    def _fail(self, size: int, complete: list[bytes]) -> None:
        self._buf.clear()
        self._scanned = 0
        self._broken = LineTooLong(size, self.max_line)
        self._broken.frames = complete
        raise self._broken
