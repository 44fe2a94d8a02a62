"""The hub's chat line protocol (docs/chat-protocol.md), sans-I/O.

Bytes in: :meth:`ChatReader.receive_data` splits UTF-8 lines and parses them into
:class:`Command` or :class:`BadLine` events; it never raises on peer input, and a line that is
too long or not UTF-8 becomes a :class:`BadLine` while the connection carries on.

Events out: the hub produces events as plain dicts (``{"type": "msg", ...}``);
:func:`encode_event` turns one into a JSON line or a readable text line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from ..limits import DEFAULTS

Mode = Literal["text", "json"]


@dataclass(frozen=True, slots=True)
class Spec:
    """A command's shape: ``args`` names the words it takes; a trailing ``*`` name takes the
    rest of the line; ``optional`` of them may be left out."""

    args: tuple[str, ...]
    optional: int
    login: bool
    help: str


COMMANDS: dict[str, Spec] = {
    "register": Spec(("user", "password"), 0, False, "create an account and log in"),
    "login": Spec(("user", "password"), 0, False, "log in"),
    "auth": Spec(("token",), 0, False, "log in with the token a /login reply carries"),
    "join": Spec(("room",), 0, True, "join a room (created if new) and make it current"),
    "leave": Spec(("room",), 0, True, "leave a room"),
    "rooms": Spec((), 0, True, "list rooms"),
    "who": Spec(("room",), 0, True, "members of a room and who is online"),
    "msg": Spec(("user", "*text"), 0, True, "private message"),
    "history": Spec(("room", "count"), 1, True, "the last COUNT messages (default 20)"),
    "since": Spec(("room", "offset", "epoch"), 1, True, "replay after OFFSET, then live"),
    "quit": Spec((), 0, False, "say goodbye and disconnect"),
    "help": Spec((), 0, False, "this list"),
    "json": Spec((), 0, False, "switch this connection to JSON lines"),
    "text": Spec((), 0, False, "switch this connection back to text"),
}


@dataclass(frozen=True, slots=True)
class Command:
    """A parsed line. A plain line is ``Command("say", {"text": ...})``."""

    name: str
    args: dict[str, str]


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line the protocol rejects; ``code`` is the error code sent back."""

    code: str
    message: str


Event = Command | BadLine


def parse_line(line: str) -> Event | None:
    """Parse one decoded line (without its newline). Empty lines give ``None``."""
    line = line.strip()
    if not line:
        return None
    if not line.startswith("/") or line.startswith("//"):
        return Command("say", {"text": line[1:] if line.startswith("//") else line})
    head, _, rest = line[1:].partition(" ")
    name = head.lower()
    spec = COMMANDS.get(name)
    if spec is None:
        return BadLine("unknown-command", f"unknown command /{head}; try /help")
    takes_rest = bool(spec.args) and spec.args[-1].startswith("*")
    words = rest.split(None, len(spec.args) - 1) if takes_rest else rest.split()
    if not len(spec.args) - spec.optional <= len(words) <= len(spec.args):
        return BadLine("usage", f"usage: {usage(name)}")
    return Command(name, {a.lstrip("*"): w for a, w in zip(spec.args, words, strict=False)})


def usage(name: str) -> str:
    spec = COMMANDS[name]
    words = [a.lstrip("*").upper() for a in spec.args]
    for i in range(len(words) - spec.optional, len(words)):
        words[i] = f"[{words[i]}]"
    return " ".join([f"/{name}", *words])


def help_lines() -> list[str]:
    lines = [f"{usage(name):32} {spec.help}" for name, spec in COMMANDS.items()]
    return [*lines, f"{'TEXT':32} say TEXT in the current room (//TEXT sends a leading /)"]


class ChatReader:
    """Splits bytes into lines of at most ``max_line`` bytes and parses them.

    An over-long line is skipped up to its newline and reported once as ``line-too-long``;
    invalid UTF-8 is reported as ``bad-utf8``. Buffered bytes never exceed ``max_line + 1``.
    """

    __slots__ = ("_buf", "_skipping", "max_line")

    def __init__(self, max_line: int = DEFAULTS.max_line) -> None:
        self.max_line = max_line
        self._buf = b""
        self._skipping = False

    def receive_data(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        buf = self._buf + data if self._buf else data
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            if self._skipping:
                self._skipping = False
            else:
                self._line(buf[start:nl], events)
            start = nl + 1
        rest = buf[start:]
        if self._skipping:
            rest = b""
        elif len(rest) > self.max_line + 1:  # +1: a "\r" before the newline still to come
            events.append(self._too_long())
            self._skipping = True
            rest = b""
        self._buf = rest
        return events

    def _line(self, raw: bytes, events: list[Event]) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if len(raw) > self.max_line:
            events.append(self._too_long())
            return
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            events.append(BadLine("bad-utf8", "line is not valid UTF-8; it was ignored"))
            return
        event = parse_line(text)
        if event is not None:
            events.append(event)

    def _too_long(self) -> BadLine:
        return BadLine("line-too-long", f"line longer than {self.max_line} bytes was ignored")


# -- events out -------------------------------------------------------------------------------


def encode_event(event: dict[str, Any], mode: Mode) -> bytes:
    """One event as one line: JSON, or text for people at a terminal."""
    if mode == "json":
        return orjson.dumps(event) + b"\n"
    return (render_text(event) + "\n").encode()


def render_text(event: dict[str, Any]) -> str:
    kind = event["type"]
    if kind == "msg":
        stamp = time.strftime("%H:%M", time.localtime(event["ts"]))
        if "to" in event:
            return f"{stamp} [private] {event['from']} -> {event['to']}: {event['text']}"
        return f"{stamp} [{event['room']}] {event['from']}: {event['text']}"
    if kind in ("join", "leave"):
        verb = "joined" if kind == "join" else "left"
        return f"* {event['user']} {verb} {event['room']}"
    if kind in ("online", "offline"):
        return f"* {event['user']} is {kind}"
    if kind == "error":
        return f"! {event['code']}: {event['message']}"
    if kind == "rooms":
        rows = [
            f"  {r['room']:20} {r['members']} members, {r['online']} online" for r in event["rooms"]
        ]
        return "\n".join(["* rooms:", *rows]) if rows else "* no rooms yet; /join #name"
    if kind == "who":
        names = [u["user"] + ("" if u["online"] else " (offline)") for u in event["users"]]
        return f"* {event['room']}: " + ", ".join(names)
    if kind == "lost":
        return f"! history of {event['room']} was lost; replaying from its start"
    return f"* {event.get('message') or kind}"
