"""``wirekit serve``: the main job, the messaging hub."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from ..errors import UsageError
from ..hub.service import HubConfig, serve_until_stopped
from ..io.loop import run
from ..limits import DEFAULTS
from .common import HOSTPORT, build_limits, limit_options, resolve_tls, tls_server_options


@click.command(short_help="The messaging hub: TCP chat, accounts, history, metrics.")
@click.option(
    "--chat",
    type=HOSTPORT,
    default="127.0.0.1:7000",
    show_default=True,
    help="TCP chat address (docs/chat-protocol.md).",
)
@click.option(
    "--metrics",
    type=HOSTPORT,
    default="127.0.0.1:9107",
    show_default=True,
    help="Prometheus /metrics, /connections and /healthz.",
)
@click.option(
    "--data",
    "data_dir",
    default="wirekit-data",
    show_default=True,
    help="Data directory: hub.db (SQLite, WAL), secret.key, certs/.",
)
@click.option(
    "--message-rate",
    type=float,
    default=DEFAULTS.message_rate,
    show_default=True,
    help="Messages per second one connection may send (burst: twice that).",
)
@click.option(
    "--send-queue",
    type=int,
    default=DEFAULTS.write_buffer_high,
    show_default=True,
    help="Bytes queued for a slow reader before it is marked behind.",
)
@click.option(
    "--behind-timeout",
    type=float,
    default=DEFAULTS.behind_timeout,
    show_default=True,
    help="Seconds a reader may stay behind before it is disconnected.",
)
@tls_server_options
@limit_options
def serve(
    chat: tuple[str, int],
    metrics: tuple[str, int],
    data_dir: str,
    message_rate: float,
    send_queue: int,
    behind_timeout: float,
    tls: bool,
    cert: str | None,
    key: str | None,
    **limits: Any,
) -> None:
    """Run the hub until SIGINT/SIGTERM: accounts, rooms, private messages, presence and
    history, stored in DATA (SQLite), served over the TCP chat protocol.

    \b
    Example:
      wirekit serve
      nc 127.0.0.1 7000          # then: /register alice secret123, /join #general, hello
      wirekit serve --chat 0.0.0.0:7000 --tls --data /var/lib/wirekit
    """
    if message_rate <= 0 or send_queue < 1024 or behind_timeout <= 0:
        raise UsageError("--message-rate and --behind-timeout must be > 0, --send-queue >= 1024")
    cert, key = resolve_tls(tls, cert, key, data_dir)
    base = build_limits(
        limits["max_connections"], limits["max_line"], limits["max_frame"],
        limits["idle_timeout"], limits["grace"],
    )  # fmt: skip
    config = HubConfig(
        data_dir=Path(data_dir),
        chat=chat,
        metrics=metrics,
        limits=replace(
            base,
            message_rate=message_rate,
            message_burst=max(1, int(message_rate * 2)),
            write_buffer_high=send_queue,
            write_buffer_low=send_queue // 4,
            behind_timeout=behind_timeout,
        ),
        cert=cert,
        key=key,
    )
    run(serve_until_stopped(config))
