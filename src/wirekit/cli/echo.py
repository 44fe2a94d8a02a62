"""``wirekit echo``: the echo server and its client."""

from __future__ import annotations

from typing import Any

import click

from ..echo import client as echo_client
from ..echo.server import EchoConfig
from ..echo.server import serve as serve_echo
from ..io.loop import run
from ..io.server import FRAMINGS
from .common import (
    HOSTPORT,
    build_limits,
    emit_json,
    json_option,
    limit_options,
    resolve_tls,
    tls_server_options,
)


@click.group(short_help="Echo server and client (TCP, TLS, UDP).")
def echo() -> None:
    """Echo server and client: any bytes in, the same bytes back (TCP, TLS, UDP)."""


def server_options(f: Any) -> Any:
    """The options `echo serve` and `serve` share."""
    f = limit_options(f)
    f = tls_server_options(f)
    f = click.option(
        "--data",
        "data_dir",
        default="wirekit-data",
        show_default=True,
        help="Data directory (TLS certificates live in DATA/certs).",
    )(f)
    f = click.option(
        "--workers",
        type=int,
        default=1,
        show_default=True,
        help="Processes sharing the ports with SO_REUSEPORT.",
    )(f)
    f = click.option("--recv-buffer", type=int, default=None, help="UDP SO_RCVBUF in bytes.")(f)
    f = click.option(
        "--framing",
        type=click.Choice(FRAMINGS),
        default="raw",
        show_default=True,
        help="raw: echo bytes as they come; line: echo each line; "
        "length: echo each u32-length-prefixed frame.",
    )(f)
    return f  # fmt: skip


def run_server(
    tcp: tuple[str, int] | None,
    udp: tuple[str, int] | None,
    metrics: tuple[str, int] | None,
    opts: dict[str, Any],
) -> None:
    cert, key = resolve_tls(opts["tls"], opts["cert"], opts["key"], opts["data_dir"])
    config = EchoConfig(
        tcp=tcp,
        udp=udp,
        framing=opts["framing"],
        limits=build_limits(
            opts["max_connections"], opts["max_line"], opts["max_frame"],
            opts["idle_timeout"], opts["grace"],
        ),
        cert=cert,
        key=key,
        metrics=metrics,
        recv_buffer=opts["recv_buffer"],
    )  # fmt: skip
    raise SystemExit(serve_echo(config, opts["workers"]))


@echo.command("serve", short_help="Run the echo server.")
@click.option(
    "--tcp", type=HOSTPORT, default=None, help="TCP (or TLS) address, e.g. 127.0.0.1:7007."
)
@click.option("--udp", type=HOSTPORT, default=None, help="UDP address, e.g. 127.0.0.1:7007.")
@click.option(
    "--metrics", type=HOSTPORT, default=None, help="Serve /metrics and /connections here."
)
@server_options
def echo_serve(
    tcp: tuple[str, int] | None,
    udp: tuple[str, int] | None,
    metrics: tuple[str, int] | None,
    **opts: Any,
) -> None:
    """Run the echo server until SIGINT/SIGTERM, then shut down gracefully.

    \b
    Example:
      wirekit echo serve --tcp 127.0.0.1:7007 --udp 127.0.0.1:7007 --metrics 127.0.0.1:9107
      wirekit echo serve --tcp :7443 --tls --workers 2
    """
    if tcp is None and udp is None:
        tcp = ("127.0.0.1", 7007)
    run_server(tcp, udp, metrics, opts)


@echo.command("send", short_help="Send a message; print reply and RTT.")
@click.argument("target")
@click.argument("text")
@click.option("--count", type=int, default=1, show_default=True, help="Round trips to make.")
@click.option("--timeout", type=float, default=5.0, show_default=True, help="Seconds per step.")
@click.option("--ca", type=click.Path(dir_okay=False), help="Trust this CA (PEM) for tls://.")
@json_option
def echo_send(
    target: str, text: str, count: int, timeout: float, ca: str | None, as_json: bool
) -> None:
    """Send TEXT to TARGET (tcp://, tls:// or udp://HOST:PORT); print replies and RTTs.

    \b
    Example:
      wirekit echo send tcp://127.0.0.1:7007 hello --count 3
      wirekit echo send tls://localhost:7443 hi --ca wirekit-data/certs/ca.pem --json
    """
    results = run(echo_client.send(target, text.encode(), count=count, timeout=timeout, ca=ca))
    summary = echo_client.summarize(results)
    if as_json:
        emit_json(
            {
                "target": target,
                "replies": [
                    {
                        "seq": r.seq,
                        "reply": r.reply.decode(errors="replace"),
                        "rtt_ms": r.rtt_s * 1000,
                    }
                    for r in results
                ],
                "summary": summary,
            }
        )
        return
    for r in results:
        click.echo(f"{r.reply.decode(errors='replace')}  seq={r.seq} rtt={r.rtt_s * 1000:.3f} ms")
    if count > 1:
        click.echo(
            f"--- {summary['count']:g} round trips: min/avg/max = "
            f"{summary['min_ms']:.3f}/{summary['avg_ms']:.3f}/{summary['max_ms']:.3f} ms"
        )
