"""Every limit wirekit enforces, with its default, in one place."""

from __future__ import annotations

from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds for servers and clients. Each field documents the error raised when crossed.

    * ``max_connections`` -- further connections are accepted and closed at once (counted as
      ``rejected``).
    * ``idle_timeout`` -- seconds without any byte in either direction before the server closes a
      connection (reason ``idle-timeout``). ``0`` disables it.
    * ``max_frame`` -- largest length-prefixed frame payload; a larger announced size closes the
      connection with :class:`~wirekit.errors.FrameTooLarge`.
    * ``max_line`` -- longest line (without the newline) in line framing;
      :class:`~wirekit.errors.LineTooLong` past it.
    * ``write_buffer_high`` / ``write_buffer_low`` -- transport write-buffer water marks; above
      the high mark the server stops reading from that peer until the buffer drains (back-pressure).
    * ``shutdown_grace`` -- seconds a graceful shutdown waits for open connections to finish
      before closing them.
    * ``udp_queue`` -- datagrams buffered per UDP endpoint before new ones are dropped (counted).
    * ``message_rate`` / ``message_burst`` -- hub messages per second a connection may publish
      (token bucket); past it the command gets a ``rate-limited`` error and is dropped.
    * ``behind_timeout`` -- seconds a hub subscriber may stay behind (its send queue full) before
      it is disconnected with reason ``too-slow``.
    * ``history_max`` -- most messages one history request returns (a resume replays
      everything after its offset, paced by the reader's send queue).
    * ``login_per_user`` / ``login_per_address`` -- login attempts per minute per account and per
      client address; past it logins fail with ``rate-limited``.
    * ``ws_max_message`` -- largest WebSocket message (all fragments) a client may send; past it
      the connection is closed with code 1009.
    * ``ws_ping_interval`` / ``ws_timeout`` -- the server pings every WebSocket this often, and
      closes (1001) one from which nothing arrived for ``ws_timeout`` seconds.
    * ``api_rate`` / ``api_burst`` -- HTTP API requests per second per client address and per
      user (token bucket); past it: 429 with ``Retry-After``.
    * ``api_max_body`` -- largest HTTP API request body; past it: 413.
    * ``request_timeout`` -- seconds an HTTP request may take (streams excepted); past it: 503.
    * ``file_max_size`` -- largest file ``POST /api/files`` stores (it is exempt from
      ``api_max_body``); past it: 413, and nothing is kept.
    * ``file_types`` -- MIME types ``POST /api/files`` accepts; others: 415. HTML, SVG, XML,
      JavaScript and CSS are refused even if listed.
    """

    max_connections: int = 10_000
    idle_timeout: float = 300.0
    max_frame: int = 1 * MiB
    max_line: int = 4 * KiB
    write_buffer_high: int = 256 * KiB
    write_buffer_low: int = 64 * KiB
    shutdown_grace: float = 10.0
    udp_queue: int = 1024
    message_rate: float = 20.0
    message_burst: int = 40
    behind_timeout: float = 30.0
    history_max: int = 1000
    login_per_user: int = 5
    login_per_address: int = 20
    ws_max_message: int = 64 * KiB
    ws_ping_interval: float = 25.0
    ws_timeout: float = 60.0
    api_rate: float = 50.0
    api_burst: int = 100
    api_max_body: int = 64 * KiB
    request_timeout: float = 30.0
    file_max_size: int = 16 * MiB
    file_types: tuple[str, ...] = (
        "image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf",
        "application/zip", "text/plain", "application/json", "application/octet-stream",
    )  # fmt: skip


DEFAULTS = Limits()
"""The default limits, for default arguments."""
