"""``wirekit http``: the curl/httpie-like HTTP client."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.text import Text

from ..errors import UsageError, WirekitError
from ..httpclient import ClientOptions, Response, build_request
from ..httpclient.client import fetch_all
from ..httpclient.report import (
    describe,
    error_exit_code,
    format_summary,
    format_timing,
    is_binary,
    parse_json,
    status_exit_code,
    summarize,
)
from ..io.loop import run
from ..limits import MiB
from .common import DURATION, emit_json, json_option


class _Failed(click.ClickException):
    """A failed request: one line on stderr (via the entry point) and its own exit code."""

    def __init__(self, exc: WirekitError) -> None:
        super().__init__(str(exc))
        self.exit_code = error_exit_code(exc)  # type: ignore[misc]  # click reads it per instance


@click.command(short_help="HTTP client like curl/httpie: JSON, retries, keep-alive, timing.")
@click.argument("method")
@click.argument("url")
@click.option(
    "-H",
    "--header",
    "headers",
    multiple=True,
    help="'Name: value' (repeatable). 'Name:' drops a default header, 'Name;' sends it empty.",
)
@click.option(
    "-j",
    "--json-field",
    "fields",
    multiple=True,
    metavar="KEY=TEXT|KEY:=JSON",
    help="Build a JSON object body (repeatable): KEY=TEXT is a string, KEY:=JSON any "
    "JSON value (30, true, null, [1,2], {...}).",
)
@click.option(
    "-d",
    "--data",
    default=None,
    metavar="TEXT|@FILE|@-",
    help="Raw body: the text, a file's bytes, or stdin (bytes sent unchanged).",
)
@click.option(
    "--content-type",
    default=None,
    help="Content-Type of the body (default: JSON for -j, form-urlencoded for -d).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Save the body to this file (any size) instead of printing it.",
)
@click.option("-i", "--include", is_flag=True, help="Print the status line and headers.")
@click.option("-v", "--verbose", is_flag=True, help="Print the request too (implies -i).")
@click.option(
    "--timing",
    is_flag=True,
    help="Print DNS, TCP connect, TLS, server processing and transfer times (stderr).",
)
@click.option(
    "--connect-timeout",
    type=DURATION,
    default=10.0,
    show_default=True,
    help="Bound on DNS + TCP connect + TLS handshake.",
)
@click.option(
    "--read-timeout",
    type=DURATION,
    default=30.0,
    show_default=True,
    help="Bound on each wait for response bytes (and each write).",
)
@click.option(
    "--timeout",
    type=DURATION,
    default=0.0,
    help="Bound on the whole request with its retries and redirects. [default: none]",
)
@click.option(
    "--retries",
    type=int,
    default=0,
    show_default=True,
    help="Retries on connection errors, timeouts and 429/502/503/504, with exponential backoff "
    "and jitter (Retry-After honoured up to 10s). Idempotent methods only (GET, HEAD, PUT, "
    "DELETE, OPTIONS, TRACE), except that a failed connect is retried for any method.",
)
@click.option(
    "--retry-any",
    is_flag=True,
    help="Also retry methods that are not idempotent (POST, PATCH) after the request was sent.",
)
@click.option("-L", "--follow", is_flag=True, help="Follow redirects.")
@click.option(
    "--max-redirects",
    type=int,
    default=10,
    show_default=True,
    help="With -L: the most redirects followed (one more exits 6).",
)
@click.option(
    "--max-body",
    type=int,
    default=64 * MiB,
    show_default=True,
    help="Bytes of body kept in memory to print; larger needs -o FILE.",
)
@click.option(
    "--repeat",
    type=int,
    default=1,
    show_default=True,
    help="Send the request N times over pooled keep-alive connections; prints the "
    "last response and a summary (connections opened vs requests).",
)
@click.option(
    "--concurrency",
    type=int,
    default=1,
    show_default=True,
    help="With --repeat: requests in flight at once (and connections in the pool).",
)
@click.option(
    "--ca",
    type=click.Path(dir_okay=False),
    default=None,
    help="Trust this CA (PEM) for https, e.g. wirekit-data/certs/ca.pem.",
)
@click.option("-k", "--insecure", is_flag=True, help="https: do not verify the certificate.")
@click.option("--ignore-status", is_flag=True, help="Exit 0 whatever the HTTP status.")
@json_option
def http(method: str, url: str, headers: tuple[str, ...], fields: tuple[str, ...],
         data: str | None, content_type: str | None, output: Path | None, include: bool,
         verbose: bool, timing: bool, connect_timeout: float, read_timeout: float,
         timeout: float, retries: int, retry_any: bool, follow: bool, max_redirects: int,
         max_body: int, repeat: int, concurrency: int, ca: str | None, insecure: bool,
         ignore_status: bool, as_json: bool) -> None:  # fmt: skip
    """Send an HTTP/1.1 request: METHOD is any method (GET, POST, PURGE, ...), URL is http:// or
    https:// (no scheme: http://; ':8080/x': http://localhost:8080/x).

    A JSON response is printed indented (coloured on a terminal); anything else as raw bytes,
    except binary on a terminal (use -o FILE). --json prints one object: request, status,
    headers, body (parsed when JSON), timing, attempts, redirects.

    \b
    Exit codes:
      0  2xx, or 1xx/3xx (a 3xx that is not followed)
      1  error (bad input, unreadable file, malformed or oversized response)
      2  bad command line
      4  4xx            5  5xx            6  too many redirects
      7  connection failed (DNS, refused, TLS, closed early)
      28 timed out (connect, read or --timeout)

    \b
    Example:
      wirekit http GET http://127.0.0.1:8080/healthz
      wirekit http POST :8080/api/users -j name=ann -j age:=30 -j admin:=false -i
      wirekit http PUT http://127.0.0.1:8080/items/7 -d @item.json --content-type application/json
      wirekit http GET https://localhost:8443/ --ca wirekit-data/certs/ca.pem --timing
      wirekit http GET http://127.0.0.1:8080/ --repeat 100 --concurrency 4 --json
      wirekit http GET http://127.0.0.1:8080/flaky --retries 3 --timeout 10s -L
    """
    if repeat < 1 or concurrency < 1:
        raise UsageError("--repeat and --concurrency must be at least 1")
    if output is not None and concurrency > 1:
        raise UsageError("-o with --concurrency above 1 would interleave the bodies in one file")
    request = build_request(method, url, headers, json_items=fields, data=data,
                            content_type=content_type)  # fmt: skip
    options = ClientOptions(
        connect_timeout=connect_timeout, read_timeout=read_timeout,
        total_timeout=timeout or None, retries=retries, retry_any=retry_any, follow=follow,
        max_redirects=max_redirects, max_body=max_body, max_connections=concurrency, ca=ca,
        insecure=insecure,
    )  # fmt: skip
    try:
        responses, stats = run(fetch_all(request, options, repeat, concurrency, output))
    except WirekitError as exc:
        raise _Failed(exc) from None
    last = responses[-1]
    summary = summarize(responses, stats) if repeat > 1 else None
    if as_json:
        emit_json({**describe(last), **({"repeat": summary} if summary else {})})
    else:
        _show(last, include=include or verbose, verbose=verbose)
        if timing:
            click.echo(format_timing(last.timing), err=True)
        if summary:
            click.echo(format_summary(summary), err=True)
    if not ignore_status:
        raise SystemExit(max(status_exit_code(r.head.status) for r in responses))


def _show(response: Response, *, include: bool, verbose: bool) -> None:
    console = Console(soft_wrap=True, highlight=False)
    if verbose:
        _print_head(console, *response.request.head())
        click.echo()
        if body := response.request.body:
            text = f"[{len(body)} bytes of binary data]" if is_binary(body) else body.decode()
            click.echo(text, nl=not text.endswith("\n"))
            click.echo()
    if include:
        _print_head(console, response.head.status_line, list(response.head.headers))
        click.echo()
    if response.saved_to is not None or not response.body:
        return
    parsed, value = parse_json(response)
    if not parsed:
        _print_body(console, response.body)
    elif console.is_terminal:
        console.print_json(data=value, indent=2)
    else:
        click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _print_head(console: Console, first: str, headers: list[tuple[str, str]]) -> None:
    if not console.is_terminal:
        click.echo("\n".join([first, *(f"{n}: {v}" for n, v in headers)]))
        return
    console.print(Text(first, style="bold"))
    for name, value in headers:
        console.print(Text.assemble((name, "cyan"), ": ", value))


def _print_body(console: Console, body: bytes) -> None:
    """Raw bytes to a pipe or file; text to a terminal, but never binary (httpie's rule)."""
    if not console.is_terminal:
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
    elif is_binary(body):
        click.echo(f"wirekit: binary body ({len(body)} bytes) not shown on a terminal; "
                   "save it with -o FILE or pipe it", err=True)  # fmt: skip
    else:
        console.print(Text(body.decode()), end="" if body.endswith(b"\n") else "\n")
