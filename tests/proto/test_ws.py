"""RFC 6455 framing and the hub's JSON requests, with no sockets."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wirekit.proto import ws
from wirekit.proto.wsapi import BadRequest, Request, encode_sse, parse_request, ws_event


def masked(opcode: int, payload: bytes, final: bool = True, rsv: int = 0) -> bytes:
    """A client frame with any flags (ws.client_frame makes only final, clean ones)."""
    key = b"\x01\x02\x03\x04"
    n = len(payload)
    first = (0x80 if final else 0) | rsv | opcode
    size = struct.pack("!B", 0x80 | n) if n < 126 else struct.pack("!BH", 0x80 | 126, n)
    return bytes([first]) + size + key + ws.mask(payload, key)


def feed(parser: ws.FrameParser, data: bytes, cuts: list[int]) -> list[ws.Event]:
    events: list[ws.Event] = []
    last = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        events += parser.receive_data(data[last:cut])
        last = cut
    return events + parser.receive_data(data[last:])


messages = st.lists(st.text(max_size=300), min_size=1, max_size=8)


@given(messages, st.lists(st.integers(min_value=0), max_size=20), st.integers(1, 4))
def test_any_chunking_and_fragmentation_gives_the_same_messages(
    texts: list[str], cuts: list[int], pieces: int
) -> None:
    data = b""
    for text in texts:
        raw = text.encode()
        step = max(1, len(raw) // pieces)
        chunks = [raw[i : i + step] for i in range(0, len(raw), step)] or [b""]
        for i, chunk in enumerate(chunks):
            data += masked(ws.TEXT if i == 0 else ws.CONTINUATION, chunk, i == len(chunks) - 1)
        data += masked(ws.PING, b"p")  # control frames may come between messages
    events = feed(ws.FrameParser(server=True), data, cuts)
    assert [e.text for e in events if isinstance(e, ws.Message)] == texts
    assert sum(isinstance(e, ws.Ping) for e in events) == len(texts)


@given(st.binary(max_size=200))
def test_client_frames_unmask_to_their_payload(payload: bytes) -> None:
    (event,) = ws.FrameParser(server=True).receive_data(ws.client_frame(ws.BINARY, payload))
    assert event == ws.Message(None, payload)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (ws.frame(ws.TEXT, b"unmasked"), ws.PROTOCOL_ERROR),
        (masked(ws.TEXT, b"x", rsv=0x40), ws.PROTOCOL_ERROR),
        (masked(0x3, b"x"), ws.PROTOCOL_ERROR),
        (masked(ws.PING, b"x", final=False), ws.PROTOCOL_ERROR),
        (masked(ws.CONTINUATION, b"x"), ws.PROTOCOL_ERROR),
        (masked(ws.TEXT, b"a", final=False) + masked(ws.TEXT, b"b"), ws.PROTOCOL_ERROR),
        (masked(ws.TEXT, b"\xff\xfe"), ws.INVALID_DATA),
        (masked(ws.CLOSE, b"\x03"), ws.PROTOCOL_ERROR),
        (masked(ws.CLOSE, struct.pack("!H", 1005)), ws.PROTOCOL_ERROR),
        (masked(ws.TEXT, b"x" * 200), ws.TOO_BIG),
        (masked(ws.TEXT, b"x" * 60, final=False) + masked(0, b"x" * 60), ws.TOO_BIG),
    ],
)
def test_violations_give_their_close_code_and_end_parsing(data: bytes, code: int) -> None:
    parser = ws.FrameParser(server=True, max_message=100)
    events = parser.receive_data(data)
    assert isinstance(events[-1], ws.Violation) and events[-1].code == code
    assert parser.receive_data(masked(ws.TEXT, b"after")) == []


def test_a_too_big_frame_is_refused_from_its_header_alone() -> None:
    head = bytes([0x81, 0x80 | 127]) + struct.pack("!Q", 1 << 40) + b"\x00" * 4
    (event,) = ws.FrameParser(server=True).receive_data(head)
    assert isinstance(event, ws.Violation) and event.code == ws.TOO_BIG


def test_close_frames() -> None:
    parser = ws.FrameParser(server=True)
    assert parser.receive_data(masked(ws.CLOSE, struct.pack("!H", 1000) + b"bye")) == [
        ws.Close(1000, "bye")
    ]
    assert ws.FrameParser(server=True).receive_data(masked(ws.CLOSE, b"")) == [ws.Close(None, "")]


def test_server_frames_are_read_by_a_client_parser() -> None:
    events = ws.FrameParser(server=False, max_message=1 << 20).receive_data(
        ws.frame(ws.TEXT, b"x" * 70000) + ws.close_frame(1001, "going")
    )
    assert events == [ws.Message("x" * 70000, b"x" * 70000), ws.Close(1001, "going")]


def test_accept_key_matches_rfc_6455_example() -> None:
    assert ws.accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert ws.valid_key("dGhlIHNhbXBsZSBub25jZQ==")
    assert not ws.valid_key("short") and not ws.valid_key("!!!!")


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("nope", "bad-json"),
        ("[1]", "bad-json"),
        ('{"op":"fly"}', "unknown-op"),
        ('{"op":"sub"}', "usage"),
        ('{"op":"sub","topic":5}', "usage"),
        ('{"op":"sub","topic":"t","since":-1}', "usage"),
        ('{"op":"sub","topic":"t","since":true}', "usage"),
        ('{"op":"ping","id":"' + "x" * 80 + '"}', "usage"),
    ],
)
def test_bad_requests(text: str, code: str) -> None:
    result = parse_request(text)
    assert isinstance(result, BadRequest) and result.code == code


def test_good_requests_keep_their_id_and_fields() -> None:
    assert parse_request('{"op":"sub","id":7,"topic":"#a","since":3,"epoch":null}') == Request(
        "sub", 7, {"topic": "#a", "since": 3}
    )
    assert parse_request('{"op":"pub","topic":"t","data":{"k":[1]}}') == Request(
        "pub", None, {"topic": "t", "data": {"k": [1]}}
    )


def test_hub_events_in_the_ws_and_sse_vocabulary() -> None:
    event = {"type": "msg", "room": "news", "offset": 3, "epoch": "e", "from": "api",
             "text": '{"a":1}', "json": True, "ts": 1.5}  # fmt: skip
    assert ws_event(event) == {"op": "msg", "topic": "news", "offset": 3, "epoch": "e",
                               "from": "api", "data": {"a": 1}, "ts": 1.5}  # fmt: skip
    sse = encode_sse(event)
    assert sse.startswith(b"id: 3\nevent: msg\ndata: {") and sse.endswith(b"}\n\n")
    assert encode_sse({"type": "online", "user": "bob"}).startswith(b"event: online\n")
