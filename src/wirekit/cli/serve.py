"""``wirekit serve``: the main job. Until the hub lands it runs the echo services and metrics."""

from __future__ import annotations

from typing import Any

import click

from .common import HOSTPORT
from .echo import run_server, server_options


@click.command(short_help="The main job (now: echo services + metrics).")
@click.option(
    "--tcp", type=HOSTPORT, default="127.0.0.1:7007", show_default=True, help="TCP echo address."
)
@click.option(
    "--udp", type=HOSTPORT, default="127.0.0.1:7007", show_default=True, help="UDP echo address."
)
@click.option(
    "--metrics",
    type=HOSTPORT,
    default="127.0.0.1:9107",
    show_default=True,
    help="Prometheus /metrics, /connections and /healthz.",
)
@server_options
def serve(
    tcp: tuple[str, int], udp: tuple[str, int], metrics: tuple[str, int], **opts: Any
) -> None:
    """Run wirekit's services (now: TCP+UDP echo and metrics) until SIGINT/SIGTERM.

    \b
    Example:
      wirekit serve
      wirekit serve --tcp 0.0.0.0:7007 --workers 2 --tls
    """
    run_server(tcp, udp, metrics, opts)
