"""A hub service on a loopback port, and a line-protocol peer to talk to it."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher

from wirekit.hub.service import HubConfig, HubService
from wirekit.limits import Limits

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
