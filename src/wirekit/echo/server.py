"""``wirekit echo serve``: TCP and UDP echo with limits, metrics, TLS and worker processes."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field, replace
from typing import cast

from ..errors import UsageError
from ..io.lifecycle import stop_on_signals
from ..io.loop import run
from ..io.metrics import MetricsServer
from ..io.server import Connection, Framing, Handler, TcpServer
from ..io.sockets import format_hostport, reserve_port
from ..io.stats import ServerSnapshot, ServerStats
from ..io.tls import server_context
from ..io.udp import udp_socket
from ..io.workers import Supervisor, WorkerLink, report_until
from ..limits import Limits

log = logging.getLogger("wirekit.echo")


class EchoHandler(Handler):
    """Writes every frame straight back, in the server's framing."""

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self._send = conn.send

    def frame_received(self, frame: bytes) -> None:
        self._send(frame)


class UdpEcho(asyncio.DatagramProtocol):
    """Sends every datagram back to its sender."""

    def __init__(self, stats: ServerStats) -> None:
        self.stats = stats
        self.totals = stats.totals
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop: not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        totals = self.totals
        totals.frames_in += 1
        totals.bytes_in += len(data)
        assert self.transport is not None
        self.transport.sendto(data, addr)
        totals.frames_out += 1
        totals.bytes_out += len(data)

    def error_received(self, exc: Exception) -> None:
        self.stats.errors[type(exc).__name__] += 1


@dataclass
class EchoConfig:
    tcp: tuple[str, int] | None = ("127.0.0.1", 7007)
    udp: tuple[str, int] | None = None
    framing: Framing = "raw"
    limits: Limits = field(default_factory=Limits)
    cert: str | None = None
    key: str | None = None
    metrics: tuple[str, int] | None = None
    recv_buffer: int | None = None
    send_buffer: int | None = None


class EchoService:
    """The TCP and UDP echo servers of one process."""

    def __init__(self, config: EchoConfig) -> None:
        if config.tcp is None and config.udp is None:
            raise UsageError("nothing to serve: give --tcp and/or --udp")
        if (config.cert is None) != (config.key is None):
            raise UsageError("TLS needs both --cert and --key")
        self.config = config
        ssl = server_context(config.cert, config.key) if config.cert and config.key else None
        self.tcp = TcpServer(
            EchoHandler, name="echo", framing=config.framing, limits=config.limits, ssl=ssl
        )
        self.udp_stats = ServerStats("echo", "udp")
        self._udp_transport: asyncio.DatagramTransport | None = None
        self.metrics: MetricsServer | None = None

    async def start(self, *, reuse_port: bool = False) -> None:
        cfg = self.config
        try:
            if cfg.tcp is not None:
                await self.tcp.start(*cfg.tcp, reuse_port=reuse_port)
            if cfg.udp is not None:
                sock = udp_socket(
                    *cfg.udp,
                    recv_buffer=cfg.recv_buffer,
                    send_buffer=cfg.send_buffer,
                    reuse_port=reuse_port,
                )
                self.udp_stats.address = format_hostport(*sock.getsockname()[:2])
                loop = asyncio.get_running_loop()
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: UdpEcho(self.udp_stats), sock=sock
                )
                self._udp_transport = transport
        except BaseException:
            await self.shutdown(grace=0)
            raise

    async def start_metrics(self, host: str, port: int) -> None:
        self.metrics = MetricsServer(lambda conns: [("0", s) for s in self.snapshots(conns)])
        await self.metrics.start(host, port)

    def snapshots(self, connections: bool = False) -> list[ServerSnapshot]:
        snaps = []
        if self.config.tcp is not None:
            snaps.append(self.tcp.statistics(connections=connections))
        if self.config.udp is not None:
            snaps.append(self.udp_stats.snapshot(0.0))
        return snaps

    async def shutdown(self, grace: float | None = None) -> None:
        if self._udp_transport is not None:
            self._udp_transport.close()
            self._udp_transport = None
        await self.tcp.shutdown(grace)
        if self.metrics is not None:
            await self.metrics.shutdown()
            self.metrics = None


async def serve_until_stopped(
    config: EchoConfig, *, reuse_port: bool = False, link: WorkerLink | None = None
) -> None:
    """Serve until SIGINT/SIGTERM, then shut down gracefully."""
    service = EchoService(config)
    with stop_on_signals() as stop:
        try:
            await service.start(reuse_port=reuse_port)
            if config.metrics is not None and link is None:
                await service.start_metrics(*config.metrics)
        except UsageError as exc:
            if link is None:
                raise
            link.failed(str(exc))
            return
        await report_until(stop, link, lambda: _announce(service), service.snapshots)
        await service.shutdown()


def _announce(service: EchoService) -> None:
    cfg = service.config
    parts = []
    if cfg.tcp is not None:
        scheme = "tls" if cfg.cert else "tcp"
        parts.append(f"{scheme}://{format_hostport(*service.tcp.address)}")
    if cfg.udp is not None:
        parts.append(f"udp://{service.udp_stats.address}")
    if service.metrics is not None:
        parts.append(f"metrics {service.metrics.url}")
    log.info("echo serving %s", ", ".join(parts), extra={"event": "ready"})


def _worker_main(config: EchoConfig, link: WorkerLink) -> None:
    run(serve_until_stopped(config, reuse_port=True, link=link))


def serve(config: EchoConfig, workers: int = 1) -> int:
    """Blocking entry point of ``wirekit echo serve``. Returns the exit code."""
    if workers <= 1:
        run(serve_until_stopped(config))
        return 0
    # Reserve the ports here so a port in use fails once, clearly, and port 0 gets a number.
    reserved = []
    try:
        if config.tcp is not None:
            reserved.append(reserve_port(*config.tcp, socket.SOCK_STREAM))
            config = replace(config, tcp=(config.tcp[0], reserved[-1].getsockname()[1]))
        if config.udp is not None:
            reserved.append(reserve_port(*config.udp, socket.SOCK_DGRAM))
            config = replace(config, udp=(config.udp[0], reserved[-1].getsockname()[1]))
        if config.cert and config.key:
            server_context(config.cert, config.key)  # fail here, not in N workers
        return run(_supervise(config, workers))
    finally:
        for sock in reserved:
            sock.close()


async def _supervise(config: EchoConfig, workers: int) -> int:
    supervisor = Supervisor(workers, _worker_main, config, config.limits.shutdown_grace)
    metrics = None
    if config.metrics is not None:
        metrics = MetricsServer(supervisor.snapshots)
        await metrics.start(*config.metrics)

    def ready() -> None:
        where = [f"tcp://{format_hostport(*config.tcp)}"] if config.tcp else []
        where += [f"udp://{format_hostport(*config.udp)}"] if config.udp else []
        log.info("echo serving %s with %d workers", ", ".join(where), workers)

    try:
        return await supervisor.run(ready)
    finally:
        if metrics is not None:
            await metrics.shutdown()
