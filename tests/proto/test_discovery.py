from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wirekit.errors import BadMessage
from wirekit.proto.discovery import Announcement, Change, Registry, decode


def test_announce_round_trips_and_registry_tracks_up_and_expiry() -> None:
    ann = Announcement("announce", "api", 8080, "abc", ttl=5)
    assert decode(ann.encode()) == ann
    reg = Registry()
    up = reg.handle(ann, "10.0.0.1", now=0)
    assert up is not None and up.change is Change.UP
    assert reg.handle(ann, "10.0.0.1", now=3) is None  # refresh, not news
    assert reg.get_timer() == 8
    assert reg.handle_timer(7.9) == []
    [gone] = reg.handle_timer(8)
    assert gone.change is Change.DOWN and gone.reason == "expired"


def test_bye_removes_at_once() -> None:
    reg = Registry()
    reg.handle(Announcement("announce", "api", 1, "i"), "h", 0)
    change = reg.handle(Announcement("bye", "api", 1, "i"), "h", 1)
    assert change is not None and change.reason == "bye" and reg.services() == []


def test_registry_is_bounded() -> None:
    reg = Registry(max_services=3)
    for i in range(10):
        reg.handle(Announcement("announce", "s", 1, str(i)), "h", now=i)
    assert len(reg.services()) == 3


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"[]", b'{"v":2}', b'{"v":1,"kind":"x"}', b'{"v":1,"kind":"announce","name":"a",'
     b'"port":0,"instance":"i"}', b"\xff" * 10, b"x" * 5000],
)  # fmt: skip
def test_bad_datagrams_are_rejected(data: bytes) -> None:
    with pytest.raises(BadMessage):
        decode(data)


@given(st.binary(max_size=2000))
def test_decode_never_raises_anything_but_bad_message(data: bytes) -> None:
    try:
        decode(data)
    except BadMessage:
        pass
