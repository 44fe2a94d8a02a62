"""The multi-node engine for real: a redis-server started here on an ephemeral port, and
``wirekit serve --engine redis://...`` nodes as subprocesses, reached over TCP chat, WebSocket
and HTTP like users reach them."""

from __future__ import annotations

import asyncio
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis

from wirekit.hub.redisstore import CREATE_LOG, RedisStore
from wirekit.hub.store import StoreUnavailable
from wirekit.proto import ws

from ..conftest import free_port
from .conftest import Peer, RawWs, WsPeer, sse_events

pytestmark = pytest.mark.anyio


def free_port_pair() -> int:
    """A free port whose next port is free too, both below the ephemeral range.

    A port that bind(0) handed out and released is free only until the kernel picks it again:
    for bind(0) or, as source port, for any connect() (a node's Redis clients make many). Below
    ``ip_local_port_range`` the kernel picks nothing, so the pair stays free for the node."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = random.randrange(10_000, low - 1)
        with socket.socket() as first, socket.socket() as second:
            try:
                first.bind(("127.0.0.1", port))
                second.bind(("127.0.0.1", port + 1))
            except OSError:  # another test holds one of them
                continue
        return port


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, bool]]:
    """One client loop: the nodes under test are subprocesses (on uvloop) either way."""
    return ("asyncio", {"use_uvloop": False})


class RedisServer:
    """redis-server on loopback, its data (AOF, fsync always) in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()  # SIGTERM: Redis writes its AOF and exits
            self.process.wait(10)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


class Node:
    """``wirekit serve --engine`` in a subprocess."""

    def __init__(self, name: str, redis_url: str, data: Path, *extra: str) -> None:
        self.name = name
        self.chat, self.http, self.metrics = free_port(), free_port(), free_port()
        self.log = data.with_suffix(".log")
        args = [sys.executable, "-m", "wirekit", "serve", "--engine", redis_url,
                "--chat", f"127.0.0.1:{self.chat}", "--http", f"127.0.0.1:{self.http}",
                "--metrics", f"127.0.0.1:{self.metrics}", "--data", str(data),
                "--login-rate", "100", "--message-rate", "1000", *extra]  # fmt: skip
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(args, stderr=out, stdout=out)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    async def ready(self, session: aiohttp.ClientSession, timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            while True:
                assert self.process.poll() is None, self.log.read_text()
                try:
                    async with session.get(self.base + "/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)

    async def metric(self, session: aiohttp.ClientSession, name: str) -> float:
        async with session.get(f"http://127.0.0.1:{self.metrics}/metrics") as resp:
            for line in (await resp.text()).splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[1])
        raise AssertionError(f"no metric {name}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Cluster:
    def __init__(self, redis_server: RedisServer, root: Path, session: aiohttp.ClientSession):
        self.redis = redis_server
        self.root = root
        self.session = session
        self.nodes: list[Node] = []
        self.peers: list[Peer] = []
        self.sockets: list[WsPeer] = []

    async def start(self, count: int, *extra: str, url: str | None = None) -> list[Node]:
        started = [Node(f"n{len(self.nodes) + i}", url or self.redis.url,
                        self.root / f"n{len(self.nodes) + i}", *extra)
                   for i in range(count)]  # fmt: skip
        self.nodes += started
        for node in started:
            await node.ready(self.session)
        return started

    async def chat(self, node: Node, user: str, register: bool = True) -> Peer:
        peer = await Peer.connect(node.chat)
        self.peers.append(peer)
        event = await peer.login(user, register=register)
        assert event["type"] == "ok", event
        return peer

    async def token(self, node: Node, user: str, register: bool = True) -> str:
        path = "/api/users" if register else "/api/login"
        body = {"user": user, "password": f"password-{user}"}
        async with self.session.post(node.base + path, json=body) as resp:
            assert resp.status in (200, 201), await resp.text()
            return str((await resp.json())["token"])

    async def ws(self, node: Node, token: str) -> WsPeer:
        sock = await self.session.ws_connect(f"{node.base}/ws")
        peer = WsPeer(self.session, sock)
        peer.hello = await peer.event()
        await peer.ok("auth", token=token)
        self.sockets.append(peer)
        return peer

    async def join(self, node: Node, token: str, room: str, user: str) -> None:
        url = f"{node.base}/api/rooms/{room.lstrip('#')}/members/{user}"
        headers = {"Authorization": f"Bearer {token}"}
        async with self.session.put(url, headers=headers) as resp:
            assert resp.status in (200, 201), await resp.text()

    async def not_ready(self, node: Node) -> str:
        """Wait until ``node`` says it is not ready (``/readyz`` 503); its reason."""
        async with asyncio.timeout(10):
            while True:
                async with self.session.get(node.base + "/readyz") as resp:
                    if resp.status == 503:
                        return str((await resp.json())["reason"])
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        for peer in self.peers:
            await peer.close()
        for sock in self.sockets:
            await sock.ws.close()
        for node in self.nodes:
            node.stop()


@pytest.fixture
async def cluster(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with aiohttp.ClientSession() as session:
        fixture = Cluster(redis_server, tmp_path, session)
        try:
            yield fixture
        finally:
            await fixture.close()


def is_msg(text: str) -> Any:
    return lambda e: e.get("type") == "msg" and e.get("text") == text


async def test_nodes_share_rooms_private_messages_presence_and_tokens(cluster: Cluster) -> None:
    a, b, c = await cluster.start(3)
    ann = await cluster.chat(a, "ann")
    await ann.send("/join #lobby")
    await ann.expect(lambda e: e.get("type") == "join" and e["user"] == "ann")
    # bob's token comes from node A; node B accepts it (the signing key is shared in Redis)
    token = await cluster.token(a, "bob")
    await cluster.join(a, token, "#lobby", "bob")
    bob = await cluster.ws(b, token)
    await bob.ok("sub", topic="#lobby")
    cy = await cluster.chat(c, "cy")
    await cy.send("/join #lobby")
    await ann.expect(lambda e: e.get("type") == "join" and e["user"] == "cy")
    await bob.expect(lambda e: e.get("op") == "join" and e["user"] == "cy")

    await ann.send("hello from a")
    await bob.ok("pub", topic="#lobby", data="hello from b")
    await cy.send("hello from c")
    seen = {}
    for name, peer in (("ann", ann), ("cy", cy)):
        events = [await peer.expect(lambda e: e.get("type") == "msg") for _ in range(3)]
        seen[name] = [(e["offset"], e["text"]) for e in events]
    events = [await bob.expect(lambda e: e.get("op") == "msg") for _ in range(3)]
    seen["bob"] = [(e["offset"], e["data"]) for e in events]
    assert seen["ann"] == seen["bob"] == seen["cy"]  # one order on every node
    assert sorted(text for _, text in seen["ann"]) == ["hello from a", "hello from b",
                                                       "hello from c"]  # fmt: skip
    assert [offset for offset, _ in seen["ann"]] == [1, 2, 3]

    # private messages across nodes, both ways
    await cy.send("/msg ann psst from c")
    got = await ann.expect(lambda e: e.get("type") == "msg" and e["room"].startswith("@"))
    assert (got["from"], got["to"], got["text"]) == ("cy", "ann", "psst from c")
    await bob.ok("pub", topic="@ann", data="psst from b")
    got = await ann.expect(lambda e: e.get("type") == "msg" and e["room"] == "@ann,bob")
    assert got["text"] == "psst from b"

    # presence: who is online anywhere, and offline when the last connection anywhere goes
    await cy.send("/who #lobby")
    who = await cy.expect(lambda e: e.get("type") == "who")
    assert {u["user"]: u["online"] for u in who["users"]} == {"ann": True, "bob": True,
                                                              "cy": True}  # fmt: skip
    await bob.ws.close()
    await ann.expect(lambda e: e.get("type") == "offline" and e["user"] == "bob")
    await cy.expect(lambda e: e.get("type") == "offline" and e["user"] == "bob")

    # leaving on one node is seen on the others, and the room's members are the same
    await cy.send("/leave #lobby")
    await ann.expect(lambda e: e.get("type") == "leave" and e["user"] == "cy")
    async with cluster.session.get(
        f"{b.base}/api/rooms/lobby/members", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        members = {m["user"] for m in (await resp.json())["items"]}  # fmt: skip
    assert members == {"ann", "bob"}


async def test_kill_9_of_a_node_mid_stream_loses_and_repeats_nothing(cluster: Cluster) -> None:
    a, b, c = await cluster.start(3, "--presence-ttl", "2")
    pat = await cluster.chat(a, "pat")
    await pat.send("/join #stream")
    token = await cluster.token(a, "sid")
    await cluster.join(a, token, "#stream", "sid")
    vic = await cluster.chat(b, "vic")  # only on node B: goes offline when B dies
    await vic.send("/join #stream")
    obs = await cluster.chat(c, "obs")
    await obs.send("/join #stream")
    await obs.expect(lambda e: e.get("type") == "join" and e["user"] == "obs")
    sid = await cluster.ws(b, token)
    sub = await sid.ok("sub", topic="#stream", since=0)
    epoch = sub.get("epoch")

    total = 300
    offsets: list[int] = []

    async def publish() -> None:
        for i in range(total):
            await pat.send(f"m{i}")
            await asyncio.sleep(0.005)

    publisher = asyncio.create_task(publish())
    while len(offsets) < 100:
        offsets.append((await sid.expect(lambda e: e.get("op") == "msg"))["offset"])
    killed_at = time.monotonic()
    b.process.send_signal(signal.SIGKILL)
    try:  # what was already on its way from B
        while True:
            offsets.append((await sid.expect(lambda e: e.get("op") == "msg", 1.0))["offset"])
    except (ConnectionError, TimeoutError):
        pass
    sid = await cluster.ws(c, token)  # the client reconnects to another node and resumes
    await sid.ok("sub", topic="#stream", since=offsets[-1], epoch=epoch)
    await publisher
    while offsets[-1] < total:
        offsets.append((await sid.expect(lambda e: e.get("op") == "msg"))["offset"])
    assert offsets == list(range(1, total + 1))  # zero lost, zero duplicated

    # vic's presence entry expires (ttl 2 s, checked every ttl/3) and the others are told
    await obs.expect(lambda e: e.get("type") == "offline" and e["user"] == "vic", timeout=15)
    assert time.monotonic() - killed_at < 2 + 2 / 3 + 3


async def test_redis_restart_not_ready_then_resume_without_loss(cluster: Cluster) -> None:
    a, b = await cluster.start(2)
    ann = await cluster.chat(a, "ann")
    await ann.send("/join #r")
    token = await cluster.token(a, "bob")
    await cluster.join(a, token, "#r", "bob")
    bob = await cluster.ws(b, token)
    await bob.ok("sub", topic="#r", since=0)
    for i in range(10):
        await ann.send(f"before {i}")
    for i in range(10):
        assert (await bob.expect(lambda e: e.get("op") == "msg"))["offset"] == i + 1

    cluster.redis.stop()
    assert "redis" in await cluster.not_ready(a)
    await ann.send("while down")
    error = await ann.expect(lambda e: e.get("type") == "error")
    assert error["code"] == "unavailable"
    async with cluster.session.post(
        f"{b.base}/api/rooms/r/messages", json={"data": "x"},
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:  # fmt: skip
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "1"
        assert (await resp.json())["code"] == "unavailable"
    refused = await bob.request("pub", topic="#r", data="while down")
    assert (refused["op"], refused["code"]) == ("error", "unavailable")

    cluster.redis.start()
    for node in (a, b):
        await node.ready(cluster.session)
    for i in range(10):
        await ann.send(f"after {i}")
    for i in range(10):
        got = await bob.expect(lambda e: e.get("op") == "msg")
        assert (got["offset"], got["data"]) == (11 + i, f"after {i}")
    # a WebSocket publish and a REST post are told the offsets their messages got
    assert (await bob.ok("pub", topic="#r", data="from bob"))["offset"] == 21
    async with cluster.session.post(
        f"{b.base}/api/rooms/r/messages", json={"data": "over rest"},
        headers={"Authorization": f"Bearer {token}"},
    ) as resp:  # fmt: skip
        assert (resp.status, (await resp.json())["offset"]) == (201, 22)
    history = await bob.ok("history", topic="#r", limit=100)
    texts = [m["data"] for m in history["messages"]]
    assert texts == [f"before {i}" for i in range(10)] + [f"after {i}" for i in range(10)] + [
        "from bob", "over rest"]  # fmt: skip


def reads_processed(client: redis.Redis) -> int:
    return int(client.info("stats")["total_reads_processed"])


async def test_publications_that_arrive_together_are_stored_in_one_round_trip(
    cluster: Cluster,
) -> None:
    """30 WebSocket publications in one TCP segment: Redis reads their appends in a few
    socket reads (one pipeline per loop turn), not one round trip each, and every reply has
    its own offset, in order."""
    (a,) = await cluster.start(1)
    token = await cluster.token(a, "pia")
    raw = RawWs(a.http)
    try:
        head = await asyncio.to_thread(raw.handshake, target=f"/ws?token={token}")
        assert head.startswith(b"HTTP/1.1 101"), head
        pubs = [{"op": "pub", "topic": "feed", "data": f"m{i}", "id": i} for i in range(30)]
        client = cluster.redis.client()
        before = reads_processed(client)
        raw.sock.sendall(b"".join(ws.client_frame(ws.TEXT, orjson.dumps(p)) for p in pubs))
        parser, replies = ws.FrameParser(server=False), []
        events = parser.receive_data(raw.rest)
        while len(replies) < 30:
            for event in events:
                assert isinstance(event, ws.Message) and event.text is not None, event
                reply = orjson.loads(event.text)
                if "id" in reply:
                    replies.append(reply)
            if len(replies) < 30:
                events = parser.receive_data(await asyncio.to_thread(raw.sock.recv, 65536))
        reads = reads_processed(client) - before
    finally:
        raw.sock.close()
    assert [(r["op"], r["id"], r["offset"]) for r in replies] == [
        ("ok", i, i + 1) for i in range(30)]  # fmt: skip
    assert reads <= 10, f"{reads} reads for 30 appends: not pipelined"


async def test_a_node_without_members_of_a_room_gets_none_of_its_traffic(
    cluster: Cluster,
) -> None:
    a, b, c = await cluster.start(3)
    ann, bob, cy = (await cluster.chat(a, "ann"), await cluster.chat(b, "bob"),
                    await cluster.chat(c, "cy"))  # fmt: skip
    for peer in (ann, bob):  # one after the other: ann is in the room when bob joins
        await peer.send("/join #busy")
        await peer.expect(lambda e: e.get("cmd") == "joined")
    await cy.send("/join #quiet")
    await ann.expect(lambda e: e.get("type") == "join" and e["user"] == "bob")
    for i in range(30):
        await ann.send(f"busy {i}")
    for i in range(30):
        await bob.expect(is_msg(f"busy {i}"))
    received = {n.name: await n.metric(cluster.session, "wirekit_hub_cluster_received_total")
                for n in (a, b, c)}  # fmt: skip
    assert received[a.name] >= 30 and received[b.name] >= 30
    assert received[c.name] == 0
    subscribers = cluster.redis.client().pubsub_numsub("wk:0:msg:#busy", "wk:0:msg:#quiet")
    assert dict(subscribers) == {"wk:0:msg:#busy": 2, "wk:0:msg:#quiet": 1}
    # once its last member there leaves, node B stops following the room
    await bob.send("/leave #busy")
    await ann.expect(lambda e: e.get("type") == "leave" and e["user"] == "bob")
    assert dict(cluster.redis.client().pubsub_numsub("wk:0:msg:#busy")) == {"wk:0:msg:#busy": 1}


async def test_a_node_cut_off_from_redis_reloads_the_memberships_it_missed(
    cluster: Cluster,
) -> None:
    """Node B loses Redis (its ACL user is disabled and its connections killed) while, on
    node A, a member joins, another leaves, a message is sent and a member goes offline. Let
    back in, B reloads members and presence from Redis: its user is told of the join, the
    leave and the offline it missed, gets the message sent meanwhile, and the room goes on with
    contiguous offsets."""
    admin = cluster.redis.client()
    admin.execute_command("ACL", "SETUSER", "nodeb", "on", ">pw-b", "~*", "&*", "+@all")
    (a,) = await cluster.start(1)
    (b,) = await cluster.start(1, url=cluster.redis.url.replace("//", "//nodeb:pw-b@"))
    ann, dan, cy, eve = [await cluster.chat(a, user) for user in ("ann", "dan", "cy", "eve")]
    bob = await cluster.chat(b, "bob")
    for peer in (ann, dan, eve, bob):  # one after the other: ann is in the room when others join
        await peer.send("/join #ops")
        await peer.expect(lambda e: e.get("cmd") == "joined")
    await ann.expect(lambda e: e.get("type") == "join" and e["user"] == "bob")
    await ann.send("before")
    first = await bob.expect(is_msg("before"))

    admin.execute_command("ACL", "SETUSER", "nodeb", "off")
    admin.execute_command("CLIENT", "KILL", "USER", "nodeb")
    await cluster.not_ready(b)
    await cy.send("/join #ops")
    await ann.expect(lambda e: e.get("type") == "join" and e["user"] == "cy")
    await dan.send("/leave #ops")
    await ann.expect(lambda e: e.get("type") == "leave" and e["user"] == "dan")
    await cy.send("while b was away")
    await ann.expect(is_msg("while b was away"))
    await eve.send("/quit")
    await ann.expect(lambda e: e.get("type") == "offline" and e["user"] == "eve")

    admin.execute_command("ACL", "SETUSER", "nodeb", "on")
    await b.ready(cluster.session)
    missed = {("join", "cy"), ("leave", "dan"), ("msg", "while b was away"), ("offline", "eve")}
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    while not missed <= seen.keys():
        event = await bob.event(timeout=10)
        key = (event.get("type", ""), event.get("text", event.get("user", "")))
        assert key not in seen, f"{key} twice"
        seen[key] = event
    assert seen[("msg", "while b was away")]["offset"] == first["offset"] + 1
    await cy.send("after")
    assert (await bob.expect(is_msg("after")))["offset"] == first["offset"] + 2
    await bob.send("/who #ops")
    who = await bob.expect(lambda e: e.get("type") == "who")
    assert {u["user"]: u["online"] for u in who["users"]} == {"ann": True, "bob": True,
                                                              "cy": True, "eve": False}  # fmt: skip


async def test_workers_share_ports_and_deliver_across_processes(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    metrics = free_port_pair()  # worker i serves /metrics on this port + i
    node = Node("workers", redis_server.url, tmp_path / "data", "--workers", "2",
                "--metrics", f"127.0.0.1:{metrics}")  # fmt: skip
    node.metrics = metrics
    peers: list[Peer] = []
    try:
        async with aiohttp.ClientSession() as session:
            await node.ready(session, timeout=30)
            for i in range(12):
                peer = await Peer.connect(node.chat)
                peers.append(peer)
                await peer.send(f"/register user{i} password-user{i}", "/join #w")
                await peer.expect(lambda e: e.get("cmd") == "joined", timeout=30)  # after argon2
            await peers[0].send("to everyone")
            for peer in peers:
                await peer.expect(is_msg("to everyone"))
            counts = []
            for port in (node.metrics, node.metrics + 1):  # worker i: /metrics on the port + i
                async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                    text = await resp.text()
                line = next(
                    x for x in text.splitlines() if x.startswith("wirekit_hub_subscribers ")
                )
                counts.append(float(line.split()[1]))
            assert sum(counts) == 12 and all(counts), counts  # both processes have clients
    finally:
        for peer in peers:
            await peer.close()
        node.stop()


def test_redis_store_keeps_accounts_logs_and_members(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, max_length=10_000, max_age=60)
    assert store.create_user("ann", "h1") and not store.create_user("ann", "h2")
    assert store.create_user("anna", "h3") and store.create_user("bob", "h4")
    assert store.password_hash("ann") == "h1" and store.password_hash("nobody") is None
    assert [u.name for u in store.users("an", "", 10)] == ["ann", "anna"]
    assert [u.name for u in store.users("", "ann", 10)] == ["anna", "bob"]
    store.set_profile("ann", {"bio": "hi"})
    assert store.user("ann") is not None and store.user("ann").profile == {"bio": "hi"}  # type: ignore[union-attr]

    info = store.create_log("#a")
    assert store.create_log("#a") == info and info.head == 0
    offsets = [store.append("#a", time.time(), "ann", f"m{i}") for i in range(5)]
    assert offsets == [1, 2, 3, 4, 5]
    assert [m.text for m in store.read("#a", 2, 2)] == ["m2", "m3"]
    assert [m.offset for m in store.last("#a", 2)] == [4, 5]
    assert [m.offset for m in store.last("#a", 2, before=4)] == [2, 3]
    assert store.logs() == [store.create_log("#a")] and store.logs()[0].head == 5

    store.add_member("#a", "ann")
    store.add_member("#a", "bob")
    generation = store.generation
    assert store.delete_user("ann") and not store.delete_user("ann")
    assert store.generation > generation
    assert store.members("#a") == ["bob"]
    assert store.password_hash("ann") is None and store.user("ann") is None
    assert not store.create_user("ann", "h5")  # the name stays taken
    store.revoke("t1", time.time() + 60)
    assert store.revoked("t1") and not store.revoked("t2")

    # retention by age: entries older than max_age go as new ones come
    for i in range(3):
        store.append("#old", time.time() - 120, "bob", f"old {i}")
    store.append("#old", time.time(), "bob", "new")
    assert [m.text for m in store.read("#old", 0, 10)] == ["new"]
    store.close()


def test_redis_store_fails_fast_while_redis_is_down() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="unreachable"):  # refused: no retries with waits
        store.create_user("ann", "h")
    assert time.monotonic() - started < 0.5
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):  # within the backoff (0.1 s): no new attempt
        store.password_hash("ann")
    assert time.monotonic() - started < 0.05
    assert 0.05 < store._down_until - started <= 0.1  # the documented first window, no jitter
    assert not store.up and not store.check()
    store.close()


async def test_a_ws_sub_to_a_topic_the_node_does_not_follow_reads_its_head_once(
    cluster: Cluster,
) -> None:
    """A WebSocket ``sub`` to a topic the node does not follow reads the log's head in one
    create_log round trip, whether the node never saw the topic or knows it from before (its
    head since gone stale), and in none once the node follows it. The head it reports is the
    store's and the subscription goes on from there; so does a ``?topic=`` at connect."""
    (a,) = await cluster.start(1)
    token = await cluster.token(a, "tia")
    client = cluster.redis.client()
    sha = client.script_load(CREATE_LOG)  # loaded already: each create_log is one EVALSHA
    client.config_set("slowlog-max-len", 10_000)
    client.config_set("slowlog-log-slower-than", 0)  # every command goes to the slow log

    def create_logs() -> int:
        """Calls of create_log("news") since the last count."""
        entries = client.slowlog_get(10_000)  # commands as bytes
        client.slowlog_reset()
        call = f"EVALSHA {sha} 2 wk:log:news ".encode()
        return sum(e["command"].startswith(call) for e in entries)

    tia = await cluster.ws(a, token)
    create_logs()
    assert (await tia.ok("sub", topic="news"))["head"] == 0
    assert create_logs() == 1  # a topic the node never saw
    await tia.ok("unsub", topic="news")
    for i in range(3):  # appended while the node does not follow the topic: its head goes stale
        await tia.ok("pub", topic="news", data=f"m{i}")
    create_logs()
    assert (await tia.ok("sub", topic="news"))["head"] == 3
    assert create_logs() == 1  # a topic the node knows and does not follow
    other = await cluster.ws(a, token)
    assert (await other.ok("sub", topic="news"))["head"] == 3
    assert create_logs() == 0  # a topic the node follows
    await tia.ok("pub", topic="news", data="live")
    for peer in (tia, other):  # from the head, nothing before it
        assert (await peer.expect(lambda e: e.get("op") == "msg"))["offset"] == 4

    for peer in (tia, other):
        await peer.ok("unsub", topic="news")
    for i in range(2):
        await tia.ok("pub", topic="news", data=f"n{i}")
    create_logs()
    late = WsPeer(cluster.session, await cluster.session.ws_connect(
        f"{a.base}/ws?token={token}&topic=news"))  # fmt: skip
    cluster.sockets.append(late)
    late.hello = await late.event()
    assert create_logs() == 1
    await tia.ok("pub", topic="news", data="live again")
    assert (await late.expect(lambda e: e.get("op") == "msg"))["offset"] == 7


def test_redis_and_sqlite_stores_say_what_a_membership_change_did(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """add_member and remove_member answer, in one atomic step, whether the membership
    changed, the log's head and its membership sequence (bumped by each change only), the
    same in Redis (a Lua script) and SQLite."""
    from wirekit.hub.store import Membership, SqliteStore

    answers = []
    for store in (RedisStore(redis_server.url), SqliteStore(tmp_path / "db")):
        store.create_log("#m")
        store.append("#m", time.time(), "ann", "one")
        answers.append([
            store.add_member("#m", "ann"), store.add_member("#m", "ann"),
            store.add_member("#m", "bob"), store.remove_member("#m", "ann"),
            store.remove_member("#m", "ann"), store.add_member("#m", "ann"),
        ])  # fmt: skip
        assert store.members("#m") == ["ann", "bob"]
        store.close()
    assert answers[0] == answers[1] == [
        Membership(True, 1, 1), Membership(False, 1, 1), Membership(True, 1, 2),
        Membership(True, 1, 3), Membership(False, 1, 3), Membership(True, 1, 4),
    ]  # fmt: skip


async def test_a_node_cut_off_from_the_events_applies_the_store_s_memberships(
    cluster: Cluster,
) -> None:
    """Node B's subscription is cut off (its ACL user is disabled and its pub/sub connection
    killed; its store connection goes on working). Meanwhile ann leaves #ops on node A, then
    joins it again on node B, which missed the leave: B used to do nothing (she was in #ops as
    it saw it), then reload the leave: she was out. The same for cy over REST. And bob,
    connected to B only, joins #new, a room B never saw, on node A: B's reload used to skip
    it, so he got none of its messages."""
    admin = cluster.redis.client()
    admin.execute_command("ACL", "SETUSER", "nodeb", "on", ">pw-b", "~*", "&*", "+@all")
    (a,) = await cluster.start(1)
    (b,) = await cluster.start(1, url=cluster.redis.url.replace("//", "//nodeb:pw-b@"))
    ann = await cluster.chat(a, "ann")
    bob = await cluster.chat(b, "bob")
    token = await cluster.token(a, "bob", register=False)
    for peer in (ann, bob):
        await peer.send("/join #ops")
        await peer.expect(lambda e: e.get("cmd") == "joined")
    ann_b = await cluster.chat(b, "ann", register=False)
    cy = await cluster.token(a, "cy")
    await cluster.join(a, cy, "#ops", "cy")

    admin.execute_command("ACL", "SETUSER", "nodeb", "off")
    admin.execute_command("CLIENT", "KILL", "USER", "nodeb", "TYPE", "pubsub")
    await cluster.not_ready(b)
    await ann.send("/join #new")  # a room B never sees before it reconnects
    await ann.expect(lambda e: e.get("cmd") == "joined")
    await ann.send("/leave #ops")
    await ann.expect(lambda e: e.get("cmd") == "left")
    await ann_b.send("/join #ops")  # B has her in #ops still
    await ann_b.expect(lambda e: e.get("cmd") == "joined")
    cy_ops = "/api/rooms/ops/members/cy"
    async with cluster.session.delete(a.base + cy_ops, headers={"Authorization": f"Bearer {cy}"}):
        pass
    async with cluster.session.put(b.base + cy_ops, headers={"Authorization": f"Bearer {cy}"}):
        pass  # 204 (B has him in #ops still), and he is in it again: the store decides
    await cluster.join(a, token, "#new", "bob")
    await ann.expect(lambda e: e.get("type") == "join" and e["user"] == "bob")

    admin.execute_command("ACL", "SETUSER", "nodeb", "on")
    await b.ready(cluster.session)
    assert admin.smembers("wk:members:#ops") == {"ann", "bob", "cy"}
    for node in (a, b):
        async with cluster.session.get(
            f"{node.base}/api/rooms/ops/members", headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            users = {m["user"] for m in (await resp.json())["items"]}
            assert users == {"ann", "bob", "cy"}, node.name
    await ann.send("hello new")  # ann's current room is #new
    await bob.expect(is_msg("hello new"))


async def test_sse_on_a_topic_the_node_does_not_follow_starts_at_the_stores_head(
    cluster: Cluster,
) -> None:
    """An SSE listener on a topic the node knows but does not follow (its cached head gone
    stale) is told the store's head, and gets what comes next, not messages from before."""
    (a,) = await cluster.start(1)
    token = await cluster.token(a, "sal")
    sal = await cluster.ws(a, token)
    await sal.ok("sub", topic="news")
    await sal.ok("unsub", topic="news")
    for i in range(3):  # appended while the node does not follow the topic
        await sal.ok("pub", topic="news", data=f"m{i}")
    async with cluster.session.get(f"{a.base}/sse?topic=news&token={token}") as resp:
        events: list[dict[str, str]] = []
        async with asyncio.timeout(10):
            async for fields in sse_events(resp):
                events.append(fields)
                if len(events) == 1:
                    assert orjson.loads(events[0]["data"])["head"] == 3
                    await sal.ok("pub", topic="news", data="live")
                else:
                    break
    assert (events[1]["id"], orjson.loads(events[1]["data"])["data"]) == ("4", "live")
