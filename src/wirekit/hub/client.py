"""The chat client behind ``wirekit chat``: reconnects on its own and resumes every room.

:class:`Positions` is the bookkeeping (sans-I/O): the last offset and epoch seen per room, so
that after a reconnect the client asks for exactly what it missed (``/since``) and drops any
message it has already shown. :class:`ChatClient` runs the connection loop over asyncio streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import GaveUp, UsageError
from ..proto.backoff import Backoff
from ..proto.chat import render_text

log = logging.getLogger("wirekit.chat")

FATAL = {"bad-login", "name-taken", "bad-username", "bad-password", "rate-limited"}
MAX_QUEUED = 1000  # commands typed while disconnected


class Positions:
    """Per room: the epoch and the offset of the last message shown."""

    def __init__(self) -> None:
        self.rooms: dict[str, tuple[str, int]] = {}

    def seen(self, event: dict[str, Any]) -> bool:
        """Record a live message; ``True`` if it was shown before (skip it)."""
        room, epoch, offset = event["room"], event["epoch"], event["offset"]
        known = self.rooms.get(room)
        if known is not None and known[0] == epoch and offset <= known[1]:
            return True
        self.rooms[room] = (epoch, offset)
        return False

    def on_login(self, rooms: list[dict[str, Any]]) -> list[str]:
        """The ``/since`` commands that fetch what was missed; rooms new to this client start
        at their head."""
        commands = []
        for room in rooms:
            known = self.rooms.get(room["room"])
            if known is None:
                self.rooms[room["room"]] = (room["epoch"], room["head"])
            elif known != (room["epoch"], room["head"]):
                commands.append(f"/since {room['room']} {known[1]} {known[0]}")
        return commands

    def lost(self, room: str, epoch: str) -> None:
        self.rooms[room] = (epoch, 0)


@dataclass
class ChatOptions:
    host: str
    port: int
    user: str
    password: str
    register: bool = False
    ssl: ssl.SSLContext | None = None
    retries: int = 100
    connect_timeout: float = 5.0


class ChatClient:
    """Talks to the hub for one user. ``show`` gets every event to display (a dict)."""

    def __init__(self, options: ChatOptions, show: Callable[[dict[str, Any]], None]) -> None:
        self.options = options
        self.show = show
        self.positions = Positions()
        self.token: str | None = None
        self.room: str | None = None
        self.quitting = False
        self._writer: asyncio.StreamWriter | None = None
        self._ready = False
        self._auto_join: str | None = None
        self._queue: deque[str] = deque(maxlen=MAX_QUEUED)

    def send(self, line: str) -> None:
        """Send a command or message now, or once logged in again. The client stops once a
        ``/quit`` has actually been sent."""
        if self._ready and self._writer is not None:
            self._write([line])
        else:
            self._queue.append(line)

    async def run(self) -> None:
        """Connect, log in, resume; reconnect with backoff until ``/quit`` or out of retries."""
        backoff = Backoff(base=0.2, cap=10.0, max_attempts=self.options.retries)
        while not self.quitting:
            try:
                await self._session(backoff)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                if self.quitting:
                    break
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else repr(exc)
                self.show({"type": "status", "state": "disconnected", "message": reason})
            else:
                if self.quitting:
                    break
                self.show({"type": "status", "state": "disconnected", "message": "server closed"})
            delay = backoff.next_delay()
            if delay is None:
                raise GaveUp(f"gave up after {backoff.attempts} attempts to reconnect")
            await asyncio.sleep(delay)

    async def _session(self, backoff: Backoff) -> None:
        o = self.options
        async with asyncio.timeout(o.connect_timeout):
            reader, writer = await asyncio.open_connection(o.host, o.port, ssl=o.ssl, limit=1 << 20)
        self._writer = writer
        try:
            writer.write(b"/json\n" + self._login_line().encode() + b"\n")
            while True:
                line = await reader.readline()
                if not line:
                    return
                if line.startswith(b"{"):  # skips the text greeting sent before /json
                    self._received(orjson.loads(line), backoff)
        finally:
            self._ready = False
            self._writer = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _write(self, lines: list[str]) -> None:
        assert self._writer is not None
        if any(line.strip().lower() == "/quit" for line in lines):
            self.quitting = True
        if lines:
            self._writer.write("".join(line + "\n" for line in lines).encode())

    def _login_line(self) -> str:
        o = self.options
        if self.token is not None:
            return f"/auth {self.token}"
        return f"/{'register' if o.register else 'login'} {o.user} {o.password}"

    def _received(self, event: dict[str, Any], backoff: Backoff) -> None:
        kind = event["type"]
        if kind == "msg" and not event.get("history") and self.positions.seen(event):
            return
        if kind == "lost":
            self.positions.lost(event["room"], event["epoch"])
        elif (
            kind == "error"
            and not self._ready
            and self.token is not None
            and (event["code"] in ("bad-token", "token-expired"))
        ):
            self.token = None  # fall back to the password on this same connection
            assert self._writer is not None
            self._writer.write(self._login_line().encode() + b"\n")
            return
        elif kind == "error" and event["code"] in FATAL and not self._ready:
            raise UsageError(event["message"])
        elif kind == "ok":
            cmd = event["cmd"]
            if cmd in ("login", "register", "auth"):
                self._logged_in(event, backoff)
                if cmd == "auth":
                    return  # _logged_in said "reconnected"
            elif cmd == "json":
                return
            elif cmd == "joined":
                self.room = event["room"]
                self.positions.rooms.setdefault(event["room"], (event["epoch"], event["head"]))
                if self._auto_join == event["room"]:
                    self._auto_join = None
                    return
        self.show(event)

    def _logged_in(self, event: dict[str, Any], backoff: Backoff) -> None:
        first = self.token is None
        self.token = event["token"]
        backoff.reset()
        assert self._writer is not None
        lines = self.positions.on_login(event["rooms"])
        if self.room is not None:
            lines.append(f"/join {self.room}")  # back to the room we were talking in
            self._auto_join = self.room
        lines += list(self._queue)
        self._queue.clear()
        self._ready = True
        self._write(lines)
        if not first:
            self.show({"type": "status", "state": "connected", "message": "reconnected; resumed"})


def render(event: dict[str, Any]) -> str:
    if event["type"] == "status":
        return f"~ {event['message']}"
    return render_text(event)
