"""The TCP chat front over real loopback sockets, under asyncio and uvloop."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from .conftest import HubFixture, Peer

pytestmark = pytest.mark.anyio


def msg_text(event: dict[str, object]) -> bool:
    return event["type"] == "msg"


async def test_register_join_chat_offline_and_back(hub: HubFixture) -> None:
    alice, bob = await hub.peer("alice"), await hub.peer("bob")
    await alice.send("/join #general")
    joined = await alice.expect(lambda e: e.get("cmd") == "joined")
    assert joined["room"] == "#general" and joined["head"] == 0
    await bob.send("/join #General")  # room names are case-insensitive
    await alice.expect(lambda e: e == {"type": "join", "room": "#general", "user": "bob"})
    await bob.expect(lambda e: e.get("cmd") == "joined")
    await alice.send("hello bob")
    for peer in (alice, bob):
        msg = await peer.expect(msg_text)
        assert (msg["room"], msg["offset"], msg["from"], msg["text"]) == (
            "#general", 1, "alice", "hello bob"
        )  # fmt: skip
        assert msg["epoch"] == joined["epoch"]
    await bob.close()
    assert await alice.expect(lambda e: e["type"] == "offline") == {
        "type": "offline",
        "user": "bob",
    }
    bob = await hub.peer("bob", register=False)  # membership kept: back in #general
    assert await alice.expect(lambda e: e["type"] == "online") == {"type": "online", "user": "bob"}
    await bob.send("/who #general", "/rooms")
    who = await bob.expect(lambda e: e["type"] == "who")
    assert who["users"] == [{"user": "alice", "online": True}, {"user": "bob", "online": True}]
    rooms = await bob.expect(lambda e: e["type"] == "rooms")
    assert rooms["rooms"] == [{"room": "#general", "members": 2, "online": 2}]
    await bob.send("back again")  # the current room is restored at login
    assert (await alice.expect(msg_text))["text"] == "back again"


async def test_private_messages_reach_every_connection_of_the_recipient(hub: HubFixture) -> None:
    alice, carol = await hub.peer("alice"), await hub.peer("carol")
    bob_phone = await hub.peer("bob")
    bob_laptop = await hub.peer("bob", register=False)
    await alice.send("/msg bob psst, bob")
    for peer in (bob_phone, bob_laptop, alice):
        msg = await peer.expect(msg_text)
        assert (msg["room"], msg["from"], msg["to"], msg["text"]) == (
            "@alice,bob", "alice", "bob", "psst, bob"
        )  # fmt: skip
    await bob_laptop.send("/msg alice hi alice")
    assert (await alice.expect(msg_text))["offset"] == 2  # one log for the pair
    await carol.send("/msg nobody hello")
    assert (await carol.expect(lambda e: e["type"] == "error"))["code"] == "no-such-user"
    await carol.send("/rooms")
    rooms = await carol.expect(lambda e: e["type"] == "rooms")
    assert rooms["rooms"] == []  # private logs are nobody else's business
    with pytest.raises(TimeoutError):
        await carol.expect(msg_text, timeout=0.3)


async def test_history_and_accounts_survive_a_restart(hub: HubFixture) -> None:
    alice = await hub.peer("alice")
    await alice.send("/join #ops", *[f"m{i}" for i in range(1, 6)])
    await alice.expect(lambda e: e.get("offset") == 5)
    await hub.stop()
    await hub.start()
    alice = await hub.peer()
    assert (await _error_for(alice, b"/register alice whatever-pw"))["code"] == "name-taken"
    login = await alice.login("alice", register=False)
    assert [(r["room"], r["head"]) for r in login["rooms"]] == [("#ops", 5)]
    await alice.send("/history #ops 3")
    history = [await alice.event() for _ in range(3)]
    assert [(m["offset"], m["text"], m["history"]) for m in history] == [
        (3, "m3", True), (4, "m4", True), (5, "m5", True)
    ]  # fmt: skip
    assert (await alice.event())["cmd"] == "history"
    await alice.send("m6")
    assert (await alice.expect(msg_text))["offset"] == 6  # offsets continue


async def test_since_replays_then_goes_live_and_reports_a_lost_epoch(hub: HubFixture) -> None:
    alice, bob = await hub.peer("alice"), await hub.peer("bob")
    await alice.send("/join #r")
    epoch = (await alice.expect(lambda e: e.get("cmd") == "joined"))["epoch"]
    await bob.send("/join #r")
    await alice.send(*[f"m{i}" for i in range(1, 11)])
    await bob.expect(lambda e: e.get("offset") == 10)
    await bob.send(f"/since #r 4 {epoch}")
    await alice.send("m11")
    got = [(await bob.expect(msg_text))["offset"] for _ in range(7)]
    assert got == [5, 6, 7, 8, 9, 10, 11]  # replay, then live: no gap, no duplicate
    await bob.send("/since #r 8 not-the-epoch")
    lost = await bob.expect(lambda e: e["type"] == "lost")
    assert lost == {"type": "lost", "room": "#r", "epoch": epoch}
    assert [(await bob.expect(msg_text))["offset"] for _ in range(11)] == list(range(1, 12))


async def test_bad_input_gets_an_error_and_the_connection_stays(hub: HubFixture) -> None:
    peer = await hub.peer()
    await peer.send("/join #r")
    assert (await peer.event())["code"] == "login-required"
    await peer.login("alice")
    cases = [
        (b"x" * 5000, "line-too-long"),
        (b"caf\xc3 \xff", "bad-utf8"),
        (b"/frobnicate", "unknown-command"),
        (b"/join", "usage"),
        (b"/join #bad room!", "usage"),
        (b"/join nohash", "bad-room"),
        (b"plain text", "no-room"),
        (b"/history #nowhere", "no-such-room"),
        (b"/history #r many", "usage"),
        (b"/login alice again-password", "logged-in"),
    ]
    for line, code in cases:
        await peer.send(line)
        event = await peer.event()
        assert event["type"] == "error" and event["code"] == code, (line[:20], event)
    assert "/help" in (await _error_for(peer, b"/frobnicate"))["message"]
    await peer.send("/join #r", "still here")
    assert (await peer.expect(msg_text))["text"] == "still here"
    assert hub.service is not None
    errors = hub.service.chat.statistics().errors
    assert errors["line-too-long"] == 1 and errors["bad-utf8"] == 1


async def _error_for(peer: Peer, line: bytes) -> dict[str, object]:
    await peer.send(line)
    return await peer.expect(lambda e: e["type"] == "error")


async def test_line_split_across_writes_and_crlf(hub: HubFixture) -> None:
    peer = await hub.peer("alice")
    peer.writer.write(b"/jo")
    await peer.writer.drain()
    await asyncio.sleep(0.05)
    peer.writer.write(b"in #r\r\nhel")
    await peer.writer.drain()
    await asyncio.sleep(0.05)
    await peer.send(b"lo\r")
    assert (await peer.expect(msg_text))["text"] == "hello"


async def test_flooding_is_rate_limited_per_connection(hub: HubFixture) -> None:
    await hub.stop()
    await hub.start(message_rate=1.0, message_burst=5)
    peer = await hub.peer("alice")
    await peer.send("/join #r", *[f"m{i}" for i in range(12)])
    events = [await peer.expect(lambda e: e["type"] in ("msg", "error")) for _ in range(12)]
    assert sum(e["type"] == "msg" for e in events) == 5
    assert {e.get("code") for e in events if e["type"] == "error"} == {"rate-limited"}
    await peer.send("/rooms")  # still connected
    assert (await peer.expect(lambda e: e["type"] == "rooms"))["rooms"]


async def test_login_attempts_are_rate_limited_and_tokens_work(hub: HubFixture) -> None:
    await hub.stop()
    await hub.start(login_per_user=3)
    token = (await (await hub.peer()).login("alice"))["token"]  # one attempt
    peer = await hub.peer()
    codes = []
    for _ in range(3):
        await peer.send("/login alice wrong-password")
        codes.append((await peer.expect(lambda e: e["type"] == "error"))["code"])
    assert codes == ["bad-login", "bad-login", "rate-limited"]
    await peer.send("/auth not.a.token")
    assert (await peer.event())["code"] == "bad-token"
    await peer.send(f"/auth {token}")  # tokens do not count as login attempts
    assert (await peer.event())["user"] == "alice"


async def test_stalled_reader_does_not_delay_others_and_catches_up(hub: HubFixture) -> None:
    await hub.stop()
    service = await hub.start(
        write_buffer_high=16 * 1024, write_buffer_low=4 * 1024,
        message_rate=1e6, message_burst=10**6,
    )  # fmt: skip
    fast, publisher = await hub.peer("fast"), await hub.peer("pub")
    slow = await hub.peer("slow", rcvbuf=4096)
    for peer in (fast, slow, publisher):
        await peer.send("/join #firehose")
        await peer.expect(lambda e: e.get("cmd") == "joined")
    count, body = 3000, "x" * 3000  # ~9 MB: far more than any socket buffer holds
    # The publisher reads its own copies: the server stops reading from a peer that does not.
    drain = asyncio.ensure_future(publisher.reader.read())
    for i in range(1, count + 1):
        publisher.writer.write(f"{i} {body}\n".encode())
    await publisher.writer.drain()
    offsets = [(await fast.expect(msg_text, timeout=30))["offset"] for _ in range(count)]
    assert offsets == list(range(1, count + 1))  # the fast reader got everything, in order
    assert service.hub.fell_behind >= 1 and service.hub.behind  # the slow one is behind
    got = [(await slow.expect(msg_text, timeout=30))["offset"] for _ in range(count)]
    assert got == list(range(1, count + 1))  # caught up from the log: no gap, no duplicate
    await asyncio.sleep(0.1)
    assert not service.hub.behind
    drain.cancel()


async def test_reader_behind_too_long_is_disconnected(hub: HubFixture) -> None:
    await hub.stop()
    service = await hub.start(
        write_buffer_high=8 * 1024, write_buffer_low=2 * 1024, behind_timeout=1.0,
        message_rate=1e6, message_burst=10**6,
    )  # fmt: skip
    slow_sock = socket.socket()
    slow_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow_sock.connect(("127.0.0.1", hub.port))
    slow_sock.sendall(b"/register slow password-slow\n/join #r\n")
    publisher = await hub.peer("pub")
    await publisher.send("/join #r")
    await publisher.expect(lambda e: e.get("cmd") == "joined")
    await asyncio.sleep(0.3)
    drain = asyncio.ensure_future(publisher.expect(lambda e: e["type"] == "who", timeout=30))
    for i in range(2000):
        publisher.writer.write(f"{i} {'y' * 3000}\n".encode())
    await publisher.writer.drain()
    for _ in range(100):
        if service.chat.statistics().closed.get("too-slow"):
            break
        await asyncio.sleep(0.1)
    assert service.chat.statistics().closed == {"too-slow": 1}
    slow_sock.close()
    await publisher.send("/who #r")
    who = await drain
    assert who["users"] == [{"user": "pub", "online": True}, {"user": "slow", "online": False}]


async def test_text_mode_is_readable(hub: HubFixture) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    assert b"/register" in await reader.readline()
    writer.write(b"/register alice password-alice\n/join #r\nhi there\n/help\n")
    lines = [(await reader.readline()).decode() for _ in range(4)]
    assert lines[0].startswith("* welcome, alice")
    assert lines[1] == "* alice joined #r\n"
    assert lines[3].endswith("[#r] alice: hi there\n")
    help_text = (await reader.readuntil(b"/join ROOM")).decode()
    assert "/register USER PASSWORD" in help_text
    writer.write(b"/json\n/quit\n")
    rest = await reader.read()
    assert json.loads(rest.splitlines()[-1]) == {"type": "ok", "cmd": "bye", "message": "bye"}
    writer.close()


async def test_a_delivered_message_is_already_committed(hub: HubFixture) -> None:
    import sqlite3

    alice = await hub.peer("alice")
    await alice.send("/join #r", "first", "second")
    await alice.expect(lambda e: e.get("offset") == 2)
    # Another connection to the database sees both: delivery waited for the commit.
    db = sqlite3.connect(hub.data_dir / "hub.db")
    try:
        rows = db.execute("SELECT offset, text FROM messages WHERE log = '#r'").fetchall()
    finally:
        db.close()
    assert rows == [(1, "first"), (2, "second")]


async def test_history_is_capped_and_logins_are_limited_per_address(hub: HubFixture) -> None:
    await hub.stop()
    await hub.start(history_max=3, login_per_address=3)
    alice = await hub.peer("alice")  # attempt 1 from 127.0.0.1
    await alice.send("/join #r", *[f"m{i}" for i in range(1, 7)])
    await alice.expect(lambda e: e.get("offset") == 6)
    await alice.send("/history #r 100")
    capped = [await alice.event() for _ in range(4)]
    assert [e.get("offset") for e in capped] == [4, 5, 6, None]  # history_max, then the ok
    other = await hub.peer()
    codes = []
    for name in ("bob", "carol", "dave"):  # different users, one address
        await other.send(f"/login {name} wrong-password")
        codes.append((await other.expect(lambda e: e["type"] == "error"))["code"])
    assert codes == ["bad-login", "bad-login", "rate-limited"]
