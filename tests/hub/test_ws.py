"""The WebSocket, SSE and HTTP API fronts, with real clients (aiohttp, raw sockets) on loopback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from wirekit.certs import issue
from wirekit.io.tls import client_context
from wirekit.proto import ws

from ..conftest import free_port
from .conftest import HubFixture, Web, restart, sse_events

pytestmark = pytest.mark.anyio


def msgs(events: list[dict[str, Any]]) -> list[Any]:
    return [e["data"] for e in events if e["op"] == "msg"]


async def test_every_op_over_a_real_websocket(web: Web) -> None:
    alice = await web.user("alice")
    assert (await alice.request("sub", topic="#General"))["topic"] == "#general"
    reply = await alice.ok("pub", topic="#general", data="hello")
    assert reply["offset"] == 1
    event = await alice.expect(lambda e: e["op"] == "msg")
    assert event["data"] == "hello" and event["from"] == "alice" and event["offset"] == 1
    await alice.ok("pub", topic="#general", data={"structured": [1, 2]})
    assert (await alice.expect(lambda e: e["op"] == "msg"))["data"] == {"structured": [1, 2]}
    for i in range(3, 8):
        await alice.ok("pub", topic="#general", data=f"m{i}")
    history = await alice.ok("history", topic="#general", limit=3)
    assert [m["offset"] for m in history["messages"]] == [5, 6, 7]
    assert all(m["history"] for m in history["messages"]) and history["head"] == 7
    older = await alice.ok("history", topic="#general", limit=3, before=5)
    assert [m["offset"] for m in older["messages"]] == [2, 3, 4]
    presence = await alice.ok("presence", topic="#general")
    assert presence["users"] == [{"user": "alice", "online": True}]
    assert (await alice.ok("rooms"))["rooms"] == [{"topic": "#general", "members": 1, "online": 1}]
    assert (await alice.request("ping"))["op"] == "pong"
    await alice.ok("unsub", topic="#general")
    await alice.ok("pub", topic="#general", data="not delivered to alice")
    await alice.ok("sub", topic="news")
    await alice.ok("pub", topic="news", data="on a topic")
    on_topic = await alice.expect(lambda e: e["op"] == "msg" and e["topic"] == "news")
    assert on_topic["data"] == "on a topic"
    assert "not delivered to alice" not in msgs(alice.skipped)
    topic_presence = await alice.ok("presence", topic="news")
    assert topic_presence["subscribers"] == 1 and topic_presence["users"][0]["user"] == "alice"
    await alice.ok("leave", topic="#general")
    assert (await alice.ok("rooms"))["rooms"] == [{"topic": "#general", "members": 0, "online": 0}]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "bad-json"),
        ('{"op":"teleport"}', "unknown-op"),
        ('{"op":"sub"}', "usage"),
        ('{"op":"pub","topic":"#x","data":"hi"}', "login-required"),
        ('{"op":"sub","topic":"#x"}', "login-required"),
        ('{"op":"sub","topic":"private-stuff"}', "not-public"),
        ('{"op":"sub","topic":"Bad Topic!"}', "bad-topic"),
        ('{"op":"auth","token":"forged.token.here"}', "bad-token"),
    ],
)
async def test_bad_requests_get_an_error_frame_and_the_connection_stays(
    web: Web, frame: str, code: str
) -> None:
    peer = await web.connect()
    await peer.ws.send_str(frame)
    event = await peer.event()
    assert event["op"] == "error" and event["code"] == code, event
    assert (await peer.request("ping"))["op"] == "pong"


async def test_member_and_auth_errors(web: Web) -> None:
    alice = await web.user("alice")
    bob = await web.user("bob")
    await alice.ok("sub", topic="#secret")
    error = await bob.request("history", topic="#secret")
    assert error["code"] == "not-a-member"
    assert (await bob.request("pub", topic="#secret", data="x"))["code"] == "not-a-member"
    assert (await bob.request("auth", token=await web.token("alice", False)))["code"] == "logged-in"
    big = await bob.request("pub", topic="news", data="x" * 5000)
    assert big["code"] == "too-large"


async def test_tcp_chat_and_websocket_users_share_rooms_presence_and_private_messages(
    hub: HubFixture, web: Web
) -> None:
    bob = await web.user("bob")
    await bob.ok("sub", topic="#lobby")
    carol = await hub.peer("carol")
    await carol.send("/join #lobby")
    assert (await bob.expect(lambda e: e["op"] == "join" and e["user"] == "carol"))[
        "topic"
    ] == "#lobby"
    await carol.send("hi from the terminal")
    event = await bob.expect(lambda e: e["op"] == "msg")
    assert (event["from"], event["data"], event["topic"]) == (
        "carol",
        "hi from the terminal",
        "#lobby",
    )
    await bob.ok("pub", topic="#lobby", data="hi from the browser")
    line = await carol.expect(lambda e: e["type"] == "msg" and e["from"] == "bob")
    assert line["text"] == "hi from the browser"
    await bob.ok("pub", topic="@carol", data="psst")
    private = await carol.expect(lambda e: e["type"] == "msg" and e["room"].startswith("@"))
    assert (private["room"], private["text"], private["to"]) == ("@bob,carol", "psst", "carol")
    await carol.send("/msg bob back at you")
    reply = await bob.expect(lambda e: e["op"] == "msg" and e["from"] == "carol" and "to" in e)
    assert reply["data"] == "back at you" and reply["to"] == "bob"
    await carol.close()
    hub.peers.remove(carol)
    assert (await bob.expect(lambda e: e["op"] == "offline"))["user"] == "carol"
    carol = await hub.peer("carol", register=False)
    assert (await bob.expect(lambda e: e["op"] == "online"))["user"] == "carol"


async def test_resume_after_a_server_restart_has_no_gap_and_no_duplicate(
    hub: HubFixture, web: Web
) -> None:
    token = await web.token("alice")
    peer = await web.connect()
    await peer.ok("auth", token=token)
    sub = await peer.ok("sub", topic="#log")
    epoch = sub["epoch"]
    for i in range(1, 21):
        await peer.ok("pub", topic="#log", data=f"m{i}")
    seen = [await peer.expect(lambda e: e["op"] == "msg") for _ in range(20)]
    last = seen[-1]["offset"]
    await restart(hub)
    assert (await peer.closed())[0] == ws.GOING_AWAY  # told the server is going away
    writer = await hub.peer("bob")
    await writer.send("/join #log", *[f"m{i}" for i in range(21, 51)])
    await writer.expect(lambda e: e["type"] == "msg" and e["text"] == "m50")
    peer = await web.connect()
    topics = (await peer.ok("auth", token=token))["topics"]
    assert topics == [{"topic": "#log", "head": 50, "epoch": epoch}]
    await peer.ok("sub", topic="#log", since=last, epoch=epoch)
    await writer.send("m51")
    resumed = [await peer.expect(lambda e: e["op"] == "msg") for _ in range(31)]
    assert [e["data"] for e in seen + resumed] == [f"m{i}" for i in range(1, 52)]
    assert [e["offset"] for e in seen + resumed] == list(range(1, 52))


async def test_a_changed_epoch_is_reported_and_replay_starts_over(web: Web) -> None:
    alice = await web.user("alice")
    await alice.ok("sub", topic="#r")
    for i in range(3):
        await alice.ok("pub", topic="#r", data=f"m{i}")
    await alice.ok("unsub", topic="#r")
    await alice.ok("sub", topic="#r", since=2, epoch="not-the-epoch")
    lost = await alice.expect(lambda e: e["op"] == "lost")
    assert lost["topic"] == "#r"
    replay = [await alice.expect(lambda e: e["op"] == "msg") for _ in range(3)]
    assert msgs(replay) == ["m0", "m1", "m2"]


async def test_server_pings_and_a_silent_peer_is_closed(hub: HubFixture, web: Web) -> None:
    await hub.stop()
    await hub.start(ws_ping_interval=0.2, ws_timeout=0.8)
    silent = await web.connect(autoping=False)
    answering = await web.connect()
    # aiohttp answers pings while a receive() runs: this socket answers, the other does not
    reading = asyncio.create_task(answering.ws.receive())
    ping = await silent.ws.receive(2)
    assert ping.type == aiohttp.WSMsgType.PING
    code, reason = await silent.closed(3)
    assert (code, reason) == (ws.GOING_AWAY, "heartbeat timeout")
    await asyncio.sleep(0.5)
    assert not reading.done() and not answering.ws.closed
    reading.cancel()


async def test_public_topics_anonymous_listeners_and_api_publish(hub: HubFixture, web: Web) -> None:
    await restart(hub, public_topics=frozenset({"news"}))
    listener = await web.connect("?topic=news")
    assert listener.hello["user"] is None
    resp = await web.publish("news", {"headline": "wirekit ships"})
    assert resp.status == 200 and (await resp.json())["offset"] == 1
    event = await listener.expect(lambda e: e["op"] == "msg")
    assert event["data"] == {"headline": "wirekit ships"} and event["from"] == "api"
    assert (await listener.ok("history", topic="news"))["messages"][0]["offset"] == 1
    assert (await listener.request("pub", topic="news", data="x"))["code"] == "login-required"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await web.connect("?topic=secret")
    assert refused.value.status == 403
    assert (await web.publish("news", "x", key="wrong")).status == 401
    assert (await web.publish("#room", "x")).status == 422
    async with web.session.post(web.base + "/api/publish", data=b"{",
                                headers={"X-Api-Key": web.api_key,
                                         "Content-Type": "application/json"}) as resp:  # fmt: skip
        assert resp.status == 400 and resp.content_type == "application/problem+json"
    async with web.session.post(web.base + "/api/publish", data=b"x",
                                headers={"X-Api-Key": web.api_key}) as resp:  # fmt: skip
        assert resp.status == 415


async def test_sse_streams_and_resumes_from_last_event_id(hub: HubFixture, web: Web) -> None:
    await restart(hub, public_topics=frozenset({"news"}))
    for i in range(1, 4):
        await web.publish("news", f"n{i}")

    async def read_events(headers: dict[str, str], count: int) -> list[tuple[str, str, str]]:
        events: list[tuple[str, str, str]] = []
        async with web.session.get(web.base + "/sse?topic=news", headers=headers) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            async with asyncio.timeout(5):
                async for fields in sse_events(resp):
                    events.append((fields.get("id", ""), fields["event"], fields["data"]))
                    if len(events) == count:
                        return events
        return events

    first = await read_events({"Last-Event-ID": "1"}, 3)
    assert first[0][1] == "hello"
    assert [(i, json.loads(d)["data"]) for i, _, d in first[1:]] == [("2", "n2"), ("3", "n3")]
    reader = asyncio.create_task(read_events({"Last-Event-ID": "3"}, 2))
    await asyncio.sleep(0.3)
    await web.publish("news", "n4")
    events = await reader
    assert [(i, json.loads(d)["data"]) for i, _, d in events[1:]] == [("4", "n4")]
    async with web.session.get(web.base + "/sse?topic=%23private") as resp:
        assert resp.status == 401


async def test_logout_revokes_the_token_and_closes_its_connections(
    hub: HubFixture, web: Web
) -> None:
    token = await web.token("alice")
    peer = await web.connect(f"?token={token}")
    assert peer.hello["user"] == "alice"
    other_device = await web.user("alice", register=False)
    headers = {"Authorization": f"Bearer {token}"}
    async with web.session.post(web.base + "/api/logout", headers=headers) as resp:
        assert resp.status == 204
    assert await peer.closed() == (ws.POLICY, "logged out")
    assert (await other_device.request("ping"))["op"] == "pong"  # another session: still open
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await web.connect(f"?token={token}")
    assert refused.value.status == 401
    chat = await hub.peer()
    await chat.send(f"/auth {token}")
    assert (await chat.expect(lambda e: e["type"] == "error"))["code"] == "bad-token"


async def test_kick_closes_every_connection_of_a_user_on_every_front(
    hub: HubFixture, web: Web
) -> None:
    peer = await web.user("mallory")
    chat = await hub.peer("mallory", register=False)
    async with web.session.post(web.base + "/api/kick", json={"user": "mallory"},
                                headers={"X-Api-Key": web.api_key}) as resp:  # fmt: skip
        assert (await resp.json()) == {"user": "mallory", "closed": 2}
    assert await peer.closed() == (ws.POLICY, "kicked")
    assert (await chat.expect(lambda e: e["type"] == "error"))["code"] == "kicked"


async def test_frame_limits_close_with_their_codes(hub: HubFixture, web: Web) -> None:
    peer = await web.connect()
    await peer.ws.send_str("x" * (hub.limits.ws_max_message + 1))
    assert (await peer.closed())[0] == ws.TOO_BIG
    peer = await web.connect()
    await peer.ws.send_bytes(b"\x00\x01")
    assert (await peer.closed())[0] == ws.UNSUPPORTED
    errors = hub.service.web.errors if hub.service and hub.service.web else {}
    assert errors["ws-1009"] == 1 and errors["ws-1003"] == 1


async def test_persistent_flooding_is_rate_limited_then_closed(hub: HubFixture, web: Web) -> None:
    await hub.stop()
    await hub.start(message_rate=5, message_burst=5)
    peer = await web.user("flood")
    for i in range(30):
        await peer.ws.send_str(json.dumps({"op": "pub", "topic": "t", "data": str(i), "id": i}))
    replies = []
    with pytest.raises(ConnectionError):
        while True:
            replies.append(await peer.event())
    codes = [r.get("code") for r in replies if r["op"] == "error"]
    assert codes and set(codes) == {"rate-limited"}
    assert len([r for r in replies if r["op"] == "ok"]) == 5
    assert peer.ws.close_code == ws.POLICY


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (ws.frame(ws.TEXT, b'{"op":"ping"}'), ws.PROTOCOL_ERROR),  # not masked
        (ws.client_frame(ws.TEXT, b"\xff\xfe"), ws.INVALID_DATA),
        (bytes([0xC1, 0x80]) + b"\0\0\0\0", ws.PROTOCOL_ERROR),  # reserved bit
    ],
)
async def test_protocol_violations_close_with_their_codes(
    web: Web, frame: bytes, code: int
) -> None:
    raw = web.raw()
    assert (await asyncio.to_thread(raw.handshake)).startswith(b"HTTP/1.1 101")
    raw.sock.sendall(frame)
    assert await asyncio.to_thread(raw.close_code) == code


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (("Origin: http://evil.example",), b"403"),
        (("Sec-WebSocket-Version: 8",), b"426"),
    ],
)
async def test_handshake_refusals(web: Web, headers: tuple[str, ...], status: bytes) -> None:
    raw = web.raw()
    head = await asyncio.to_thread(raw.handshake, *headers)
    assert head.split(b" ")[1] == status, head


async def test_allowed_origins_and_upgrades_on_a_kept_alive_connection(
    hub: HubFixture, web: Web
) -> None:
    await restart(hub, allowed_origins=("https://app.example",))
    port = int(web.base.rsplit(":", 1)[1])
    ok = await asyncio.to_thread(web.raw().handshake, "Origin: https://app.example")
    assert ok.startswith(b"HTTP/1.1 101")
    same = await asyncio.to_thread(web.raw().handshake, f"Origin: http://127.0.0.1:{port}")
    assert same.split(b" ")[1] == b"403"  # an explicit list replaces the same-origin default
    raw = web.raw()
    raw.sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await asyncio.to_thread(raw.read_head)).startswith(b"HTTP/1.1 200")
    late = await asyncio.to_thread(raw.handshake)  # after a request on the same connection
    assert late.startswith(b"HTTP/1.1 101")
    raw.sock.sendall(ws.client_frame(ws.TEXT, b'{"op":"ping","id":1}'))
    assert b'"op":"pong"' in await asyncio.to_thread(raw.sock.recv, 4096)
    huge = web.raw()
    huge.sock.sendall(b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 20000 + b"\r\n")
    assert (await asyncio.to_thread(huge.read_head)).split(b" ")[1] == b"431"


async def test_register_and_login_over_http(web: Web) -> None:
    body = {"user": "dave", "password": "password-dave"}
    async with web.session.post(web.base + "/api/users", json=body) as resp:
        assert resp.status == 201
    async with web.session.post(web.base + "/api/users", json=body) as resp:
        assert resp.status == 409 and (await resp.json())["code"] == "name-taken"
    async with web.session.post(web.base + "/api/users", json={"user": "x", "password": "p"}) as r:
        assert r.status == 422
    bad = {"user": "dave", "password": "wrong-password"}
    async with web.session.post(web.base + "/api/login", json=bad) as resp:
        assert resp.status == 401
        assert resp.content_type == "application/problem+json"
    async with web.session.get(web.base + "/") as resp:
        assert (
            resp.status == 200 and "default-src 'self'" in resp.headers["Content-Security-Policy"]
        )
    async with web.session.get(web.base + "/static/../hub.db") as resp:
        assert resp.status == 404


async def test_a_stalled_websocket_reader_catches_up_from_the_log(
    hub: HubFixture, web: Web
) -> None:
    await hub.stop()
    service = await hub.start(
        write_buffer_high=16 * 1024, write_buffer_low=4 * 1024,
        message_rate=1e6, message_burst=10**6,
    )  # fmt: skip
    token = await web.token("slow")
    slow = web.raw(rcvbuf=4096)
    head = await asyncio.to_thread(slow.handshake, target=f"/ws?token={token}")
    assert head.startswith(b"HTTP/1.1 101")
    slow.sock.sendall(ws.client_frame(ws.TEXT, b'{"op":"sub","topic":"#firehose","id":1}'))
    fast = await web.user("fast")
    await fast.ok("sub", topic="#firehose")
    publisher = await hub.peer("pub")
    await publisher.send("/join #firehose")
    drain = asyncio.ensure_future(publisher.reader.read())
    count, body = 2000, "x" * 3000  # ~6 MB: far more than the socket buffers hold
    for i in range(1, count + 1):
        publisher.writer.write(f"{i} {body}\n".encode())
    await publisher.writer.drain()
    fast_offsets = [
        (await fast.expect(lambda e: e["op"] == "msg", 30))["offset"] for _ in range(count)
    ]
    assert fast_offsets == list(range(1, count + 1))  # not slowed down by the stalled one
    assert service.hub.fell_behind >= 1

    def read_all() -> list[int]:
        parser = ws.FrameParser(server=False, max_message=1 << 20)
        offsets: list[int] = []
        events = parser.receive_data(slow.rest)
        while True:
            for event in events:
                if isinstance(event, ws.Message) and event.text and '"op":"msg"' in event.text:
                    offsets.append(json.loads(event.text)["offset"])
            if len(offsets) >= count:
                return offsets
            events = parser.receive_data(slow.sock.recv(65536))

    assert await asyncio.to_thread(read_all) == list(range(1, count + 1))  # no gap, no duplicate
    drain.cancel()


async def test_sse_keep_alive_comments_keep_a_listener_past_the_idle_timeout(
    hub: HubFixture, web: Web
) -> None:
    await hub.stop()
    await hub.start(idle_timeout=0.6, ws_ping_interval=0.2)
    await restart(hub, public_topics=frozenset({"news"}))
    comments = 0
    async with web.session.get(web.base + "/sse?topic=news") as resp:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.5):
                async for raw in resp.content:
                    comments += raw.startswith(b": keep-alive")
        assert not resp.content.at_eof()
    assert comments >= 4


async def test_https_wss_and_sse_over_tls_with_the_local_ca(
    hub: HubFixture, tmp_path: Path
) -> None:
    pki = issue(tmp_path / "ca", ["localhost", "127.0.0.1"])
    redirect_port = free_port()
    await restart(hub, cert=str(pki.cert), key=str(pki.key), public_topics=frozenset({"news"}),
                  http_redirect=("127.0.0.1", redirect_port))  # fmt: skip
    assert hub.service is not None and hub.service.web is not None
    base = f"https://127.0.0.1:{hub.service.web.server.address[1]}"
    ctx = client_context(pki.ca)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
        async with session.get(base + "/") as resp:
            assert resp.status == 200
            assert resp.headers["Strict-Transport-Security"].startswith("max-age=")
        assert hub.service.web.chain.metrics.direct == 1  # served over TLS without aiohttp
        tess = {"user": "tess", "password": "password-tess"}
        async with session.post(base + "/api/users", json=tess) as resp:
            token = (await resp.json())["token"]
        sock = await session.ws_connect(base.replace("https", "wss") + f"/ws?token={token}")
        assert json.loads((await sock.receive()).data)["user"] == "tess"
        await sock.send_str('{"op":"pub","topic":"news","data":"over tls","id":1}')
        assert json.loads((await sock.receive()).data)["op"] == "ok"
        async with session.get(base + "/sse?topic=news&since=0") as resp:
            body = b""
            async with asyncio.timeout(5):
                while b"over tls" not in body:
                    body += await resp.content.readany()
        await sock.close()
    curl = await asyncio.create_subprocess_exec(
        "curl", "-s", "--cacert", str(pki.ca), base + "/healthz", stdout=asyncio.subprocess.PIPE
    )
    assert json.loads((await curl.communicate())[0])["status"] == "ok"
    plain = await asyncio.create_subprocess_exec(
        "curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
        f"http://127.0.0.1:{redirect_port}/sse?topic=news", stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert (await plain.communicate())[0].decode() == f"308 {base}/sse?topic=news"
    untrusted = await asyncio.create_subprocess_exec(
        "curl", "-s", "-o", "/dev/null", base + "/healthz", stdout=asyncio.subprocess.PIPE
    )
    assert await untrusted.wait() != 0  # no --cacert: the local CA is not trusted
