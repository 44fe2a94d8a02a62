from __future__ import annotations

import pytest

from wirekit.errors import UsageError
from wirekit.proto.backoff import Backoff
from wirekit.proto.heartbeat import Beat, Heartbeat


def test_heartbeat_pings_when_quiet_and_declares_death_after_timeout() -> None:
    hb = Heartbeat(interval=10, timeout=25, now=0)
    assert hb.get_timer() == 10
    assert hb.handle_timer(9.9) is Beat.NOTHING
    assert hb.handle_timer(10) is Beat.SEND_PING
    assert hb.get_timer() == 20  # next ping one interval after the last one
    assert hb.handle_timer(20) is Beat.SEND_PING
    assert hb.get_timer() == 25
    assert hb.handle_timer(25) is Beat.PEER_DEAD


def test_traffic_postpones_pings_and_death() -> None:
    hb = Heartbeat(interval=10, timeout=25, now=0)
    hb.received(8)
    assert hb.handle_timer(10) is Beat.NOTHING
    assert hb.get_timer() == 18
    hb.received(30)
    assert hb.handle_timer(33) is Beat.NOTHING
    assert hb.handle_timer(54) is Beat.SEND_PING
    assert hb.handle_timer(55) is Beat.PEER_DEAD


def test_heartbeat_rejects_nonsense() -> None:
    with pytest.raises(UsageError):
        Heartbeat(interval=10, timeout=5, now=0)


def test_backoff_is_full_jitter_capped_and_bounded() -> None:
    b = Backoff(base=1, cap=8, factor=2, max_attempts=6, rand=lambda: 1.0)
    assert [b.next_delay() for _ in range(7)] == [1, 2, 4, 8, 8, 8, None]
    b.reset()
    assert b.next_delay() == 1
    zero = Backoff(base=1, cap=8, rand=lambda: 0.0)
    assert zero.next_delay() == 0.0
    half = Backoff(base=2, cap=100, rand=lambda: 0.5)
    assert [half.next_delay() for _ in range(3)] == [1, 2, 4]


def test_backoff_survives_huge_attempt_counts() -> None:
    b = Backoff(base=0.1, cap=30, rand=lambda: 1.0)
    b.attempts = 10**6
    assert b.next_delay() == 30
