"""Per-connection and per-server statistics (seed 14.8.2).

Counters are plain integer attributes bumped on the hot path; snapshots are taken only when
someone asks (``statistics()``, a metrics scrape), so measuring costs next to nothing.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

# Upper bounds, in seconds, of the response-time histogram buckets.
RESPONSE_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip

_ids = itertools.count(1)


class ResponseTimes:
    """A fixed-bucket histogram of response times; cheap to update, mergeable."""

    __slots__ = ("buckets", "count", "max", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(RESPONSE_BUCKETS) + 1)
        self.count = 0
        self.sum = 0.0
        self.max = 0.0

    def record(self, seconds: float) -> None:
        self.buckets[bisect.bisect_left(RESPONSE_BUCKETS, seconds)] += 1
        self.count += 1
        self.sum += seconds
        if seconds > self.max:
            self.max = seconds

    def merge(self, other: ResponseTimes) -> None:
        for i, n in enumerate(other.buckets):
            self.buckets[i] += n
        self.count += other.count
        self.sum += other.sum
        self.max = max(self.max, other.max)


class ConnectionStats:
    """Counters of one connection. Mutated in place by the connection's protocol."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "errors",
        "frames_in",
        "frames_out",
        "id",
        "last_activity",
        "opened",
        "peer",
        "response_times",
    )

    def __init__(self, peer: str, now: float) -> None:
        self.id = next(_ids)
        self.peer = peer
        self.opened = now
        self.last_activity = now
        self.bytes_in = 0
        self.bytes_out = 0
        self.frames_in = 0
        self.frames_out = 0
        self.errors = 0
        self.response_times = ResponseTimes()

    def snapshot(self, now: float) -> dict[str, Any]:
        rt = self.response_times
        return {
            "id": self.id,
            "peer": self.peer,
            "age_s": round(now - self.opened, 6),
            "idle_s": round(now - self.last_activity, 6),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "errors": self.errors,
            "responses": rt.count,
            "response_avg_s": rt.sum / rt.count if rt.count else 0.0,
            "response_max_s": rt.max,
        }


@dataclass
class ServerSnapshot:
    """A picklable point-in-time view of one server (sent between worker processes too)."""

    name: str
    transport: str  # "tcp" | "udp"
    address: str
    open_connections: int = 0
    accepted: int = 0
    rejected: int = 0
    closed: dict[str, int] = field(default_factory=dict)
    bytes_in: int = 0
    bytes_out: int = 0
    frames_in: int = 0
    frames_out: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    response_buckets: list[int] = field(default_factory=lambda: [0] * (len(RESPONSE_BUCKETS) + 1))
    response_sum: float = 0.0
    connections: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class ServerStats:
    """Totals of one server: live connections plus everything folded in from closed ones."""

    def __init__(self, name: str, transport: str) -> None:
        self.name = name
        self.transport = transport
        self.address = ""
        self.live: dict[int, ConnectionStats] = {}
        self.accepted = 0
        self.rejected = 0
        self.closed: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self._closed_totals = ConnectionStats("", 0.0)

    @property
    def totals(self) -> ConnectionStats:
        """Counters folded in from closed connections; connectionless servers (UDP) count
        straight into it."""
        return self._closed_totals

    def opened(self, conn: ConnectionStats) -> None:
        self.accepted += 1
        self.live[conn.id] = conn

    def closed_connection(self, conn: ConnectionStats, reason: str) -> None:
        if self.live.pop(conn.id, None) is None:
            return
        self.closed[reason] += 1
        t = self._closed_totals
        t.bytes_in += conn.bytes_in
        t.bytes_out += conn.bytes_out
        t.frames_in += conn.frames_in
        t.frames_out += conn.frames_out
        t.errors += conn.errors
        t.response_times.merge(conn.response_times)

    def snapshot(self, now: float, *, connections: bool = False) -> ServerSnapshot:
        totals = ResponseTimes()
        totals.merge(self._closed_totals.response_times)
        snap = ServerSnapshot(
            name=self.name,
            transport=self.transport,
            address=self.address,
            open_connections=len(self.live),
            accepted=self.accepted,
            rejected=self.rejected,
            closed=dict(self.closed),
            errors=dict(self.errors),
        )
        t = self._closed_totals
        snap.bytes_in, snap.bytes_out = t.bytes_in, t.bytes_out
        snap.frames_in, snap.frames_out = t.frames_in, t.frames_out
        for conn in self.live.values():
            snap.bytes_in += conn.bytes_in
            snap.bytes_out += conn.bytes_out
            snap.frames_in += conn.frames_in
            snap.frames_out += conn.frames_out
            totals.merge(conn.response_times)
            if connections:
                snap.connections.append(conn.snapshot(now))
        snap.response_buckets = list(totals.buckets)
        snap.response_sum = totals.sum
        return snap
