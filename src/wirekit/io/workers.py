"""Running a server as N processes that share its ports with SO_REUSEPORT.

The parent reserves each port first (a bound, unlistened SO_REUSEPORT socket: a port in use
fails here, in the parent, as one clear error; port 0 becomes a concrete number), then starts N
worker processes. Each worker binds the same ports with SO_REUSEPORT, so the kernel spreads
connections across them, and reports ``ready`` (or its error) over a pipe, then a statistics
snapshot every second. SIGINT/SIGTERM to the parent is forwarded to the workers, which shut
down gracefully. A worker that dies is restarted with backoff.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from ..errors import UsageError
from ..log import logging_settings, setup_logging
from ..proto.backoff import Backoff
from .lifecycle import stop_on_signals
from .stats import ServerSnapshot

log = logging.getLogger("wirekit.workers")

STATS_PERIOD = 1.0
READY_TIMEOUT = 30.0


@dataclass
class WorkerLink:
    """What a worker process uses to talk to its parent."""

    index: int
    conn: multiprocessing.connection.Connection

    def ready(self) -> None:
        self.conn.send(("ready", None))

    def failed(self, message: str) -> None:
        self.conn.send(("error", message))

    def report(self, snapshots: list[ServerSnapshot]) -> None:
        try:
            self.conn.send(("stats", snapshots))
        except (BrokenPipeError, OSError):
            pass


WorkerTarget = Callable[[Any, WorkerLink], None]


async def report_until(
    stop: asyncio.Event,
    link: WorkerLink | None,
    announce: Callable[[], None],
    snapshots: Callable[[], list[ServerSnapshot]],
) -> None:
    """A server has started: tell the parent (in a worker) or ``announce`` it (alone); then,
    in a worker, report its statistics every :data:`STATS_PERIOD` until ``stop``."""
    if link is None:
        announce()
        await stop.wait()
        return
    link.ready()
    while not stop.is_set():
        link.report(snapshots())
        try:
            async with asyncio.timeout(STATS_PERIOD):
                await stop.wait()
        except TimeoutError:
            pass


def _entry(
    target: WorkerTarget, config: Any, index: int, conn: Any, log_settings: tuple[str, str]
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it sends SIGTERM
    setup_logging(*log_settings)  # the parent's --log-level/--log-format
    target(config, WorkerLink(index, conn))


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    conn: multiprocessing.connection.Connection
    snapshots: list[ServerSnapshot] = field(default_factory=list)


class Supervisor:
    """Starts, watches and stops the worker processes."""

    def __init__(self, count: int, target: WorkerTarget, config: Any, grace: float) -> None:
        if count < 1:
            raise UsageError("--workers must be at least 1")
        self.count = count
        self.target = target
        self.config = config
        self.grace = grace
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: dict[int, _Worker] = {}
        self._stopping = False
        self._restarts = Backoff(base=0.5, cap=10.0, max_attempts=5)
        self._crashed = asyncio.Event()

    def snapshots(self, connections: bool = False) -> list[tuple[str, ServerSnapshot]]:
        return [(str(w.index), s) for w in self._workers.values() for s in w.snapshots]

    async def run(self, ready: Callable[[], None] | None = None) -> int:
        """Start every worker, wait for SIGINT/SIGTERM, stop them. Returns an exit code."""
        crashed = self._crashed = asyncio.Event()
        with stop_on_signals() as stop:
            try:
                return await self._supervise(stop, crashed, ready)
            finally:
                await self._stop_all()

    async def _supervise(
        self, stop: asyncio.Event, crashed: asyncio.Event, ready: Callable[[], None] | None
    ) -> int:
        for index in range(self.count):
            await self._start(index)
        if ready is not None:
            ready()
        while not stop.is_set():
            waiter = asyncio.ensure_future(stop.wait())
            crash = asyncio.ensure_future(crashed.wait())
            await asyncio.wait({waiter, crash}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            crash.cancel()
            if crashed.is_set() and not stop.is_set():
                crashed.clear()
                if not await self._restart_dead():
                    return 1
        return 0

    async def _start(self, index: int) -> None:
        parent_conn, child_conn = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=_entry,
            args=(self.target, self.config, index, child_conn, logging_settings()),
            name=f"wirekit-worker-{index}",
            daemon=True,
        )
        process.start()
        child_conn.close()
        worker = _Worker(index, process, parent_conn)
        self._workers[index] = worker
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[str | None] = loop.create_future()

        def on_message() -> None:
            try:
                kind, payload = parent_conn.recv()
            except (EOFError, OSError):
                loop.remove_reader(parent_conn.fileno())
                if not ready.done():
                    ready.set_result(f"worker {index} exited before it was ready")
                elif not self._stopping:
                    log.error("worker %d died (exit code %s)", index, process.exitcode)
                    self._crashed.set()
                return
            if kind == "ready" and not ready.done():
                ready.set_result(None)
            elif kind == "error" and not ready.done():
                ready.set_result(str(payload))
            elif kind == "stats":
                worker.snapshots = payload

        loop.add_reader(parent_conn.fileno(), on_message)
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                error = await ready
        except TimeoutError:
            error = f"worker {index} was not ready within {READY_TIMEOUT:g}s"
        if error is not None:
            raise UsageError(error)

    async def _restart_dead(self) -> bool:
        for index, worker in list(self._workers.items()):
            if worker.process.is_alive():
                continue
            worker.process.join()
            delay = self._restarts.next_delay()
            if delay is None:
                log.error("worker %d keeps dying; stopping", index)
                return False
            await asyncio.sleep(delay)
            log.warning("restarting worker %d", index)
            await self._start(index)
        return True

    async def _stop_all(self) -> None:
        self._stopping = True
        loop = asyncio.get_running_loop()
        for worker in self._workers.values():
            if worker.process.is_alive() and worker.process.pid is not None:
                worker.process.terminate()  # SIGTERM: graceful shutdown in the worker
        deadline = loop.time() + self.grace + 5.0
        for worker in self._workers.values():
            while worker.process.is_alive() and loop.time() < deadline:
                await asyncio.sleep(0.05)
            if worker.process.is_alive():
                worker.process.kill()
            worker.process.join()
            try:
                loop.remove_reader(worker.conn.fileno())
            except (OSError, ValueError):
                pass
            worker.conn.close()
