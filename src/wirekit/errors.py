"""The one documented tree of wirekit errors.

Two families, as in h11 and wsproto:

* :class:`UsageError` -- the caller misused the API or gave a bad setting (bad address, port in
  use, unreadable certificate). The CLI prints these as one line and exits non-zero.
* :class:`PeerError` -- the remote peer broke the protocol (oversized frame, bad bytes). Each
  carries a ``hint``: the reason the connection was closed, suitable for logs and metrics.

Transport failures (:class:`ConnectError`, timeouts) form a third, small group: nobody misbehaved,
the network did.
"""

from __future__ import annotations


class WirekitError(Exception):
    """Base class of every error wirekit raises on purpose."""


class UsageError(WirekitError):
    """The caller misused the API or gave a bad setting."""


class PeerError(WirekitError):
    """The peer broke the protocol. ``hint`` is a short machine-readable reason."""

    hint = "protocol-error"


class OversizeError(PeerError):
    """The peer sent more than a limit allows.

    ``frames`` holds the complete, valid frames that arrived in the same chunk before the
    oversized one, so a caller can still act on them before closing.
    """

    def __init__(self, message: str, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit
        self.frames: list[bytes] = []


class FrameTooLarge(OversizeError):
    """A length-prefixed frame announced more bytes than the configured maximum."""

    hint = "frame-too-large"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit} bytes", size, limit)


class LineTooLong(OversizeError):
    """A line grew past the configured maximum length."""

    hint = "line-too-long"

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"line of at least {size} bytes exceeds the limit of {limit} bytes", size, limit
        )


class BadMessage(PeerError):
    """A frame arrived that the protocol does not allow (unknown type, truncated field)."""

    hint = "bad-message"


class TransportError(WirekitError):
    """The network failed: nobody misbehaved."""


class ConnectError(TransportError):
    """A connection could not be opened."""


class ConnectionClosed(TransportError):
    """The connection closed while an operation was waiting on it."""


class Timeout(TransportError, TimeoutError):
    """An operation did not finish in time. ``phase`` names which timeout fired."""

    def __init__(self, phase: str, seconds: float) -> None:
        super().__init__(f"{phase} timed out after {seconds:g}s")
        self.phase = phase
        self.seconds = seconds


class PoolTimeout(Timeout):
    """No connection became free in the pool within the pool timeout."""

    def __init__(self, seconds: float) -> None:
        super().__init__("pool checkout", seconds)


class PoolClosed(UsageError):
    """The pool was used after :meth:`ConnectionPool.aclose`."""


class Unavailable(TransportError):
    """A service wirekit depends on (the hub's Redis) cannot be reached now: retry later."""


class GaveUp(TransportError):
    """A reconnecting client exhausted its reconnect attempts."""
