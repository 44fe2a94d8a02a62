"""A hub service on loopback ports, and peers to talk to it: TCP chat (JSON lines), WebSocket
(aiohttp), hand-made WebSocket frames, and the HTTP API."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from argon2 import PasswordHasher
from playwright.sync_api import Browser, expect, sync_playwright

from wirekit.hub.service import HubConfig, HubService
from wirekit.limits import Limits
from wirekit.proto import ws

# Headless Chromium for the browser-page tests (Debian's package, driven by Playwright).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip

# Real argon2id, cheaper parameters: these tests register many accounts.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


class Peer:
    """A chat connection in JSON mode, as a program would use it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, rcvbuf: int | None = None) -> Peer:
        """``rcvbuf`` makes a slow reader: a tiny socket buffer and a tiny stream buffer."""
        if rcvbuf is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        else:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection(sock=sock, limit=rcvbuf)
        await reader.readline()  # the text greeting
        peer = cls(reader, writer)
        await peer.send("/json")
        await peer.expect(lambda e: e.get("cmd") == "json")
        return peer

    async def send(self, *lines: str | bytes) -> None:
        for line in lines:
            self.writer.write((line.encode() if isinstance(line, str) else line) + b"\n")
        await self.writer.drain()

    async def event(self, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            line = await self.reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        event: dict[str, Any] = json.loads(line)
        return event

    async def expect(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        """The first event that matches, skipping others."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.event(timeout)
                if match(event):
                    return event

    async def login(self, user: str, *, register: bool = True) -> dict[str, Any]:
        await self.send(f"/{'register' if register else 'login'} {user} password-{user}")
        event = await self.expect(lambda e: e["type"] in ("ok", "error"))
        assert event.get("cmd") in ("register", "login"), event
        return event

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


class HubFixture:
    def __init__(self, data_dir: Path, limits: Limits) -> None:
        self.data_dir = data_dir
        self.limits = limits
        self.service: HubService | None = None
        self.peers: list[Peer] = []
        self.config: dict[str, Any] = {}  # more HubConfig fields

    async def start(self, **limits: Any) -> HubService:
        if limits:
            self.limits = replace(self.limits, **limits)
        config = HubConfig(
            data_dir=self.data_dir,
            chat=("127.0.0.1", 0),
            http=("127.0.0.1", 0),
            metrics=None,
            limits=self.limits,
            **self.config,
        )
        self.service = HubService(config, hasher=FAST_HASHER)
        await self.service.start()
        return self.service

    async def stop(self) -> None:
        for peer in self.peers:
            await peer.close()
        self.peers.clear()
        if self.service is not None:
            await self.service.shutdown(grace=0)
            self.service = None

    @property
    def port(self) -> int:
        assert self.service is not None
        return self.service.chat.address[1]

    async def peer(
        self, user: str | None = None, *, register: bool = True, rcvbuf: int | None = None
    ) -> Peer:
        peer = await Peer.connect(self.port, rcvbuf)
        self.peers.append(peer)
        if user is not None:
            await peer.login(user, register=register)
        return peer


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[HubFixture]:
    fixture = HubFixture(tmp_path / "data", Limits())
    await fixture.start()
    yield fixture
    await fixture.stop()


_ids = itertools.count(1)


class WsPeer:
    def __init__(self, session: aiohttp.ClientSession, sock: aiohttp.ClientWebSocketResponse):
        self.session = session
        self.ws = sock
        self.hello: dict[str, Any] = {}
        self.skipped: list[dict[str, Any]] = []

    async def event(self, timeout: float = 5.0) -> dict[str, Any]:
        msg = await self.ws.receive(timeout)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"got {msg.type} {msg.data!r} {msg.extra!r}")
        event: dict[str, Any] = json.loads(msg.data)
        return event

    async def expect(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        """The first event that matches; the others stay queued for later calls, in order."""
        for i, event in enumerate(self.skipped):
            if match(event):
                return self.skipped.pop(i)
        async with asyncio.timeout(timeout):
            while True:
                event = await self.event(timeout)
                if match(event):
                    return event
                self.skipped.append(event)

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        rid = next(_ids)
        await self.ws.send_str(json.dumps({"op": op, "id": rid, **fields}))
        return await self.expect(lambda e: e.get("id") == rid)

    async def ok(self, op: str, **fields: Any) -> dict[str, Any]:
        reply = await self.request(op, **fields)
        assert reply["op"] in ("ok", "pong"), reply
        return reply

    async def closed(self, timeout: float = 5.0) -> tuple[int | None, str]:
        """Read until the server's close frame: its code and reason."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.ws.receive()
                if msg.type == aiohttp.WSMsgType.CLOSE:
                    return int(msg.data), str(msg.extra or "")
                if msg.type == aiohttp.WSMsgType.CLOSED:
                    return None, "no close frame"


class Web:
    """HTTP-side helpers around a :class:`HubFixture` with its HTTP front on."""

    def __init__(self, hub: HubFixture, session: aiohttp.ClientSession) -> None:
        self.hub = hub
        self.session = session
        self.peers: list[WsPeer] = []
        self.raws: list[RawWs] = []

    def raw(self, rcvbuf: int | None = None) -> RawWs:
        raw = RawWs(int(self.base.rsplit(":", 1)[1]), rcvbuf)
        self.raws.append(raw)
        return raw

    @property
    def base(self) -> str:
        assert self.hub.service is not None and self.hub.service.web is not None
        return f"http://127.0.0.1:{self.hub.service.web.server.address[1]}"

    @property
    def api_key(self) -> str:
        assert self.hub.service is not None and self.hub.service.web is not None
        return self.hub.service.web.api_key

    async def token(self, user: str, register: bool = True) -> str:
        path = "/api/users" if register else "/api/login"
        body = {"user": user, "password": f"password-{user}"}
        async with self.session.post(self.base + path, json=body) as resp:
            assert resp.status in (200, 201), await resp.text()
            return str((await resp.json())["token"])

    async def connect(self, query: str = "", **kwargs: Any) -> WsPeer:
        sock = await self.session.ws_connect(f"{self.base}/ws{query}", **kwargs)
        peer = WsPeer(self.session, sock)
        peer.hello = await peer.event()
        assert peer.hello["op"] == "hello"
        self.peers.append(peer)
        return peer

    async def user(self, name: str, register: bool = True) -> WsPeer:
        token = await self.token(name, register)
        peer = await self.connect()
        reply = await peer.ok("auth", token=token)
        assert reply["user"] == name
        return peer

    async def publish(
        self, topic: str, data: Any, key: str | None = None
    ) -> aiohttp.ClientResponse:
        headers = {"X-Api-Key": self.api_key if key is None else key}
        body = {"topic": topic, "data": data}
        return await self.session.post(self.base + "/api/publish", json=body, headers=headers)


@pytest.fixture
async def web(hub: HubFixture) -> AsyncIterator[Web]:
    async with aiohttp.ClientSession() as session:
        fixture = Web(hub, session)
        yield fixture
        for peer in fixture.peers:
            await peer.ws.close()
        for raw in fixture.raws:
            raw.sock.close()


async def sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, str]]:
    """The events of a text/event-stream response, each as its fields (``event``, ``id``,
    ``data``)."""
    fields: dict[str, str] = {}
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line:
            key, _, value = line.partition(": ")
            fields[key] = value
        else:
            yield fields
            fields = {}


async def restart(hub: HubFixture, **config: Any) -> None:
    await hub.stop()
    hub.config.update(config)
    await hub.start()


class RawWs:
    """A hand-made client: frames the libraries refuse to send."""

    def __init__(self, port: int, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", port))

    def handshake(self, *headers: str, target: str = "/ws") -> bytes:
        lines = [f"GET {target} HTTP/1.1", "Host: 127.0.0.1", "Upgrade: websocket",
                 "Connection: Upgrade", "Sec-WebSocket-Version: 13",
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", *headers]  # fmt: skip
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return self.read_head()

    def read_head(self) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            if not chunk:
                break
            data += chunk
        self.rest = data.partition(b"\r\n\r\n")[2]
        return data

    def close_code(self) -> int:
        data = self.rest
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            data += chunk
        events = ws.FrameParser(server=False).receive_data(data)
        closes = [e for e in events if isinstance(e, ws.Close)]
        assert closes, events
        return closes[0].code or 0


@pytest.fixture
def browser() -> Iterator[Browser]:
    expect.set_options(timeout=15_000)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()
