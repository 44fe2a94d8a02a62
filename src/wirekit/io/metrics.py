"""Prometheus metrics and per-connection statistics over HTTP.

``/metrics`` serves Prometheus text: per-server totals (connections, bytes, frames, errors by
reason, close reasons, response-time histogram) labelled by ``server`` and ``worker``.
``/connections`` serves JSON with every open connection's counters (seed 14.8.2);
``/healthz`` answers ``ok``. Numbers are computed at scrape time from snapshots, so the serving
hot path pays nothing for them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from aiohttp import web
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from .sockets import bind_error, format_hostport
from .stats import RESPONSE_BUCKETS, ServerSnapshot

SnapshotSource = Callable[[bool], list[tuple[str, ServerSnapshot]]]
"""Returns ``(worker, snapshot)`` pairs; the flag asks for per-connection detail."""


class SnapshotCollector(Collector):
    def __init__(self, source: SnapshotSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        labels = ["server", "transport", "worker"]
        open_ = GaugeMetricFamily("wirekit_connections_open", "Open connections", labels=labels)
        accepted = CounterMetricFamily(
            "wirekit_connections_accepted", "Connections accepted", labels=labels
        )
        rejected = CounterMetricFamily(
            "wirekit_connections_rejected",
            "Connections refused because max_connections was reached",
            labels=labels,
        )
        closed = CounterMetricFamily(
            "wirekit_connections_closed",
            "Connections closed, by reason",
            labels=[*labels, "reason"],
        )
        errors = CounterMetricFamily("wirekit_errors", "Errors by kind", labels=[*labels, "kind"])
        bytes_ = CounterMetricFamily(
            "wirekit_bytes", "Bytes by direction", labels=[*labels, "direction"]
        )
        frames = CounterMetricFamily(
            "wirekit_frames",
            "Frames (TCP framed messages, raw chunks or datagrams)",
            labels=[*labels, "direction"],
        )
        response = HistogramMetricFamily(
            "wirekit_response_seconds", "Time handling one frame", labels=labels
        )
        for worker, snap in self.source(False):
            lv = [snap.name, snap.transport, worker]
            open_.add_metric(lv, snap.open_connections)
            accepted.add_metric(lv, snap.accepted)
            rejected.add_metric(lv, snap.rejected)
            for reason, n in sorted(snap.closed.items()):
                closed.add_metric([*lv, reason], n)
            for kind, n in sorted(snap.errors.items()):
                errors.add_metric([*lv, kind], n)
            bytes_.add_metric([*lv, "in"], snap.bytes_in)
            bytes_.add_metric([*lv, "out"], snap.bytes_out)
            frames.add_metric([*lv, "in"], snap.frames_in)
            frames.add_metric([*lv, "out"], snap.frames_out)
            cumulative, buckets = 0, []
            for bound, n in zip(
                [*RESPONSE_BUCKETS, float("inf")], snap.response_buckets, strict=True
            ):
                cumulative += n
                buckets.append((_bucket_label(bound), cumulative))
            response.add_metric(lv, buckets, snap.response_sum)
        yield from (open_, accepted, rejected, closed, errors, bytes_, frames, response)


def _bucket_label(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


class MetricsServer:
    """An aiohttp server for ``/metrics``, ``/connections`` and ``/healthz``."""

    def __init__(self, source: SnapshotSource, *collectors: Collector) -> None:
        self.source = source
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SnapshotCollector(source))
        for collector in collectors:  # a feature's own metrics (the hub's, ...)
            self.registry.register(collector)
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/connections", self._connections)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None)
        self._site: web.TCPSite | None = None

    async def start(self, host: str, port: int) -> None:
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, host, port)
        try:
            await self._site.start()
        except OSError as exc:
            await self._runner.cleanup()
            raise bind_error(exc, host, port) from None

    @property
    def address(self) -> tuple[str, int]:
        assert self._site is not None and self._site._server is not None
        sockets = getattr(self._site._server, "sockets", None) or []
        name = sockets[0].getsockname()
        return str(name[0]), int(name[1])

    @property
    def url(self) -> str:
        """Where ``/metrics`` is served, for log lines."""
        return f"http://{format_hostport(*self.address)}/metrics"

    async def shutdown(self) -> None:
        await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _connections(self, request: web.Request) -> web.Response:
        body = [{"worker": w, **s.as_dict()} for w, s in self.source(True)]
        return web.Response(text=json.dumps(body, indent=1), content_type="application/json")

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")
