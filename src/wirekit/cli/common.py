"""Options and output helpers shared by the commands."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..errors import UsageError
from ..limits import Limits
from ..net.addr import parse_hostport

F = TypeVar("F", bound=Callable[..., Any])


class HostPort(click.ParamType):  # type: ignore[type-arg]
    """A ``HOST:PORT`` argument, checked at parse time."""

    name = "HOST:PORT"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        try:
            return parse_hostport(str(value))
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


HOSTPORT = HostPort()


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}


class Duration(click.ParamType):  # type: ignore[type-arg]
    """Seconds, written ``250ms``, ``10s``, ``2m``, ``1h`` or a bare number of seconds."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float):
            return value
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", str(value))
        if m is None:
            self.fail(f"{value!r} is not a duration (e.g. 500ms, 10s, 2m)", param, ctx)
        return float(m[1]) * _DURATION_UNITS[m[2] or ""]


DURATION = Duration()


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(f)


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=None, default=str))


def tls_server_options(f: F) -> F:
    f = click.option("--key", type=click.Path(dir_okay=False), help="TLS private key (PEM).")(f)
    f = click.option("--cert", type=click.Path(dir_okay=False), help="TLS certificate (PEM).")(f)
    return click.option(
        "--tls",
        is_flag=True,
        help="Serve TLS (1.2+). Without --cert/--key, uses (and first creates) "
        "DATA_DIR/certs from the local CA.",
    )(f)


def limit_options(f: F) -> F:
    d = Limits()
    f = click.option(
        "--grace",
        type=float,
        default=d.shutdown_grace,
        show_default=True,
        help="Seconds a graceful shutdown waits for open connections.",
    )(f)
    f = click.option(
        "--idle-timeout",
        type=float,
        default=d.idle_timeout,
        show_default=True,
        help="Close connections idle this many seconds (0: never).",
    )(f)
    f = click.option(
        "--max-frame",
        type=int,
        default=d.max_frame,
        show_default=True,
        help="Largest frame (length framing) in bytes.",
    )(f)
    f = click.option(
        "--max-line",
        type=int,
        default=d.max_line,
        show_default=True,
        help="Longest line (line framing) in bytes.",
    )(f)
    return click.option(
        "--max-connections", type=int, default=d.max_connections, show_default=True,
        help="Connections beyond this are closed at once.",
    )(f)  # fmt: skip


def build_limits(
    max_connections: int, max_line: int, max_frame: int, idle_timeout: float, grace: float
) -> Limits:
    if max_connections < 1 or max_line < 1 or max_frame < 1 or idle_timeout < 0 or grace < 0:
        raise UsageError("limits must be positive (idle timeout and grace may be 0)")
    return Limits(
        max_connections=max_connections,
        max_line=max_line,
        max_frame=max_frame,
        idle_timeout=idle_timeout,
        shutdown_grace=grace,
    )


def resolve_tls(
    tls: bool, cert: str | None, key: str | None, data_dir: str
) -> tuple[str | None, str | None]:
    """The (cert, key) to serve with, or (None, None) for plain TCP."""
    if cert or key:
        if not (cert and key):
            raise UsageError("TLS needs both --cert and --key")
        return cert, key
    if not tls:
        return None, None
    from ..certs import default_server_cert

    c, k = default_server_cert(data_dir)
    return str(c), str(k)
