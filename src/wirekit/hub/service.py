"""``wirekit serve``: the hub with its fronts, started and stopped as one service."""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..io.lifecycle import stop_on_signals
from ..io.metrics import MetricsServer
from ..io.server import Flusher, TcpServer
from ..io.sockets import format_hostport
from ..io.stats import ServerSnapshot
from ..io.tls import server_context
from ..limits import Limits
from .accounts import REFRESH_TTL, TOKEN_TTL, Accounts, load_api_key, load_key
from .chat import ChatSession
from .engine import Hub
from .store import SqliteStore
from .web import WebFront

log = logging.getLogger("wirekit.hub")

OVERDUE_PERIOD = 1.0


@dataclass
class HubConfig:
    data_dir: Path = Path("wirekit-data")
    chat: tuple[str, int] | None = ("127.0.0.1", 7000)
    http: tuple[str, int] | None = ("127.0.0.1", 8080)
    public_topics: frozenset[str] = frozenset()
    api_key: str | None = None  # None: the one in DATA/api.key
    allowed_origins: tuple[str, ...] = ()  # empty: same origin only
    http_redirect: tuple[str, int] | None = None  # with TLS: plain HTTP here -> 308 to https
    metrics: tuple[str, int] | None = ("127.0.0.1", 9107)
    limits: Limits = field(default_factory=Limits)
    admins: frozenset[str] = frozenset()  # may change or delete any account, add to any room
    token_ttl: float = TOKEN_TTL  # seconds an access token is valid
    refresh_ttl: float = REFRESH_TTL  # seconds a refresh token is valid
    cert: str | None = None
    key: str | None = None


class HubCollector(Collector):
    """The engine's counters and gauges, read at scrape time."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        hub = self.hub
        for name, doc, value in (
            ("published", "Messages appended to a log", hub.published),
            ("deliveries", "Messages written to subscribers (live and catch-up)", hub.deliveries),
            ("fell_behind", "Times a subscriber's send queue filled and it fell behind",
             hub.fell_behind),
        ):  # fmt: skip
            yield CounterMetricFamily(f"wirekit_hub_{name}", doc, value=value)
        rooms = sum(1 for log in hub.logs.values() if not log.private)
        for name, doc, value in (
            ("rooms", "Rooms", rooms),
            ("users_online", "Users with at least one logged-in connection", len(hub.online)),
            ("subscribers", "Logged-in connections",
             sum(len(conns) for conns in hub.online.values())),
            ("behind", "Subscribers now behind (catching up from the log)", len(hub.behind)),
        ):  # fmt: skip
            yield GaugeMetricFamily(f"wirekit_hub_{name}", doc, value=value)


def raise_fd_limit() -> int:
    """Raise the open-files soft limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class HubService:
    def __init__(self, config: HubConfig, hasher: PasswordHasher | None = None) -> None:
        self.config = config
        # Group commit: appends of one loop turn share a transaction, committed before that
        # turn's coalesced writes go out, so nothing is delivered before it is stored. Every
        # front's sends go out through one flusher, which first hands the hub's queued
        # publications to their subscribers (batched delivery), then commits.
        self.store = SqliteStore(config.data_dir, defer=asyncio.get_running_loop().call_soon)
        self.flusher = Flusher(self._before_flush)
        self.hub = Hub(self.store, config.limits, wake=self.flusher.request)
        key = load_key(config.data_dir)
        self.accounts = Accounts(self.store, key, config.limits, hasher, config.token_ttl,
                                 config.refresh_ttl)  # fmt: skip
        ssl = server_context(config.cert, config.key) if config.cert and config.key else None
        self.chat = TcpServer(
            lambda conn: ChatSession(conn, self),
            name="chat",
            limits=config.limits,
            ssl=ssl,
            flusher=self.flusher,
        )
        self.web = (
            None
            if config.http is None
            else WebFront(self, config.public_topics,
                          config.api_key or load_api_key(config.data_dir),
                          config.allowed_origins, ssl)
        )  # fmt: skip
        self.metrics: MetricsServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._overdue: asyncio.TimerHandle | None = None

    def _before_flush(self) -> None:
        self.hub.flush()
        self.store.commit()

    @property
    def errors(self) -> Counter[str]:
        """Protocol errors of the chat front, exported with its metrics."""
        return self.chat.stats.errors

    async def start(self) -> None:
        cfg = self.config
        raise_fd_limit()
        try:
            if cfg.chat is not None:
                await self.chat.start(*cfg.chat)
            if self.web is not None and cfg.http is not None:
                redirect = cfg.http_redirect if self.web.server.ssl is not None else None
                await self.web.start(*cfg.http, redirect)
            if cfg.metrics is not None:
                collectors: list[Collector] = [HubCollector(self.hub)]
                if self.web is not None:
                    collectors.append(self.web.request_metrics)
                self.metrics = MetricsServer(
                    lambda conns: [("0", s) for s in self.snapshots(conns)], *collectors
                )
                await self.metrics.start(*cfg.metrics)
        except BaseException:
            await self.shutdown(grace=0)
            raise
        self._check_overdue()

    def snapshots(self, connections: bool = False) -> list[ServerSnapshot]:
        servers = [self.chat] if self.config.chat else []
        servers += [self.web.server] if self.web is not None else []
        return [server.statistics(connections=connections) for server in servers]

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a short task (a login) that shutdown waits for or cancels."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self, grace: float | None = None) -> None:
        if self._overdue is not None:
            self._overdue.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.chat.shutdown(grace)
        if self.web is not None:
            await self.web.shutdown(grace)
        if self.metrics is not None:
            await self.metrics.shutdown()
            self.metrics = None
        self.store.close()

    def _check_overdue(self) -> None:
        for sub in self.hub.overdue(self.hub.clock()):
            log.warning("disconnecting a subscriber that stayed behind", extra={"user": sub.user})
            self.hub.detach(sub)
            sub.disconnect("too-slow")
        self._overdue = asyncio.get_running_loop().call_later(OVERDUE_PERIOD, self._check_overdue)


async def serve_until_stopped(config: HubConfig) -> None:
    service = HubService(config)
    with stop_on_signals() as stop:
        await service.start()
        # What exists now (modules, the app, the store) lives as long as the process: out of
        # the collector's sight, a full collection scans only what came later (at 1,000
        # WebSocket connections its pause went from about 20 ms to 2.4 ms).
        gc.freeze()
        parts = []
        if config.chat is not None:
            scheme = "chat+tls" if config.cert else "chat"
            parts.append(f"{scheme}://{format_hostport(*service.chat.address)}")
        if service.web is not None:
            scheme = "https" if config.cert else "http"
            parts.append(f"{scheme}://{format_hostport(*service.web.server.address)}")
        if service.metrics is not None:
            parts.append(f"metrics {service.metrics.url}")
        log.info("hub serving %s (data in %s)", ", ".join(parts), config.data_dir,
                 extra={"event": "ready"})  # fmt: skip
        await stop.wait()
        await service.shutdown()
