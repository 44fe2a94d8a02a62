"""``wirekit discover``: announce and find services with UDP multicast."""

from __future__ import annotations

import json

import click

from ..discover import DEFAULT_GROUP, DEFAULT_PORT, announce, listen
from ..io.loop import run
from ..proto.discovery import ServiceChange
from .common import json_option


@click.group(short_help="Service discovery over UDP multicast.")
def discover() -> None:
    """Service discovery over UDP multicast: announce a service, list the live ones."""


def _group_options(f: click.decorators.FC) -> click.decorators.FC:
    f = click.option(
        "--interface",
        default="0.0.0.0",
        show_default=True,
        help="Local address of the interface to use (127.0.0.1 keeps it on this host).",
    )(f)
    f = click.option(
        "--group-port",
        type=int,
        default=DEFAULT_PORT,
        show_default=True,
        help="Multicast UDP port.",
    )(f)
    return click.option("--group", default=DEFAULT_GROUP, show_default=True,
                        help="Multicast group address.")(f)  # fmt: skip


@discover.command("announce", short_help="Announce a service.")
@click.argument("name")
@click.option("--port", type=int, required=True, help="Port the service listens on.")
@click.option(
    "--interval", type=float, default=5.0, show_default=True, help="Seconds between announcements."
)
@click.option(
    "--ttl",
    type=float,
    default=15.0,
    show_default=True,
    help="Seconds listeners keep the service without a new announcement.",
)
@click.option("--hops", type=int, default=1, show_default=True, help="Multicast TTL (routers).")
@click.option(
    "--loopback/--no-loopback",
    default=True,
    show_default=True,
    help="Let listeners on this host hear the announcements too.",
)
@click.option("--count", type=int, default=None, help="Stop after this many announcements.")
@_group_options
def announce_cmd(
    name: str, port: int, interval: float, ttl: float, hops: int, loopback: bool,
    count: int | None, group: str, group_port: int, interface: str,
) -> None:  # fmt: skip
    """Announce service NAME on --port until SIGINT/SIGTERM (then say goodbye).

    \b
    Example:
      wirekit discover announce api --port 8080
    """
    run(
        announce(
            name, port, group=group, group_port=group_port, interval=interval, ttl=ttl,
            interface=interface, hops=hops, loopback=loopback, count=count,
        )
    )  # fmt: skip


@discover.command("listen", short_help="List services as they come and go.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@json_option
@_group_options
def listen_cmd(
    duration: float | None, as_json: bool, group: str, group_port: int, interface: str
) -> None:
    """Print services as they come up and go down (one line, or JSON object, each).

    \b
    Example:
      wirekit discover listen --duration 30 --json
    """

    def show(change: ServiceChange) -> None:
        s = change.service
        if as_json:
            line = {
                "change": change.change.value, "reason": change.reason, "name": s.name,
                "host": s.host, "port": s.port, "instance": s.instance,
            }  # fmt: skip
            click.echo(json.dumps(line))
        else:
            click.echo(f"{change.change.value:4} {s.name} {s.host}:{s.port} ({change.reason})")

    run(listen(show, group=group, group_port=group_port, interface=interface, duration=duration))
