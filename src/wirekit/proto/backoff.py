"""Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And Jitter").

Attempt ``n`` (from 0) waits a uniformly random time in ``[0, min(cap, base * factor**n)]``.
After ``max_attempts`` delays :meth:`Backoff.next_delay` returns ``None``: give up.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from ..errors import UsageError


class Backoff:
    __slots__ = ("_rand", "attempts", "base", "cap", "factor", "max_attempts")

    def __init__(
        self,
        base: float = 0.1,
        cap: float = 30.0,
        factor: float = 2.0,
        max_attempts: int | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if base <= 0 or cap < base or factor < 1:
            raise UsageError("backoff needs base > 0, cap >= base and factor >= 1")
        if max_attempts is not None and max_attempts < 0:
            raise UsageError("max_attempts must be >= 0 or None")
        self.base = base
        self.cap = cap
        self.factor = factor
        self.max_attempts = max_attempts
        self._rand = rand
        self.attempts = 0

    def ceiling(self, attempt: int) -> float:
        """The largest delay attempt ``attempt`` can draw."""
        # Compare exponents first so huge attempt counts never overflow a float.
        if attempt > 1024:
            return self.cap
        return min(self.cap, self.base * self.factor**attempt)

    def next_delay(self) -> float | None:
        """The delay before the next attempt, or ``None`` once attempts are exhausted."""
        if self.max_attempts is not None and self.attempts >= self.max_attempts:
            return None
        delay = self._rand() * self.ceiling(self.attempts)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        """Call after a success: the next failure starts from ``base`` again."""
        self.attempts = 0
