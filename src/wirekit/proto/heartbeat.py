"""Heartbeat state: when to ping, when to declare the peer dead.

Sans-I/O: the caller reports traffic with :meth:`Heartbeat.received`, asks :meth:`get_timer`
for the next deadline, and calls :meth:`handle_timer` when it passes. The rules:

* a ping is due ``interval`` seconds after the last byte received (or the last ping sent,
  whichever is later): a busy connection never pings;
* the peer is dead ``timeout`` seconds after the last byte received.
"""

from __future__ import annotations

import enum

from ..errors import UsageError


class Beat(enum.Enum):
    """What :meth:`Heartbeat.handle_timer` asks the caller to do."""

    NOTHING = "nothing"
    SEND_PING = "send-ping"
    PEER_DEAD = "peer-dead"


class Heartbeat:
    __slots__ = ("_last_ping", "_last_received", "interval", "timeout")

    def __init__(self, interval: float, timeout: float, now: float) -> None:
        if interval <= 0 or timeout <= 0:
            raise UsageError("heartbeat interval and timeout must be positive")
        if timeout <= interval:
            raise UsageError(
                f"heartbeat timeout ({timeout:g}s) must exceed the interval ({interval:g}s)"
            )
        self.interval = interval
        self.timeout = timeout
        self._last_received = now
        self._last_ping = now

    def received(self, now: float) -> None:
        """Any bytes arrived from the peer."""
        self._last_received = now

    def get_timer(self) -> float:
        """The next moment :meth:`handle_timer` has something to decide."""
        ping_at = max(self._last_received, self._last_ping) + self.interval
        return min(ping_at, self._last_received + self.timeout)

    def handle_timer(self, now: float) -> Beat:
        if now >= self._last_received + self.timeout:
            return Beat.PEER_DEAD
        if now >= max(self._last_received, self._last_ping) + self.interval:
            self._last_ping = now
            return Beat.SEND_PING
        return Beat.NOTHING
