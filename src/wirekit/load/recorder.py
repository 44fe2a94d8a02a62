"""What a load run measured: HDR histograms, a per-second timeline, errors, status codes.

Latencies are recorded in microseconds. ``corrected`` measures from the *intended* send time
(the open model's schedule: coordinated omission corrected), ``uncorrected`` from the actual
send. A :class:`Recorder` serialises to a plain dict (:meth:`Recorder.to_wire`) so worker
processes can send theirs to the parent, which merges them exactly (:meth:`Recorder.merge`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

LOWEST_US, HIGHEST_US = 1, 3_600_000_000  # 1 µs .. 1 hour
DIGITS, TIMELINE_DIGITS = 3, 2
PERCENTILES = (50.0, 90.0, 99.0, 99.9, 99.99)


def histogram(digits: int = DIGITS) -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, digits)


def clamp_us(ns: int) -> int:
    return min(max(ns // 1000, LOWEST_US), HIGHEST_US)


def summary(h: HdrHistogram) -> dict[str, float]:
    """Percentiles and max of ``h`` in milliseconds."""
    if h.get_total_count() == 0:
        return {**{f"p{p:g}": 0.0 for p in PERCENTILES}, "max": 0.0, "mean": 0.0}
    out = {f"p{p:g}": h.get_value_at_percentile(p) / 1000 for p in PERCENTILES}
    out["max"] = h.get_max_value() / 1000
    out["mean"] = h.get_mean_value() / 1000
    return out


def _encode(h: HdrHistogram) -> str:
    """HdrHistogram's compressed base64 form, as text (JSON- and pipe-safe)."""
    return str(h.encode().decode("ascii"))


class Second:
    """One second of the timeline."""

    __slots__ = ("bytes_in", "completed", "errors", "latency")

    def __init__(self) -> None:
        self.completed = 0
        self.errors = 0
        self.bytes_in = 0
        self.latency = histogram(TIMELINE_DIGITS)  # corrected, coarser: it is per second


class Recorder:
    __slots__ = (
        "bytes_in",
        "bytes_out",
        "completed",
        "corrected",
        "errors",
        "lag",
        "names",
        "seconds",
        "sent",
        "start_ns",
        "status",
        "uncorrected",
    )

    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.corrected = histogram()
        self.uncorrected = histogram()
        self.lag = histogram()  # scheduler lag: due time -> actual dispatch, idle connection
        self.seconds: list[Second] = []
        self.status: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.names: Counter[str] = Counter()  # scenario responses per request name
        self.completed = 0
        self.sent = 0
        self.bytes_in = 0
        self.bytes_out = 0

    def second(self, now_ns: int) -> Second:
        index = max(0, (now_ns - self.start_ns) // 1_000_000_000)
        seconds = self.seconds
        while len(seconds) <= index:
            seconds.append(Second())
        return seconds[index]

    def response(self, intended: int, sent: int, done: int, status: int | None) -> None:
        """One reply; ``status`` is the HTTP status (``None`` for tcp/udp)."""
        corrected = clamp_us(done - intended)
        self.corrected.record_value(corrected)
        self.uncorrected.record_value(corrected if sent == intended else clamp_us(done - sent))
        self.completed += 1
        if status is not None:
            self.status[status] += 1
        sec = self.second(done)
        sec.completed += 1
        sec.latency.record_value(corrected)

    def received(self, size: int, now: int) -> None:
        self.bytes_in += size
        self.second(now).bytes_in += size

    def failure(self, kind: str, now: int) -> None:
        self.errors[kind] += 1
        self.second(now).errors += 1

    # -- merging (worker processes) -----------------------------------------------------------
    def to_wire(self) -> dict[str, Any]:
        return {
            "start_ns": self.start_ns,
            "corrected": _encode(self.corrected),
            "uncorrected": _encode(self.uncorrected),
            "lag": _encode(self.lag),
            "seconds": [
                (sec.completed, sec.errors, sec.bytes_in, _encode(sec.latency))
                for sec in self.seconds
            ],
            "status": dict(self.status),
            "errors": dict(self.errors),
            "names": dict(self.names),
            "completed": self.completed,
            "sent": self.sent,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }

    def merge(self, wire: dict[str, Any]) -> None:
        """Add another process's recording (from :meth:`to_wire`); seconds align by index,
        since every worker starts on the parent's signal."""
        self.corrected.decode_and_add(wire["corrected"])
        self.uncorrected.decode_and_add(wire["uncorrected"])
        self.lag.decode_and_add(wire["lag"])
        for index, (completed, errors, size, latency) in enumerate(wire["seconds"]):
            sec = self.second(self.start_ns + index * 1_000_000_000)
            sec.completed += completed
            sec.errors += errors
            sec.bytes_in += size
            sec.latency.decode_and_add(latency)
        self.status.update({int(k): v for k, v in wire["status"].items()})
        self.errors.update(wire["errors"])
        self.names.update(wire["names"])
        self.completed += wire["completed"]
        self.sent += wire["sent"]
        self.bytes_in += wire["bytes_in"]
        self.bytes_out += wire["bytes_out"]
