"""``wirekit serve``: the hub with its fronts, started and stopped as one service."""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import secrets
import socket
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from argon2 import PasswordHasher
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..errors import UsageError, WirekitError
from ..io.lifecycle import stop_on_signals
from ..io.loop import run
from ..io.metrics import MetricsServer
from ..io.server import Flusher, TcpServer
from ..io.sockets import format_hostport, reserve_port
from ..io.stats import ServerSnapshot
from ..io.tls import server_context
from ..io.workers import Supervisor, WorkerLink, report_until
from ..limits import Limits
from .accounts import REFRESH_TTL, TOKEN_TTL, Accounts, load_api_key, load_key
from .chat import ChatSession
from .engine import Hub
from .store import MAX_LENGTH, PRESENCE_TTL, SqliteStore, Store
from .web import WebFront

if TYPE_CHECKING:
    from .cluster import Cluster

log = logging.getLogger("wirekit.hub")

OVERDUE_PERIOD = 1.0
# Subscribers handed queued publications per loop turn: a delivery pass over a big room is cut
# into steps, with the sockets read in between (see Hub.flush_some).
FANOUT_STEP = 128


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
    engine: str | None = None  # redis://HOST:PORT/DB: the multi-node engine; None: embedded
    presence_ttl: float = PRESENCE_TTL  # seconds before a crashed node's users go offline
    retention_length: int = MAX_LENGTH  # messages kept per log (Redis engine)
    retention_age: float = 0.0  # seconds messages are kept (Redis engine; 0: no age limit)


class HubCollector(Collector):
    """The engine's counters and gauges, read at scrape time."""

    def __init__(self, service: HubService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        service = self.service
        hub = service.hub
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
            ("ready", "1 when the node is ready (its Redis is reachable)",
             0 if service.not_ready else 1),
        ):  # fmt: skip
            yield GaugeMetricFamily(f"wirekit_hub_{name}", doc, value=value)
        cluster = service.cluster
        if cluster is not None:
            yield CounterMetricFamily(
                "wirekit_hub_cluster_received",
                "Messages this node received from Redis (only logs with local subscribers)",
                value=cluster.received,
            )
            yield CounterMetricFamily("wirekit_hub_cluster_reconnects",
                                      "Times the Redis subscription was re-established",
                                      value=cluster.reconnects)  # fmt: skip


def raise_fd_limit() -> int:
    """Raise the open-files soft limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class HubService:
    def __init__(self, config: HubConfig, hasher: PasswordHasher | None = None) -> None:
        self.config = config
        # Every front's sends go out through one flusher, which first hands the hub's queued
        # publications to their subscribers (batched delivery), then commits the store.
        self.flusher = Flusher(self._before_flush)
        self.cluster: Cluster | None = None
        self.store: Store
        if config.engine is None:
            # Group commit: appends of one loop turn share a transaction, committed before
            # that turn's coalesced writes go out, so nothing is delivered before it is stored.
            self.store = SqliteStore(config.data_dir, defer=asyncio.get_running_loop().call_soon)
            key = load_key(config.data_dir)
            api_key = config.api_key or load_api_key(config.data_dir)
        else:
            from .cluster import Cluster  # here: redis-py is imported only for --engine
            from .redisstore import RedisStore

            config.data_dir.mkdir(parents=True, exist_ok=True)  # files and certificates
            store = self.store = RedisStore(config.engine, config.retention_length,
                                            config.retention_age)  # fmt: skip
            self.cluster = Cluster(store, config.presence_ttl)
            key = store.shared_secret("secret", secrets.token_hex(32)).encode()
            api_key = config.api_key or store.shared_secret("api-key", secrets.token_urlsafe(32))
            if not store.persistent():
                log.warning("redis keeps no data across a restart (no AOF, no snapshots): "
                            "history would be lost with it")  # fmt: skip
        self.hub = Hub(self.store, config.limits, wake=self.flusher.request, peers=self.cluster)
        if self.cluster is not None:
            self.cluster.bind(self.hub)
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
            else WebFront(self, config.public_topics, api_key, config.allowed_origins, ssl)
        )  # fmt: skip
        self.metrics: MetricsServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._overdue: asyncio.TimerHandle | None = None

    def _before_flush(self) -> bool:
        more = self.hub.flush_some(FANOUT_STEP)
        self.store.commit()
        return more

    @property
    def not_ready(self) -> str:
        """Why this node should get no traffic now ("" when it is ready)."""
        return "" if self.cluster is None else self.cluster.reason

    @property
    def errors(self) -> Counter[str]:
        """Protocol errors of the chat front, exported with its metrics."""
        return self.chat.stats.errors

    async def start(self, reuse_port: bool = False) -> None:
        cfg = self.config
        raise_fd_limit()
        try:
            if self.cluster is not None:
                await self.cluster.start()
            if cfg.chat is not None:
                await self.chat.start(*cfg.chat, reuse_port=reuse_port)
            if self.web is not None and cfg.http is not None:
                redirect = cfg.http_redirect if self.web.server.ssl is not None else None
                await self.web.start(*cfg.http, redirect, reuse_port=reuse_port)
            if cfg.metrics is not None:
                collectors: list[Collector] = [HubCollector(self)]
                if self.web is not None:
                    collectors.append(self.web.chain.metrics)
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
        if self.cluster is not None:
            await self.cluster.close()
        self.store.close()

    def _check_overdue(self) -> None:
        for sub in self.hub.overdue(self.hub.clock()):
            log.warning("disconnecting a subscriber that stayed behind", extra={"user": sub.user})
            self.hub.detach(sub)
            sub.disconnect("too-slow")
        self._overdue = asyncio.get_running_loop().call_later(OVERDUE_PERIOD, self._check_overdue)


async def serve_until_stopped(
    config: HubConfig, reuse_port: bool = False, link: WorkerLink | None = None
) -> None:
    with stop_on_signals() as stop:
        try:
            service = HubService(config)
            await service.start(reuse_port)
        except WirekitError as exc:  # a port in use, Redis unreachable: one line, once
            if link is None:
                raise
            link.failed(str(exc))
            return
        # What exists now (modules, the app, the store) lives as long as the process: out of
        # the collector's sight, a full collection scans only what came later (at 1,000
        # WebSocket connections its pause went from about 20 ms to 2.4 ms).
        gc.freeze()
        await report_until(stop, link, lambda: _announce(service), service.snapshots)
        await service.shutdown()


def _announce(service: HubService) -> None:
    config = service.config
    parts = []
    if config.chat is not None:
        scheme = "chat+tls" if config.cert else "chat"
        parts.append(f"{scheme}://{format_hostport(*service.chat.address)}")
    if service.web is not None:
        scheme = "https" if config.cert else "http"
        parts.append(f"{scheme}://{format_hostport(*service.web.server.address)}")
    if service.metrics is not None:
        parts.append(f"metrics {service.metrics.url}")
    where = config.engine or f"data in {config.data_dir}"
    log.info("hub serving %s (%s)", ", ".join(parts), where, extra={"event": "ready"})


def _worker_main(config: HubConfig, link: WorkerLink) -> None:
    if config.metrics is not None:  # worker i serves its own /metrics on the port + i
        config = replace(config, metrics=(config.metrics[0], config.metrics[1] + link.index))
    run(serve_until_stopped(config, reuse_port=True, link=link))


def serve(config: HubConfig, workers: int = 1) -> int:
    """Blocking entry point of ``wirekit serve``; returns the exit code. With ``workers`` > 1
    (the Redis engine only), that many processes share the ports (SO_REUSEPORT), each a node."""
    if workers <= 1:
        run(serve_until_stopped(config))
        return 0
    if config.engine is None:
        raise UsageError("--workers needs --engine redis://...: the processes share Redis")
    reserved = []
    try:  # reserve the ports here: a port in use fails once, clearly; port 0 gets a number
        if config.chat is not None:
            reserved.append(reserve_port(*config.chat, socket.SOCK_STREAM))
            config = replace(config, chat=(config.chat[0], reserved[-1].getsockname()[1]))
        if config.http is not None:
            reserved.append(reserve_port(*config.http, socket.SOCK_STREAM))
            config = replace(config, http=(config.http[0], reserved[-1].getsockname()[1]))
        return run(_supervise(config, workers))
    finally:
        for sock in reserved:
            sock.close()


async def _supervise(config: HubConfig, workers: int) -> int:
    supervisor = Supervisor(workers, _worker_main, config, config.limits.shutdown_grace)

    def ready() -> None:
        where = [f"chat://{format_hostport(*config.chat)}"] if config.chat else []
        where += [f"http://{format_hostport(*config.http)}"] if config.http else []
        log.info("hub serving %s with %d workers (%s)", ", ".join(where), workers,
                 config.engine, extra={"event": "ready"})  # fmt: skip

    return await supervisor.run(ready)
