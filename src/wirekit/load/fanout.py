"""``wirekit load ws://... --fanout N``: publish-to-deliver latency through a pub/sub server.

N subscriber WebSockets connect (each sends ``--subscribe`` once, if given), then one publisher
sends ``--body`` at ``--rate`` messages per second, with ``${ts}`` replaced by a send-time
marker ``wk-<ns>-wk``. Every frame a subscriber receives is searched for markers; each one found
is a delivery, its latency the time since that message was sent (the publisher's schedule is
open-model, so a slow server cannot slow the publishing down). At the end, after ``--timeout``
for stragglers, deliveries that never came are counted as ``undelivered``.
"""

from __future__ import annotations

import asyncio
import re
from time import perf_counter_ns
from typing import cast

from ..errors import UsageError
from ..io.hrtimer import HighResTimer
from ..proto.ws import PONG, TEXT, Close, FrameParser, Message, Ping, Violation, client_frame
from .engine import connect_error_kind
from .raw import RawTarget
from .recorder import Recorder, clamp_us
from .schedule import NS, Schedule, Step
from .ws import MAX_FRAME, FrameError, frame_error_kind, handshake, upgrade_response

MARKER = re.compile(rb"wk-(\d{6,20})-wk")
SETTLE = 0.3  # seconds between the last subscription and the first publication
CONNECT_BATCH = 200


class FanoutSocket(asyncio.Protocol):
    """One WebSocket of the fan-out run (subscriber or publisher)."""

    def __init__(self, run: FanoutRun, subscriber: bool) -> None:
        self.run = run
        self.subscriber = subscriber
        request, self._accept = handshake(run.target.host_header, run.target.path)
        self._request = request
        self._buf = bytearray()
        self._reader = FrameParser(server=False, max_message=MAX_FRAME)
        self.upgraded: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_result(False)
        elif not self.run.stopping:
            self.run.recorder.failure("closed-by-server", perf_counter_ns())

    def data_received(self, data: bytes) -> None:
        now = perf_counter_ns()
        rec = self.run.recorder
        rec.received(len(data), now)
        try:
            if not self.upgraded.done():
                self._buf += data
                accepted = upgrade_response(self._buf, self._accept)
                if accepted is None:
                    return
                self.upgraded.set_result(accepted)
                if not accepted:
                    return
                data, self._buf = bytes(self._buf), bytearray()
        except FrameError as exc:
            self._fail(exc.kind, now)
            return
        for event in self._reader.receive_data(data):
            if type(event) is Message:
                if self.subscriber:
                    for match in MARKER.finditer(event.data):
                        sent = int(match[1])
                        rec.response(sent, sent, now, None)
            elif type(event) is Ping:
                self.send(PONG, event.payload)
            elif type(event) is Violation:
                self._fail(frame_error_kind(event), now)
                return
            elif type(event) is Close:
                return  # connection_lost counts it

    def _fail(self, kind: str, now: int) -> None:
        self.run.recorder.failure(kind, now)
        assert self.transport is not None
        self.transport.abort()

    def send(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(opcode, payload))
            self.run.recorder.bytes_out += len(payload)


class FanoutRun:
    def __init__(
        self,
        target: RawTarget,
        subscribers: int,
        steps: list[Step],
        body: bytes,
        subscribe: bytes | None,
        timeout: float,
        connect_timeout: float,
    ) -> None:
        if target.scheme != "ws":
            raise UsageError("--fanout needs a ws:// URL")
        if b"${ts}" not in body:
            raise UsageError("--fanout needs --body with ${ts}, where the send time goes")
        self.target = target
        self.subscribers = subscribers
        self.steps = steps
        self.body = body
        self.subscribe = subscribe
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.recorder = Recorder(perf_counter_ns())
        self.stopping = False
        self.sockets: list[FanoutSocket] = []

    async def _connect(self, subscriber: bool) -> FanoutSocket | None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, sock = await loop.create_connection(
                    lambda: FanoutSocket(self, subscriber), self.target.host, self.target.port
                )
                if not await sock.upgraded:
                    self.recorder.failure("ws-handshake", perf_counter_ns())
                    return None
        except (OSError, TimeoutError) as exc:
            self.recorder.failure(connect_error_kind(exc), perf_counter_ns())
            return None
        self.sockets.append(sock)
        return sock

    async def run(self) -> tuple[Recorder, int]:
        subs: list[FanoutSocket | None] = []
        for first in range(0, self.subscribers, CONNECT_BATCH):
            batch = range(first, min(first + CONNECT_BATCH, self.subscribers))
            subs += await asyncio.gather(*(self._connect(True) for _ in batch))
        live = [s for s in subs if s is not None]
        if self.subscribe is not None:
            for sock in live:
                sock.send(TEXT, self.subscribe)
        publisher = await self._connect(False)
        rec = self.recorder
        if publisher is None or not live:
            self._close()
            return rec, max(1, perf_counter_ns() - rec.start_ns)
        await asyncio.sleep(SETTLE)
        start = perf_counter_ns()
        rec.restart(start)
        published = await self._publish(publisher, start)
        await self._drain(published * len(live))
        elapsed = perf_counter_ns() - start
        self.stopping = True
        missing = published * len(live) - rec.completed
        if missing > 0:
            rec.errors["undelivered"] += missing
        self._close()
        return rec, elapsed

    async def _publish(self, publisher: FanoutSocket, start: int) -> int:
        """Send on schedule until the plan ends; returns how many were published."""
        loop = asyncio.get_running_loop()
        schedule = Schedule(self.steps, start)
        done = loop.create_future()
        count = 0
        rec = self.recorder
        template = self.body

        def dispatch() -> None:
            nonlocal count
            now = perf_counter_ns()
            while schedule.next is not None and schedule.next <= now:
                due = schedule.next
                schedule.advance()
                rec.lag.record(clamp_us(now - due))
                publisher.send(TEXT, template.replace(b"${ts}", b"wk-%d-wk" % perf_counter_ns()))
                count += 1
                rec.sent += 1
            if schedule.next is None:
                if not done.done():
                    done.set_result(None)
            else:
                timer.at(schedule.next)

        timer = HighResTimer(loop, dispatch)
        try:
            assert schedule.next is not None
            timer.at(schedule.next)
            await done
        finally:
            timer.close()
        return count

    async def _drain(self, expected: int) -> None:
        deadline = perf_counter_ns() + int(self.timeout * NS)
        while self.recorder.completed < expected and perf_counter_ns() < deadline:
            await asyncio.sleep(0.02)

    def _close(self) -> None:
        self.stopping = True
        for sock in self.sockets:
            if sock.transport is not None:
                sock.transport.abort()
