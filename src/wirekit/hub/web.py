"""The HTTP front of ``wirekit serve --http``: the page, WebSocket, SSE and the HTTP API.

One :class:`TcpServer` owns every connection (limits, statistics, coalesced writes). The front
reads each request head itself (:class:`HttpSniffer`) and:

- a plain GET of a direct route (the page, health, the API's GETs) is answered here, through
  the middleware chain, without aiohttp (:mod:`wirekit.http.direct`); the next head is read;
- ``GET /ws`` with an upgrade: the handshake is answered here and the connection's handler
  becomes a :class:`~wirekit.hub.ws.WsSession` -- no aiohttp, no Task per connection;
- anything else: the connection is handed to aiohttp (its ``RequestHandler`` protocol is fed
  the bytes from that request on and everything after), which serves the rest of ``/api``,
  ``/sse`` and uploads, and keeps the connection.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from importlib import resources
from ssl import SSLContext
from typing import TYPE_CHECKING, cast
from urllib.parse import parse_qs, urlsplit

import orjson
from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestHandler

from ..http import middleware
from ..http.direct import DirectRoutes, Request, asynchronous, encode_response, parse_request
from ..http.problem import Problem, json_response, problem, problem_body
from ..io.server import Connection, ConnectionTransport, Handler, TcpServer
from ..proto import ws
from .accounts import AuthError, Session
from .engine import Subscriber, check_topic
from .files import FileApi
from .openapi import spec
from .rest import API_KEY_PATHS, HUB_STATUS, RestApi
from .store import HubError
from .ws import WsSession

if TYPE_CHECKING:
    from .service import HubService

log = logging.getLogger("wirekit.hub.web")

TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
REQUEST_HEAD = re.compile(
    TOKEN + rb" [\x21-\x7e\x80-\xff]+ HTTP/1\.[0-9](?:\r\n" + TOKEN + rb":[\t\x20-\x7e\x80-\xff]*)*"
)
MAX_HEAD = 16 * 1024  # bytes of a request head the front reads itself
PAGE_FILES = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css"}
CSP = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; frame-ancestors 'none'"
)


@dataclass(frozen=True, slots=True)
class Head:
    method: str
    target: str
    version: str
    fields: list[tuple[str, str]]  # (name, value) as sent, values stripped

    @property
    def headers(self) -> dict[str, str]:
        """Lowercased names; a repeated field's values joined with ``, ``."""
        return join_headers(self.fields)

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)


def parse_head(raw: bytes) -> Head | None:
    """The request line and headers (without the blank line); ``None`` if malformed (RFC 9112:
    a token method, a target of visible characters, ``HTTP/1.x``, ``token:value`` fields
    whose values have no control characters but tab)."""
    if not REQUEST_HEAD.fullmatch(raw):
        return None
    lines = raw.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ")
    fields = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields.append((name, value.strip()))
    return Head(method, target, version, fields)


def join_headers(fields: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header fields by lowercased name; a repeated field's values joined with ``, ``."""
    headers: dict[str, str] = {}
    for name, value in fields:
        key, value = name.lower(), value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return headers


@dataclass(frozen=True, slots=True)
class Refusal:
    """A WebSocket handshake the server turns down."""

    status: int
    code: str
    detail: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Upgrade:
    """A WebSocket handshake the server accepts."""

    key: str
    session: Session | None
    topics: list[str]


def raw_problem(refusal: Refusal) -> bytes:
    body = problem_body(refusal.status, refusal.code, refusal.detail)
    extra = "".join(f"{k}: {v}\r\n" for k, v in refusal.headers.items())
    return (
        f"HTTP/1.1 {refusal.status} {HTTPStatus(refusal.status).phrase}\r\n"
        f"Content-Type: application/problem+json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: close\r\n{extra}\r\n"
    ).encode() + body


class HeadReader(Handler):
    """Buffers request heads (at most ``MAX_HEAD`` bytes each, else 431) and passes each on to
    :meth:`head_received` with everything read from its start, for as long as that says the
    connection goes on with another request head."""

    __slots__ = ("_buf",)

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self._buf = b""

    def frame_received(self, frame: bytes) -> None:
        buf = self._buf + frame if self._buf else frame
        while (end := buf.find(b"\r\n\r\n", 0, MAX_HEAD + 4)) >= 0:
            if not self.head_received(parse_head(buf[:end]), buf, end + 4):
                self._buf = b""
                return
            buf = buf[end + 4 :]
        self._buf = buf
        if len(buf) >= MAX_HEAD + 4:
            self._buf = b""
            self.refuse(
                Refusal(431, "head-too-large", f"request head longer than {MAX_HEAD} bytes")
            )

    @abc.abstractmethod
    def head_received(self, head: Head | None, data: bytes, body: int) -> bool:
        """``head`` (``None`` if malformed) of ``data``, whose body starts at ``body``: whether
        ``data[body:]`` starts the connection's next request head."""

    def refuse(self, refusal: Refusal) -> None:
        """Answer with a problem+json, counted as an error, and close."""
        self.conn.server.stats.errors[refusal.code] += 1
        self.conn.send(raw_problem(refusal))
        self.conn.close(refusal.code)


class HttpSniffer(HeadReader):
    """Reads request heads: serves those it can directly, and routes the connection at the
    first it cannot (see the module doc)."""

    __slots__ = ("_remote", "front")

    def __init__(self, conn: Connection, front: WebFront) -> None:
        super().__init__(conn)
        self.front = front
        transport = conn.transport  # set before a handler is made (after TLS's handshake)
        peer = transport.get_extra_info("peername") if transport is not None else None
        self._remote = str(peer[0]) if isinstance(peer, tuple) else None  # aiohttp's remote

    def head_received(self, head: Head | None, data: bytes, body: int) -> bool:
        if head is None:
            self._hand_to_aiohttp(data)  # it answers 400
            return False
        served = self.front.serve_directly(self.conn, head, self._remote)
        if served is not None:
            return served
        if head.path == "/ws":
            self._upgrade(head, data[body:])
        else:
            self._hand_to_aiohttp(data)
        return False

    def _hand_to_aiohttp(self, data: bytes) -> None:
        transport = self.conn.transport
        server = self.front.runner.server
        if transport is None or transport.is_closing() or server is None:
            return
        proto = server()
        self.conn.replace_handler(AiohttpBridge(self.conn, proto))
        # With TLS the bytes must go through the connection, which encrypts them.
        tls = self.conn.server.ssl is not None
        proto.connection_made(ConnectionTransport(self.conn) if tls else transport)
        proto.data_received(data)

    def _upgrade(self, head: Head, rest: bytes) -> None:
        outcome = self.front.check_upgrade(head)
        if isinstance(outcome, Refusal):
            self.refuse(outcome)
            return
        session = self.front.accept(self.conn, outcome)
        if session is not None and rest:
            session.frame_received(rest)


class HttpsRedirect(HeadReader):
    """The plain-HTTP listener of a TLS server: every request gets a 308 to its https URL."""

    __slots__ = ("https_port",)

    def __init__(self, conn: Connection, https_port: int) -> None:
        super().__init__(conn)
        self.https_port = https_port

    def head_received(self, head: Head | None, data: bytes, body: int) -> bool:
        if head is None or not head.target.startswith("/"):
            self.refuse(Refusal(400, "bad-request", "malformed request"))
            return False
        host = urlsplit("//" + head.headers.get("host", "localhost")).hostname or "localhost"
        if ":" in host:
            host = f"[{host}]"
        location = f"https://{host}:{self.https_port}{head.target}"
        self.conn.send(
            f"HTTP/1.1 308 Permanent Redirect\r\nLocation: {location}\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        self.conn.close("redirected")
        return False


class AiohttpBridge(Handler):
    """Feeds a connection's bytes and flow control to aiohttp's protocol."""

    __slots__ = ("proto",)

    def __init__(self, conn: Connection, proto: RequestHandler) -> None:
        super().__init__(conn)
        self.proto = proto

    def frame_received(self, frame: bytes) -> None:
        self.proto.data_received(frame)

    def connection_lost(self, reason: str) -> None:
        self.proto.connection_lost(None)

    def writing_paused(self) -> None:
        self.proto.pause_writing()

    def writing_resumed(self) -> None:
        self.proto.resume_writing()


class SseSubscriber(Subscriber):
    """One ``/sse`` stream: the hub writes events into a queue that its request task drains."""

    __slots__ = ("chunks", "queued", "ready", "send_queue")

    def __init__(self, service: HubService, user: str) -> None:
        super().__init__(service.hub, user, "sse")
        self.chunks: list[bytes] = []
        self.queued = 0
        self.send_queue = service.hub.limits.write_buffer_high
        self.ready = asyncio.Event()

    def write(self, data: bytes) -> None:
        self.chunks.append(data)
        self.queued += len(data)
        self.ready.set()

    @property
    def congested(self) -> bool:
        return self.queued >= self.send_queue

    def disconnect(self, reason: str) -> None:
        self.chunks.append(b": closed: " + reason.encode() + b"\n\n")
        self.chunks.append(b"")  # the end marker
        self.ready.set()


class WebFront:
    def __init__(
        self,
        service: HubService,
        public_topics: frozenset[str],
        api_key: str,
        allowed_origins: tuple[str, ...],
        ssl: SSLContext | None = None,
    ) -> None:
        self.service = service
        self.public_topics = public_topics
        self.api_key = api_key
        self.allowed_origins = allowed_origins
        self.sessions: set[WsSession] = set()
        self.server = TcpServer(
            lambda conn: HttpSniffer(conn, self),
            name="https" if ssl else "http",
            limits=service.config.limits,
            ssl=ssl,
            flusher=service.flusher,
        )
        self.redirect: TcpServer | None = None
        self.direct = DirectRoutes()
        self.runner = web.AppRunner(
            self._app(), handle_signals=False, access_log=None, handler_cancellation=True
        )
        self._heartbeat: asyncio.TimerHandle | None = None

    @property
    def errors(self) -> Counter[str]:
        return self.server.stats.errors

    def origin_allowed(self, origin: str, host: str) -> bool:
        if "*" in self.allowed_origins or origin in self.allowed_origins:
            return True
        parts = urlsplit(origin)
        return not self.allowed_origins and parts.scheme in ("http", "https") and \
            parts.netloc == host  # fmt: skip

    def check_upgrade(self, head: Head) -> Upgrade | Refusal:
        h = head.headers
        if head.method != "GET" or h.get("upgrade", "").lower() != "websocket" or \
                "upgrade" not in h.get("connection", "").lower():  # fmt: skip
            return Refusal(400, "not-websocket", "/ws takes a WebSocket upgrade")
        if h.get("sec-websocket-version") != "13":
            return Refusal(426, "ws-version", "only WebSocket version 13",
                           {"Sec-WebSocket-Version": "13"})  # fmt: skip
        key = h.get("sec-websocket-key", "")
        if not ws.valid_key(key):
            return Refusal(400, "ws-key", "missing or malformed Sec-WebSocket-Key")
        origin = h.get("origin")
        if origin is not None and not self.origin_allowed(origin, h.get("host", "")):
            return Refusal(403, "origin", f"origin {origin} is not allowed")
        query = head.query()
        token = query["token"][0] if "token" in query else middleware.bearer_token(h)
        session = None
        if token is not None:
            try:
                session = self.service.accounts.session(token)
            except AuthError as exc:
                return Refusal(401, exc.code, str(exc))
        try:
            topics = [check_topic(t) for t in query.get("topic", [])]
        except HubError as exc:
            return Refusal(400, exc.code, str(exc))
        hidden = [t for t in topics if t.startswith(("#", "@")) or t not in self.public_topics]
        if hidden and session is None:
            return Refusal(403, "not-public", f"{hidden[0]} is not a public topic")
        return Upgrade(key, session, topics)

    def accept(
        self, conn: Connection, upgrade: Upgrade, after_lost: Callable[[], None] | None = None
    ) -> WsSession | None:
        """Answer 101 and make ``conn`` a WebSocket session."""
        conn.send(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + ws.accept_key(upgrade.key.encode()) + b"\r\n\r\n"
        )
        session = WsSession(conn, self, after_lost)
        conn.replace_handler(session)
        try:
            session.start(upgrade.session, upgrade.topics)
        except HubError as exc:  # a topic the user may not read
            session.close(ws.POLICY, str(exc)[:120], exc.code)
            return None
        return session

    async def start(
        self,
        host: str,
        port: int,
        redirect: tuple[str, int] | None = None,
        reuse_port: bool = False,
    ) -> None:
        """Listen on ``host:port``; with TLS and ``redirect``, also send plain HTTP requests on
        ``redirect`` to their https URL."""
        await self.runner.setup()
        await self.server.start(host, port, reuse_port=reuse_port)
        if redirect is not None:
            https_port = self.server.address[1]
            self.redirect = TcpServer(
                lambda conn: HttpsRedirect(conn, https_port),
                name="http-redirect",
                limits=self.service.config.limits,
            )
            await self.redirect.start(*redirect, reuse_port=reuse_port)
        self._beat()

    async def shutdown(self, grace: float | None = None) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        for session in list(self.sessions):
            session.close(ws.GOING_AWAY, "server shutting down", "shutdown")
        await self.runner.cleanup()
        await self.server.shutdown(grace)
        if self.redirect is not None:
            await self.redirect.shutdown(0)

    def _beat(self) -> None:
        limits = self.service.hub.limits
        now = self.service.hub.clock()
        for session in list(self.sessions):
            session.heartbeat(now)
        period = max(0.05, min(limits.ws_ping_interval, limits.ws_timeout) / 4)
        self._heartbeat = asyncio.get_running_loop().call_later(period, self._beat)

    # -- the aiohttp side -------------------------------------------------------------------------
    def _app(self) -> web.Application:
        limits = self.service.hub.limits
        app = web.Application(client_max_size=limits.api_max_body)
        files = FileApi(self.service, self._session)
        self.chain = middleware.install(
            app, csp=CSP, origins=self.allowed_origins, max_body=limits.api_max_body,
            rate=limits.api_rate, burst=limits.api_burst,
            rate_limited=lambda r: r.path.startswith("/api/"),
            verify=self.service.accounts.session,
            auth_skip=lambda r: r.path in API_KEY_PATHS,
            request_timeout=limits.request_timeout,
            streaming=lambda r: r.path in ("/sse", "/ws"),
            clock=self.service.hub.clock, body_exempt=files.streams_body,
        )  # fmt: skip
        page = resources.files("wirekit.hub") / "static"
        self._page = {name: page.joinpath(name).read_bytes() for name in PAGE_FILES}
        for path, handler in (
            ("/", self._index),
            ("/static/{name}", self._static),
            ("/healthz", self._healthz),
            ("/readyz", self._readyz),
        ):
            app.router.add_get(path, asynchronous(handler))
            self.direct.add(path, handler)
        app.router.add_get("/ws", self._late_upgrade)
        app.router.add_get("/sse", self._sse)
        api = spec(*files.openapi())
        RestApi(self.service, self.api_key, self._session, api).add_routes(app.router, self.direct)
        files.add_routes(app.router)
        return app

    def serve_directly(self, conn: Connection, head: Head, remote: str | None) -> bool | None:
        """Answer ``head``'s request without aiohttp if it is a plain GET of a direct route
        (:mod:`wirekit.http.direct`), through the same chain: whether the connection goes on
        (``Connection: close`` ends it); ``None`` if it is not one."""
        secure = self.server.ssl is not None
        request = parse_request(head.method, head.target, head.version, head.fields, remote,
                                secure)  # fmt: skip
        if request is None:
            return None
        handler = self.direct.resolve(request)
        if handler is None:
            return None
        chain = self.chain
        response = chain.chain.respond(request, handler)
        for hook in chain.headers:
            hook(request, response)
        keep_alive = "close" not in request.headers.get(hdrs.CONNECTION, "").lower()
        conn.send(encode_response(response, keep_alive))
        if not keep_alive:
            conn.close("connection-close")
        return keep_alive

    def _file(self, name: str) -> web.Response:
        return web.Response(
            body=self._page[name],
            content_type=PAGE_FILES[name],
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    def _index(self, request: Request) -> web.Response:
        return self._file("index.html")

    def _static(self, request: Request) -> web.Response:
        name = request.match_info["name"]
        if name not in PAGE_FILES or name == "index.html":
            return problem(404, "not-found", f"no file {name}")
        return self._file(name)

    def _healthz(self, request: Request) -> web.Response:
        """Liveness (200 while the process serves), with readiness in the body."""
        reason = self.service.not_ready
        return json_response({"status": "ok", "ready": not reason, "reason": reason or None})

    def _readyz(self, request: Request) -> web.Response:
        """Readiness: 503 while the node cannot serve (its Redis is unreachable)."""
        reason = self.service.not_ready
        if reason:
            return json_response({"status": "not-ready", "reason": reason}, status=503)
        return json_response({"status": "ready"})

    async def _late_upgrade(self, request: web.Request) -> web.StreamResponse:
        """An upgrade on a connection aiohttp already serves (a client's keep-alive pool): the
        connection leaves aiohttp for a :class:`WsSession`, and this request's task waits,
        holding aiohttp off, until the connection closes (aiohttp then cancels it)."""
        version = f"HTTP/{request.version.major}.{request.version.minor}"
        head = Head(request.method, request.path_qs, version, list(request.headers.items()))
        outcome = self.check_upgrade(head)
        if isinstance(outcome, Refusal):
            self.errors[outcome.code] += 1
            return problem(outcome.status, outcome.code, outcome.detail, outcome.headers)
        transport = request.transport
        assert transport is not None
        conn = cast(Connection, transport.get_protocol())
        bridge = cast(AiohttpBridge, conn.handler)
        self.accept(conn, outcome, lambda: bridge.proto.connection_lost(None))
        await asyncio.get_running_loop().create_future()  # cancelled when the socket closes
        raise AssertionError("unreachable")

    async def _sse(self, request: web.Request) -> web.StreamResponse:
        topics = request.query.getall("topic", [])
        if len(topics) != 1:
            return problem(400, "usage", "give exactly one ?topic=")
        try:
            name = check_topic(topics[0])
        except HubError as exc:
            return problem(400, exc.code, str(exc))
        token = request.query.get("token")
        user = ""
        logged_in = token is not None or middleware.SESSION in request
        if logged_in or name.startswith(("#", "@")) or name not in self.public_topics:
            user = self._session(request, token).user
        since = request.headers.get("Last-Event-ID") or request.query.get("since")
        if since is not None and not since.isdigit():
            return problem(400, "usage", "Last-Event-ID and since are offsets: integers >= 0")
        hub = self.service.hub
        sub = SseSubscriber(self.service, user)
        try:  # may they read it? (the store's head if this node did not follow it)
            log_ = hub.subscribe(sub, name)
        except HubError as exc:
            return problem(HUB_STATUS.get(exc.code, 400), exc.code, str(exc))
        # What comes in until resume() below is not written (sub has no cursor yet): resume
        # replays it from the head as of now.
        head = log_.head
        transport = request.transport
        assert transport is not None
        try:
            response = web.StreamResponse(headers={
                "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no"})  # fmt: skip
            await response.prepare(request)
            hello = {"topic": name, "head": head, "epoch": log_.epoch}
            await response.write(b"event: hello\ndata: " + orjson.dumps(hello) + b"\n\n")
            hub.resume(sub, name, head if since is None else int(since), None)
            await self._stream(sub, response, cast(Connection, transport.get_protocol()))
        finally:
            hub.unsubscribe(sub, name)
        return response

    async def _stream(
        self, sub: SseSubscriber, response: web.StreamResponse, conn: Connection
    ) -> None:
        keepalive = self.service.hub.limits.ws_ping_interval
        while True:
            try:
                async with asyncio.timeout(keepalive):
                    await sub.ready.wait()
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                conn.touch()  # a listener never sends: its stream is what keeps it open
                continue
            sub.ready.clear()
            chunks, sub.chunks, sub.queued = sub.chunks, [], 0
            if chunks and chunks[-1] == b"":
                await response.write(b"".join(chunks))
                return
            await response.write(b"".join(chunks))
            conn.touch()
            if sub.behind_since is not None:
                sub.catch_up()

    def _session(self, request: Request, token: str | None = None) -> Session:
        """The caller's session: from the auth middleware, or from ``token``."""
        if token is None:
            session: Session | None = request.get(middleware.SESSION)
            if session is None:
                raise Problem(401, "login-required", "send Authorization: Bearer TOKEN",
                              {"WWW-Authenticate": "Bearer"})  # fmt: skip
            return session
        try:
            return self.service.accounts.session(token)
        except AuthError as exc:
            raise Problem(401, exc.code, str(exc)) from None
