from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wirekit.errors import FrameTooLarge, LineTooLong, UsageError
from wirekit.proto.framing import LengthPrefixedFramer, LineFramer


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in [*points, len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


frames_st = st.lists(st.binary(max_size=300), max_size=20)


@given(frames=frames_st, cuts=st.lists(st.integers(min_value=0), max_size=30))
def test_length_prefixed_round_trips_under_any_chunking(
    frames: list[bytes], cuts: list[int]
) -> None:
    framer = LengthPrefixedFramer(max_frame=300)
    wire = b"".join(framer.encode(f) for f in frames)
    out: list[bytes] = []
    for piece in chunked(wire, cuts):
        out.extend(framer.receive_data(piece))
    assert out == frames
    assert framer.buffered == 0


@given(frames=frames_st)
def test_length_prefixed_byte_at_a_time(frames: list[bytes]) -> None:
    framer = LengthPrefixedFramer(max_frame=300)
    wire = b"".join(framer.encode(f) for f in frames)
    out: list[bytes] = []
    for i in range(len(wire)):
        out.extend(framer.receive_data(wire[i : i + 1]))
    assert out == frames


lines_st = st.lists(
    st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"").rstrip(b"\r")), max_size=20
)


@given(lines=lines_st, cuts=st.lists(st.integers(min_value=0), max_size=30), crlf=st.booleans())
def test_lines_round_trip_under_any_chunking(
    lines: list[bytes], cuts: list[int], crlf: bool
) -> None:
    framer = LineFramer(max_line=200)
    wire = b"".join(line + (b"\r\n" if crlf else b"\n") for line in lines)
    out: list[bytes] = []
    for piece in chunked(wire, cuts):
        out.extend(framer.receive_data(piece))
    assert out == lines


@given(size=st.integers(min_value=101, max_value=2**32 - 1), cut=st.integers(0, 3))
def test_oversized_frame_is_rejected_from_its_header(size: int, cut: int) -> None:
    framer = LengthPrefixedFramer(max_frame=100)
    header = size.to_bytes(4, "big")
    framer.receive_data(header[:cut])
    with pytest.raises(FrameTooLarge) as info:
        framer.receive_data(header[cut:])
    assert info.value.size == size and info.value.limit == 100
    with pytest.raises(FrameTooLarge):  # a broken framer stays broken
        framer.receive_data(b"")


def test_frames_before_the_oversized_one_are_kept() -> None:
    framer = LengthPrefixedFramer(max_frame=10)
    with pytest.raises(FrameTooLarge) as info:
        framer.receive_data(framer.encode(b"ok") + (11).to_bytes(4, "big"))
    assert info.value.frames == [b"ok"]


def test_long_line_is_rejected_before_its_newline_arrives() -> None:
    framer = LineFramer(max_line=8)
    assert framer.receive_data(b"12345678") == []
    with pytest.raises(LineTooLong) as info:
        framer.receive_data(b"9")
    assert info.value.hint == "line-too-long"


def test_line_at_the_limit_with_crlf_split_is_accepted() -> None:
    framer = LineFramer(max_line=4)
    assert framer.receive_data(b"abcd\r") == []
    assert framer.receive_data(b"\nx\n") == [b"abcd", b"x"]


def test_lines_before_a_long_one_are_kept() -> None:
    framer = LineFramer(max_line=3)
    with pytest.raises(LineTooLong) as info:
        framer.receive_data(b"ab\nabcdef\n")
    assert info.value.frames == [b"ab"]


def test_encode_refuses_what_the_peer_would_reject() -> None:
    with pytest.raises(UsageError):
        LengthPrefixedFramer(max_frame=2).encode(b"abc")
    with pytest.raises(UsageError):
        LineFramer().encode(b"a\nb")
    with pytest.raises(UsageError):
        LengthPrefixedFramer(max_frame=0)
