"""A load run's result: one dict (the ``--json`` output), thresholds, the self-check, CSV.

Everything the terminal summary, ``--json``, ``--csv`` and ``--html`` show comes from
:func:`build_result`, so they always agree.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from . import http, recorder
from .recorder import PERCENTILES, Recorder, summary

LAG_LIMIT_MS = 1.0
CPU_LIMIT = 0.95
# Whether the install compiled the per-response path with mypyc (setup.py): interpreted, the
# generator does about 6% fewer requests per CPU-second. Reported as ``compiled``.
COMPILED = not any(str(module.__file__).endswith(".py") for module in (http, recorder))

_UNITS = {"us": 0.001, "µs": 0.001, "ms": 1.0, "s": 1000.0, "%": 1.0, "": 1.0}
_METRICS = {f"p{p:g}" for p in PERCENTILES} | {"max", "mean", "errors", "rps"}


@dataclass(frozen=True)
class Threshold:
    """``METRIC OP VALUE[UNIT]``: latency metrics in ms (corrected), ``errors`` as a percentage
    of requests, ``rps`` in completed requests per second."""

    text: str
    metric: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str) -> Threshold:
        m = re.fullmatch(r"\s*([a-z0-9.]+)\s*(<=|>=|<|>)\s*([0-9.]+)\s*(us|µs|ms|s|%)?\s*", text)
        if m is None or m[1] not in _METRICS:
            raise UsageError(
                f"bad threshold {text!r}: expected METRIC OP VALUE with METRIC one of "
                f"{', '.join(sorted(_METRICS))}, e.g. 'p99 < 50ms' or 'errors < 0.1%'"
            )
        metric, unit = m[1], m[4] or ""
        if metric in ("errors", "rps") and unit not in ("", "%"):
            raise UsageError(f"bad threshold {text!r}: {metric} takes no time unit")
        if metric not in ("errors", "rps") and unit == "%":
            raise UsageError(f"bad threshold {text!r}: latency needs us, ms or s")
        try:
            value = float(m[3]) * _UNITS[unit]
        except ValueError:
            raise UsageError(f"bad threshold {text!r}: {m[3]!r} is not a number") from None
        return cls(text.strip(), metric, m[2], value)

    def check(self, result: dict[str, Any]) -> dict[str, Any]:
        if self.metric == "errors":
            actual = result["requests"]["error_rate_pct"]
        elif self.metric == "rps":
            actual = result["throughput_rps"]
        else:
            actual = result["latency_ms"]["corrected"][self.metric]
        passed = {
            "<": actual < self.value,
            "<=": actual <= self.value,
            ">": actual > self.value,
            ">=": actual >= self.value,
        }[self.op]
        return {"threshold": self.text, "actual": actual, "passed": passed}


def build_result(
    *,
    url: str,
    model: str,
    connections: int,
    recorder: Recorder,
    elapsed_ns: int,
    cpu_fraction: float,
    workers: int = 1,
    rate: float | None = None,
    thresholds: Sequence[Threshold] = (),
) -> dict[str, Any]:
    rec = recorder
    elapsed = elapsed_ns / 1e9
    failed = sum(rec.errors.values())
    total = rec.completed + failed
    corrected = summary(rec.corrected)
    result: dict[str, Any] = {
        "target": url,
        "model": model,
        "rate": rate,
        "connections": connections,
        "workers": workers,
        "duration_s": round(elapsed, 6),
        "requests": {
            "sent": rec.sent,
            "completed": rec.completed,
            "errors": failed,
            "error_rate_pct": 100.0 * failed / total if total else 0.0,
        },
        "throughput_rps": rec.completed / elapsed if elapsed > 0 else 0.0,
        "latency_ms": {"corrected": corrected, "uncorrected": summary(rec.uncorrected)},
        "scheduler_lag_ms": summary(rec.lag) if model in ("open", "fanout") else None,
        "status": {str(k): v for k, v in sorted(rec.status.items())},
        "errors": dict(sorted(rec.errors.items())),
        "requests_by_name": dict(sorted(rec.names.items())),
        "bytes": {"in": rec.bytes_in, "out": rec.bytes_out},
        "timeline": [
            {
                "second": i,
                "completed": sec.completed,
                "errors": sec.errors,
                "bytes_in": sec.bytes_in,
                **{k: v for k, v in summary(sec.latency).items() if k in ("p50", "p99", "max")},
            }
            for i, sec in enumerate(rec.seconds)
        ],
        "spectrum": spectrum(rec),
        "generator_cpu": round(cpu_fraction, 3),
        "compiled": COMPILED,
    }
    reasons = []
    if model != "closed" and result["scheduler_lag_ms"]["p99"] > LAG_LIMIT_MS:
        reasons.append(
            f"scheduler lag p99 {result['scheduler_lag_ms']['p99']:.3f} ms > {LAG_LIMIT_MS} ms:"
            " the generator fell behind its own schedule"
        )
    if elapsed >= 1.0 and cpu_fraction > CPU_LIMIT * workers:  # too short to judge otherwise
        reasons.append(
            f"generator CPU saturated ({100 * cpu_fraction / workers:.0f}% of "
            f"{workers} core{'s' if workers > 1 else ''}): the numbers measure the generator"
        )
    result["valid"] = not reasons
    result["invalid_reasons"] = reasons
    result["thresholds"] = [t.check(result) for t in thresholds]
    return result


def spectrum(rec: Recorder) -> list[dict[str, float]]:
    """The corrected latency percentile spectrum (HdrHistogram's log-spaced percentiles)."""
    h = rec.corrected.to_hdr()
    if h.get_total_count() == 0:
        return []
    points = []
    for pct in (0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 99.999, 100):
        points.append({"percentile": pct, "ms": h.get_value_at_percentile(pct) / 1000})
    return points


def exit_code(result: dict[str, Any]) -> int:
    """3: the run is not valid; 1: a threshold failed; 0: fine."""
    if not result["valid"]:
        return 3
    if any(not t["passed"] for t in result["thresholds"]):
        return 1
    return 0


def to_csv(result: dict[str, Any]) -> str:
    """The per-second timeline as CSV, one row per second."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["second", "completed", "errors", "bytes_in", "p50_ms", "p99_ms", "max_ms"])
    for row in result["timeline"]:
        writer.writerow([row["second"], row["completed"], row["errors"], row["bytes_in"],
                         row["p50"], row["p99"], row["max"]])  # fmt: skip
    return out.getvalue()
