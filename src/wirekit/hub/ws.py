"""The WebSocket front: docs/ws-protocol.md on a :class:`TcpServer` connection.

After the HTTP front (:mod:`wirekit.hub.web`) accepts the upgrade, the connection's handler
becomes a :class:`WsSession`. There is no Task per connection: frames are parsed in
``data_received`` (:class:`~wirekit.proto.ws.FrameParser`), requests run synchronously against
the hub, and deliveries are pre-encoded frames (one encoding per publication) written through
the connection's coalesced send path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..io.server import Connection, Handler
from ..proto import ws
from ..proto.ratelimit import TokenBucket
from ..proto.wsapi import BadRequest, Request, error, parse_request, reply, ws_event
from .accounts import AuthError, Session
from .engine import Subscriber, check_topic, message_text, private_log
from .store import HubError

if TYPE_CHECKING:
    from .web import WebFront

log = logging.getLogger("wirekit.hub.ws")

FRAME_RATE_FACTOR = 10  # frames of any kind per second, as a multiple of message_rate
DEFAULT_HISTORY = 50
_PING = ws.frame(ws.PING, b"")
_CLOSE_REASONS = {
    "kicked": "kicked",
    "logged-out": "logged out",
    "account-deleted": "account deleted",
}


class WsSubscriber(Subscriber):
    __slots__ = ("paused", "session")

    def __init__(self, session: WsSession) -> None:
        super().__init__(session.front.service.hub, "", "ws")
        self.session = session
        self.paused = False

    def write(self, data: bytes) -> None:
        self.session.conn.send(data)

    @property
    def congested(self) -> bool:
        return self.paused

    def disconnect(self, reason: str) -> None:
        if reason == "too-slow":
            self.session.conn.abort(reason)  # its queue is full: a close frame cannot get out
        else:
            self.session.close(ws.POLICY, _CLOSE_REASONS.get(reason, reason), reason)


class WsSession(Handler):
    __slots__ = ("_after_lost", "_frames", "_messages", "_parser", "_rejected", "closing", "front",
                 "last_ping", "last_rx", "sub")  # fmt: skip

    def __init__(
        self, conn: Connection, front: WebFront, after_lost: Callable[[], None] | None = None
    ) -> None:
        super().__init__(conn)
        self.front = front
        self._after_lost = after_lost
        hub = front.service.hub
        limits = hub.limits
        now = hub.clock()
        self._parser = ws.FrameParser(server=True, max_message=limits.ws_max_message)
        self._messages = TokenBucket(limits.message_rate, limits.message_burst, now)
        rate = limits.message_rate * FRAME_RATE_FACTOR
        self._frames = TokenBucket(rate, limits.message_burst * FRAME_RATE_FACTOR, now)
        self._rejected = 0  # rate-limited requests in a row
        self.sub = WsSubscriber(self)
        self.last_rx = self.last_ping = now
        self.closing = False
        front.sessions.add(self)

    # -- set-up by the HTTP front ---------------------------------------------------------------
    def start(self, session: Session | None, topics: list[str]) -> None:
        limits = self.front.service.hub.limits
        if session is not None:
            self._login(session)
        self.conn.send(reply("hello", None, server="wirekit", version=1,
                             user=self.sub.user or None, ping_interval=limits.ws_ping_interval,
                             timeout=limits.ws_timeout))  # fmt: skip
        hub = self.front.service.hub
        for name in topics:
            hub.resume(self.sub, name, hub.subscribe(self.sub, name).head, None)

    # -- Handler ----------------------------------------------------------------------------------
    def frame_received(self, frame: bytes) -> None:
        self.last_rx = self.front.service.hub.clock()
        for event in self._parser.receive_data(frame):
            if self.closing:
                return
            if isinstance(event, ws.Message):
                self._message(event)
            elif isinstance(event, ws.Ping):
                self.conn.send(ws.frame(ws.PONG, event.payload))
            elif isinstance(event, ws.Close):
                self.close(event.code or ws.NORMAL, "", "ws-closed")
            elif isinstance(event, ws.Violation):
                self.front.errors[f"ws-{event.code}"] += 1
                self.close(event.code, event.reason, f"ws-{event.code}")

    def connection_lost(self, reason: str) -> None:
        self.front.sessions.discard(self)
        if self._after_lost is not None:
            self._after_lost()
        hub = self.front.service.hub
        if self.sub.user:
            hub.detach(self.sub)
        else:
            for name in list(self.sub.cursors):
                hub.unsubscribe(self.sub, name)

    def writing_paused(self) -> None:
        self.sub.paused = True

    def writing_resumed(self) -> None:
        self.sub.paused = False
        if self.sub.behind_since is not None:
            self.sub.catch_up()

    # -- what the front uses --------------------------------------------------------------------
    def close(self, code: int, reason: str, why: str) -> None:
        """Send a close frame and close the connection (``why`` is counted)."""
        if self.closing:
            return
        self.closing = True
        self.conn.send(ws.close_frame(code, reason))
        self.conn.close(why)

    def heartbeat(self, now: float) -> None:
        limits = self.front.service.hub.limits
        if now - self.last_rx > limits.ws_timeout:
            self.close(ws.GOING_AWAY, "heartbeat timeout", "ws-timeout")
        elif now - self.last_ping >= limits.ws_ping_interval:
            self.last_ping = now
            self.conn.send(_PING)

    # -- requests ---------------------------------------------------------------------------------
    def _message(self, message: ws.Message) -> None:
        if message.text is None:
            self.front.errors["ws-1003"] += 1
            self.close(ws.UNSUPPORTED, "binary frames are not supported", "ws-1003")
            return
        request = parse_request(message.text)
        if not self._frames.take(self.front.service.hub.clock()):
            self._rate_limited(request.id)
            return
        if isinstance(request, BadRequest):
            self._error(request.id, request.code, request.reason)
            return
        try:
            getattr(self, f"_op_{request.op}")(request)
        except (HubError, AuthError) as exc:
            self._error(request.id, exc.code, str(exc))

    def _op_auth(self, request: Request) -> None:
        if self.sub.user:
            raise HubError("logged-in", f"already logged in as {self.sub.user}")
        session = self.front.service.accounts.session(request.args["token"])
        topics = self._login(session)
        self._ok(request, user=session.user, topics=topics)

    def _op_sub(self, request: Request) -> None:
        hub = self.front.service.hub
        name = self._topic(request.args["topic"], read=True)
        room = hub.logs.get(name)
        if name.startswith("#") and (room is None or self.sub.user not in room.members):
            hub.join(self.sub.user, name)
        log = hub.subscribe(self.sub, name)
        self._ok(request, topic=name, head=log.head, epoch=log.epoch)
        since = request.args.get("since")
        hub.resume(self.sub, name, log.head if since is None else since,
                   request.args.get("epoch"))  # fmt: skip

    def _op_unsub(self, request: Request) -> None:
        name = self._topic(request.args["topic"], read=True)
        self.front.service.hub.unsubscribe(self.sub, name)
        self._ok(request, topic=name)

    def _op_leave(self, request: Request) -> None:
        name = self._topic(request.args["topic"], read=False)
        self.front.service.hub.leave(self.sub.user, name)
        self._ok(request, topic=name)

    def _op_pub(self, request: Request) -> None:
        name = self._topic(request.args["topic"], read=False)
        hub = self.front.service.hub
        text, is_json = message_text(request.args["data"], hub.limits.max_line)
        if not self._messages.take(self.front.service.hub.clock()):
            self._rate_limited(request.id)
            return
        self._rejected = 0
        if name.startswith("@") and "," not in name:
            name = hub.conversation(self.sub.user, name[1:])

        def failed(exc: HubError) -> None:
            self._error(request.id, exc.code, str(exc))

        def done(offset: int) -> None:
            self._ok(request, topic=name, offset=offset)

        hub.post(self.sub.user, name, text, failed, json=is_json, done=done)

    def _op_history(self, request: Request) -> None:
        name = self._topic(request.args["topic"], read=True)
        limit = request.args.get("limit", DEFAULT_HISTORY)
        log, messages = self.front.service.hub.history(
            self.sub.user, name, limit, request.args.get("before")
        )
        self._ok(request, topic=name, epoch=log.epoch, head=log.head,
                 messages=[ws_event(m.event) for m in messages])  # fmt: skip

    def _op_presence(self, request: Request) -> None:
        name = self._topic(request.args["topic"], read=True)
        self._ok(request, topic=name, **self.front.service.hub.presence(self.sub.user, name))

    def _op_rooms(self, request: Request) -> None:
        self._login_required()
        rooms = self.front.service.hub.rooms()
        self._ok(request, rooms=[{"topic": r.pop("room"), **r} for r in rooms])

    def _op_ping(self, request: Request) -> None:
        self._reply(reply("pong", request.id))

    # -- helpers ----------------------------------------------------------------------------------
    def _login(self, session: Session) -> list[dict[str, Any]]:
        sub = self.sub
        sub.user = session.user
        sub.session_id = session.id
        hub = self.front.service.hub
        logs = hub.attach(sub, follow=False)
        log.info("login", extra={"event": "login", "user": sub.user, "peer": self.conn.peer})
        return [{"topic": lg.name, "head": hub.head_of(lg), "epoch": lg.epoch} for lg in logs]

    def _topic(self, raw: str, *, read: bool) -> str:
        """Check a topic name and this connection's right to read (or write) it."""
        name = check_topic(raw)
        if self.sub.user:
            if name.startswith("@") and "," not in name and read:
                return private_log(self.sub.user, name[1:])
            return name
        if read and not name.startswith(("#", "@")):
            if name in self.front.public_topics:
                return name
            raise HubError("not-public", f"{name} is not a public topic; log in first")
        self._login_required()
        return name

    def _login_required(self) -> None:
        if not self.sub.user:
            raise HubError("login-required", "log in first: send an auth op with your token")

    def _rate_limited(self, rid: Any) -> None:
        self._rejected += 1
        limits = self.front.service.hub.limits
        if self._rejected >= limits.message_burst:
            self.front.errors["rate-limited"] += 1
            self.close(ws.POLICY, "rate limit exceeded", "rate-limited")
            return
        self._error(rid, "rate-limited", f"slow down: at most {limits.message_rate:g} "
                    "messages per second; this request was dropped")  # fmt: skip

    def _ok(self, request: Request, **fields: Any) -> None:
        self._reply(reply("ok", request.id, **fields))

    def _error(self, rid: Any, code: str, reason: str) -> None:
        self.front.errors[code] += 1
        self._reply(error(rid, code, reason))

    def _reply(self, frame: bytes) -> None:
        """A reply goes after what was published before the request."""
        self.front.service.hub.overtake(self.sub)
        self.conn.send(frame)
