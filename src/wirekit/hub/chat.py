"""The TCP chat front: the line protocol of docs/chat-protocol.md on a :class:`TcpServer`."""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from ..io.server import Connection, Handler
from ..proto.chat import BadLine, ChatReader, Command, Mode, help_lines
from ..proto.ratelimit import TokenBucket
from .accounts import AuthError, Grant
from .engine import Encoded, Subscriber, check_log, check_room
from .store import HubError

if TYPE_CHECKING:
    from .service import HubService

log = logging.getLogger("wirekit.hub.chat")

MAX_PENDING = 64  # lines queued behind a login in progress


class ChatSubscriber(Subscriber):
    __slots__ = ("conn", "paused")

    def __init__(self, session: ChatSession, user: str) -> None:
        super().__init__(session.service.hub, user, session.mode)
        self.conn = session.conn
        self.paused = False

    def write(self, data: bytes) -> None:
        self.conn.send(data)

    @property
    def congested(self) -> bool:
        return self.paused

    def disconnect(self, reason: str) -> None:
        if reason == "too-slow":
            self.conn.abort(reason)  # its send queue is full: closing would wait on it
            return
        self.conn.send(
            Encoded({"type": "error", "code": reason, "message": _BYE[reason]}).data(self.mode)
        )
        self.conn.close(reason)


class ChatSession(Handler):
    """One chat connection: parses lines, runs commands against the hub, writes replies."""

    __slots__ = ("_bucket", "_pending", "_reader", "mode", "room", "service", "sub")

    def __init__(self, conn: Connection, service: HubService) -> None:
        super().__init__(conn)
        self.service = service
        limits = service.hub.limits
        self._reader = ChatReader(limits.max_line)
        self._bucket = TokenBucket(limits.message_rate, limits.message_burst, service.hub.clock())
        self._pending: list[Command | BadLine] | None = None  # set while a login runs
        self.mode: Mode = "text"
        self.room: str | None = None
        self.sub: ChatSubscriber | None = None
        self._reply("hello", message="wirekit chat: /register USER PASS or /login USER PASS; /help")

    # -- Handler ------------------------------------------------------------------------------
    def frame_received(self, frame: bytes) -> None:
        for event in self._reader.receive_data(frame):
            if self._pending is not None:
                if len(self._pending) >= MAX_PENDING:
                    self._error("busy", "too many commands while logging in; this one was dropped")
                else:
                    self._pending.append(event)
            else:
                self._handle(event)

    def connection_lost(self, reason: str) -> None:
        if self.sub is not None:
            self.service.hub.detach(self.sub)
            self.sub = None

    def writing_paused(self) -> None:
        if self.sub is not None:
            self.sub.paused = True

    def writing_resumed(self) -> None:
        if self.sub is not None:
            self.sub.paused = False
            if self.sub.behind_since is not None:
                self.sub.catch_up()

    # -- commands -----------------------------------------------------------------------------
    def _handle(self, event: Command | BadLine) -> None:
        if isinstance(event, BadLine):
            self._error(event.code, event.message)
            return
        method = getattr(self, f"_cmd_{event.name}")
        if self.sub is None and event.name not in _OPEN:
            what = "sending messages" if event.name == "say" else f"/{event.name}"
            self._error("login-required", f"{what} needs you to /login or /register first")
            return
        try:
            method(**event.args)
        except (HubError, AuthError) as exc:
            self._error(exc.code, str(exc))

    def _cmd_register(self, user: str, password: str) -> None:
        accounts = self.service.accounts
        self._begin_login("register", accounts.register(user, password, self._address()))

    def _cmd_login(self, user: str, password: str) -> None:
        accounts = self.service.accounts
        self._begin_login("login", accounts.login(user, password, self._address()))

    def _cmd_auth(self, token: str) -> None:
        session = self.service.accounts.session(token)
        self._logged_in("auth", session.user, token, session.id)

    def _cmd_join(self, room: str) -> None:
        assert self.sub is not None
        joined = self.service.hub.join(self.sub.user, room)
        self.room = joined.name
        self._reply("joined", room=joined.name, head=joined.head, epoch=joined.epoch,
                    message=f"now talking in {joined.name}")  # fmt: skip

    def _cmd_leave(self, room: str) -> None:
        assert self.sub is not None
        room = check_room(room)
        self.service.hub.leave(self.sub.user, room)
        if self.room == room:
            self.room = None
        self._reply("left", room=room, message=f"left {room}")

    def _cmd_rooms(self) -> None:
        self._send({"type": "rooms", "rooms": self.service.hub.rooms()})

    def _cmd_who(self, room: str) -> None:
        room = check_room(room)
        self._send({"type": "who", "room": room, "users": self.service.hub.who(room)})

    def _cmd_say(self, text: str) -> None:
        assert self.sub is not None
        if self.room is None:
            raise HubError("no-room", "you are in no room: /join #room first")
        if self._allowed():
            self.service.hub.post(self.sub.user, self.room, text, self._failed)

    def _failed(self, exc: HubError) -> None:
        self._error(exc.code, str(exc))

    def _cmd_msg(self, user: str, text: str) -> None:
        assert self.sub is not None
        if self._allowed():
            self.service.hub.private(self.sub.user, user, text)

    def _cmd_history(self, room: str, count: str = "20") -> None:
        assert self.sub is not None
        name = check_log(room)
        _, messages = self.service.hub.history(self.sub.user, name, _number(count))
        self.service.hub.overtake(self.sub)
        for encoded in messages:
            self.conn.send(encoded.data(self.mode))
        self._reply("history", room=name, message=f"end of history of {name}")

    def _cmd_since(self, room: str, offset: str, epoch: str | None = None) -> None:
        assert self.sub is not None
        self.service.hub.resume(self.sub, check_log(room), _number(offset), epoch)

    def _cmd_quit(self) -> None:
        self._reply("bye", message="bye")
        self.conn.close("quit")

    def _cmd_help(self) -> None:
        self._reply("help", message="\n".join(help_lines()), commands=help_lines())

    def _cmd_json(self) -> None:
        self._set_mode("json")

    def _cmd_text(self) -> None:
        self._set_mode("text")

    # -- helpers ------------------------------------------------------------------------------
    def _begin_login(self, command: str, attempt: Coroutine[Any, Any, Grant]) -> None:
        if self.sub is not None:
            attempt.close()
            self._error("logged-in", f"already logged in as {self.sub.user}")
            return
        self._pending = []
        self.service.spawn(self._finish_login(command, attempt))

    async def _finish_login(self, command: str, attempt: Coroutine[Any, Any, Grant]) -> None:
        try:
            grant = await attempt
            if self.conn.transport is None or self.conn.transport.is_closing():
                return
            self._logged_in(command, grant.user, grant.token, grant.session.id)
        except AuthError as exc:
            self._error(exc.code, str(exc))
        pending, self._pending = self._pending or [], None
        for event in pending:
            if self._pending is not None:  # a queued /login started another round
                self._pending.append(event)
            else:
                self._handle(event)

    def _logged_in(self, command: str, user: str, token: str, session_id: str) -> None:
        if self.sub is not None:
            self._error("logged-in", f"already logged in as {self.sub.user}")
            return
        sub = self.sub = ChatSubscriber(self, user)
        sub.session_id = session_id
        logs = self.service.hub.attach(sub)
        rooms = [{"room": lg.name, "head": lg.head, "epoch": lg.epoch} for lg in logs]
        self.room = next((lg.name for lg in logs if not lg.private), None)
        where = f"; you are in {self.room}" if self.room else ""
        self._reply(command, user=user, token=token, rooms=rooms, message=f"welcome, {user}{where}")
        log.info("login", extra={"event": "login", "user": user, "peer": self.conn.peer})

    def _allowed(self) -> bool:
        if self._bucket.take(self.service.hub.clock()):
            return True
        wait = self._bucket.retry_after()
        self._error("rate-limited", f"slow down: message dropped; retry in {wait:.2f} s")
        return False

    def _set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if self.sub is not None:
            self.sub.mode = mode
        self._reply(mode, message=f"{mode} mode")

    def _address(self) -> str:
        return self.conn.peer.rpartition(":")[0]

    def _reply(self, command: str, **fields: Any) -> None:
        self._send({"type": "ok", "cmd": command, **fields})

    def _error(self, code: str, message: str) -> None:
        self.service.errors[code] += 1  # every error reply is counted in the metrics
        self._send({"type": "error", "code": code, "message": message})

    def _send(self, event: dict[str, Any]) -> None:
        if self.sub is not None:
            self.service.hub.overtake(self.sub)  # a reply goes after what was published before
        self.conn.send(Encoded(event).data(self.mode))


_BYE = {
    "kicked": "an administrator closed this session",
    "logged-out": "this session was logged out",
    "account-deleted": "this account was deleted",
}
_OPEN = {"register", "login", "auth", "quit", "help", "json", "text"}


def _number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise HubError("usage", f"expected a number, got {text!r}") from None
    if value < 0:
        raise HubError("usage", f"expected a number >= 0, got {value}")
    return value
