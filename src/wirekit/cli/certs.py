"""``wirekit certs``: a local CA and server certificates, like mkcert."""

from __future__ import annotations

import click

from ..certs import DEFAULT_NAMES, issue
from .common import emit_json, json_option


@click.command(short_help="Local CA and server certificates.")
@click.argument("names", nargs=-1)
@click.option(
    "--out",
    default="wirekit-data/certs",
    show_default=True,
    help="Directory for ca.pem, ca-key.pem, server.pem, server-key.pem.",
)
@json_option
def certs(names: tuple[str, ...], out: str, as_json: bool) -> None:
    """Create a local CA (once) and a server certificate for NAMES (DNS names or IPs).

    Without NAMES: localhost, 127.0.0.1 and ::1. Clients trust the server with --ca OUT/ca.pem.

    \b
    Example:
      wirekit certs --out ./certs localhost 127.0.0.1 myhost.lan
    """
    issued = issue(out, list(names) or DEFAULT_NAMES)
    info = {
        "ca": str(issued.ca), "ca_created": issued.ca_created, "cert": str(issued.cert),
        "key": str(issued.key), "names": issued.names, "not_after": issued.not_after,
    }  # fmt: skip
    if as_json:
        emit_json(info)
        return
    click.echo(f"{'created' if issued.ca_created else 'reused'} CA  {issued.ca}")
    click.echo(f"certificate  {issued.cert} (key {issued.key})")
    click.echo(f"names        {', '.join(issued.names)}; valid until {issued.not_after}")
