"""Load-generator benchmark: max req/s of `wirekit load` against wrk, hey and locust, and RSS.

One nginx (Debian's, started here from a generated config: 1 worker process so the generator
gets the other core, access_log off, keep-alive without a request limit, sendfile off) serves a
~100-byte static file on an ephemeral 127.0.0.1 port. sendfile is off because with it nginx
writes the headers and such a small body as two TCP segments (4 segments per request on
loopback, counted with nstat, instead of 2), which halves what its one worker can serve: with
sendfile on, nginx was what saturated first for every fast tool (about 80,000 req/s on the AMD
host), and the table compared nginx's limit, not the tools'. On 2+ cores nginx is pinned to the
first CPU and each one-thread tool (wirekit load, wrk -t1, locust) to the last, so the two sides
do not trade cores from run to run; the variants with more threads, and hey, are not pinned.
Against that same URL, with the same connection count and duration, in one run, each tool goes
ROUNDS times (interleaved, so drift hits every tool alike): `wirekit load` (1 process and
--workers 2), wrk (-t1 and -t2), hey and locust (FastHttpUser, one process, headless). The
table shows median req/s and the ratio of each wirekit variant to each tool; the CPU of nginx
and of the tool (cores, sampled from /proc during the steady part of each run) tells which side
saturated.

When nginx saturates first (its one worker; on a 2-core machine it often does), that table
shows nginx's limit, not the tools'. And on a shared host one run can be 30% faster than the
next, so even paired runs differ by more than the tools do. So `wirekit load` and wrk -t1 then
run *at the same time* on the same core, each with half the connections to its own port of the
same nginx (ROUNDS rounds, each twice with the ports swapped): the kernel shares that core
between them, both meet the same host at the same moment, and the ratio of their requests per
CPU-second is what each tool does with the same CPU (about 3% apart from round to round here,
against 15-30% for runs one after the other). Requests are counted per port by an nftables
counter (packets to the port: one segment per request, checked against each tool's own count
over the whole run) and CPU from /proc, both over the steady part of the run. Needs root and
nft; --no-shared skips it.

Then the memory target: `wirekit load --rate 20000` (open model) for RSS_SECONDS (60 s;
--long: the issue's full 10 minutes), sampling the process's VmRSS every second.

Missing tools are installed first (apt-get: nginx, wrk, hey; pip into this venv: locust, whose
user is benchmarks/load_locustfile.py). `wirekit load` exiting 3 (INVALID: the generator's CPU
saturated) is expected at maximum throughput and counts as a measurement, not a failure.
Issue targets: >= 1.0x wrk, >= 2x hey, >= 5x locust (each round: the faster wirekit variant over
the tool's faster variant; the verdict takes the median of the rounds), RSS <= 150 MB over 10
minutes at 20,000 req/s. Results go to benchmarks/results/load.json. Run with the project
venv's python: `.venv/bin/python benchmarks/load.py [--long]`.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.metadata
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench_common import TICK, free_port, machine, machine_busy_seconds

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent  # the venv's bin: wirekit, pip, locust
LOCUSTFILE = HERE / "load_locustfile.py"
CONNS, SECONDS, ROUNDS = 50, 8, 3
RSS_RATE, RSS_SECONDS, RSS_LONG_SECONDS, RSS_LIMIT_MB = 20_000, 60, 600, 150
FILE_PATH, FILE_BODY = "/small.txt", (b"wirekit load benchmark: a small static file. " * 3)[:100]
SAMPLE_PERIOD = 0.25
# 2+ cores: nginx's processes on the first, each one-thread tool on the last (the tools that
# use more threads, and hey, whose Go runtime uses every core, are not pinned)
NGINX_CPU, TOOL_CPU = 0, (os.cpu_count() or 1) - 1
PIN = TOOL_CPU > NGINX_CPU
SATURATED = 0.85  # a side using this share of the cores it can use has run out of CPU
NOISY_CORES = 0.25  # other processes' CPU above this: the run was disturbed
STEADY_SKIP, STEADY_TAIL = 2.0, 1.0  # CPU window: from start+2 s to exit-1 s (startup excluded)
TARGETS = {"wrk": 1.0, "hey": 2.0, "locust": 5.0}  # wirekit / tool, from the issue
APT = {"nginx": "nginx", "wrk": "wrk", "hey": "hey"}  # command -> Debian package
SBIN_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


# -- setup ------------------------------------------------------------------------------------
def which(cmd: str) -> str | None:
    return shutil.which(cmd, path=SBIN_PATH)


def ensure_tools() -> None:
    """Install what is missing: Debian packages with apt-get, locust with this venv's pip."""
    if not (BIN / "wirekit").exists():
        raise SystemExit(f"no wirekit in {BIN}: run with the project venv (.venv/bin/python)")
    missing = [pkg for cmd, pkg in APT.items() if which(cmd) is None]
    if missing:
        print(f"setup: {', '.join(missing)} not found; installing with apt-get", flush=True)
        if os.geteuid() != 0:
            raise SystemExit(
                f"setup: need root for apt-get; run: apt-get install {' '.join(missing)}"
            )
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=900)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                       check=True, env=env, timeout=1800)  # fmt: skip
        still = [pkg for cmd, pkg in APT.items() if which(cmd) is None]
        if still:
            raise SystemExit(f"setup: apt-get ran but {', '.join(still)} still missing")
        print("setup: installed (this nginx is not started as a service; the benchmark "
              "starts its own)", flush=True)  # fmt: skip
    if not (BIN / "locust").exists():
        print(f"setup: locust not in {BIN.parent}; pip install locust", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "locust"], check=True,
                       timeout=1800)  # fmt: skip
        if not (BIN / "locust").exists():
            raise SystemExit("setup: pip installed locust but there is no bin/locust")


def versions() -> dict[str, str]:
    def out(cmd: list[str]) -> str:
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unknown ({exc})"
        text = (p.stdout + p.stderr).strip()
        return text.splitlines()[0] if text else "?"

    return {
        "wirekit": importlib.metadata.version("wirekit"),
        "nginx": out([which("nginx") or "nginx", "-v"]).removeprefix("nginx version: "),
        "wrk": out([which("wrk") or "wrk", "-v"]).split(" Copyright")[0],
        "hey": "debian " + out(["dpkg-query", "-W", "-f", "${Version}", "hey"]),
        "locust": out([str(BIN / "locust"), "--version"]).split(" from ")[0],
    }


def git_state() -> dict[str, Any]:
    """The commit measured, and whether wirekit's source differed from it (edits in flight)."""

    def git(*args: str) -> str:
        p = subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True, timeout=30)
        return p.stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD"),
            "src_tree": git("rev-parse", "--short", "HEAD:src"),
            "src_dirty": bool(git("status", "--porcelain", "--", "../src"))}  # fmt: skip


# -- nginx ------------------------------------------------------------------------------------
NGINX_CONF = """\
worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type text/plain;
    sendfile off;
    tcp_nodelay on;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    open_file_cache max=16 inactive=600s;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{port2};
        root {dir}/html;
    }}
}}
"""


@contextlib.contextmanager
def nginx() -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """nginx (non-daemon, our child) serving FILE_PATH on two ports; yields (process, URL, the
    URL on the other port)."""
    exe = which("nginx")
    assert exe is not None
    with tempfile.TemporaryDirectory(prefix="wirekit-bench-nginx-") as tmp:
        d = Path(tmp)
        (d / "html").mkdir()
        (d / "tmp").mkdir()
        (d / "html" / FILE_PATH.lstrip("/")).write_bytes(FILE_BODY)
        for p in (d, d / "html", d / "html" / FILE_PATH.lstrip("/")):  # workers run as nobody
            p.chmod(0o755 if p.is_dir() else 0o644)
        port = free_port()
        port2 = free_port()
        while port2 == port:
            port2 = free_port()
        conf = d / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=d, port=port, port2=port2))
        log = (d / "stderr.log").open("wb")
        proc = subprocess.Popen([exe, "-p", str(d), "-c", str(conf), "-e", str(d / "error.log")],
                                stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        url = f"http://127.0.0.1:{port}{FILE_PATH}"
        try:
            body = b""
            for _ in range(100):
                if proc.poll() is not None:
                    break
                try:
                    with urllib.request.urlopen(url, timeout=1) as r:
                        body = r.read()
                    break
                except OSError:
                    time.sleep(0.1)
            if body != FILE_BODY:
                errors = ""
                for name in ("stderr.log", "error.log"):
                    with contextlib.suppress(OSError):
                        errors += (d / name).read_text()
                raise SystemExit(f"nginx did not serve {url} (exit {proc.poll()}):\n{errors}")
            if PIN:
                for pid in tree(proc.pid):
                    os.sched_setaffinity(pid, {NGINX_CPU})
            pinned = f", pinned to CPU {NGINX_CPU}" if PIN else ""
            print(f"nginx {proc.pid} serving {len(FILE_BODY)} bytes at {url} (1 worker{pinned})")
            yield proc, url, f"http://127.0.0.1:{port2}{FILE_PATH}"
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGQUIT)  # graceful stop
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            log.close()


# -- /proc sampling ---------------------------------------------------------------------------
def tree(pid: int) -> list[int]:
    """pid and all its descendants (bounded: at most 1,000 processes)."""
    pids, i = [pid], 0
    while i < len(pids) and len(pids) < 1000:
        for task in Path(f"/proc/{pids[i]}/task").glob("*/children"):
            with contextlib.suppress(OSError, ValueError):
                pids += [int(c) for c in task.read_text().split()]
        i += 1
    return pids


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process tree, reaped children included (so exits do not lose time)."""
    total = 0.0
    for p in tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in f[11:15]) / TICK  # utime stime cutime cstime
    return total


def tree_rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process tree in kB, summed."""
    rss = hwm = 0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm += int(line.split()[1])
    return rss, hwm


def run_sampled(cmd: list[str], nginx_pid: int, timeout: float, period: float = SAMPLE_PERIOD,
                on_sample: Callable[[int], None] | None = None,
                env: dict[str, str] | None = None,
                cpu: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Run cmd to completion, sampling CPU of nginx, of cmd's tree and of the machine; on CPU
    ``cpu`` only (from its first instruction) when given."""

    def enter() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, preexec_fn=enter)
        samples = []  # (t, nginx_cpu, tool_cpu, machine_busy)
        deadline = t0 + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            samples.append((time.monotonic() - t0, tree_cpu(nginx_pid), tree_cpu(proc.pid),
                            machine_busy_seconds()))  # fmt: skip
            if on_sample is not None:
                on_sample(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=period)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
            raise SystemExit(f"{cmd[0]} still running after {timeout:.0f} s: killed")
        wall = time.monotonic() - t0
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    steady = [s for s in samples if STEADY_SKIP <= s[0] <= wall - STEADY_TAIL]
    cpu: dict[str, float | None] = dict.fromkeys(
        ("nginx_cores", "tool_cores", "machine_cores", "other_cores")
    )
    if len(steady) >= 2:
        (ta, *a), (tb, *b) = steady[0], steady[-1]
        span = tb - ta
        cpu = {k: round((y - x) / span, 3) for k, x, y in
               zip(("nginx_cores", "tool_cores", "machine_cores"), a, b, strict=True)}  # fmt: skip
        # everything else on the machine (this script's sampling included): noise if large
        cpu["other_cores"] = round(cpu["machine_cores"] - cpu["nginx_cores"] - cpu["tool_cores"], 3)
    return {"rc": proc.returncode, "stdout": stdout, "stderr": stderr, "wall_s": round(wall, 3),
            **cpu}  # fmt: skip


# -- the tools --------------------------------------------------------------------------------
def parse_wirekit(r: dict[str, Any]) -> dict[str, Any]:
    if r["rc"] not in (0, 3):  # 3: INVALID, generator CPU saturated; expected at max rate
        raise RuntimeError(f"exit {r['rc']}: {r['stderr'].strip()[-2000:]}")
    j = json.loads(r["stdout"])
    lat = j["latency_ms"]["corrected"]
    return {"rps": j["throughput_rps"], "completed": j["requests"]["completed"],
            "errors": j["requests"]["errors"], "error_kinds": j["errors"], "status": j["status"],
            "p50_ms": lat["p50"], "p99_ms": lat["p99"], "generator_cpu": j["generator_cpu"],
            "valid": j["valid"], "invalid_reasons": j["invalid_reasons"],
            "duration_s": j["duration_s"],
            "timeline_completed": [t["completed"] for t in j["timeline"]]}  # fmt: skip


def parse_wrk(r: dict[str, Any]) -> dict[str, Any]:
    if r["rc"] != 0:
        raise RuntimeError(f"exit {r['rc']}: {r['stderr'].strip()[-2000:]}")
    out = r["stdout"]
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    if m is None or n is None:
        raise RuntimeError(f"no Requests/sec in wrk output:\n{out}")
    errors = 0
    s = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if s is not None:
        errors += sum(int(x) for x in s.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx is not None:
        errors += int(non2xx[1])
    return {"rps": float(m[1]), "completed": int(n[1]), "errors": errors}


def parse_hey(r: dict[str, Any]) -> dict[str, Any]:
    if r["rc"] != 0:
        raise RuntimeError(f"exit {r['rc']}: {r['stderr'].strip()[-2000:]}")
    out = r["stdout"]
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if m is None:
        raise RuntimeError(f"no Requests/sec in hey output:\n{out}")
    status = {code: int(n) for code, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    errors = 0
    err_section = out.split("Error distribution:", 1)
    if len(err_section) == 2:
        errors = sum(int(n) for n in re.findall(r"^\s*\[(\d+)\]", err_section[1], re.M))
    return {"rps": float(m[1]), "completed": status.get("200", 0), "errors": errors,
            "status": status}  # fmt: skip


def parse_locust(r: dict[str, Any], csv_prefix: Path) -> dict[str, Any]:
    stats = Path(f"{csv_prefix}_stats.csv")
    if not stats.exists():
        raise RuntimeError(f"exit {r['rc']}, no {stats.name}: {r['stderr'].strip()[-2000:]}")
    with stats.open(newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    agg = rows["Aggregated"]
    return {"rps": float(agg["Requests/s"]), "completed": int(agg["Request Count"]),
            "errors": int(agg["Failure Count"]), "p50_ms": float(agg["50%"]),
            "p99_ms": float(agg["99%"])}  # fmt: skip


def tools(url: str, seconds: int, csv_prefix: Path) -> dict[str, dict[str, Any]]:
    """name -> {cmd, parse, threads (cores it can use), family (for the issue's targets)}."""
    base = url.removesuffix(FILE_PATH)
    wk = [str(BIN / "wirekit"), "load", url, "-c", str(CONNS), "-d", f"{seconds}s", "--json"]
    wrk = [which("wrk") or "wrk", f"-c{CONNS}", f"-d{seconds}s", url]
    locust = [str(BIN / "locust"), "-f", str(LOCUSTFILE), "--headless", "-u", str(CONNS),
              "-r", str(CONNS * 100), "-t", f"{seconds}s", "--host", base, "--reset-stats",
              "--csv", str(csv_prefix), "--only-summary", "--loglevel", "WARNING",
              "--stop-timeout", "0"]  # fmt: skip
    cpus = os.cpu_count() or 1
    return {
        "wirekit load": {"cmd": wk, "parse": parse_wirekit, "threads": 1, "family": "wirekit"},
        "wirekit load --workers 2": {"cmd": [*wk, "--workers", "2"], "parse": parse_wirekit,
                                     "threads": 2, "family": "wirekit"},
        "wrk -t1": {"cmd": [wrk[0], "-t1", *wrk[1:]], "parse": parse_wrk, "threads": 1,
                    "family": "wrk"},
        "wrk -t2": {"cmd": [wrk[0], "-t2", *wrk[1:]], "parse": parse_wrk, "threads": 2,
                    "family": "wrk"},
        "hey": {"cmd": [which("hey") or "hey", "-c", str(CONNS), "-z", f"{seconds}s", url],
                "parse": parse_hey, "threads": cpus, "family": "hey"},
        "locust FastHttpUser (1 process)": {"cmd": locust, "family": "locust", "threads": 1,
                                            "parse": lambda r: parse_locust(r, csv_prefix)},
    }  # fmt: skip


def measure(name: str, spec: dict[str, Any], nginx_pid: int, seconds: int,
            csv_prefix: Path) -> dict[str, Any]:  # fmt: skip
    for old in csv_prefix.parent.glob(csv_prefix.name + "_*"):
        old.unlink()
    env = {**os.environ, "WIREKIT_BENCH_PATH": FILE_PATH}
    pinned = TOOL_CPU if PIN and spec["threads"] == 1 else None
    r = run_sampled(spec["cmd"], nginx_pid, timeout=seconds + 90, env=env, cpu=pinned)
    try:
        parsed = spec["parse"](r)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise SystemExit(f"{name} failed: {exc}") from None
    keys = ("nginx_cores", "tool_cores", "machine_cores", "other_cores", "wall_s")
    cpu = {k: r[k] for k in keys}
    return {**parsed, **cpu}


def bound(row: dict[str, Any], threads: int, cpus: int) -> str:
    """Which side ran out of CPU: nginx (its one worker), the generator, or the machine."""
    ng, tool, mach = row["nginx_cores"], row["tool_cores"], row["machine_cores"]
    if ng is None or tool is None:
        return "?"
    ng_full = ng >= SATURATED
    tool_full = tool >= SATURATED * min(threads, cpus)
    if ng_full and tool_full:
        return "both"
    if ng_full:
        return "nginx"
    if tool_full:
        return "generator"
    if mach is not None and mach >= SATURATED * cpus:
        return "machine (shared cores)"
    return "neither"


# -- RSS ----------------------------------------------------------------------------------------
def rss_run(url: str, nginx_pid: int, seconds: int) -> dict[str, Any]:
    cmd = [str(BIN / "wirekit"), "load", url, "-c", str(CONNS), "--rate", str(RSS_RATE),
           "-d", f"{seconds}s", "--json"]  # fmt: skip
    print(f"\nRSS: {' '.join(cmd)}  (VmRSS sampled every second)", flush=True)
    series: list[tuple[float, int, int]] = []
    t0 = time.monotonic()

    def sample(pid: int) -> None:
        rss, hwm = tree_rss_kb(pid)
        if rss:
            series.append((round(time.monotonic() - t0, 2), rss, hwm))
            if len(series) % 30 == 0:
                print(f"  {series[-1][0]:5.0f} s  RSS {rss / 1024:6.1f} MB", flush=True)

    r = run_sampled(cmd, nginx_pid, timeout=seconds + 120, period=1.0, on_sample=sample)
    if r["rc"] not in (0, 1, 3):
        raise SystemExit(f"RSS run failed: exit {r['rc']}: {r['stderr'].strip()[-2000:]}")
    j = json.loads(r["stdout"])
    rss_mb = [s[1] / 1024 for s in series]
    peak_mb = max([*rss_mb, *(s[2] / 1024 for s in series)], default=0.0)
    # growth: least-squares slope over the second half of the run (the first seconds are flat
    # while the allocator fills its arenas; the last sample includes building the report)
    half = [(t, mb) for (t, _, _), mb in zip(series, rss_mb, strict=True)
            if seconds / 2 <= t <= seconds]  # fmt: skip
    growth = None
    if len(half) >= 3:
        mt = statistics.fmean(t for t, _ in half)
        mm = statistics.fmean(mb for _, mb in half)
        var = sum((t - mt) ** 2 for t, _ in half)
        growth = 60 * sum((t - mt) * (mb - mm) for t, mb in half) / var if var else None
    return {
        "cmd": cmd,
        "seconds": seconds,
        "rate": RSS_RATE,
        "exit_code": r["rc"],
        "max_rss_mb": round(peak_mb, 1),
        "rss_at_5s_mb": next(
            (round(mb, 1) for (t, _, _), mb in zip(series, rss_mb, strict=True) if t >= 5), None
        ),
        "rss_last_mb": round(rss_mb[-1], 1) if rss_mb else None,
        "growth_mb_per_min": None if growth is None else round(growth, 2),
        "throughput_rps": j["throughput_rps"],
        "requests": j["requests"],
        "errors": j["errors"],
        "latency_ms_corrected": j["latency_ms"]["corrected"],
        "scheduler_lag_ms": j["scheduler_lag_ms"],
        "generator_cpu": j["generator_cpu"],
        "valid": j["valid"],
        "invalid_reasons": j["invalid_reasons"],
        "nginx_cores": r["nginx_cores"],
        "rss_series_mb": [round(mb, 1) for mb in rss_mb],
    }


# -- main ---------------------------------------------------------------------------------------
def throughput(url: str, nginx_pid: int, args: argparse.Namespace, csv_prefix: Path,
               cpus: int) -> dict[str, Any]:  # fmt: skip
    """Every tool ROUNDS times, interleaved; the table's rows, the issue's targets, raw runs."""
    specs = tools(url, args.seconds, csv_prefix)
    names = list(specs)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for r in range(args.rounds):  # interleaved so drift hits every tool alike
        for name in names:
            m = measure(name, specs[name], nginx_pid, args.seconds, csv_prefix)
            runs[name].append(m)
            extra = "" if m.get("valid", True) else "  (exit 3 INVALID: generator saturated)"
            err = f"  errors {m['errors']}" if m["errors"] else ""
            print(f"round {r + 1}/{args.rounds} {name:32} {m['rps']:>10,.0f} req/s  "
                  f"tool {m['tool_cores'] or 0:.2f} / nginx {m['nginx_cores'] or 0:.2f} "
                  f"cores{err}{extra}", flush=True)  # fmt: skip

    def med(name: str, key: str) -> float | None:
        vals = [x[key] for x in runs[name] if x.get(key) is not None]
        return round(statistics.median(vals), 3) if vals else None

    wk1, wk2 = "wirekit load", "wirekit load --workers 2"
    rows = []
    for name in names:
        row = {"tool": name, "rps": med(name, "rps"), "nginx_cores": med(name, "nginx_cores"),
               "tool_cores": med(name, "tool_cores"), "machine_cores": med(name, "machine_cores"),
               "other_cores": med(name, "other_cores"),
               "errors": sum(x["errors"] for x in runs[name])}  # fmt: skip
        per_core = [x["rps"] / x["tool_cores"] for x in runs[name] if x.get("tool_cores")]
        row["rps_per_tool_core"] = round(statistics.median(per_core)) if per_core else None
        row["bound"] = bound(row, specs[name]["threads"], cpus)
        for key, wk in (("ratio_wirekit_1p", wk1), ("ratio_wirekit_w2", wk2)):
            row[key] = round((med(wk, "rps") or 0) / row["rps"], 3) if row["rps"] else None
        rows.append(row)
    by = {row["tool"]: row for row in rows}
    best_wk = max(by[wk1]["rps"], by[wk2]["rps"])
    verdicts = []
    for family, target in TARGETS.items():
        family_names = [n for n in names if specs[n]["family"] == family]
        best = max((by[n] for n in family_names), key=lambda r: r["rps"])
        # Per round: the best wirekit variant over the family's best variant, from runs a few
        # seconds apart; their median is less exposed to the host's drift than the ratio of
        # the medians (kept as ratio_of_medians).
        per_round = [max(runs[wk1][r]["rps"], runs[wk2][r]["rps"])
                     / max(runs[n][r]["rps"] for n in family_names)
                     for r in range(args.rounds)]  # fmt: skip
        ratio = statistics.median(per_round)
        verdicts.append({"vs": best["tool"], "target": target, "ratio": round(ratio, 3),
                         "ratio_per_round": [round(x, 3) for x in per_round],
                         "ratio_of_medians": round(best_wk / best["rps"], 3),
                         "passed": ratio >= target})  # fmt: skip
    wk_runs = [x for n in (wk1, wk2) for x in runs[n]]
    invalid = [x["invalid_reasons"] for x in wk_runs if not x["valid"]]

    print(f"\n{len(FILE_BODY)}-byte file from nginx (1 worker), {CONNS} connections, "
          f"{args.seconds} s x {args.rounds} rounds (median), {cpus} cores")  # fmt: skip
    head = ("req/s", "wk 1p/tool", "wk w2/tool", "tool CPU", "req/s/core", "nginx CPU")
    print(f"{'tool':32} {head[0]:>8} {head[1]:>10} {head[2]:>10} {head[3]:>8} {head[4]:>10} "
          f"{head[5]:>9} {'other CPU':>9} {'errors':>6}  saturated")  # fmt: skip
    for row in rows:
        print(f"{row['tool']:32} {row['rps']:>8,.0f} {row['ratio_wirekit_1p']:>9.2f}x "
              f"{row['ratio_wirekit_w2']:>9.2f}x {row['tool_cores'] or 0:>8.2f} "
              f"{row['rps_per_tool_core'] or 0:>10,} {row['nginx_cores'] or 0:>9.2f} "
              f"{row['other_cores'] or 0:>9.2f} {row['errors']:>6}  {row['bound']}")  # fmt: skip
    print("(CPU in cores, steady part of each run; req/s/core = req/s per core the tool used; "
          "other = the rest of the machine)")  # fmt: skip
    noisy = [r["other_cores"] for r in rows if (r["other_cores"] or 0) > NOISY_CORES]
    if noisy:
        print(f"WARNING: other processes used up to {max(noisy):.2f} cores during the runs: "
              "the machine was not quiet, ratios are noisy")  # fmt: skip
    print("\nissue targets (best wirekit variant vs best variant of each tool, per round; "
          "the median of the rounds):")  # fmt: skip
    for v in verdicts:
        rounds = " ".join(f"{x:.2f}" for x in v["ratio_per_round"])
        print(f"  >= {v['target']:g}x {v['vs']:32} {v['ratio']:5.2f}x  "
              f"{'PASS' if v['passed'] else 'FAIL'}  (rounds {rounds}; ratio of medians "
              f"{v['ratio_of_medians']:.2f}x)")  # fmt: skip
    if invalid:
        print(f"  {len(invalid)} of {len(wk_runs)} wirekit runs exited 3 (INVALID, expected at "
              f"max throughput), e.g.: {invalid[0][0]}")  # fmt: skip
    return {"rows": rows, "targets": verdicts, "runs": runs}


@contextlib.contextmanager
def port_counters(ports: list[int]) -> Iterator[Callable[[], dict[int, int]]]:
    """An nftables table counting the packets sent to each of ``ports`` (removed on exit);
    yields a function that reads the counts."""
    nft = which("nft")
    if nft is None:
        raise SystemExit("the shared-core comparison needs nft (apt-get install nftables)")
    table = f"wirekit_bench_{os.getpid()}"

    def run(*args: str) -> str:
        p = subprocess.run([nft, *args], capture_output=True, text=True, timeout=30)
        if p.returncode:
            raise SystemExit(f"nft {' '.join(args)}: {p.stderr.strip()} (needs root)")
        return p.stdout

    run("add", "table", "inet", table)
    try:
        run("add", "chain", "inet", table, "out", "{ type filter hook output priority 0; }")
        for port in ports:
            run("add", "rule", "inet", table, "out", "tcp", "dport", str(port), "counter")

        def read() -> dict[int, int]:
            out = run("list", "table", "inet", table)
            found = re.findall(r"tcp dport (\d+) counter packets (\d+)", out)
            return {int(port): int(n) for port, n in found}

        yield read
    finally:
        run("delete", "table", "inet", table)


def shared_core(url: str, url2: str, nginx_pid: int, rounds: int,
                seconds: int) -> dict[str, Any]:  # fmt: skip
    """`wirekit load` and wrk -t1 at the same time on one core, CONNS/2 connections each to
    its own port of the same nginx: requests per CPU-second of each over the steady part of
    the run (see the module's docstring). Each round goes twice, the ports swapped."""
    half = CONNS // 2

    def commands(wk_url: str, wrk_url: str) -> list[list[str]]:
        return [[str(BIN / "wirekit"), "load", wk_url, "-c", str(half), "-d", f"{seconds}s",
                 "--json"],
                [which("wrk") or "wrk", "-t1", f"-c{half}", f"-d{seconds}s", wrk_url]]  # fmt: skip

    def pin() -> None:
        os.sched_setaffinity(0, {TOOL_CPU})

    def port(u: str) -> int:
        return int(u.split("/")[2].rsplit(":", 1)[1])

    print(f"\nsharing one core (CPU {TOOL_CPU}): wirekit load and wrk -t1 at the same time, "
          f"{half} connections each, each to its own nginx port")  # fmt: skip
    runs = []
    with port_counters([port(url), port(url2)]) as counters:
        for r in range(rounds):
            for wk_url, wrk_url in ((url, url2), (url2, url)):
                ports = [port(wk_url), port(wrk_url)]
                with tempfile.TemporaryFile() as o1, tempfile.TemporaryFile() as o2:
                    first = counters()
                    t0 = time.monotonic()
                    cmds = zip(commands(wk_url, wrk_url), (o1, o2), strict=True)
                    procs = [subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                              preexec_fn=pin) for cmd, out in cmds]  # fmt: skip
                    marks = []  # (t, packets per port, CPU per tool, nginx CPU)
                    for at in (STEADY_SKIP + 0.5, seconds - STEADY_TAIL):
                        time.sleep(max(0.0, t0 + at - time.monotonic()))
                        cpus = [tree_cpu(p.pid) for p in procs]
                        marks.append((time.monotonic(), counters(), cpus, tree_cpu(nginx_pid)))
                    for p in procs:
                        p.wait(timeout=seconds + 90)
                    last = counters()
                    o1.seek(0)
                    o2.seek(0)
                    wk_out, wrk_out = o1.read().decode(errors="replace"), o2.read().decode()
                wk_total = json.loads(wk_out)["requests"]["completed"]
                m = re.search(r"(\d+) requests in", wrk_out)
                if m is None:
                    raise SystemExit(f"wrk failed:\n{wrk_out}")
                totals = [wk_total, int(m.group(1))]
                (ta, ca, cpu_a, ng_a), (tb, cb, cpu_b, ng_b) = marks
                span = tb - ta
                req = [cb[p] - ca[p] for p in ports]
                cpu = [y - x for x, y in zip(cpu_a, cpu_b, strict=True)]
                per_cpu = [n / c for n, c in zip(req, cpu, strict=True)]
                run = {"rps": [round(n / span) for n in req],
                       "cores": [round(c / span, 3) for c in cpu],
                       "requests_per_cpu_s": [round(x) for x in per_cpu],
                       "nginx_cores": round((ng_b - ng_a) / span, 3),
                       # packets to the port over the whole run per request the tool counted:
                       # 1.00 (plus each connection's handshake and close) if a packet is a request
                       "packets_per_request": [round((last[p] - first[p]) / n, 4)
                                               for p, n in zip(ports, totals, strict=True)],
                       "ratio": round(per_cpu[0] / per_cpu[1], 3)}  # fmt: skip
                runs.append(run)
                print(f"round {r + 1}/{rounds} port {ports[0]}: wirekit {run['rps'][0]:>7,} req/s "
                      f"on {run['cores'][0]:.2f} cores, wrk {run['rps'][1]:>7,} req/s on "
                      f"{run['cores'][1]:.2f} cores, nginx {run['nginx_cores']:.2f}: requests "
                      f"per CPU-second {run['ratio']:.3f}x", flush=True)  # fmt: skip
    ratios = [x["ratio"] for x in runs]
    median = statistics.median(ratios)
    worst = max(abs(x - 1) for x in (p for x in runs for p in x["packets_per_request"]))
    print(f"  wirekit load / wrk -t1, requests per CPU-second: median {median:.3f}x "
          f"(runs {', '.join(f'{x:.3f}' for x in ratios)}); packets per request within "
          f"{worst:.2%} of 1")  # fmt: skip
    if worst > 0.01:
        print("  WARNING: packets to a port are not one per request: the counts are off")
    return {"connections_each": half, "cpu": TOOL_CPU, "ratio_median": round(median, 3),
            "runs": runs}  # fmt: skip


def print_rss(rss: dict[str, Any]) -> None:
    ok = "PASS" if rss["max_rss_mb"] <= RSS_LIMIT_MB else "FAIL"
    short = rss["seconds"] < RSS_LONG_SECONDS
    print(f"\nRSS at --rate {RSS_RATE:,} for {rss['seconds']} s: max {rss['max_rss_mb']:.1f} MB "
          f"(target <= {RSS_LIMIT_MB} MB over {RSS_LONG_SECONDS} s: {ok}"
          f"{'; short run, --long for the full 10 min' if short else ''})")  # fmt: skip
    growth = rss["growth_mb_per_min"]
    if growth is not None:
        guess = rss["max_rss_mb"] + growth * (RSS_LONG_SECONDS - rss["seconds"]) / 60
        more = f": about {guess:.0f} MB at 10 min if it stays linear" if short else ""
        print(f"  RSS growth over the second half of the run {growth} MB/min{more}")
    print(f"  achieved {rss['throughput_rps']:,.0f} req/s, scheduler lag p99 "
          f"{rss['scheduler_lag_ms']['p99']} ms, latency p99 "
          f"{rss['latency_ms_corrected']['p99']} ms, errors {rss['requests']['errors']}, "
          f"generator CPU {rss['generator_cpu']}, exit {rss['exit_code']}")  # fmt: skip
    if not rss["valid"]:
        print(f"  INVALID: {'; '.join(rss['invalid_reasons'])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--long",
        action="store_true",
        help=f"RSS run for the issue's full {RSS_LONG_SECONDS // 60} minutes",
    )
    ap.add_argument("--rounds", type=int, default=ROUNDS, help="runs per tool (median)")
    ap.add_argument("--seconds", type=int, default=SECONDS, help="duration of each run")
    ap.add_argument("--rss-seconds", type=int, default=None, help="override the RSS run length")
    ap.add_argument("--no-shared", action="store_true",
                    help="skip the comparison of wirekit load and wrk -t1 sharing one core "
                         "(it needs root and nft)")  # fmt: skip
    which_part = ap.add_mutually_exclusive_group()
    which_part.add_argument("--skip-rss", action="store_true", help="throughput table only")
    which_part.add_argument(
        "--rss-only",
        action="store_true",
        help="RSS run only; updates the rss entry of an existing load.json",
    )
    args = ap.parse_args()  # fmt: skip
    rss_seconds = args.rss_seconds or (RSS_LONG_SECONDS if args.long else RSS_SECONDS)
    if not (1 <= args.rounds <= 20 and 1 <= args.seconds <= 600 and 10 <= rss_seconds <= 3600):
        raise SystemExit("--rounds must be 1-20, --seconds 1-600 and --rss-seconds 10-3600")
    ensure_tools()
    cpus = os.cpu_count() or 1
    result: dict[str, Any] = {"benchmark": "load", "machine": machine(), "versions": versions(),
                              "git": git_state()}  # fmt: skip
    busy0, t0 = machine_busy_seconds(), time.monotonic()
    time.sleep(2)
    background = round((machine_busy_seconds() - busy0) / (time.monotonic() - t0), 3)
    result["machine"]["background_cores_before"] = background
    noisy = " (not quiet: results will be noisy)" if background > NOISY_CORES else ""
    print(f"machine: {cpus} cores, {background:.2f} cores busy before starting{noisy}")
    with (
        tempfile.TemporaryDirectory(prefix="wirekit-bench-locust-") as ltmp,
        nginx() as (ng, url, url2),
    ):
        table = None
        if not args.rss_only:
            table = throughput(url, ng.pid, args, Path(ltmp) / "locust", cpus)
            if not args.no_shared:
                table["shared_core"] = shared_core(url, url2, ng.pid, args.rounds, args.seconds)
        rss = None if args.skip_rss else rss_run(url, ng.pid, rss_seconds)
    if rss is not None:
        print_rss(rss)
        rss["git"] = result["git"]
    after = git_state()
    if (after["src_tree"], after["src_dirty"]) != (result["git"]["src_tree"], False):
        print(f"WARNING: src/ was not the committed tree for the whole run ({result['git']} -> "
              f"{after}): some runs may have measured other code")  # fmt: skip
        result["git_after"] = after
    out = HERE / "results" / "load.json"
    out.parent.mkdir(exist_ok=True)
    previous: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        previous = json.loads(out.read_text())
    if table is None and "rows" in previous:  # --rss-only: keep the last throughput table
        result = previous
    else:
        result["params"] = {"connections": CONNS, "seconds": args.seconds, "rounds": args.rounds,
                            "file_bytes": len(FILE_BODY), "nginx_workers": 1}  # fmt: skip
        result.update(table or {})
    # "rss": the last short run, "rss_long": the last 10-minute one; a run replaces its own
    key = "rss_long" if rss_seconds >= RSS_LONG_SECONDS else "rss"
    for k in ("rss", "rss_long"):
        result[k] = rss if k == key and rss is not None else previous.get(k, result.get(k))
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
