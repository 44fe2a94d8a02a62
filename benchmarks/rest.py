"""REST benchmark: ``GET /api/users/{id}`` and ``POST /api/login`` req/s of ``wirekit serve``
(its whole middleware chain) against a bare aiohttp app serving the same JSON, under wrk.

Servers, all started once and measured in turns (a busy spell on the machine hits all alike):

* ``wirekit``: ``wirekit serve`` (one process, the embedded engine), with ``--api-rate`` and
  ``--login-rate`` raised far past the load so that the limiter counts every request but never
  refuses one (the settings are in the results). One user is registered over HTTP; its token
  is the ``Authorization: Bearer`` of every GET. Its HTTP front answers a plain GET itself
  (wirekit.http.direct), through the whole chain.
* ``wirekit-aiohttp`` (GET only): the same process, asked for ``/api/users/%62ench``: the
  escape makes the front hand the request to aiohttp, which runs the same chain and handler.
  What the direct path saves is the difference between the two rows.
* ``wirekit-2w``: ``wirekit serve --workers 2 --engine redis://...`` (the embedded engine is
  one process) on a redis-server the benchmark starts, whose CPU counts as the server's; it
  compares with ``bare-2w``.
* ``bare``: benchmarks/rest_ref.py, a plain aiohttp app on uvloop with no middleware, one
  process. GET answers the bytes wirekit answered (fetched once) from a dict in memory, with
  no authentication; login does an argon2id verify (argon2-cffi defaults, as wirekit) in a
  thread and signs two HS256 JWTs, as wirekit, without the chain and the store.
* ``bare-2w``: the same app in 2 processes sharing the port (SO_REUSEPORT), for context: the
  machine's 2 cores are shared with wrk.
* ``bare+chain`` (only with ``--with-chain``): the bare app with wirekit's middleware chain
  installed, its bearer check accepting any token unverified: the chain's own cost, apart from
  the JWT, the store and wirekit's HTTP front.

wrk (Debian package; ``make bench-rest`` installs it): THREADS thread, CONNECTIONS keep-alive
connections, SECONDS per run, RUNS runs per server (medians), after one WARMUP-second run per
server and endpoint; ``--latency`` gives p50/p99. Server CPU (cores, from /proc/PID/stat), wrk's
CPU and the rest of the machine's (other CPU: the tests that may be running) are recorded per
run.

Target (issue): the chain's overhead on GET, 1 - wirekit/bare req/s (both one process), is at
most 15%. On GET wirekit also checks the token (``Accounts.session``: one token, so after the
first request a hit in its cache of verified tokens, not a JWT decode and store lookups) and
looks the user up (after the first request a hit in the store's cache of accounts, and the JSON
and ETag made for that version of the user, not SQLite), which the bare app does not: the
overhead measured is that of the chain *and* the handler's work (``--with-chain`` separates the
chain's part). Login is bound by argon2 (CPU) on both sides. Results go to
benchmarks/results/rest.json.

About 5 minutes on 2 cores.

usage: python benchmarks/rest.py [--seconds 10] [--runs 3] [--connections 50]
                                 [--endpoints get,login] [--with-chain] [--profile FILE.svg]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_common import (
    cpu_seconds,
    free_port,
    machine,
    machine_busy_seconds,
    package_version,
    raise_nofile,
    start_redis,
    start_wirekit,
    stop,
    wait_port,
    write_result,
)

HERE = Path(__file__).parent
SECONDS, RUNS, WARMUP, CONNECTIONS, THREADS = 10.0, 3, 2.0, 50, 1
WRK_TIMEOUT = "30s"  # a login waits for argon2: seconds under load, not a failure
TARGET_GET_OVERHEAD = 0.15
API_RATE = 1e9  # requests/s per address and per user (burst 2e9): never reached
LOGIN_RATE = 10**9  # attempts/min per account (4e9 per address): never reached
USER, PASSWORD = "bench", "benchpass1"
SERVERS = ("wirekit", "wirekit-aiohttp", "wirekit-2w", "bare", "bare-2w")
GET_ONLY = {"wirekit-aiohttp"}  # a POST always goes through aiohttp
NOTES = (
    "wirekit: 1 process, whole middleware chain; GET also checks the bearer token and looks "
    "the user up (one token, one user: both cached after the first request); a plain GET is "
    "read and answered by wirekit's HTTP front, not aiohttp",
    "wirekit-aiohttp: the same process and chain, the GET's path escaped so that aiohttp serves it",
    "wirekit-2w: --workers 2 on the Redis engine (redis-server's CPU included); compare "
    "with bare-2w",
    "bare: aiohttp + uvloop, no middleware, NO AUTH on GET (the Authorization header is "
    "ignored), the same JSON bytes from memory; login = argon2id verify in a thread + 2 HS256 "
    "JWTs, as wirekit",
    "login p50/p99 are mostly queueing: 50 connections wait for argon2 (~0.16 s of CPU each)",
)


@dataclass(frozen=True)
class Endpoint:
    key: str
    title: str
    method: str
    path: str


ENDPOINTS = {
    "get": Endpoint("get", "GET /api/users/{id}", "GET", f"/api/users/{USER}"),
    "login": Endpoint("login", "POST /api/login", "POST", "/api/login"),
}
LOGIN_BODY = json.dumps({"user": USER, "password": PASSWORD})
AIOHTTP_GET_PATH = f"/api/users/%{ord(USER[0]):02X}{USER[1:]}"  # an escape: served by aiohttp


# -- servers --------------------------------------------------------------------------------
@dataclass
class Server:
    name: str
    procs: list[subprocess.Popen[bytes]]
    port: int
    token: str = ""  # the benchmark user's (wirekit servers)
    get_path: str = ENDPOINTS["get"].path

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def cpu(self) -> float:
        """CPU seconds of the processes and their children (``--workers``)."""
        return sum(cpu_seconds(p) for pid in self.pids for p in (pid, *children(pid)))

    def stop(self) -> None:
        for proc in self.procs:
            stop(proc)


def children(pid: int) -> list[int]:
    """The descendants of process ``pid``."""
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        kids = [int(k) for t in tasks for k in (t / "children").read_text().split()]
    except OSError:  # it has exited
        return []
    return [k for kid in kids for k in (kid, *children(kid))]


def http(port: int, method: str, path: str, body: str | None = None, token: str = "") -> bytes:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=None if body is None else body.encode(),
        headers=headers,
        method=method,
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return bytes(response.read())


def start_wirekit_rest(tmp: Path, name: str, *flags: str) -> tuple[Server, bytes]:
    """``wirekit serve``, the benchmark user registered: the server and its GET body."""
    proc, ports, _log = start_wirekit(
        tmp, "--api-rate", f"{API_RATE:g}", "--login-rate", str(LOGIN_RATE), *flags
    )
    server = Server(name, [proc], ports["http"])
    try:
        server.token = json.loads(http(server.port, "POST", "/api/users", LOGIN_BODY))["token"]
        body = http(server.port, "GET", server.get_path, token=server.token)
    except BaseException:
        server.stop()
        raise
    return server, body


def start_wirekit_workers(tmp: Path, workers: int) -> Server:
    """``wirekit serve --workers N`` on a redis-server of its own (counted as the server's)."""
    redis, redis_port, _log = start_redis(tmp)
    try:
        engine = f"redis://127.0.0.1:{redis_port}/0"
        server, _body = start_wirekit_rest(
            tmp, f"wirekit-{workers}w", "--engine", engine, "--workers", str(workers)
        )
    except BaseException:
        stop(redis)
        raise
    server.procs.append(redis)
    return server


def wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    """Until the reference prints ``ready`` (it listens), or it exits, or ``timeout``."""
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sel.select(timeout=0.5) and proc.stdout.readline().strip() == b"ready":
            return
        if proc.poll() is not None:
            break
    raise SystemExit(f"reference did not start:\n{log.read_text()[-2000:]}")


def start_bare(name: str, workers: int, spec: Path, tmp: Path, *flags: str) -> Server:
    port = free_port()
    server = Server(name, [], port)
    try:
        for i in range(workers):
            log = tmp / f"{name}-{i}.log"
            args = [sys.executable, str(HERE / "rest_ref.py"), str(spec), str(port)]
            proc = subprocess.Popen(
                [*args, *flags, *(["--reuse-port"] if workers > 1 else [])],
                stdout=subprocess.PIPE,
                stderr=log.open("wb"),
            )
            server.procs.append(proc)
            wait_ready(proc, log)
        wait_port(port)
    except BaseException:
        server.stop()
        raise
    return server


def check_same(wirekit: Server, bare: Server, wk_body: bytes) -> None:
    """The bare app answers GET with wirekit's bytes and login with the same JSON shape."""
    path = ENDPOINTS["get"].path
    if http(bare.port, "GET", path) != wk_body:
        raise SystemExit(f"{bare.name}: GET body differs from wirekit's")
    shapes = []
    for server in (wirekit, bare):
        grant = json.loads(http(server.port, "POST", "/api/login", LOGIN_BODY))
        shapes.append({k: type(v).__name__ for k, v in grant.items()})
    if shapes[0] != shapes[1]:
        raise SystemExit(f"{bare.name}: login JSON {shapes[1]} differs from wirekit's {shapes[0]}")


# -- wrk ------------------------------------------------------------------------------------
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match[1]) * UNITS[match[2]]


def parse_wrk(out: str) -> dict[str, Any]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in ([\d.]+\w+),", out)
    if rps is None or total is None:
        raise ValueError("no Requests/sec in wrk's output")
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "req_per_s": float(rps[1]),
        "requests": int(total[1]),
        "p50_ms": ms(latency["50"]),
        "p90_ms": ms(latency["90"]),
        "p99_ms": ms(latency["99"]),
        "non_2xx": int(non2xx[1]) if non2xx else 0,
        "socket_errors": sum(int(x) for x in sock.groups()) if sock else 0,
    }


def write_scripts(tmp: Path) -> dict[str, Path]:
    login = tmp / "login.lua"
    login.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(LOGIN_BODY)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    return {"login": login}


def run_wrk(
    server: Server,
    endpoint: Endpoint,
    seconds: float,
    connections: int,
    scripts: dict[str, Path],
) -> dict[str, Any]:
    """One wrk run against ``server``, with the CPU each side used (cores) meanwhile."""
    args = ["wrk", "-t", str(THREADS), "-c", str(connections), "-d", f"{seconds:g}s"]
    args += ["--latency", "--timeout", WRK_TIMEOUT]
    if endpoint.key == "get":
        args += ["-H", f"Authorization: Bearer {server.token}"]
    else:
        args += ["-s", str(scripts["login"])]
    path = server.get_path if endpoint.key == "get" else endpoint.path
    args.append(f"http://127.0.0.1:{server.port}{path}")
    t0, srv0, busy0 = time.monotonic(), server.cpu(), machine_busy_seconds()
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the servers are not reaped yet
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        raise SystemExit(f"wrk against {server.name} did not stop") from None
    elapsed = time.monotonic() - t0
    srv, busy = server.cpu() - srv0, machine_busy_seconds() - busy0
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = kids.ru_utime + kids.ru_stime - kids0.ru_utime - kids0.ru_stime
    if done.returncode != 0:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    try:
        row = parse_wrk(done.stdout)
    except (ValueError, KeyError) as exc:
        raise SystemExit(f"wrk output not understood ({exc}):\n{done.stdout}") from None
    row.update(
        server_cpu=srv / elapsed,
        # server CPU per request: the cost that the ratio hides when wrk or the machine limits
        server_us_per_req=srv / row["requests"] * 1e6 if row["requests"] else None,
        wrk_cpu=load / elapsed,
        other_cpu=max(0.0, (busy - srv - load) / elapsed),
    )
    return row


def settle(server: Server, most: float = 30.0) -> float:
    """Wait (at most ``most`` seconds) until ``server`` is idle: what a run left behind (logins
    still hashing when wrk stopped) must not land on the next server's run. Seconds waited."""
    t0 = time.monotonic()
    last = server.cpu()
    while time.monotonic() - t0 < most:
        time.sleep(0.2)
        now = server.cpu()
        if now - last <= 0.01:  # at most one clock tick in 0.2 s
            break
        last = now
    return time.monotonic() - t0


# -- main -----------------------------------------------------------------------------------
def profile_wirekit(server: Server, seconds: float, connections: int, out: Path) -> None:
    """py-spy on ``wirekit serve`` during one more GET run (not counted)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("--profile needs py-spy (pip install py-spy)")
    fmt = {".svg": "flamegraph", ".json": "speedscope", ".txt": "raw"}.get(out.suffix, "raw")
    cmd = [spy, "record", "--pid", str(server.pids[0]), "--duration", f"{seconds:g}",
           "--rate", "200", "--format", fmt, "--output", str(out), "--nonblocking"]  # fmt: skip
    recorder = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        run_wrk(server, ENDPOINTS["get"], seconds, connections, {})
        recorder.wait(timeout=seconds + 60)
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()
    print(f"profile of wirekit under GET load: {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=SECONDS, help="seconds per wrk run")
    parser.add_argument("--runs", type=int, default=RUNS, help="runs per server and endpoint")
    parser.add_argument("--connections", type=int, default=CONNECTIONS, help="wrk connections")
    parser.add_argument("--endpoints", default="get,login", help="get, login or both")
    parser.add_argument("--with-chain", action="store_true", help="also bare + wirekit's chain")
    parser.add_argument("--profile", type=Path, help="py-spy wirekit during an extra GET run")
    opts = parser.parse_args()
    endpoints = [ENDPOINTS[k] for k in opts.endpoints.split(",") if k]
    names = [*SERVERS, *(["bare+chain"] if opts.with_chain else [])]
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: make bench-rest installs it (apt)")
    started = time.monotonic()
    raise_nofile(opts.connections * 4 + 1000)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        e.key: {s: [] for s in names if e.key == "get" or s not in GET_ONLY} for e in endpoints
    }
    with tempfile.TemporaryDirectory(prefix="rest-bench-") as tmpname:
        tmp = Path(tmpname)
        scripts = write_scripts(tmp)
        servers: dict[str, Server] = {}
        try:
            wirekit, body = start_wirekit_rest(tmp, "wirekit")
            servers["wirekit"] = wirekit
            # the same server; the escaped path goes through aiohttp (docs/commands.md)
            servers["wirekit-aiohttp"] = Server("wirekit-aiohttp", wirekit.procs, wirekit.port,
                                                wirekit.token, AIOHTTP_GET_PATH)  # fmt: skip
            if http(wirekit.port, "GET", AIOHTTP_GET_PATH, token=wirekit.token) != body:
                raise SystemExit("wirekit: GET body through aiohttp differs from the direct one")
            servers["wirekit-2w"] = start_wirekit_workers(tmp, 2)
            spec = tmp / "spec.json"
            spec.write_text(json.dumps({"user": USER, "password": PASSWORD,
                                        "user_body": body.decode()}))  # fmt: skip
            bare = ["bare", "bare-2w", *(["bare+chain"] if opts.with_chain else [])]
            for name in bare:
                flags = ("--chain",) if name == "bare+chain" else ()
                servers[name] = start_bare(name, 2 if name == "bare-2w" else 1, spec, tmp, *flags)
                servers[name].token = wirekit.token  # the same request bytes
                check_same(wirekit, servers[name], body)
            print(f"GET body ({len(body)} bytes): {body.decode()}", flush=True)
            for endpoint in endpoints:
                for name in runs[endpoint.key]:
                    run_wrk(servers[name], endpoint, WARMUP, opts.connections, scripts)
                    settle(servers[name])
                for i in range(opts.runs):
                    for name in runs[endpoint.key]:  # interleaved
                        row = run_wrk(
                            servers[name], endpoint, opts.seconds, opts.connections, scripts
                        )
                        row["settle_s"] = settle(servers[name])
                        runs[endpoint.key][name].append(row)
                        print(
                            f"{endpoint.title:22} {name:15} run {i + 1}: "
                            f"{row['req_per_s']:>9,.1f} req/s  p99 {row['p99_ms']:8.2f} ms  "
                            f"server {row['server_cpu']:.2f} wrk {row['wrk_cpu']:.2f} "
                            f"other {row['other_cpu']:.2f} cores"
                            + (f"  NON-2xx {row['non_2xx']}" if row["non_2xx"] else ""),
                            flush=True,
                        )
            if opts.profile is not None:
                profile_wirekit(servers["wirekit"], opts.seconds, opts.connections,
                                opts.profile.resolve())  # fmt: skip
        finally:
            for server in servers.values():
                server.stop()
    report(endpoints, runs, opts, time.monotonic() - started)


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("req_per_s", "p50_ms", "p90_ms", "p99_ms", "server_cpu", "wrk_cpu", "other_cpu")
    out: dict[str, Any] = {k: statistics.median(r[k] for r in rows) for k in keys}
    per_req = [r["server_us_per_req"] for r in rows if r["server_us_per_req"] is not None]
    out["server_us_per_req"] = statistics.median(per_req) if per_req else None
    out["non_2xx"] = sum(r["non_2xx"] for r in rows)
    out["socket_errors"] = sum(r["socket_errors"] for r in rows)
    out["requests"] = sum(r["requests"] for r in rows)
    return out


def us_per_req(m: dict[str, Any]) -> str:
    us = m["server_us_per_req"]
    if us is None:
        return "-"
    return f"{us:,.0f}us" if us < 10_000 else f"{us / 1e3:,.0f}ms"


def report(
    endpoints: list[Endpoint],
    runs: dict[str, dict[str, list[dict[str, Any]]]],
    opts: argparse.Namespace,
    elapsed: float,
) -> None:
    print(
        f"\nwrk: {THREADS} thread, {opts.connections} connections, {opts.runs} x "
        f"{opts.seconds:g} s per server (median), interleaved; CPU in cores "
        f"({os.cpu_count()} on this machine); CPU/req: server CPU time per request"
    )
    for note in NOTES:
        print(f"  {note}")
    tables: dict[str, Any] = {}
    targets: list[dict[str, Any]] = []
    for endpoint in endpoints:
        med = {name: median_row(rows) for name, rows in runs[endpoint.key].items()}
        wk, bare = med["wirekit"]["req_per_s"], med["bare"]["req_per_s"]
        ratio = wk / bare if bare else 0.0
        overhead = 1 - ratio
        verdict = ""
        if endpoint.key == "get":
            ok = overhead <= TARGET_GET_OVERHEAD
            verdict = "PASS" if ok else "FAIL"
            targets.append({"target": f"GET overhead <= {TARGET_GET_OVERHEAD:.0%}",
                            "value": overhead, "pass": ok})  # fmt: skip
        print(f"\n{endpoint.title}")
        print(
            f"{'server':15} {'req/s':>10} {'vs bare':>8} {'p50':>9} {'p99':>9} {'srv CPU':>7} "
            f"{'CPU/req':>9} {'wrk CPU':>7} {'other':>6} {'non-2xx':>7}"
        )
        for name, m in med.items():
            vs = m["req_per_s"] / bare if bare else 0.0
            print(
                f"{name:15} {m['req_per_s']:>10,.1f} {vs:>7.2f}x {m['p50_ms']:>7.2f}ms "
                f"{m['p99_ms']:>7.2f}ms {m['server_cpu']:>7.2f} {us_per_req(m):>9} "
                f"{m['wrk_cpu']:>7.2f} "
                f"{m['other_cpu']:>6.2f} {m['non_2xx'] + m['socket_errors']:>7}"
            )
        print(
            f"  wirekit / bare (1 process each): {ratio:.2f}x, overhead {overhead:.1%}"
            + (f" (target <= {TARGET_GET_OVERHEAD:.0%}): {verdict}" if verdict else "")
        )
        two = med["wirekit-2w"]["req_per_s"] / med["bare-2w"]["req_per_s"]
        print(f"  wirekit --workers 2 (Redis engine) / bare, 2 processes each: {two:.2f}x")
        if any(m["non_2xx"] or m["socket_errors"] for m in med.values()):
            print("  warning: some responses were not 2xx, or sockets failed: see the raw runs")
        tables[endpoint.key] = {
            "endpoint": endpoint.title,
            "servers": med,
            "wirekit_vs_bare": ratio,
            "overhead": overhead,
            "bare_2w_vs_bare": med["bare-2w"]["req_per_s"] / bare if bare else None,
            "wirekit_aiohttp_vs_bare": (
                med["wirekit-aiohttp"]["req_per_s"] / bare if "wirekit-aiohttp" in med else None
            ),
            "wirekit_2w_vs_bare_2w": med["wirekit-2w"]["req_per_s"] / med["bare-2w"]["req_per_s"],
            "verdict": verdict or None,
        }
    busy = [
        f"{e.key}/{s}"
        for e in endpoints
        for s, rows in runs[e.key].items()
        if median_row(rows)["other_cpu"] > 0.3
    ]
    if busy:
        print(
            "\nwarning: other work kept the machine busy during " + ", ".join(busy)
            + " (other CPU > 0.3 cores): those numbers are low and noisy"
        )  # fmt: skip
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout
    result = {
        "benchmark": "rest",
        "machine": machine(),
        "versions": {
            **{
                name: package_version(name)
                for name in ("wirekit", "aiohttp", "uvloop", "orjson", "argon2-cffi", "PyJWT")
            },
            "wrk": wrk_version.splitlines()[0] if wrk_version else None,
        },
        "params": {
            "threads": THREADS,
            "connections": opts.connections,
            "seconds": opts.seconds,
            "runs": opts.runs,
            "warmup_seconds": WARMUP,
            "wrk_timeout": WRK_TIMEOUT,
            "servers": {
                "wirekit": "wirekit serve, 1 process, embedded engine; GET served directly",
                "wirekit-aiohttp": "the same wirekit process, GET /api/users/%62ench: the "
                "escape sends it through aiohttp and the same chain (GET only)",
                "wirekit-2w": "wirekit serve --workers 2 --engine redis://... on a redis-server "
                "of its own (its CPU counted with the server's)",
                "bare": "benchmarks/rest_ref.py, aiohttp + uvloop, no middleware, no auth, "
                "1 process",
                "bare-2w": "benchmarks/rest_ref.py x 2 processes, SO_REUSEPORT",
                "bare+chain": "benchmarks/rest_ref.py --chain: wirekit's middleware chain, "
                "tokens accepted unverified, 1 process (only with --with-chain)",
            },
            "limiter": {
                "api_rate_per_s": API_RATE,
                "api_burst": int(API_RATE * 2),
                "login_per_user_per_min": LOGIN_RATE,
                "login_per_address_per_min": LOGIN_RATE * 4,
                "flags": f"--api-rate {API_RATE:g} --login-rate {LOGIN_RATE}",
            },
        },
        "notes": list(NOTES),
        "targets": {"get_overhead_max": TARGET_GET_OVERHEAD},
        "results": targets,
        "tables": tables,
        "raw": runs,
        "elapsed_s": round(elapsed, 1),
    }
    write_result("rest", result, f" ({elapsed:.0f} s)")


if __name__ == "__main__":
    main()
