"""The session protocol with no sockets: client and server wired by hand."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wirekit.errors import BadMessage, UsageError
from wirekit.proto.session import (
    Acked,
    ClientSession,
    ClientState,
    PeerDead,
    Received,
    ServerSession,
    SessionTable,
    Welcomed,
)

SID = b"s" * 16


def pump(client: ClientSession, server: ServerSession, delivered: list[bytes]) -> list[object]:
    """Move bytes both ways until quiet; the server's handler appends to ``delivered``."""
    events: list[object] = []
    for _ in range(100):
        out = client.data_to_send()
        if out:
            for msg in server.receive_data(out):
                assert isinstance(msg, Received)
                delivered.append(msg.payload)
                server.ack(msg.seq)
        back = server.data_to_send()
        if back:
            events.extend(client.receive_data(back, now=0))
        if not out and not back:
            return events
    raise AssertionError("did not settle")


def test_messages_queue_while_disconnected_and_flow_after_welcome() -> None:
    client = ClientSession(SID)
    seqs = [client.send(b"a"), client.send(b"b")]
    assert seqs == [1, 2] and client.data_to_send() == b""
    server = ServerSession(SessionTable())
    client.connection_made(now=0)
    delivered: list[bytes] = []
    events = pump(client, server, delivered)
    assert delivered == [b"a", b"b"]
    assert Welcomed(0) in events and Acked(2) in events
    assert client.unacked == 0 and client.state is ClientState.READY


def test_reconnect_resends_unacked_and_server_drops_duplicates() -> None:
    table = SessionTable()
    client = ClientSession(SID)
    client.connection_made(now=0)
    server = ServerSession(table)
    delivered: list[bytes] = []
    pump(client, server, delivered)
    client.send(b"1")
    client.send(b"2")
    # The server gets both and runs its handler, but its ACKs are lost with the connection.
    for msg in server.receive_data(client.data_to_send()):
        delivered.append(msg.payload)
        server.ack(msg.seq)
    server.data_to_send()
    client.connection_lost()
    assert client.unacked == 2
    client.send(b"3")
    client.connection_made(now=1)
    events = pump(client, ServerSession(table), delivered)
    assert delivered == [b"1", b"2", b"3"]  # 1 and 2 not delivered twice
    assert Welcomed(2) in events and client.unacked == 0


def test_after_a_server_restart_every_unacked_message_is_resent() -> None:
    client = ClientSession(SID)
    client.connection_made(now=0)
    pump(client, ServerSession(SessionTable()), [])
    for i in range(5):
        client.send(str(i).encode())
    client.data_to_send()  # written, then the server died before reading it
    client.connection_lost()
    client.connection_made(now=1)
    delivered: list[bytes] = []
    pump(client, ServerSession(SessionTable()), delivered)  # a fresh server remembers nothing
    assert delivered == [b"0", b"1", b"2", b"3", b"4"]


def test_outbox_is_bounded() -> None:
    client = ClientSession(SID, max_unacked=2)
    client.send(b"a")
    client.send(b"b")
    assert client.outbox_full
    with pytest.raises(UsageError):
        client.send(b"c")


def test_heartbeat_pings_then_declares_the_server_dead() -> None:
    client = ClientSession(SID, ping_interval=1, ping_timeout=3)
    client.connection_made(now=0)
    client.data_to_send()
    assert client.get_timer() == 1
    assert client.handle_timer(1) == []
    assert client.data_to_send() == b"\x00\x00\x00\x01\x05"  # PING
    assert client.handle_timer(3) == [PeerDead()]


def test_server_rejects_gaps_and_garbage() -> None:
    server = ServerSession(SessionTable())
    with pytest.raises(BadMessage):
        server.receive_data(b"\x00\x00\x00\x01\x03")  # DATA before HELLO
    server = ServerSession(SessionTable())
    server.receive_data(b"\x00\x00\x00\x19\x01" + SID + bytes(8))
    with pytest.raises(BadMessage):
        server.receive_data(b"\x00\x00\x00\x09\x03" + (5).to_bytes(8, "big"))


def test_client_rejects_ack_for_unsent_message() -> None:
    client = ClientSession(SID)
    client.connection_made(now=0)
    client.receive_data(b"\x00\x00\x00\x09\x02" + bytes(8), now=0)
    with pytest.raises(BadMessage):
        client.receive_data(b"\x00\x00\x00\x09\x04" + (7).to_bytes(8, "big"), now=0)


@settings(max_examples=50)
@given(
    plan=st.lists(st.one_of(st.binary(min_size=1, max_size=8), st.none()), max_size=40),
    restart_server=st.booleans(),
)
def test_any_mix_of_sends_and_disconnects_delivers_everything_once_in_order(
    plan: list[bytes | None], restart_server: bool
) -> None:
    """``None`` in the plan drops the connection with whatever was in flight."""
    table = SessionTable()
    client = ClientSession(SID, max_unacked=10_000)
    client.connection_made(now=0)
    server = ServerSession(table)
    delivered: list[bytes] = []
    sent: list[bytes] = []
    pump(client, server, delivered)
    for step in plan:
        if step is None:
            client.data_to_send()
            client.connection_lost()
            client.connection_made(now=0)
            if restart_server:
                delivered.clear()  # a restarted server lost its memory: compare the tail
                sent = sent[len(sent) - client.unacked :]
                table = SessionTable()
            server = ServerSession(table)
        else:
            client.send(step)
            sent.append(step)
        pump(client, server, delivered)
    assert delivered == sent
