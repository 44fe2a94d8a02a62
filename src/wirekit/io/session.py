"""Long-lived connections that survive restarts (seed 14.2.4 done right).

:class:`ReconnectingClient` keeps one connection to a :class:`SessionServer` alive: heartbeats
find a dead peer, reconnects back off with full jitter, and every message stays in the outbox
until the server acknowledges it, so nothing is lost across a server kill and restart. The
server delivers each message to its handler once per session and acknowledges it only after the
handler returned. The wire protocol is :mod:`wirekit.proto.session`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl as ssl_module
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from ..errors import GaveUp, PeerError, UsageError
from ..limits import Limits
from ..proto.backoff import Backoff
from ..proto.session import (
    Acked,
    ClientSession,
    ClientState,
    PeerDead,
    Pushed,
    ServerSession,
    SessionTable,
    Welcomed,
)
from .server import Connection, Handler, TcpServer
from .sockets import format_hostport

log = logging.getLogger("wirekit.session")

MessageHandler = Callable[[bytes, int, bytes], None]
"""``handler(session_id, seq, payload)``: runs once per message; return means "stored"."""


class SessionServer(TcpServer):
    """A :class:`TcpServer` speaking the session protocol to :class:`ReconnectingClient`."""

    def __init__(
        self,
        on_message: MessageHandler,
        *,
        name: str = "session",
        limits: Limits | None = None,
        ssl: ssl_module.SSLContext | None = None,
        max_sessions: int = 100_000,
    ) -> None:
        super().__init__(self._make_handler, name=name, framing="raw", limits=limits, ssl=ssl)
        self.on_message = on_message
        self.table = SessionTable(max_sessions)

    def _make_handler(self, conn: Connection) -> Handler:
        return _SessionHandler(conn, self)


class _SessionHandler(Handler):
    def __init__(self, conn: Connection, server: SessionServer) -> None:
        super().__init__(conn)
        self.server = server
        self.session = ServerSession(server.table, max_frame=server.limits.max_frame)

    def frame_received(self, frame: bytes) -> None:
        session = self.session
        try:
            received = session.receive_data(frame)
        except PeerError as exc:
            self.conn.stats.errors += 1
            self.server.stats.errors[exc.hint] += 1
            log.warning("closing session: %s", exc, extra={"peer": self.conn.peer})
            self.conn.close(exc.hint)
            return
        assert session.session_id is not None or not received
        for msg in received:
            self.server.on_message(session.session_id or b"", msg.seq, msg.payload)
            session.ack(msg.seq)
        out = session.data_to_send()
        if out:
            self.conn.send(out)


@dataclass(frozen=True, slots=True)
class ReconnectStatistics:
    state: str
    connects: int
    disconnects: int
    sent: int
    acked: int
    unacked: int
    resent: int


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, owner: ReconnectingClient) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop: not a subclass
        self.owner._connected(self)

    def data_received(self, data: bytes) -> None:
        self.owner._data(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


class ReconnectingClient:
    """Keeps a session to ``host:port`` alive until :meth:`aclose`.

    ``send`` returns the message's sequence number once it is queued (waiting while the outbox
    is full); ``wait_acked(seq)`` or ``flush()`` wait for the server's acknowledgement. With
    ``backoff.max_attempts`` set, consecutive failed connects beyond it end the client with
    :class:`~wirekit.errors.GaveUp` (raised by the waiting calls).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        session_id: bytes | None = None,
        ssl: ssl_module.SSLContext | None = None,
        backoff: Backoff | None = None,
        connect_timeout: float = 10.0,
        ping_interval: float = 15.0,
        ping_timeout: float = 45.0,
        max_unacked: int = 1024,
        on_push: Callable[[bytes], None] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.address = format_hostport(host, port)
        self._ssl = ssl
        self._backoff = backoff or Backoff(base=0.05, cap=5.0)
        self._connect_timeout = connect_timeout
        self._on_push = on_push
        self.session = ClientSession(
            session_id or os.urandom(16),
            max_unacked=max_unacked,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
        )
        self._protocol: _ClientProtocol | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._progress = asyncio.Event()  # set whenever acks arrive or the state changes
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._acked = 0
        self._connects = self._disconnects = self._resent = 0

    async def start(self) -> None:
        if self._task is not None:
            raise UsageError("client already started")
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"session {self}")

    async def __aenter__(self) -> ReconnectingClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<ReconnectingClient {self.address} {self.session.state.value}>"

    @property
    def connected(self) -> bool:
        return self.session.state is ClientState.READY

    async def wait_connected(self) -> None:
        await self._wait(lambda: self.connected)

    async def send(self, payload: bytes) -> int:
        await self._wait(lambda: not self.session.outbox_full)
        seq = self.session.send(payload)
        self._flush_out()
        return seq

    async def wait_acked(self, seq: int) -> None:
        await self._wait(lambda: self._acked >= seq)

    async def flush(self) -> None:
        """Wait until every message sent so far is acknowledged."""
        await self.wait_acked(self.session.last_sent_seq)

    def statistics(self) -> ReconnectStatistics:
        return ReconnectStatistics(
            state=self.session.state.value,
            connects=self._connects,
            disconnects=self._disconnects,
            sent=self.session.last_sent_seq,
            acked=self._acked,
            unacked=self.session.unacked,
            resent=self._resent,
        )

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._drop_connection()

    # -- internals ----------------------------------------------------------------------------
    async def _wait(self, done: Callable[[], bool]) -> None:
        while not done():
            if self._failure is not None:
                raise self._failure
            if self._task is None:
                raise UsageError("client is not started")
            self._progress.clear()
            await self._progress.wait()

    def _notify(self) -> None:
        self._progress.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    async with asyncio.timeout(self._connect_timeout):
                        _, protocol = await loop.create_connection(
                            lambda: _ClientProtocol(self),
                            self.host,
                            self.port,
                            ssl=self._ssl,
                            server_hostname=self.host if self._ssl else None,
                        )
                except (OSError, TimeoutError, ssl_module.SSLError) as exc:
                    delay = self._backoff.next_delay()
                    if delay is None:
                        raise GaveUp(
                            f"gave up reconnecting to {self.address} after "
                            f"{self._backoff.attempts} attempts: {exc}"
                        ) from None
                    log.info("connect failed, retrying in %.3fs: %s", delay, exc)
                    await asyncio.sleep(delay)
                    continue
                await protocol.lost
                self._drop_connection()
                self._disconnects += 1
                self._notify()
                delay = self._backoff.next_delay() or 0.0
                await asyncio.sleep(delay)
        except GaveUp as exc:
            self._failure = exc
            self._notify()

    def _connected(self, protocol: _ClientProtocol) -> None:
        self._protocol = protocol
        self._connects += 1
        self.session.connection_made(asyncio.get_running_loop().time())
        self._flush_out()
        self._arm_timer()

    def _data(self, protocol: _ClientProtocol, data: bytes) -> None:
        if protocol is not self._protocol:
            return
        loop = asyncio.get_running_loop()
        try:
            events = self.session.receive_data(data, loop.time())
        except PeerError as exc:
            log.warning("server broke the session protocol: %s", exc)
            self._abort()
            return
        for event in events:
            if isinstance(event, Acked):
                self._acked = max(self._acked, event.seq)
            elif isinstance(event, Welcomed):
                self._acked = max(self._acked, event.last_seq)
                if self._connects > 1:  # messages queued before the first connect are not resends
                    self._resent += self.session.unacked
                self._backoff.reset()
            elif isinstance(event, Pushed) and self._on_push is not None:
                self._on_push(event.payload)
        self._flush_out()
        self._notify()

    def _flush_out(self) -> None:
        out = self.session.data_to_send()
        protocol = self._protocol
        if out and protocol is not None and protocol.transport is not None:
            protocol.transport.write(out)

    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.session.get_timer()
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        events = self.session.handle_timer(asyncio.get_running_loop().time())
        if any(isinstance(e, PeerDead) for e in events):
            log.warning("server silent past the heartbeat timeout; reconnecting")
            self._abort()
            return
        self._flush_out()
        self._arm_timer()

    def _abort(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.abort()

    def _drop_connection(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._abort()
        self._protocol = None
        self.session.connection_lost()
