"""When the open model sends: a rate plan turned into intended send times (sans-I/O).

A plan is a list of steps ``(seconds, rate_from, rate_to)``: the rate moves linearly from
``rate_from`` to ``rate_to`` over the step (equal for a constant step). Arrivals are evenly
spaced, or Poisson (exponential gaps) with ``poisson=True``.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

from ..errors import UsageError

NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Step:
    seconds: float
    rate_from: float
    rate_to: float


def plan(rate: float, duration: float, ramp: float = 0.0) -> list[Step]:
    """A constant ``rate`` for ``duration`` seconds, reached by a linear ramp of ``ramp`` s."""
    if rate <= 0:
        raise UsageError("--rate must be > 0")
    steps = [Step(ramp, 0.0, rate)] if ramp > 0 else []
    return [*steps, Step(max(0.0, duration - ramp), rate, rate)]


def parse_steps(text: str) -> list[Step]:
    """``RATE:SECONDS,RATE:SECONDS,...`` e.g. ``100:5,200:5,400:10`` (or ``5s``)."""
    steps = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)s?\s*", part)
        if m is None or float(m[1]) <= 0 or float(m[2]) <= 0:
            raise UsageError(f"bad --steps part {part!r}: expected RATE:SECONDS, e.g. 100:5")
        steps.append(Step(float(m[2]), float(m[1]), float(m[1])))
    return steps


class Schedule:
    """Yields intended send times (ns, from ``start``) following the plan."""

    __slots__ = ("_gap", "_poisson", "_rand", "_step", "_step_start", "_steps", "end", "next")

    def __init__(
        self, steps: list[Step], start: int, poisson: bool = False, seed: int | None = None
    ) -> None:
        if not steps:
            raise UsageError("an open-model plan needs at least one step")
        self._steps = steps
        self._poisson = poisson
        self._rand = random.Random(seed)
        self._step = 0
        self._step_start = start
        self.end = start + int(sum(s.seconds for s in steps) * NS)
        # Even spacing sends the first request at the start; Poisson after a first gap.
        self.next: int | None = self._following(start) if poisson else start

    def rate_at(self, t: int) -> float:
        step = self._steps[self._step]
        if step.seconds <= 0:
            return step.rate_to
        frac = min(1.0, (t - self._step_start) / (step.seconds * NS))
        return step.rate_from + (step.rate_to - step.rate_from) * frac

    def advance(self) -> int | None:
        """Consume the current intended time and return the next (``None``: plan over)."""
        assert self.next is not None
        self.next = self._following(self.next)
        return self.next

    def _following(self, t: int) -> int | None:
        # The next arrival is where the rate's integral since ``t`` reaches u (1, or an
        # exponential variate for Poisson): r*g + slope*g^2/2 = u for a linear rate.
        u = self._rand.expovariate(1.0) if self._poisson else 1.0
        while True:
            step = self._steps[self._step]
            step_end = self._step_start + int(step.seconds * NS)
            r = self.rate_at(t)
            slope = (step.rate_to - step.rate_from) / step.seconds if step.seconds > 0 else 0.0
            if abs(slope) < 1e-12:
                gap = u / r if r > 0 else math.inf
            else:
                disc = r * r + 2 * slope * u
                gap = (math.sqrt(disc) - r) / slope if disc >= 0 else math.inf
            nxt = t + max(1, int(gap * NS)) if gap < math.inf else step_end
            if nxt < step_end:
                return nxt
            if self._step + 1 >= len(self._steps):
                return None
            self._step += 1
            self._step_start = step_end
            t = step_end - 1  # the next step's first arrival follows its own rate
