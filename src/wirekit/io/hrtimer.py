"""A one-shot timer with microsecond precision for the event loop (Linux timerfd).

Loop timers (``call_at``) are millisecond-grained in both asyncio and uvloop: a callback due at
t fires anywhere in [t, t + 1 ms]. The open-model load generator needs better, so this arms a
``timerfd`` on CLOCK_MONOTONIC (the clock of :func:`time.perf_counter_ns`) at an absolute
nanosecond deadline and watches it with ``loop.add_reader``. Elsewhere it falls back to
``call_later``.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import sys
from collections.abc import Callable
from time import perf_counter_ns

CLOCK_MONOTONIC = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC
TFD_TIMER_ABSTIME = 1
PR_SET_TIMERSLACK = 29


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.timerfd_create  # noqa: B018 - probe that the symbol exists
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


class HighResTimer:
    """Calls ``callback()`` once at each deadline set with :meth:`at` (perf_counter_ns)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._fd = -1
        self._handle: asyncio.TimerHandle | None = None
        if _LIBC is not None:
            fd = _LIBC.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
            if fd >= 0:
                self._fd = fd
                _LIBC.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)  # wake within µs, not 50 µs
                loop.add_reader(fd, self._fired)

    def at(self, deadline_ns: int) -> None:
        if self._fd < 0:
            if self._handle is not None:
                self._handle.cancel()
            delay = max(0.0, (deadline_ns - perf_counter_ns()) / 1e9)
            self._handle = self._loop.call_later(delay, self._callback)
            return
        spec = _Itimerspec()
        deadline_ns = max(deadline_ns, 1)
        spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(deadline_ns, 1_000_000_000)
        assert _LIBC is not None
        if _LIBC.timerfd_settime(self._fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1

    def _fired(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return
        self._callback()
