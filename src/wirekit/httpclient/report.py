"""What the command shows: exit codes, the ``--json`` description, timing and summaries."""

from __future__ import annotations

import base64
import json
from collections import Counter
from typing import Any

from ..errors import ConnectError, ConnectionClosed, Timeout, WirekitError
from .client import ClientStatistics, Response, TooManyRedirects
from .connection import Timing
from .wire import ResponseHead

# Exit codes. 2xx (and 1xx/3xx that are not followed) exit 0; 1 and 2 are wirekit's own
# (an error it raises, a bad command line); the rest follow httpie (4, 5, 6) and curl (7, 28).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CLIENT_ERROR = 4
EXIT_SERVER_ERROR = 5
EXIT_TOO_MANY_REDIRECTS = 6
EXIT_CONNECT = 7
EXIT_TIMEOUT = 28


def status_exit_code(status: int) -> int:
    if 400 <= status < 500:
        return EXIT_CLIENT_ERROR
    if status >= 500:
        return EXIT_SERVER_ERROR
    return EXIT_OK


def error_exit_code(exc: WirekitError) -> int:
    if isinstance(exc, Timeout):
        return EXIT_TIMEOUT
    if isinstance(exc, ConnectError | ConnectionClosed):
        return EXIT_CONNECT
    if isinstance(exc, TooManyRedirects):
        return EXIT_TOO_MANY_REDIRECTS
    return EXIT_ERROR


def is_json(head: ResponseHead) -> bool:
    """``application/json`` or any ``+json`` type (``application/problem+json``, ...)."""
    media = (head.header("content-type") or "").split(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def parse_json(response: Response) -> tuple[bool, Any]:
    """``(True, value)`` for a JSON response whose body parses, else ``(False, None)``."""
    if not response.body or not is_json(response.head):
        return False, None
    try:
        return True, json.loads(response.body)
    except ValueError:
        return False, None


def is_binary(body: bytes) -> bool:
    """What httpie calls binary: a NUL byte, or bytes that are not UTF-8."""
    if b"\0" in body:
        return True
    try:
        body.decode()
    except UnicodeDecodeError:
        return True
    return False


def timing_ms(t: Timing) -> dict[str, float | None]:
    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else round(seconds * 1000, 3)

    return {
        "dns_ms": ms(t.dns),
        "connect_ms": ms(t.connect),
        "tls_ms": ms(t.tls),
        "wait_ms": ms(t.wait),
        "transfer_ms": ms(t.transfer),
        "first_byte_ms": ms(t.first_byte),
        "total_ms": ms(t.total),
    }


def describe(response: Response) -> dict[str, Any]:
    """The exchange as one JSON-ready object (``--json``)."""
    req, head = response.request, response.head
    parsed, value = parse_json(response)
    if response.saved_to is not None or not response.body:
        encoding, body = None, None
    elif parsed:
        encoding, body = "json", value
    elif is_binary(response.body):
        encoding, body = "base64", base64.b64encode(response.body).decode()
    else:
        encoding, body = "text", response.body.decode()
    return {
        "request": {
            "method": req.method,
            "url": req.url,
            "headers": [list(h) for h in req.headers],
        },
        "url": req.url,
        "peer": response.peer,
        "http_version": head.http_version,
        "status": head.status,
        "reason": head.reason,
        "headers": [list(h) for h in head.headers],
        "body": body,
        "body_encoding": encoding,
        "body_bytes": response.body_size,
        "saved_to": str(response.saved_to) if response.saved_to is not None else None,
        "reused_connection": response.reused,
        "attempts": response.attempts,
        "redirects": list(response.redirects),
        "timing": timing_ms(response.timing),
        "elapsed_ms": round(response.elapsed * 1000, 3),
    }


def summarize(responses: list[Response], stats: ClientStatistics) -> dict[str, Any]:
    """Totals of a ``--repeat`` run: how many requests went over how many connections."""
    totals = sorted(r.elapsed * 1000 for r in responses)
    return {
        "requests": len(responses),
        "exchanges": stats.exchanges,
        "connections_opened": stats.connections_opened,
        "connections_reused": stats.connections_reused,
        "statuses": dict(Counter(str(r.head.status) for r in responses)),
        "elapsed_ms": {
            "min": round(totals[0], 3),
            "median": round(totals[len(totals) // 2], 3),
            "max": round(totals[-1], 3),
        },
    }


def format_timing(t: Timing) -> str:
    """httpstat-like lines: each phase, and the running total (curl -w names) beside it."""
    rows: list[tuple[str, float, str, float]] = []
    at = 0.0
    if t.dns is not None and t.connect is not None:
        at += t.dns
        rows.append(("DNS lookup", t.dns, "namelookup", at))
        at += t.connect
        rows.append(("TCP connect", t.connect, "connect", at))
    if t.tls is not None:
        at += t.tls
        rows.append(("TLS handshake", t.tls, "appconnect", at))
    at += t.wait
    rows.append(("Server processing", t.wait, "starttransfer", at))
    at += t.transfer
    rows.append(("Content transfer", t.transfer, "total", at))
    lines = [f"{name:<18} {phase * 1000:9.3f} ms   {mark:>13} {cum * 1000:9.3f} ms"
             for name, phase, mark, cum in rows]  # fmt: skip
    if t.dns is None:
        lines.insert(0, "(reused connection: no DNS, TCP or TLS)")
    return "\n".join(lines)


def format_summary(summary: dict[str, Any]) -> str:
    statuses = ", ".join(f"{k}: {v}" for k, v in summary["statuses"].items())
    e = summary["elapsed_ms"]
    return (
        f"{summary['requests']} requests over {summary['connections_opened']} connection(s) "
        f"({summary['connections_reused']} reuses); status {statuses}; "
        f"ms min/median/max {e['min']:.3f}/{e['median']:.3f}/{e['max']:.3f}"
    )
