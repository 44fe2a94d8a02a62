"""The chat line protocol parser, with no sockets."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wirekit.proto.chat import BadLine, ChatReader, Command, encode_event, parse_line

lines = st.lists(
    st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]),
            max_size=40),
    max_size=20,
)  # fmt: skip


def feed(reader: ChatReader, data: bytes, cuts: list[int]) -> list[object]:
    events: list[object] = []
    last = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        events += reader.receive_data(data[last:cut])
        last = cut
    return events + reader.receive_data(data[last:])


@given(lines, st.lists(st.integers(min_value=0), max_size=30))
def test_any_chunking_parses_like_one_chunk(texts: list[str], cuts: list[int]) -> None:
    data = "".join(t + ("\r\n" if i % 2 else "\n") for i, t in enumerate(texts)).encode()
    whole = ChatReader(64).receive_data(data)
    assert feed(ChatReader(64), data, cuts) == whole
    bytewise: list[object] = []
    reader = ChatReader(64)
    for i in range(len(data)):
        bytewise += reader.receive_data(data[i : i + 1])
    assert bytewise == whole


@given(st.integers(min_value=0, max_value=3), st.lists(st.integers(min_value=0), max_size=10))
def test_an_oversized_line_is_reported_once_and_skipped(extra: int, cuts: list[int]) -> None:
    data = b"first\n" + b"y" * (20 + extra) + b"\nlast\n"
    events = feed(ChatReader(16), data, cuts)
    assert events == [
        Command("say", {"text": "first"}),
        BadLine("line-too-long", "line longer than 16 bytes was ignored"),
        Command("say", {"text": "last"}),
    ]


def test_buffer_stays_bounded_while_skipping() -> None:
    reader = ChatReader(16)
    assert [e.code for e in reader.receive_data(b"z" * 100) if isinstance(e, BadLine)] == [
        "line-too-long"
    ]
    for _ in range(100):
        assert reader.receive_data(b"z" * 1000) == []
        assert len(reader._buf) == 0
    assert reader.receive_data(b"\nok\n") == [Command("say", {"text": "ok"})]


def test_bad_utf8_is_reported_and_the_next_line_parsed() -> None:
    events = ChatReader().receive_data(b"\xff\xfe\n/rooms\n")
    assert events == [
        BadLine("bad-utf8", "line is not valid UTF-8; it was ignored"),
        Command("rooms", {}),
    ]


def test_commands_and_usage() -> None:
    assert parse_line("/msg bob  hello   there ") == Command(
        "msg", {"user": "bob", "text": "hello   there"}
    )
    assert parse_line("/HISTORY #r") == Command("history", {"room": "#r"})
    assert parse_line("/history #r 5") == Command("history", {"room": "#r", "count": "5"})
    assert parse_line("/since #r 4 ab12") == Command(
        "since", {"room": "#r", "offset": "4", "epoch": "ab12"}
    )
    assert parse_line("//not a command") == Command("say", {"text": "/not a command"})
    assert parse_line("   ") is None
    assert parse_line("/rooms extra") == BadLine("usage", "usage: /rooms")
    assert parse_line("/history") == BadLine("usage", "usage: /history ROOM [COUNT]")
    assert parse_line("/nope") == BadLine("unknown-command", "unknown command /nope; try /help")


def test_events_encode_as_json_or_text() -> None:
    event = {"type": "msg", "room": "#r", "offset": 1, "epoch": "e", "from": "a", "text": "hi",
             "ts": 0.0}  # fmt: skip
    assert encode_event(event, "json").startswith(b'{"type":"msg","room":"#r","offset":1')
    assert encode_event(event, "text").endswith(b"[#r] a: hi\n")
    assert encode_event({"type": "offline", "user": "a"}, "text") == b"* a is offline\n"
