"""Hub benchmark: fan-out of one publisher to N TCP clients in one room, and idle memory.

Fan-out: for each N, ``wirekit serve`` and, as the anchor, ngircd (an IRC server in C, the same N
clients in one channel, one publisher sending PRIVMSG) are driven by one C load generator
(benchmarks/hub_load.c, built here with gcc) that holds the N subscribers and the publisher:

* max rate: the publisher keeps WINDOW messages outstanding (a message is outstanding until all
  N subscribers have it); deliveries/s over ROUNDS intervals of SECONDS (median);
* half rate: the publisher sends open-loop at half that median message rate; each message
  carries its send time (CLOCK_MONOTONIC), so every delivery gives a publish-to-deliver latency
  (p50/p99/p99.9).

Kernel floor: before any server runs, ``hub_load floor`` times one send of a msg-line-sized
write to each of N loopback TCP sockets (C, no server, no reader). A server hands a message to
its i-th subscriber no sooner than i sends after it starts, so 0.99 x N sends bound every
server's p99 from below on this machine; the report prints it next to the p99 target.

Memory: IDLE connections that each log in (/auth) and sit in the room, idle; the server's VmRSS
before and after, divided by IDLE. Anchor: a bare uvloop Protocol server holding as many.

Targets (issue): >= 100,000 deliveries/s in one process; p99 <= 25 ms at half the max rate;
<= 4 KiB per idle logged-in connection. Results go to benchmarks/results/hub_tcp.json.

About 4 minutes on 2 cores, half of it ngircd logging in 5,000 clients: every IRC JOIN is
announced to every member, O(N^2). ngircd is installed with apt-get when missing (as root).

usage: python benchmarks/hub_tcp.py [--ns 100,1000,5000] [--no-ngircd]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import (
    ROOM,
    Phases,
    build_c,
    chat_token,
    free_port,
    free_port_range,
    kernel_floor,
    machine,
    package_version,
    print_floors,
    raise_nofile,
    run_fanout,
    run_hold,
    start_wirekit,
    stop,
    wait_port,
    write_result,
)

HERE = Path(__file__).parent
BUILD = HERE / "build"
NS = (100, 1000, 5000)
IDLE = 10_000
SECONDS, ROUNDS, HALF_SECONDS, WINDOW = 3.0, 3, 4.0, 16
PHASES = Phases(SECONDS, ROUNDS, WINDOW, HALF_SECONDS)
NGIRCD_PORTS = 32  # ngircd accepts one connection per listening port per main-loop turn
TARGET_DELIVERIES, TARGET_P99_MS, TARGET_KIB = 100_000, 25.0, 4.0
MSG_LINE_BYTES = 170  # about one wirekit msg event line with a 64-byte text


# -- processes ------------------------------------------------------------------------------
# -- servers --------------------------------------------------------------------------------
def find_ngircd() -> str | None:
    return shutil.which("ngircd") or next(
        (p for p in ("/usr/sbin/ngircd", "/usr/local/sbin/ngircd") if os.access(p, os.X_OK)), None
    )


def ensure_ngircd() -> str | None:
    """ngircd (Debian package), installed here when missing and we may; else None."""
    exe = find_ngircd()
    if exe or os.geteuid() != 0 or not shutil.which("apt-get"):
        return exe
    print("installing ngircd (apt-get) for the fan-out anchor ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}

    def apt(*args: str) -> int:
        return subprocess.run(["apt-get", *args], env=env, capture_output=True).returncode

    if apt("install", "-y", "-qq", "ngircd") != 0:
        apt("update", "-qq")
        apt("install", "-y", "-qq", "ngircd")
    return find_ngircd()


NGIRCD_CONF = """\
[Global]
Name = bench.irc
Info = wirekit benchmark anchor
AdminInfo1 = bench
AdminInfo2 = bench
AdminEMail = bench@localhost
Listen = 127.0.0.1
Ports = {ports}
MotdPhrase = bench
PidFile = {dir}/ngircd.pid
[Limits]
MaxConnections = 0
MaxConnectionsIP = 0
MaxJoins = 10
PingTimeout = 600
PongTimeout = 60
[Options]
DNS = no
Ident = no
PAM = no
[Operator]
Name = bench
Password = benchpass
"""


def start_ngircd(exe: str, tmp: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    first = free_port_range(NGIRCD_PORTS)
    d = Path(tempfile.mkdtemp(dir=tmp))
    os.chmod(d, 0o755)  # ngircd drops to an unprivileged user
    conf, log = d / "ngircd.conf", d / "ngircd.log"
    ports = ",".join(str(p) for p in range(first, first + NGIRCD_PORTS))
    conf.write_text(NGIRCD_CONF.format(ports=ports, dir=d))
    conf.chmod(0o644)
    proc = subprocess.Popen(
        [exe, "-n", "-f", str(conf)], stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    wait_port(first, proc, log)
    wait_port(first + NGIRCD_PORTS - 1, proc, log)
    return proc, f"{first}+{NGIRCD_PORTS}", log


def ngircd_version(exe: str) -> str:
    out = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "?"


# -- main -----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ns", default=",".join(map(str, NS)), help="subscriber counts")
    parser.add_argument("--no-ngircd", action="store_true", help="skip the ngircd anchor")
    opts = parser.parse_args()
    ns = [int(x) for x in opts.ns.split(",")]
    started = time.monotonic()
    raise_nofile(IDLE + 1000)
    load = build_c("hub_load", "-Wall")
    ngircd = None if opts.no_ngircd else ensure_ngircd()
    if ngircd is None and not opts.no_ngircd:
        print(
            "ngircd is not installed and could not be (apt-get install ngircd): "
            "the fan-out anchor is skipped",
            flush=True,
        )
    floors = {n: kernel_floor(load, n, MSG_LINE_BYTES) for n in ns}
    fanout: dict[str, list[dict[str, Any]]] = {"wirekit": [], "ngircd": []}
    memory: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as tmpname:
        tmp = Path(tmpname)
        os.chmod(tmp, 0o755)
        for n in ns:
            proc, wk_ports, log = start_wirekit(tmp)
            try:
                port = wk_ports["chat"]
                token = chat_token(port)
                row = run_fanout(load, "wirekit", proc, str(port), n, token, tmp, PHASES)
            finally:
                stop(proc)
            fanout["wirekit"].append(row)
            print(
                f"wirekit N={n}: {row['deliveries_per_s']:,.0f} deliveries/s, "
                f"p99 at half rate {row['half_p99_ms']:.1f} ms",
                flush=True,
            )
            if ngircd:
                proc, ports, log = start_ngircd(ngircd, tmp)
                try:
                    row = run_fanout(load, "irc", proc, ports, n, "-", tmp, PHASES)
                finally:
                    stop(proc, grace=2.0)  # its QUIT storm after N clients leave is O(N^2)
                fanout["ngircd"].append(row)
                print(
                    f"ngircd  N={n}: {row['deliveries_per_s']:,.0f} deliveries/s, "
                    f"p99 at half rate {row['half_p99_ms']:.1f} ms",
                    flush=True,
                )

        echo_refs = HERE / "echo_refs.py"
        port = free_port()
        log = tmp / "bare.log"
        proc = subprocess.Popen(
            [sys.executable, str(echo_refs), "protocol", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
        )
        try:
            wait_port(port, proc, log)
            memory["bare uvloop Protocol"] = run_hold(
                load, "raw", proc.pid, port, "-", tmp, count=IDLE
            )
        finally:
            stop(proc)
        proc, wk_ports, log = start_wirekit(tmp)
        try:
            port = wk_ports["chat"]
            token = chat_token(port)
            memory["wirekit serve"] = run_hold(
                load, "wirekit", proc.pid, port, token, tmp, count=IDLE
            )
        finally:
            stop(proc)
        for name, m in memory.items():
            print(f"{name}: {m['kib_per_conn']:.2f} KiB per idle connection", flush=True)

    report(ns, fanout, memory, floors, ngircd, time.monotonic() - started)


def report(
    ns: list[int],
    fanout: dict[str, list[dict[str, Any]]],
    memory: dict[str, dict[str, Any]],
    floors: dict[int, dict[str, Any]],
    ngircd: str | None,
    elapsed: float,
) -> None:
    anchor = {r["n"]: r for r in fanout["ngircd"]}
    print(
        f"\nfan-out: N subscribers + 1 publisher in one room; max rate = {WINDOW} messages "
        f"outstanding, {ROUNDS} x {SECONDS:g} s (median); then {HALF_SECONDS:g} s open-loop at "
        "half that message rate"
    )
    head = (
        f"{'N':>5} {'server':8} {'deliveries/s':>13} {'vs ngircd':>9} {'msgs/s':>8} "
        f"{'p99@max':>8} {'p50@half':>9} {'p99@half':>9} {'srv CPU':>7} {'load CPU':>8} "
        f"{'other CPU':>9}"
    )
    print(head)
    rows = []
    for n in ns:
        for name in ("wirekit", "ngircd"):
            r = next((x for x in fanout[name] if x["n"] == n), None)
            if r is None:
                continue
            ratio = r["deliveries_per_s"] / anchor[n]["deliveries_per_s"] if n in anchor else None
            rows.append(
                {"server": name, **{k: v for k, v in r.items() if k != "raw"}, "vs_ngircd": ratio}
            )
            cells = [
                f"{n:>5}",
                f"{name:8}",
                f"{r['deliveries_per_s']:>13,.0f}",
                f"{'' if ratio is None else f'{ratio:.2f}x':>9}",
                f"{r['msgs_per_s']:>8,.0f}",
                f"{r['max_p99_ms']:>6.1f}ms",
                f"{r['half_p50_ms']:>7.1f}ms",
                f"{r['half_p99_ms']:>7.1f}ms",
                f"{r['server_cpu_max']:>7.2f}",
                f"{r['client_cpu_max']:>8.2f}",
                f"{r['other_cpu_max']:>9.2f}",
            ]
            print(" ".join(cells))
    busy = [f"{r['server']} N={r['n']}" for r in rows if r["other_cpu_max"] > 0.3]
    if busy:
        print(
            "warning: other work kept the machine busy during "
            + ", ".join(busy)
            + " (other CPU > 0.3 cores): those numbers are low; run again on a quiet machine"
        )
    print_floors(floors)
    print(f"\nidle memory: {IDLE:,} connections (wirekit: each /auth'ed and in {ROOM})")
    print(f"{'server':22} {'RSS before':>11} {'RSS after':>11} {'KiB/conn':>9} {'vs bare':>8}")
    bare = memory.get("bare uvloop Protocol", {}).get("kib_per_conn")
    for name, m in memory.items():
        ratio = m["kib_per_conn"] / bare if bare else None
        m["vs_bare"] = ratio
        print(
            f"{name:22} {m['rss_before_kib']:>8,} KiB {m['rss_after_kib']:>8,} KiB "
            f"{m['kib_per_conn']:>9.2f} {'' if ratio is None else f'{ratio:.2f}x':>8}"
        )

    for name, runs in fanout.items():
        if runs:
            big = max(runs, key=lambda r: r["n"])
            print(
                f"  (for comparison: {name} grew {big['server_rss_kib_per_conn']:.2f} KiB per "
                f"connection while {big['n']:,} fan-out clients logged in and joined)"
            )

    print("\ntargets (wirekit):")
    for r in fanout["wirekit"]:
        ok_rate = r["deliveries_per_s"] >= TARGET_DELIVERIES
        ok_p99 = r["half_p99_ms"] <= TARGET_P99_MS
        print(
            f"  N={r['n']}: deliveries/s {r['deliveries_per_s']:,.0f} >= {TARGET_DELIVERIES:,}: "
            f"{'PASS' if ok_rate else 'FAIL'}; p99 at half rate {r['half_p99_ms']:.1f} ms <= "
            f"{TARGET_P99_MS:g} ms: {'PASS' if ok_p99 else 'FAIL'} (kernel floor "
            f"{floors[r['n']]['p99_floor_ms']:.1f} ms)"
        )
    if "wirekit serve" in memory:
        kib = memory["wirekit serve"]["kib_per_conn"]
        print(
            f"  idle: {kib:.2f} KiB/conn <= {TARGET_KIB:g} KiB: "
            f"{'PASS' if kib <= TARGET_KIB else 'FAIL'}"
        )
    result = {
        "benchmark": "hub_tcp",
        "machine": machine(),
        "versions": {
            "wirekit": package_version("wirekit"),
            "uvloop": package_version("uvloop"),
            "ngircd": ngircd_version(ngircd) if ngircd else None,
        },
        "params": {
            "ns": ns,
            "window": WINDOW,
            "seconds": SECONDS,
            "rounds": ROUNDS,
            "half_seconds": HALF_SECONDS,
            "idle_connections": IDLE,
            "message_text_bytes": 64,
            "floor_send_bytes": MSG_LINE_BYTES,
        },
        "targets": {
            "deliveries_per_s": TARGET_DELIVERIES,
            "p99_half_ms": TARGET_P99_MS,
            "kib_per_idle_conn": TARGET_KIB,
        },
        "fanout": rows,
        "kernel_floor": list(floors.values()),
        "memory": memory,
        "raw": fanout,
        "elapsed_s": round(elapsed, 1),
    }
    write_result("hub_tcp", result, f" ({elapsed:.0f} s)")


if __name__ == "__main__":
    main()
