"""The open model's schedule, thresholds and the recorder, with no sockets."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wirekit.errors import UsageError
from wirekit.load.report import Threshold
from wirekit.load.schedule import NS, Schedule, parse_steps, plan


def arrivals(schedule: Schedule) -> list[int]:
    times = []
    while schedule.next is not None:
        times.append(schedule.next)
        schedule.advance()
    return times


@settings(deadline=None)
@given(st.floats(min_value=1, max_value=5000), st.floats(min_value=0.5, max_value=5))
def test_constant_rate_sends_rate_times_duration(rate: float, seconds: float) -> None:
    times = arrivals(Schedule(plan(rate, seconds), 0))
    assert abs(len(times) - rate * seconds) <= 2  # the first leaves at 0; gaps round to ns
    assert times[0] == 0 and times == sorted(times) and times[-1] < seconds * NS


def test_ramp_sends_the_integral_and_accelerates() -> None:
    times = arrivals(Schedule(plan(1000, 3, ramp=2), 0))
    assert abs(len(times) - (1000 * 2 / 2 + 1000 * 1)) <= 2  # triangle, then the plateau
    first = sum(1 for t in times if t < NS)
    second = sum(1 for t in times if NS <= t < 2 * NS)
    assert abs(first - 250) <= 2 and abs(second - 750) <= 2


def test_steps_and_poisson() -> None:
    times = arrivals(Schedule(parse_steps("100:1,300:2s"), 0))
    assert abs(len(times) - 700) <= 2
    poisson = arrivals(Schedule(plan(2000, 5), 0, poisson=True, seed=7))
    assert abs(len(poisson) - 10_000) < 300  # ~3 sigma
    gaps = [b - a for a, b in itertools.pairwise(poisson)]
    assert len(set(gaps)) > 1000  # not evenly spaced
    assert arrivals(Schedule(plan(2000, 5), 0, poisson=True, seed=7)) == poisson  # seeded


def test_thresholds_parse_and_check() -> None:
    result = {"requests": {"error_rate_pct": 0.05}, "throughput_rps": 950.0,
              "latency_ms": {"corrected": {"p99": 42.0, "p99.9": 80.0}}}  # fmt: skip
    assert Threshold.parse("p99 < 50ms").check(result)["passed"]
    assert not Threshold.parse("p99<0.04s").check(result)["passed"]
    assert Threshold.parse("p99.9 <= 80000us").check(result)["passed"]
    assert Threshold.parse("errors < 0.1%").check(result)["passed"]
    assert not Threshold.parse("rps >= 1000").check(result)["passed"]
    for bad in ("p98 < 1ms", "p99 < 5%", "errors < 2ms", "p99 fast", "p99 < 1.2.3ms"):
        with pytest.raises(UsageError):
            Threshold.parse(bad)
