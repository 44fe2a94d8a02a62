"""``wirekit addr``: facts about IP addresses and networks; name resolution."""

from __future__ import annotations

import click

from ..io.loop import run
from ..net.addr import contains, describe, resolve
from .common import emit_json, json_option


@click.command(short_help="IP/CIDR facts; resolve names.")
@click.argument("items", nargs=-1, required=True)
@click.option("--contains", "member", metavar="ADDR", help="Also say whether ADDR is inside.")
@click.option("--resolve", "do_resolve", is_flag=True, help="Treat ITEMS as names to resolve.")
@json_option
def addr(items: tuple[str, ...], member: str | None, do_resolve: bool, as_json: bool) -> None:
    """Describe IPv4/IPv6 addresses and CIDRs, or resolve names (A/AAAA, timed).

    \b
    Example:
      wirekit addr 192.168.1.10/24 --contains 192.168.1.200
      wirekit addr --resolve localhost --json
    """
    results = []
    for item in items:
        if do_resolve:
            r = run(resolve(item))
            info: dict[str, object] = {
                "name": r.name, "a": r.a, "aaaa": r.aaaa, "ms": round(r.seconds * 1000, 3),
            }  # fmt: skip
        else:
            info = describe(item)
            if member is not None:
                info["contains"] = {"address": member, "inside": contains(item, member)}
        results.append(info)
    if as_json:
        emit_json(results if len(results) > 1 else results[0])
        return
    for info in results:
        width = max(len(k) for k in info)
        for key, value in info.items():
            if isinstance(value, list):
                value = ", ".join(value) or "-"
            elif isinstance(value, dict):
                value = f"{value['address']} {'is' if value['inside'] else 'is NOT'} inside"
            click.echo(f"{key:<{width}}  {value}")
        if len(results) > 1:
            click.echo()
