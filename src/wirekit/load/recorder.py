"""What a load run measured: HDR histograms, a per-second timeline, errors, status codes.

Latencies are recorded in microseconds. ``corrected`` measures from the *intended* send time
(the open model's schedule: coordinated omission corrected), ``uncorrected`` from the actual
send. A :class:`Recorder` serialises to a plain dict (:meth:`Recorder.to_wire`) so worker
processes can send theirs to the parent, which merges them exactly (:meth:`Recorder.merge`).
"""

from __future__ import annotations

import zlib
from array import array
from collections import Counter
from collections.abc import Sequence
from functools import cache
from itertools import repeat
from operator import floordiv
from typing import Any, cast

from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]

LOWEST_US, HIGHEST_US = 1, 3_600_000_000  # 1 µs .. 1 hour
DIGITS, TIMELINE_DIGITS = 3, 2
PERCENTILES = (50.0, 90.0, 99.0, 99.9, 99.99)


def histogram(digits: int = DIGITS) -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, digits)


@cache
def _layout(digits: int) -> tuple[int, int, int, int, int]:
    """HdrHistogram's bucket layout at ``digits``: (half-count magnitude, sub-bucket mask, half
    count, bucket offset, counts length), read once from a real one."""
    ref = histogram(digits)
    assert ref.unit_magnitude == 0  # LOWEST_US == 1: no unit shift below
    magnitude = ref.sub_bucket_half_count_magnitude
    return magnitude, ref.sub_bucket_mask, ref.sub_bucket_half_count, magnitude + 1, ref.counts_len


class FastHistogram:
    """Counts in HdrHistogram's own bucket layout, recorded with a few integer operations
    (hdrh's ``record_value`` costs about 1 µs; this about a third of it). :meth:`to_hdr` gives
    the equivalent HdrHistogram for percentiles, encoding and merging.

    A histogram nothing is recorded in for now (a past second of the timeline) can be
    :meth:`park`-ed: its counts are kept zlib-compressed, about 1 KiB for a second of 20,000
    responses over 600 distinct buckets instead of 26 KiB (and 10 KiB as (index, count)
    pairs); recording unparks it."""

    __slots__ = ("_half", "_magnitude", "_mask", "_offset", "_parked", "_size", "counts", "digits")

    def __init__(self, digits: int = DIGITS) -> None:
        self.digits = digits
        self._magnitude, self._mask, self._half, self._offset, self._size = _layout(digits)
        self.counts = [0] * self._size
        self._parked: bytes | None = None  # the counts, compressed, while parked

    def park(self) -> None:
        if self._parked is None:
            self._parked = zlib.compress(array("q", self.counts).tobytes(), 1)  # ~0.1 ms
            self.counts = []

    def _counts(self) -> Sequence[int]:
        parked = self._parked
        return self.counts if parked is None else array("q", zlib.decompress(parked))

    def _unpark(self) -> None:
        if self._parked is not None:
            self.counts = list(self._counts())
            self._parked = None

    def nonzero(self) -> dict[int, int]:
        """Bucket index -> count, for the buckets that have any."""
        return {i: c for i, c in enumerate(self._counts()) if c}

    def _index(self, value: int) -> int:
        bucket = (value | self._mask).bit_length() - self._offset
        return ((bucket + 1) << self._magnitude) + (value >> bucket) - self._half

    def record(self, value: int) -> None:
        self.counts[self._index(value)] += 1

    def add(self, counts: Counter[int]) -> None:
        """Record ``counts`` (microseconds -> how many, from :func:`microseconds`), each value
        clamped to the range: one bucket computation per distinct value."""
        self._unpark()
        buckets, index = self.counts, self._index
        for value, n in counts.items():
            buckets[index(min(max(value, LOWEST_US), HIGHEST_US))] += n

    def to_hdr(self) -> HdrHistogram:
        h = histogram(self.digits)
        for index, count in self.nonzero().items():
            h.record_value(h.get_value_from_index(index), count)
        return h

    def add_encoded(self, encoded: str) -> None:
        other = histogram(self.digits)
        other.decode_and_add(encoded)
        self._unpark()
        counts = self.counts
        for index in range(other.counts_len):
            count = other.counts[index]
            if count:
                counts[index] += count


def microseconds(values_ns: list[int]) -> Counter[int]:
    """Microseconds -> how many of ``values_ns`` round down to it, counted in C (latencies
    bunch into few distinct microsecond values, so the per-value work left is small)."""
    return Counter(map(floordiv, values_ns, repeat(1000)))


def clamp_us(ns: int) -> int:
    return min(max(ns // 1000, LOWEST_US), HIGHEST_US)


def summary(fast: FastHistogram) -> dict[str, float]:
    """Percentiles, max and mean in milliseconds."""
    h = fast.to_hdr()
    if h.get_total_count() == 0:
        return {**{f"p{p:g}": 0.0 for p in PERCENTILES}, "max": 0.0, "mean": 0.0}
    out = {f"p{p:g}": h.get_value_at_percentile(p) / 1000 for p in PERCENTILES}
    out["max"] = h.get_max_value() / 1000
    out["mean"] = h.get_mean_value() / 1000
    return out


def _encode(h: FastHistogram) -> str:
    """HdrHistogram's compressed base64 form, as text (JSON- and pipe-safe)."""
    return str(h.to_hdr().encode().decode("ascii"))


class Second:
    """One second of the timeline."""

    __slots__ = ("bytes_in", "completed", "errors", "latency")

    def __init__(self) -> None:
        self.completed = 0
        self.errors = 0
        self.bytes_in = 0
        self.latency = FastHistogram(TIMELINE_DIGITS)  # corrected, coarser: it is per second


class Recorder:
    """Latencies (raw nanoseconds) and status codes are kept in lists while their second
    lasts, and go into the histograms and the status counts when another second starts or they
    are read (:attr:`corrected`, :attr:`uncorrected`, :attr:`seconds`, :attr:`status`): a
    response costs two list appends on the hot path (four when it was sent later than
    intended) instead of three histogram updates and a dict update, and a second's latencies
    are counted per distinct microsecond, and its status codes, in C (:func:`microseconds`,
    ``Counter``) before any bucket is computed."""

    __slots__ = (
        "_completed",
        "_corrected",
        "_current",
        "_current_end",
        "_current_start",
        "_pending",
        "_pending_bytes",
        "_seconds",
        "_shifted_corrected",
        "_shifted_uncorrected",
        "_status",
        "_statuses",
        "_uncorrected",
        "bytes_in",
        "bytes_out",
        "errors",
        "lag",
        "names",
        "sent",
        "start_ns",
    )

    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self._corrected = FastHistogram()
        self._uncorrected = FastHistogram()
        self.lag = FastHistogram()  # scheduler lag: due time -> dispatch, with a free slot
        self._seconds: list[Second] = []
        self._status: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.names: Counter[str] = Counter()  # scenario responses per request name
        self._completed = 0  # besides those pending
        self.sent = 0
        self.bytes_in = 0
        self.bytes_out = 0
        # The second responses are being recorded in, valid in [start, end); its latencies
        # (corrected and uncorrected, ns) not yet in the histograms.
        self._current = Second()
        self._current_start = self._current_end = 0
        self._pending: list[int] = []
        self._statuses: list[int | None] = []  # their status codes, counted in C by settle()
        self._pending_bytes = 0  # their bytes: added to the second they arrived in by settle()
        # The responses sent later than intended (open model): their corrected latency, and
        # their uncorrected one. Each other response's uncorrected latency is its corrected
        # one (always, in a closed model), so it is recorded once.
        self._shifted_corrected: list[int] = []
        self._shifted_uncorrected: list[int] = []

    @property
    def corrected(self) -> FastHistogram:
        self.settle()
        return self._corrected

    @property
    def uncorrected(self) -> FastHistogram:
        self.settle()
        return self._uncorrected

    @property
    def seconds(self) -> list[Second]:
        self.settle()
        return self._seconds

    @property
    def status(self) -> Counter[int]:
        """HTTP status code -> responses."""
        self.settle()
        return self._status

    @property
    def completed(self) -> int:
        return self._completed + len(self._pending)

    def settle(self) -> None:
        """Put the latencies, status codes and bytes recorded so far into the histograms, the
        status counts and the current second."""
        self._current.bytes_in += self._pending_bytes
        self._pending_bytes = 0
        pending = self._pending
        if pending:
            self._completed += len(pending)
            self._current.completed += len(pending)
            corrected = microseconds(pending)
            self._corrected.add(corrected)
            self._current.latency.add(corrected)
            if self._shifted_corrected:
                uncorrected = corrected.copy()
                uncorrected.subtract(microseconds(self._shifted_corrected))
                uncorrected.update(microseconds(self._shifted_uncorrected))
                self._shifted_corrected = []
                self._shifted_uncorrected = []
            else:
                uncorrected = corrected
            self._uncorrected.add(uncorrected)
            self._pending = []
            codes = Counter(self._statuses)
            codes.pop(None, None)  # tcp/udp replies
            self._status.update(cast("Counter[int]", codes))
            self._statuses = []

    def second(self, now_ns: int) -> Second:
        """The second of ``now_ns``, which becomes the one responses are recorded in."""
        if self._current_start <= now_ns < self._current_end:  # the common case: this second
            return self._current
        self.settle()
        self._current.latency.park()
        index = max(0, (now_ns - self.start_ns) // 1_000_000_000)
        seconds = self._seconds
        while len(seconds) <= index:
            seconds.append(Second())
        self._current = seconds[index]
        self._current_start = self.start_ns + index * 1_000_000_000
        self._current_end = self._current_start + 1_000_000_000
        return self._current

    def response(
        self, intended: int, sent: int, done: int, status: int | None, size: int = 0
    ) -> None:
        """One reply; ``status`` is the HTTP status (``None`` for tcp/udp). ``size``: bytes
        that arrived at ``done`` and were not given to :meth:`received` (one call for both)."""
        if not self._current_start <= done < self._current_end:
            self.second(done)
        latency = done - intended
        self._pending.append(latency)
        self._statuses.append(status)
        if sent != intended:
            self._shifted_corrected.append(latency)
            self._shifted_uncorrected.append(done - sent)
        self.bytes_in += size
        self._pending_bytes += size

    def restart(self, start_ns: int) -> None:
        """Start the timeline over at ``start_ns`` (after a warm-up such as connecting)."""
        self.settle()
        self.start_ns = start_ns
        self._seconds = []
        self._current = Second()
        self._current_start = self._current_end = 0

    def received(self, size: int, now: int) -> None:
        self.bytes_in += size
        sec = self._current
        if not self._current_start <= now < self._current_end:
            sec = self.second(now)
        sec.bytes_in += size

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
        self.corrected.add_encoded(wire["corrected"])
        self.uncorrected.add_encoded(wire["uncorrected"])
        self.lag.add_encoded(wire["lag"])
        for index, (completed, errors, size, latency) in enumerate(wire["seconds"]):
            sec = self.second(self.start_ns + index * 1_000_000_000)
            sec.completed += completed
            sec.errors += errors
            sec.bytes_in += size
            sec.latency.add_encoded(latency)
        self._status.update({int(code): n for code, n in wire["status"].items()})
        self.errors.update(wire["errors"])
        self.names.update(wire["names"])
        self._completed += wire["completed"]
        self.sent += wire["sent"]
        self.bytes_in += wire["bytes_in"]
        self.bytes_out += wire["bytes_out"]
