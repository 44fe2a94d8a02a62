"""``wirekit load``: the HTTP load tester."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from ..errors import UsageError
from ..io.tls import client_context
from ..load.engine import LoadConfig
from ..load.raw import RawTarget, parse_raw_target
from ..load.report import Threshold, exit_code, to_csv
from ..load.runner import execute
from ..load.scenario import load_scenario
from ..load.schedule import parse_steps, plan
from ..load.target import HttpRequest, HttpTarget, parse_target
from .common import DURATION, emit_json, json_option


def _headers(values: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out = []
    for value in values:
        name, sep, rest = value.partition(":")
        if not sep or not name.strip() or any(c in name for c in " \t\r\n"):
            raise UsageError(f"bad header {value!r}: expected 'Name: value'")
        out.append((name.strip(), rest.strip()))
    return tuple(out)


@click.command(short_help="HTTP load tester: closed/open model, HDR latency, CO-corrected.")
@click.argument("url", required=False)
@click.option(
    "--scenario",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML scenario: weighted requests, variables, feeders, extraction, thresholds.",
)
@click.option(
    "-c", "--connections", type=int, default=10, show_default=True, help="Concurrent connections."
)
@click.option(
    "-d",
    "--duration",
    type=DURATION,
    default=None,
    help="How long to run (e.g. 30s, 2m). Default 10s unless -n is given.",
)
@click.option(
    "-n", "--requests", "count", type=int, default=None, help="Stop after this many requests."
)
@click.option(
    "--rate",
    type=float,
    default=None,
    help="Open model: requests per second, sent on schedule whatever the latency.",
)
@click.option("--ramp", type=DURATION, default=0.0, help="Open model: reach --rate linearly.")
@click.option(
    "--steps", default=None, help="Open model step plan RATE:SECONDS,... e.g. 100:5,200:5,400:10."
)
@click.option("--poisson", is_flag=True, help="Open model: Poisson arrivals (default even).")
@click.option(
    "--pipeline",
    type=int,
    default=1,
    show_default=True,
    help="Requests in flight per connection (HTTP/1.1 pipelining).",
)
@click.option(
    "--think",
    type=DURATION,
    default=0.0,
    help="Closed model: pause between a response and the next request.",
)
@click.option("-X", "--method", default="GET", show_default=True)
@click.option("-H", "--header", "headers", multiple=True, help="'Name: value' (repeatable).")
@click.option("--body", default=None, help="Request body.")
@click.option(
    "--body-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Request body from a file.",
)
@click.option(
    "--framing",
    type=click.Choice(["line", "length"]),
    default="line",
    show_default=True,
    help="tcp://: how requests and replies are framed.",
)
@click.option(
    "--timeout", type=DURATION, default=10.0, show_default=True, help="Per-request timeout."
)
@click.option("--connect-timeout", type=DURATION, default=5.0, show_default=True)
@click.option("--ca", type=click.Path(dir_okay=False), help="Trust this CA (PEM) for https.")
@click.option("--insecure", is_flag=True, help="https: do not verify the certificate.")
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    help="Processes (one per core); histograms are merged exactly.",
)
@click.option(
    "--threshold",
    "thresholds",
    multiple=True,
    help="Fail (exit 1) unless this holds, e.g. 'p99 < 50ms', 'errors < 0.1%'.",
)
@click.option(
    "--csv",
    "csv_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the per-second timeline as CSV.",
)
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a self-contained HTML report (charts inline, no CDN).",
)
@click.option("--seed", type=int, default=None, help="Seed for Poisson arrivals.")
@click.option(
    "--fanout",
    type=int,
    default=0,
    help="ws:// pub/sub: N subscribers and one publisher sending --body (with ${ts}) "
    "at --rate; measures publish-to-deliver.",
)
@click.option("--subscribe", default=None, help="--fanout: text each subscriber sends first.")
@json_option
def load(url: str | None, scenario: Path | None, connections: int, duration: float | None,
         count: int | None, rate: float | None, ramp: float, steps: str | None, poisson: bool,
         pipeline: int, think: float, method: str, headers: tuple[str, ...], body: str | None,
         body_file: Path | None, framing: str, timeout: float, connect_timeout: float,
         ca: str | None, insecure: bool, workers: int, thresholds: tuple[str, ...],
         csv_file: Path | None, html_file: Path | None, seed: int | None, fanout: int,
         subscribe: str | None, as_json: bool) -> None:  # fmt: skip
    """Load-test URL and report throughput and latency percentiles. URL is http:// or https://,
    or tcp://HOST:PORT / udp://HOST:PORT for request/response over raw sockets (--body is the
    payload; tcp replies are framed by --framing; udp counts lost replies as timeouts).
    With --scenario, the requests come from the file (URL, if given, replaces its base).

    Closed model (default): -c connections send as fast as responses come back. Open model
    (--rate, --steps): requests leave on schedule; latency counts from when each was due, so a
    stalling server cannot hide its stall (coordinated omission corrected); the uncorrected
    numbers are shown alongside. Exit code: 0 fine, 1 a --threshold failed, 3 the run is
    INVALID because the generator itself was the bottleneck (reason printed).

    \b
    Example:
      wirekit load http://127.0.0.1:8080/ -c 50 -d 30s
      wirekit load http://127.0.0.1:8080/api --rate 2000 --ramp 5s -d 60s --threshold 'p99<20ms'
      wirekit load https://localhost:8443/ --ca certs/ca.pem -n 10000 --json
      wirekit load --scenario shop.toml -c 20 -d 1m
      wirekit load tcp://127.0.0.1:7007 --body hello --framing line --rate 5000 -d 10s
      wirekit load ws://127.0.0.1:8080/ws --fanout 1000 --subscribe '{"op":"sub","topic":"t"}' \\
        --body '{"op":"pub","topic":"t","data":"${ts}"}' --rate 50 -d 20s
    """
    if body is not None and body_file is not None:
        raise UsageError("give --body or --body-file, not both")
    if body_file is not None:
        try:
            payload = body_file.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read --body-file {body_file}: {exc.strerror}") from None
    else:
        payload = (body or "").encode()
    if connections < 1 or pipeline < 1 or timeout <= 0:
        raise UsageError("-c, --pipeline and --timeout must be positive")
    if count is not None and count < 1:
        raise UsageError("-n must be at least 1")
    if rate is not None and steps is not None:
        raise UsageError("give --rate or --steps, not both")
    if duration is None and count is None:
        duration = 10.0
    plan_file = load_scenario(scenario) if scenario is not None else None
    if plan_file is not None:
        url = url or plan_file.base
    if not url:
        raise UsageError("give a URL (or a --scenario file with base = 'http://...')")
    target: HttpTarget | RawTarget
    if url.startswith(("tcp://", "udp://", "ws://")):
        target = parse_raw_target(url, payload, framing)
    else:
        target = parse_target(url, HttpRequest(method.upper(), "/", _headers(headers), payload))
    plan_steps = None
    if steps is not None:
        plan_steps = parse_steps(steps)
    elif rate is not None:
        if duration is None:
            raise UsageError("--rate needs -d (how long to keep the rate)")
        plan_steps = plan(rate, duration, ramp)
    config = LoadConfig(
        target=target, connections=connections, duration=duration, count=count,
        pipeline=pipeline, think=think, steps=plan_steps, poisson=poisson, timeout=timeout,
        connect_timeout=connect_timeout, ssl=_ssl(target.scheme, ca, insecure), seed=seed,
        scenario=plan_file, fanout=fanout,
        subscribe=subscribe.encode() if subscribe is not None else None,
    )  # fmt: skip
    file_checks = plan_file.thresholds if plan_file is not None else []
    checks = [Threshold.parse(t) for t in [*file_checks, *thresholds]]
    console = Console(stderr=True)
    if console.is_terminal and not as_json:
        total = duration or 0.0
        with Live(console=console, refresh_per_second=4, transient=True) as live:
            result = execute(config, url, workers=workers, thresholds=checks,
                             progress=lambda p: live.update(_progress(p, total)))  # fmt: skip
    else:
        result = execute(config, url, workers=workers, thresholds=checks)
    if csv_file is not None:
        csv_file.write_text(to_csv(result))
    if html_file is not None:
        from ..load.html import render

        html_file.write_text(render(result))
    if as_json:
        emit_json(result)
    else:
        Console().print(_summary(result))
    raise SystemExit(exit_code(result))


def _ssl(scheme: str, ca: str | None, insecure: bool) -> ssl.SSLContext | None:
    if scheme != "https":
        return None
    return client_context(ca, insecure=insecure)


def _progress(p: dict[str, Any], total: float) -> Table:
    table = Table.grid(padding=(0, 2))
    rate = f"{p['rate']:,} req/s" if p["rate"] is not None else "..."
    p99 = f"p99 {p['p99_ms']:.2f} ms" if p["p99_ms"] is not None else ""
    shown = f"{p['elapsed_s']:.0f}/{total:.0f} s" if total else f"{p['elapsed_s']:.0f} s"
    table.add_row(shown, rate, f"{p['completed']:,} done", f"{p['errors']:,} errors", p99)
    return table


def _summary(r: dict[str, Any]) -> Table:
    req = r["requests"]
    title = (f"{r['target']}  {r['model']} model, {r['connections']} connections"
             + (f", {r['rate']:g} req/s planned" if r["rate"] else "")
             + f", {r['duration_s']:.2f} s")  # fmt: skip
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("latency ms")
    keys = ("p50", "p90", "p99", "p99.9", "p99.99", "max", "mean")
    for key in keys:
        table.add_column(key, justify="right")
    rows = dict(r["latency_ms"])
    if r["scheduler_lag_ms"] is not None:
        rows["scheduler lag"] = r["scheduler_lag_ms"]
    for name, values in rows.items():
        table.add_row(name, *(f"{values[k]:.3f}" for k in keys))
    table.caption = "\n".join(
        [
            f"{req['completed']:,} responses, {r['throughput_rps']:,.1f} req/s, "
            f"{req['errors']:,} errors ({req['error_rate_pct']:.3f}%), "
            f"{r['bytes']['in']:,} bytes in",
            "status: " + (", ".join(f"{k}: {v:,}" for k, v in r["status"].items()) or "none"),
            *(["requests: " + ", ".join(f"{k}: {v:,}" for k, v in r["requests_by_name"].items())]
              if r["requests_by_name"] else []),
            *(["errors: " + ", ".join(f"{k}: {v:,}" for k, v in r["errors"].items())]
              if r["errors"] else []),
            *(f"threshold {t['threshold']}: {'ok' if t['passed'] else 'FAILED'} "
              f"(actual {t['actual']:.3f})" for t in r["thresholds"]),
            *(f"INVALID: {reason}" for reason in r["invalid_reasons"]),
        ]
    )  # fmt: skip
    return table
