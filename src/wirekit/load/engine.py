"""The load engine: connections, the closed and open models, timeouts and the stop rule.

Closed model: each connection keeps ``pipeline`` requests in flight and sends the next as soon
as one completes (after ``think`` seconds, if set). Open model: requests are due at the times of
a :class:`~wirekit.load.schedule.Schedule`; each due request goes to a connection with a free
slot, or waits in a backlog until one frees up, and its latency counts from the time it was due
(coordinated omission corrected). Scheduler lag (due time to dispatch, when a slot was free) is
recorded so a generator that cannot keep its own schedule is caught.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any, cast

from ..io.hrtimer import HighResTimer
from ..io.server import make_framer
from ..limits import DEFAULTS
from .http import HttpConnection, ScenarioConnection
from .raw import DatagramConnection, RawTarget, StreamConnection
from .recorder import Recorder, clamp_us
from .scenario import Scenario, VirtualUser
from .schedule import NS, Schedule, Step
from .target import HttpTarget
from .ws import WsConnection

Conn = HttpConnection | StreamConnection | DatagramConnection | WsConnection

MAX_BACKLOG = 1_000_000  # due requests waiting for a free connection slot
DISPATCH_AHEAD_NS = 100_000  # one timer wake-up sends what is due this soon
HANDSHAKE_RETRY = 0.05  # pause before reconnecting after a refused WebSocket upgrade
SWEEP_PERIOD = 0.1
PROGRESS_PERIOD = 1.0


@dataclass
class LoadConfig:
    target: HttpTarget | RawTarget
    connections: int = 10
    duration: float | None = 10.0
    count: int | None = None
    pipeline: int = 1
    think: float = 0.0
    steps: list[Step] | None = None  # set: open model
    poisson: bool = False
    timeout: float = 10.0
    connect_timeout: float = 5.0
    ssl: ssl.SSLContext | None = None
    seed: int | None = None
    scenario: Scenario | None = None
    fanout: int = 0  # ws:// pub/sub: this many subscribers, one publisher
    subscribe: bytes | None = None


def connect_error_kind(exc: BaseException) -> str:
    if isinstance(exc, socket.gaierror):
        return "dns"
    if isinstance(exc, TimeoutError):
        return "connect-timeout"
    if isinstance(exc, ssl.SSLError):
        return "tls"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, "connect-error").lower()
    return "connect-error"


class Engine:
    def __init__(self, config: LoadConfig, start_ns: int | None = None) -> None:
        self.config = config
        self.recorder = Recorder(start_ns or perf_counter_ns())
        target = config.target
        if isinstance(target, HttpTarget):
            self.request = target.request.encode(target.host_header)
        else:
            self.request = target.request()
        self.issued = 0
        self.stopping = False
        self.conns: set[Conn] = set()
        self.slots: deque[Conn] = deque()  # open model: one entry per free slot
        self.backlog: deque[int] = deque()
        self.schedule: Schedule | None = None
        self._abort_reasons: dict[Conn, str] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._done: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._timer: HighResTimer | None = None  # the open model's dispatch timer
        self._stopped_at = 0
        self._users = 0
        self._address = config.target.host
        self._sweep_period = min(SWEEP_PERIOD, config.timeout / 4)  # timeouts ~ 25% late at most
        self.in_flight = 0
        # Closed model, no think time, no count, fixed requests, not stopping: a completed
        # request's connection sends the next at once (see completed() and HttpConnection).
        self.refill = (
            config.steps is None
            and config.think <= 0
            and config.count is None
            and config.scenario is None
        )

    # -- running ------------------------------------------------------------------------------
    async def run(self, progress: Callable[[Engine], None] | None = None) -> Recorder:
        cfg = self.config
        loop = self._loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        rec = self.recorder
        wait = rec.start_ns - perf_counter_ns()
        if wait > 0:  # worker processes start together at the parent's chosen instant
            await asyncio.sleep(wait / NS)
        if cfg.steps is not None:
            self.schedule = Schedule(cfg.steps, rec.start_ns, cfg.poisson, cfg.seed)
        try:  # resolve once, like wrk: the run measures the server, not the resolver
            async with asyncio.timeout(cfg.connect_timeout):
                infos = await loop.getaddrinfo(
                    cfg.target.host, cfg.target.port, type=socket.SOCK_STREAM
                )
            self._address = str(infos[0][4][0])
        except (OSError, TimeoutError) as exc:
            kind = "dns" if isinstance(exc, socket.gaierror) else connect_error_kind(exc)
            for _ in range(min(cfg.connections, cfg.count or cfg.connections)):
                self._failed_attempt(kind)
            self._stop()
            return rec
        for _ in range(cfg.connections):
            self._spawn(self._open())
        timers = self._timers
        timers["sweep"] = loop.call_later(self._sweep_period, self._sweep)
        if progress is not None:
            timers["progress"] = loop.call_later(PROGRESS_PERIOD, self._progress, progress)
        if self.schedule is not None:
            self._timer = HighResTimer(loop, self._dispatch)
            self._arm()
        elif cfg.duration is not None:
            # From the planned start, not from now: worker processes may get here late.
            end = rec.start_ns + int(cfg.duration * NS)
            timers["stop"] = loop.call_later(max(0.0, (end - perf_counter_ns()) / NS), self._stop)
        try:
            await self._done.wait()
        finally:
            for handle in timers.values():
                handle.cancel()
            if self._timer is not None:
                self._timer.close()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for conn in list(self.conns):
                if conn.transport is not None:
                    conn.transport.abort()
        return rec

    @property
    def elapsed_ns(self) -> int:
        end = self._stopped_at or perf_counter_ns()
        return max(1, end - self.recorder.start_ns)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self, pause: float = 0.0) -> None:
        """Open one connection, retrying (with a short backoff) while the run goes on."""
        cfg = self.config
        assert self._loop is not None
        if pause:
            await asyncio.sleep(pause)
        delay = 0.01
        while not self.stopping:
            try:
                async with asyncio.timeout(cfg.connect_timeout):
                    conn = await self._connect()
            except (OSError, TimeoutError) as exc:
                self._failed_attempt(connect_error_kind(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if self.stopping:
                assert conn.transport is not None
                conn.transport.abort()
                return
            sock = conn.transport.get_extra_info("socket") if conn.transport else None
            if sock is not None and sock.type == socket.SOCK_STREAM:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conns.add(conn)
            if not isinstance(conn, WsConnection):  # that one calls ready() once upgraded
                self.ready(conn)
            return

    async def _connect(self) -> Conn:
        cfg = self.config
        target = cfg.target
        assert self._loop is not None
        if target.scheme == "udp":
            _, udp = await self._loop.create_datagram_endpoint(
                self._protocol, remote_addr=(self._address, target.port)
            )
            return cast(Conn, udp)
        _, conn = await self._loop.create_connection(
            self._protocol,
            self._address,
            target.port,
            ssl=cfg.ssl,
            server_hostname=target.host if cfg.ssl is not None else None,
        )
        return cast(Conn, conn)

    def _protocol(self) -> asyncio.BaseProtocol:
        # HttpConnection is an asyncio Protocol by its methods only (see load/http.py)
        return cast(asyncio.BaseProtocol, self._new_connection())

    def _new_connection(self) -> Conn:
        target = self.config.target
        if isinstance(target, RawTarget):
            if target.scheme == "udp":
                return DatagramConnection(self, self.request)
            if target.scheme == "ws":
                return WsConnection(self, target.host_header, target.path, self.request)
            framer = make_framer(target.framing, DEFAULTS)  # type: ignore[arg-type]
            assert framer is not None
            return StreamConnection(self, self.request, framer)
        scenario = self.config.scenario
        if scenario is None:
            return HttpConnection(self, self.request)
        self._users += 1
        return ScenarioConnection(
            self, VirtualUser(scenario, target.host_header, self._users, self.config.seed)
        )

    def _failed_attempt(self, kind: str) -> None:
        """A connection attempt failed: that is one request that could not be sent."""
        now = perf_counter_ns()
        if self.schedule is None:
            if not self._may_issue():
                return
            self.issued += 1
        self.recorder.failure(kind, now)
        self._check_done()

    def ready(self, conn: Conn) -> None:
        """The connection can take requests: fill its slots."""
        for _ in range(self.config.pipeline):
            self._free_slot(conn)

    # -- the two models -----------------------------------------------------------------------
    def _may_issue(self) -> bool:
        count = self.config.count
        return not self.stopping and (count is None or self.issued < count)

    def _send(self, conn: Conn, intended: int) -> None:
        if conn.send(intended):
            self.in_flight += 1
            return
        # A scenario request that needs a variable this user has not extracted yet.
        self.recorder.failure("missing-variable", perf_counter_ns())
        assert self._loop is not None
        self._loop.call_soon(self._retry_slot, conn)

    def _retry_slot(self, conn: Conn) -> None:
        if conn in self.conns:
            self._free_slot(conn)

    def _free_slot(self, conn: Conn) -> None:
        if self.schedule is not None:
            if self.backlog:
                self._send(conn, self.backlog.popleft())
            else:
                self.slots.append(conn)
            return
        if not self._may_issue():
            self._check_done()
            return
        think = self.config.think
        if think > 0:
            assert self._loop is not None
            self._loop.call_later(think, self._send_closed, conn)
        else:
            self.issued += 1
            self._send(conn, perf_counter_ns())

    def _send_closed(self, conn: Conn) -> None:
        if conn in self.conns and self._may_issue():
            self.issued += 1
            self._send(conn, perf_counter_ns())
        else:
            self._check_done()

    def _arm(self) -> None:
        sched = self.schedule
        assert sched is not None and self._loop is not None
        if sched.next is None:
            self._stop()
            return
        assert self._timer is not None
        self._timer.at(sched.next)

    def _dispatch(self) -> None:
        sched = self.schedule
        assert sched is not None
        now = perf_counter_ns()
        rec = self.recorder
        slots, backlog, conns = self.slots, self.backlog, self.conns
        # Requests due within DISPATCH_AHEAD leave now, with their latency counted from now:
        # one wake-up serves several requests at high rates, and none is ever counted as sent
        # earlier than it was. Late ones keep their due time (coordinated omission corrected).
        horizon = now + DISPATCH_AHEAD_NS
        while sched.next is not None and sched.next <= horizon:
            due = min(sched.next, now)
            sched.advance()
            if not self._may_issue():
                break
            self.issued += 1
            conn = None
            while slots:
                candidate = slots.popleft()
                if candidate in conns:
                    conn = candidate
                    break
            if conn is not None:
                self._send(conn, due)
                rec.lag.record(clamp_us(now - due))
            elif len(backlog) < MAX_BACKLOG:
                backlog.append(due)
            else:
                rec.failure("backlog-full", now)
        if self._may_issue():
            self._arm()
        else:
            self._stop()

    # -- called by connections ----------------------------------------------------------------
    def completed(self, conn: Conn, keep_alive: bool) -> None:
        if keep_alive and self.refill:
            # The closed model's common case, short: the next request goes at once (the
            # in-flight count stays), and the stop rule has nothing to check (nor does
            # ``issued``, which only bounds a run with a count).
            conn.send(perf_counter_ns())
            return
        self.in_flight -= 1
        if not keep_alive:
            self._abort_reasons[conn] = "closed-by-server"
            if conn.transport is not None:
                conn.transport.close()
        else:
            self._free_slot(conn)
        self._check_done()

    def broken(self, conn: Conn, kind: str) -> None:
        self._abort_reasons[conn] = kind
        if conn.transport is not None:
            conn.transport.abort()

    def lost(self, conn: Conn, exc: Exception | None) -> None:
        self.conns.discard(conn)
        reason = self._abort_reasons.pop(conn, None)
        if conn.inflight:
            kind = reason or ("closed-mid-response" if conn.partial else "closed-by-server")
            now = perf_counter_ns()
            for _ in conn.inflight:
                self.recorder.failure(kind, now)
            self.in_flight -= len(conn.inflight)
            conn.inflight.clear()
        if not self.stopping:
            self._spawn(self._open(HANDSHAKE_RETRY if reason == "ws-handshake" else 0.0))
        self._check_done()

    def handshake_failed(self, conn: Conn, kind: str) -> None:
        """The connection opened but its upgrade was refused: one failed attempt."""
        self._failed_attempt(kind)
        self.broken(conn, kind)

    # -- timers -------------------------------------------------------------------------------
    def _stop(self) -> None:
        """No new requests. Those in flight, and due ones still waiting for a free connection,
        get ``timeout`` seconds; then the waiting ones count as ``not-sent``."""
        if self.stopping:
            return
        self.stopping = True
        self.refill = False
        self._stopped_at = perf_counter_ns()
        if self.backlog:
            assert self._loop is not None
            self._timers["give-up"] = self._loop.call_later(self.config.timeout, self._give_up)
        self._check_done()

    def _give_up(self) -> None:
        now = perf_counter_ns()
        for _ in self.backlog:  # due, never sent: no connection came free in time
            self.recorder.failure("not-sent", now)
        self.backlog.clear()
        self._check_done()

    def _check_done(self) -> None:
        if self._done is None or self._done.is_set():
            return
        count = self.config.count
        if count is not None and not self.stopping and self.issued >= count:
            self.stopping = True
            self.refill = False
        if self.stopping and self.in_flight == 0 and not self.backlog:
            if not self._stopped_at:
                self._stopped_at = perf_counter_ns()
            self._done.set()

    def _sweep(self) -> None:
        """Abort connections whose oldest request has waited longer than ``timeout``."""
        now = perf_counter_ns()
        limit = int(self.config.timeout * NS)
        for conn in list(self.conns):
            if conn.inflight and now - conn.inflight[0][1] > limit:
                self.broken(conn, "timeout")
        assert self._loop is not None
        self._timers["sweep"] = self._loop.call_later(self._sweep_period, self._sweep)

    def _progress(self, callback: Callable[[Engine], None]) -> None:
        callback(self)
        assert self._loop is not None
        self._timers["progress"] = self._loop.call_later(PROGRESS_PERIOD, self._progress, callback)
