"""Helpers the benchmark scripts share: ports, the machine's description and load, C builds,
server processes (start, wait, stop, RSS, CPU) and the runs of hub_load.c (hub_tcp.py, hub_ws.py,
hub_cluster.py).

The scripts run as ``python benchmarks/NAME.py``, so this module is importable beside them.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import random
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
BUILD = HERE / "build"
TICK = os.sysconf("SC_CLK_TCK")


CGROUP_V1, CGROUP_V2 = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")
CFS_PERIOD_US = 10_000  # short, so that a throttled process waits at most this long


def cpu_cgroup(cores: float, stack: contextlib.ExitStack) -> Path:
    """A new cgroup limited to ``cores`` CPUs (CFS quota), removed by ``stack`` once the
    processes put in it (:func:`join_cgroup`) have stopped. Needs root and the cpu controller."""
    quota = max(1000, round(cores * CFS_PERIOD_US))
    name = f"wirekit-bench-{os.getpid()}-{random.randrange(1 << 30)}"
    if (CGROUP_V1 / "cpu.cfs_quota_us").exists():
        group = CGROUP_V1 / name
        group.mkdir()
        (group / "cpu.cfs_period_us").write_text(str(CFS_PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(quota))
    elif "cpu" in (CGROUP_V2 / "cgroup.subtree_control").read_text().split():
        group = CGROUP_V2 / name
        group.mkdir()
        (group / "cpu.max").write_text(f"{quota} {CFS_PERIOD_US}")
    else:
        raise SystemExit("capping CPU needs the cgroup cpu controller (v1, or v2 enabled)")
    stack.callback(group.rmdir)
    return group


def join_cgroup(pid: int, group: Path) -> None:
    """Move process ``pid`` (all its threads; its later children follow) into ``group``."""
    (group / "cgroup.procs").write_text(str(pid))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine() -> dict[str, Any]:
    """What the results were measured on."""
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform()}  # fmt: skip


def machine_busy_seconds() -> float:
    """CPU seconds all processes (and the kernel) have been busy, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / TICK


def build_c(name: str, *flags: str) -> Path:
    """Compile ``benchmarks/NAME.c`` into ``benchmarks/build/NAME``."""
    BUILD.mkdir(exist_ok=True)
    exe = BUILD / name
    subprocess.run(["gcc", "-O2", *flags, "-o", str(exe), str(HERE / f"{name}.c")], check=True)
    return exe


# -- server processes ----------------------------------------------------------------------
def write_result(name: str, result: dict[str, Any], note: str = "") -> Path:
    """``benchmarks/results/NAME.json``."""
    out = HERE / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}{note}")
    return out


def wait_port(
    port: int, proc: subprocess.Popen[Any] | None = None, log: Path | None = None
) -> None:
    for _ in range(300):
        if proc is not None and proc.poll() is not None:
            assert log is not None
            raise SystemExit(f"server exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"server on {port} never came up")


def raise_nofile(need: int) -> None:
    """Open-files limit for this process and the children it starts (servers, load)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            return
        except (ValueError, OSError):
            raise SystemExit(f"need {need} open files, the hard limit is {hard}") from None
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard < 0 else hard, hard))


def stop(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of one process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def all_cpu_seconds() -> dict[int, tuple[str, float]]:
    """Every process's name and user+system CPU seconds (pid: (comm, seconds)), from /proc."""
    out: dict[int, tuple[str, float]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            text = (d / "stat").read_text()
        except OSError:
            continue
        comm, _, rest = text.partition(" (")[2].rpartition(")")
        fields = rest.split()
        out[int(d.name)] = (comm, (int(fields[11]) + int(fields[12])) / TICK)
    return out


def busiest(
    before: dict[int, tuple[str, float]],
    after: dict[int, tuple[str, float]],
    seconds: float,
    exclude: set[int],
    count: int = 3,
) -> list[dict[str, Any]]:
    """The ``count`` processes (not in ``exclude``) that used the most CPU between two
    :func:`all_cpu_seconds` snapshots ``seconds`` apart, in cores (those above 0.02). A process
    that started in between counts whole; one that ended in between is not seen."""
    used = [
        {
            "pid": pid,
            "comm": comm,
            "cores": round((cpu - before.get(pid, ("", 0.0))[1]) / seconds, 3),
        }
        for pid, (comm, cpu) in after.items()
        if pid not in exclude
    ]
    used.sort(key=lambda u: -float(u["cores"]))
    top = [u for u in used[:count] if float(u["cores"]) > 0.02]
    for u in top:  # what it runs, when it still does
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{u['pid']}/cmdline").read_bytes().replace(b"\0", b" ")
            u["cmd"] = cmd.decode(errors="replace").strip()[:120]
    return top


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def wirekit_exe() -> list[str]:
    script = Path(sys.executable).parent / "wirekit"
    return [str(script)] if script.exists() else [sys.executable, "-m", "wirekit"]


def start_wirekit(
    tmp: Path, *extra: str, chat_port: int | None = None
) -> tuple[subprocess.Popen[bytes], dict[str, int], Path]:
    """``wirekit serve`` on free ports (chat, http, metrics) with a fresh data directory; the
    chat port is ``chat_port`` when given."""
    ports = {"chat": chat_port or free_port(), "http": free_port(), "metrics": free_port()}
    data, log = tempfile.mkdtemp(dir=tmp), tmp / f"wirekit-{time.time()}.log"
    cmd = [
        *wirekit_exe(),
        "--log-level",
        "warning",
        "serve",
        "--data",
        data,
        "--chat",
        f"127.0.0.1:{ports['chat']}",
        "--metrics",
        f"127.0.0.1:{ports['metrics']}",
        "--http",
        f"127.0.0.1:{ports['http']}",
        "--message-rate",
        "100000",
        "--max-connections",
        "20000",
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    wait_port(ports["chat"], proc, log)
    wait_port(ports["http"], proc, log)
    return proc, ports, log


def start_redis(tmp: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    """redis-server on a free loopback port, nothing persisted, in a fresh directory."""
    port = free_port()
    d = Path(tempfile.mkdtemp(dir=tmp, prefix="redis-"))
    log = d / "redis.log"
    cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d),
           "--save", "", "--appendonly", "no", "--protected-mode", "no",
           "--loglevel", "warning"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_port(port, proc, log)
    return proc, port, log


# -- hub_load.c runs -----------------------------------------------------------------------
@dataclass(frozen=True)
class Phases:
    """A hub_load fanout run: max rate with ``window`` messages outstanding, 1 s warm-up then
    ``rounds`` x ``seconds``; then ``half_seconds`` open-loop at half the median max rate."""

    seconds: float
    rounds: int
    window: int
    half_seconds: float


def run_fanout(
    load: Path,
    proto: str,
    server: subprocess.Popen[Any],
    port: str,
    n: int,
    token: str,
    tmp: Path,
    phases: Phases,
    *,
    others: Mapping[str, int] | None = None,
    on_ready: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """One hub_load fanout run; samples server and client CPU at the phase markers, and that
    of ``others`` (name: pid, e.g. more server processes) into ``cpu_max`` / ``cpu_half``;
    ``busiest_other_max``: the processes besides those that used the most CPU at max rate.
    ``on_ready()`` runs once every client is logged in; its result is the row's ``at_ready``."""
    err = tmp / f"load-{proto}-{n}.err"
    others = dict(others or {})
    at_ready: Any = None
    rss0 = rss_kib(server.pid)
    args = [
        str(load),
        "fanout",
        proto,
        "127.0.0.1",
        port,
        str(n),
        str(phases.seconds),
        str(phases.rounds),
        str(phases.window),
        str(phases.half_seconds),
        token,
    ]
    client = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err.open("wb"), text=True)
    assert client.stdout is not None
    marks: dict[str, tuple[float, ...]] = {}
    other_marks: dict[str, dict[str, float]] = {}
    snapshots: dict[str, tuple[float, dict[int, tuple[str, float]]]] = {}
    result: dict[str, Any] | None = None
    sel = selectors.DefaultSelector()
    sel.register(client.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 240 + phases.rounds * phases.seconds + phases.half_seconds
    try:
        while result is None and time.monotonic() < deadline:
            if not sel.select(timeout=1.0):
                if client.poll() is not None:
                    break
                continue
            line = client.stdout.readline()
            if not line:
                break
            line = line.strip()
            if line.startswith("{"):
                result = json.loads(line)
            else:
                marks[line] = (
                    time.monotonic(),
                    cpu_seconds(server.pid),
                    cpu_seconds(client.pid),
                    machine_busy_seconds(),
                )
                other_marks[line] = {name: cpu_seconds(pid) for name, pid in others.items()}
                if line in ("max_begin", "max_end"):
                    snapshots[line] = (time.monotonic(), all_cpu_seconds())
                if line == "ready":
                    marks["rss"] = (float(rss_kib(server.pid)),)
                    if on_ready is not None:
                        at_ready = on_ready()
        client.wait(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    if result is None:
        raise SystemExit(f"{proto} N={n}: load failed:\n{err.read_text()[-2000:]}")

    def cores(begin: str, end: str, which: int) -> float:
        (t0, *c0), (t1, *c1) = marks[begin], marks[end]
        return (c1[which - 1] - c0[which - 1]) / (t1 - t0)

    def cores_of(begin: str, end: str) -> dict[str, float]:
        span = marks[end][0] - marks[begin][0]
        return {
            "server": cores(begin, end, 1),
            "client": cores(begin, end, 2),
            **{k: (other_marks[end][k] - other_marks[begin][k]) / span for k in others},
        }

    cpu_max = cores_of("max_begin", "max_end")
    (t0, before), (t1, after) = snapshots["max_begin"], snapshots["max_end"]
    mine = {os.getpid(), server.pid, client.pid, *others.values()}
    return {
        "n": n,
        "deliveries_per_s": statistics.median(
            r["deliveries_per_s"] for r in result["max"]["rounds"]
        ),
        "msgs_per_s": result["max"]["msgs_per_s_median"],
        "max_p50_ms": result["max"]["latency"]["p50_ms"],
        "max_p99_ms": result["max"]["latency"]["p99_ms"],
        "half_msgs_per_s": result["half"]["msgs_per_s"],
        "half_deliveries_per_s": result["half"]["deliveries_per_s"],
        "half_p50_ms": result["half"]["latency"]["p50_ms"],
        "half_p99_ms": result["half"]["latency"]["p99_ms"],
        "half_p999_ms": result["half"]["latency"]["p999_ms"],
        "half_max_ms": result["half"]["latency"]["max_ms"],
        "server_cpu_max": cores("max_begin", "max_end", 1),
        "client_cpu_max": cores("max_begin", "max_end", 2),
        "server_cpu_half": cores("half_begin", "half_end", 1),
        # everything else busy on the machine during the max-rate phase (other processes, and
        # kernel work not charged to either): near 0 on a quiet machine
        "other_cpu_max": max(0.0, cores("max_begin", "max_end", 3) - sum(cpu_max.values())),
        "machine_cpu_max": cores("max_begin", "max_end", 3),
        "cpu_max": cpu_max,
        "cpu_half": cores_of("half_begin", "half_end"),
        "busiest_other_max": busiest(before, after, t1 - t0, mine),
        "at_ready": at_ready,
        "setup_s": result["setup_s"],
        "server_rss_kib_per_conn": (marks["rss"][0] - rss0) / (n + 1),
        "raw": result,
    }


def kernel_floor(load: Path, n: int, size: int, rounds: int = 5) -> dict[str, Any]:
    """What the kernel alone costs one fan-out on this machine (``hub_load floor``): one
    ``size``-byte send to each of ``n`` loopback TCP sockets, with no server and no reader
    (median of ``rounds``). A server cannot hand a message to its i-th subscriber sooner than i
    sends after it starts, so the 99th percentile of its deliveries is at least 0.99 x n sends
    after the publication arrives: ``p99_floor_ms``, whatever the server is written in."""
    out = subprocess.run(
        [str(load), "floor", str(n), str(size), str(rounds)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    per_round = json.loads(out.stdout)["us_per_send"]
    us = statistics.median(per_round)
    return {
        "n": n,
        "bytes": size,
        "us_per_send": us,
        "us_per_send_rounds": per_round,
        "fanout_ms": us * n / 1000,
        "p99_floor_ms": 0.99 * us * n / 1000,
    }


def print_floors(floors: Mapping[int, Mapping[str, Any]]) -> None:
    """The :func:`kernel_floor` of each N, as a report section."""
    size = next(iter(floors.values()))["bytes"]
    print(
        f"\nkernel floor (hub_load floor, no server): one {size}-byte send to each of N loopback "
        "TCP sockets; no server's p99 at any rate can be lower than 0.99 x that"
    )
    for n, f in floors.items():
        print(
            f"  N={n}: {f['us_per_send']:.2f} us per send, {f['fanout_ms']:.1f} ms per fan-out, "
            f"p99 floor {f['p99_floor_ms']:.1f} ms"
        )


def run_hold(
    load: Path, proto: str, pid: int, port: int, token: str, tmp: Path, *, count: int
) -> dict[str, Any]:
    """``count`` idle connections: the server's VmRSS before and after."""
    time.sleep(0.5)
    before = rss_kib(pid)
    err = tmp / f"hold-{proto}.err"
    args = [str(load), "hold", proto, "127.0.0.1", str(port), str(count), "120", token]
    client = subprocess.Popen(
        args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err.open("wb"), text=True
    )
    assert client.stdout is not None and client.stdin is not None
    try:
        line = client.stdout.readline()  # "ready N SECONDS", or EOF if it failed (<= 120 s)
        if not line.startswith("ready"):
            raise SystemExit(f"hold {proto}: {line!r}\n{err.read_text()[-2000:]}")
        setup = float(line.split()[2])
        time.sleep(1.0)  # let the last replies leave the write buffers
        after = rss_kib(pid)
    finally:
        client.stdin.close()
        try:
            client.wait(timeout=30)
        except subprocess.TimeoutExpired:
            client.kill()
            client.wait()
    return {
        "connections": count,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_conn": (after - before) / count,
        "setup_s": setup,
    }


# -- the hub's chat fan-out (hub_tcp.py, hub_cluster.py) ---------------------------------------
CHAT_USER, CHAT_PASSWORD, ROOM = "bench", "benchpass123", "#bench"


def free_port_range(count: int) -> int:
    """A first port such that first .. first+count-1 are free (below the ephemeral range)."""
    for _ in range(200):
        first = random.randrange(20_000, 32_000 - count)
        socks = []
        try:
            for port in range(first, first + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise SystemExit(f"no {count} consecutive free ports")


def chat_token(port: int) -> str:
    """Register the bench user (argon2: once per server), join the room, return a token."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        f.readline()  # greeting
        s.sendall(f"/json\n/register {CHAT_USER} {CHAT_PASSWORD}\n/join {ROOM}\n".encode())
        token = None
        for _ in range(20):
            event = json.loads(f.readline())
            if event.get("type") == "error":
                raise SystemExit(f"wirekit setup failed: {event}")
            if event.get("cmd") == "register":
                token = event["token"]
            if event.get("cmd") == "joined":
                break
        if token is None:
            raise SystemExit("wirekit setup: no token")
        return str(token)
