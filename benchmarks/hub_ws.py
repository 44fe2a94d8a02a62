"""Hub WebSocket benchmark: fan-out of one publisher to N WebSocket subscribers, and idle memory.

Fan-out: for each N, ``wirekit serve`` (N anonymous subscribers on the public topic ``bench``,
one logged-in publisher) and three reference hubs (benchmarks/hub_ws_refs.py, each on uvloop: a
naive aiohttp hub, a ``websockets.broadcast`` hub and a picows hub) are driven, one after the
other, by the same C load generator (benchmarks/hub_load.c, PROTO ws, built here with gcc) that
holds the N subscribers and the publisher:

* max rate: the publisher keeps WINDOW messages outstanding (a message is outstanding until all
  N subscribers have it); deliveries/s over ROUNDS intervals of SECONDS (median);
* half rate: the publisher sends open-loop at half that median message rate; each message
  carries its send time (CLOCK_MONOTONIC), so every delivery gives a publish-to-deliver latency
  (p50/p99/p99.9).

Every server gets the same frames and sends the same bytes: the publisher sends
``{"op":"pub","topic":"bench","data":D}`` (D: 64 bytes; a 108-byte masked frame), each
subscriber gets ``{"op":"msg","topic":"bench","offset":K,"epoch":E,"from":"bench","data":D,
"ts":T}`` (175 bytes; the reference hubs encode the same event once per publication and send
it to every subscriber) and the publisher an ``ok``. The references store nothing and check
nothing; wirekit also appends each publication to SQLite and rate-limits the publisher. wirekit
batches: the publications of one loop turn go to each subscriber as one write of their joined
frames (a batch grows while the previous flush runs); the references write each frame when it
is sent (one send per subscriber per message, as their APIs do).
The load client is C, as for hub_tcp.py, so that it is not the side that saturates
(``wirekit load --fanout`` handles every delivery in Python).

Kernel floor: as in hub_tcp.py, ``hub_load floor`` times one 175-byte send to each of N
loopback TCP sockets before any server runs; 0.99 x N sends bound every server's p99 from below
on this machine, and the report prints that bound next to the p99 target.

Memory: IDLE idle WebSocket connections, each subscribed to ``bench`` (ready on its ``hello``
frame), on each server; its VmRSS before and after, divided by IDLE.

Targets (issue): deliveries/s >= 1.3x the best reference at N = 1000 and 5000; p99 <= 25 ms at
half the max rate; <= 8 KiB RSS per idle WebSocket connection at 10,000 connections. Load and
server CPU (cores) are reported per run, so that it shows which side saturates. Results go to
benchmarks/results/hub_ws.json.

About 4 minutes on 2 cores.

usage: python benchmarks/hub_ws.py [--ns 100,1000,5000] [--refs aiohttp,websockets,picows]
                                   [--idle 10000] [--no-memory]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench_common import (
    Phases,
    build_c,
    free_port,
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
NS = (100, 1000, 5000)
REFS = ("aiohttp", "websockets", "picows")
IDLE = 10_000
SECONDS, ROUNDS, HALF_SECONDS, WINDOW = 3.0, 3, 4.0, 16
PHASES = Phases(SECONDS, ROUNDS, WINDOW, HALF_SECONDS)
TARGET_RATIO, TARGET_RATIO_NS, TARGET_P99_MS, TARGET_KIB = 1.3, (1000, 5000), 25.0, 8.0
SATURATED = 0.9  # cores: a side at or above this during the max-rate phase is what limits it
USER, PASSWORD, TOPIC = "bench", "benchpass1", "bench"
DATA_BYTES, MSG_EVENT_BYTES, PUB_FRAME_BYTES = 64, 175, 108


# -- servers --------------------------------------------------------------------------------
def start_ref(kind: str, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port, log = free_port(), tmp / f"ref-{kind}-{time.time()}.log"
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "hub_ws_refs.py"), kind, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    wait_port(port, proc, log)
    return proc, port


def start_wirekit_ws(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    proc, ports, _log = start_wirekit(tmp, "--public-topics", TOPIC)
    return proc, ports["http"]


def wirekit_token(http_port: int) -> str:
    """Register the publisher (argon2: once per server) over the HTTP API; its token."""
    body = json.dumps({"user": USER, "password": PASSWORD}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{http_port}/api/users",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(json.loads(response.read())["token"])


def start(name: str, tmp: Path, *, publisher: bool) -> tuple[subprocess.Popen[bytes], int, str]:
    """A server by its name in the tables: process, WebSocket port, publisher token (or "-")."""
    if name != "wirekit":
        return (*start_ref(name, tmp), "-")
    proc, port = start_wirekit_ws(tmp)
    try:
        return proc, port, wirekit_token(port) if publisher else "-"
    except BaseException:
        stop(proc)
        raise


# -- main -----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ns", default=",".join(map(str, NS)), help="subscriber counts")
    parser.add_argument("--refs", default=",".join(REFS), help="reference hubs to run")
    parser.add_argument("--idle", type=int, default=IDLE, help="idle connections (memory)")
    parser.add_argument("--no-memory", action="store_true", help="skip the idle-memory part")
    opts = parser.parse_args()
    ns = [int(x) for x in opts.ns.split(",")]
    refs = [r for r in opts.refs.split(",") if r]
    if unknown := set(refs) - set(REFS):
        raise SystemExit(f"unknown reference(s): {', '.join(sorted(unknown))}")
    servers = ["wirekit", *refs]
    started = time.monotonic()
    raise_nofile(max(opts.idle, *ns) + 1000)
    load = build_c("hub_load", "-Wall")
    floors = {n: kernel_floor(load, n, MSG_EVENT_BYTES) for n in ns}
    fanout: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    memory: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="hub-ws-bench-") as tmpname:
        tmp = Path(tmpname)
        for n in ns:
            for name in servers:  # interleaved: a busy spell on the machine hits all alike
                proc, port, token = start(name, tmp, publisher=True)
                try:
                    row = run_fanout(load, "ws", proc, str(port), n, token, tmp, PHASES)
                finally:
                    stop(proc)
                fanout[name].append(row)
                print(
                    f"{name:10} N={n}: {row['deliveries_per_s']:,.0f} deliveries/s "
                    f"(server {row['server_cpu_max']:.2f} cores, load {row['client_cpu_max']:.2f})"
                    f", p99 at half rate {row['half_p99_ms']:.1f} ms",
                    flush=True,
                )
        if not opts.no_memory:
            for name in servers:
                proc, port, _ = start(name, tmp, publisher=False)
                try:
                    memory[name] = run_hold(load, "ws", proc.pid, port, "-", tmp, count=opts.idle)
                finally:
                    stop(proc)
                print(
                    f"{name:10} {memory[name]['kib_per_conn']:.2f} KiB per idle WebSocket",
                    flush=True,
                )

    report(ns, servers, fanout, memory, floors, opts.idle, time.monotonic() - started)


def bound(r: dict[str, Any]) -> str:
    """What limited the max-rate phase: the load client or the server (one at or above SATURATED
    cores), else the machine (every core busy, other work included), else neither."""
    if r["client_cpu_max"] >= SATURATED:
        return "load"
    if r["server_cpu_max"] >= SATURATED:
        return "server"
    busy = r["server_cpu_max"] + r["client_cpu_max"] + r["other_cpu_max"]
    return "machine" if busy >= (os.cpu_count() or 1) - 0.2 else "neither"


def report(
    ns: list[int],
    servers: list[str],
    fanout: dict[str, list[dict[str, Any]]],
    memory: dict[str, dict[str, Any]],
    floors: dict[int, dict[str, Any]],
    idle: int,
    elapsed: float,
) -> None:
    refs = servers[1:]
    print(
        f"\nfan-out: N WebSocket subscribers + 1 publisher on one topic; max rate = {WINDOW} "
        f"messages outstanding, {ROUNDS} x {SECONDS:g} s (median); then {HALF_SECONDS:g} s "
        f"open-loop at half that message rate; {MSG_EVENT_BYTES}-byte msg frames "
        f"({DATA_BYTES}-byte data)"
    )
    head = (
        f"{'N':>5} {'server':10} {'deliveries/s':>13} {'vs best ref':>11} {'msgs/s':>8} "
        f"{'p99@max':>8} {'p50@half':>9} {'p99@half':>9} {'srv CPU':>7} {'load CPU':>8} "
        f"{'other CPU':>9} {'bound':>7} {'srv CPU@half':>12}"
    )
    print(head)
    rows: list[dict[str, Any]] = []
    best_ref: dict[int, tuple[str, float]] = {}
    for n in ns:
        by_name = {s: next((x for x in fanout[s] if x["n"] == n), None) for s in servers}
        ref_rates = [(s, r["deliveries_per_s"]) for s in refs if (r := by_name[s]) is not None]
        if ref_rates:
            best_ref[n] = max(ref_rates, key=lambda x: x[1])
        for name, r in by_name.items():
            if r is None:
                continue
            ratio = r["deliveries_per_s"] / best_ref[n][1] if n in best_ref else None
            row = {"server": name, **{k: v for k, v in r.items() if k != "raw"}}
            row.update(vs_best_ref=ratio, best_ref=best_ref.get(n, (None,))[0], bound=bound(r))
            rows.append(row)
            cells = [
                f"{n:>5}",
                f"{name:10}",
                f"{r['deliveries_per_s']:>13,.0f}",
                f"{'' if ratio is None else f'{ratio:.2f}x':>11}",
                f"{r['msgs_per_s']:>8,.0f}",
                f"{r['max_p99_ms']:>6.1f}ms",
                f"{r['half_p50_ms']:>7.1f}ms",
                f"{r['half_p99_ms']:>7.1f}ms",
                f"{r['server_cpu_max']:>7.2f}",
                f"{r['client_cpu_max']:>8.2f}",
                f"{r['other_cpu_max']:>9.2f}",
                f"{row['bound']:>7}",
                f"{r['server_cpu_half']:>12.2f}",
            ]
            print(" ".join(cells))
    print(
        f"  (CPU in cores, max-rate phase unless @half; bound: the side using >= {SATURATED:g} "
        "core (the load client is one thread, each server one process), else machine when every "
        "core was busy, other work included)"
    )
    busy = [f"{r['server']} N={r['n']}" for r in rows if r["other_cpu_max"] > 0.3]
    if busy:
        print(
            "warning: other work kept the machine busy during "
            + ", ".join(busy)
            + " (other CPU > 0.3 cores): those numbers are low; run again on a quiet machine"
        )

    print_floors(floors)
    if memory:
        print(f"\nidle memory: {idle:,} WebSocket connections, each subscribed to {TOPIC}")
        print(f"{'server':10} {'RSS before':>11} {'RSS after':>11} {'KiB/conn':>9} {'setup':>7}")
        for name, m in memory.items():
            print(
                f"{name:10} {m['rss_before_kib']:>8,} KiB {m['rss_after_kib']:>8,} KiB "
                f"{m['kib_per_conn']:>9.2f} {m['setup_s']:>6.1f}s"
            )

    targets: list[dict[str, Any]] = []

    def target(
        what: str, value: float, ok: bool, unit: str = "", floor_ms: float | None = None
    ) -> None:
        row: dict[str, Any] = {"target": what, "value": value, "pass": ok}
        note = ""
        if floor_ms is not None:
            row["kernel_floor_ms"] = floor_ms
            note = f" (kernel floor {floor_ms:.1f} ms)"
        targets.append(row)
        print(f"  {what}: {value:.2f}{unit}: {'PASS' if ok else 'FAIL'}{note}")

    print("\ntargets (wirekit):")
    for r in (x for x in rows if x["server"] == "wirekit"):
        ratio = r["vs_best_ref"]
        if r["n"] in TARGET_RATIO_NS and ratio is not None:
            what = f"N={r['n']}: deliveries/s >= {TARGET_RATIO:g}x the best ref ({r['best_ref']})"
            target(what, ratio, ratio >= TARGET_RATIO, "x")
        p99 = r["half_p99_ms"]
        target(
            f"N={r['n']}: p99 at half rate <= {TARGET_P99_MS:g} ms",
            p99,
            p99 <= TARGET_P99_MS,
            floor_ms=floors[r["n"]]["p99_floor_ms"],
        )
    if "wirekit" in memory:
        kib = memory["wirekit"]["kib_per_conn"]
        target(f"idle: KiB per WebSocket at {idle:,} <= {TARGET_KIB:g}", kib, kib <= TARGET_KIB)

    result = {
        "benchmark": "hub_ws",
        "machine": machine(),
        "versions": {
            name: package_version(name)
            for name in ("wirekit", "uvloop", "aiohttp", "websockets", "picows", "aiofastnet")
        },
        "params": {
            "ns": ns,
            "servers": servers,
            "window": WINDOW,
            "seconds": SECONDS,
            "rounds": ROUNDS,
            "half_seconds": HALF_SECONDS,
            "idle_connections": idle,
            "data_bytes": DATA_BYTES,
            "msg_event_bytes": MSG_EVENT_BYTES,
            "pub_frame_bytes": PUB_FRAME_BYTES,
            "saturated_cores": SATURATED,
        },
        "targets": {
            "vs_best_ref": TARGET_RATIO,
            "vs_best_ref_at_n": list(TARGET_RATIO_NS),
            "p99_half_ms": TARGET_P99_MS,
            "kib_per_idle_conn": TARGET_KIB,
        },
        "results": targets,
        "kernel_floor": list(floors.values()),
        "fanout": rows,
        "memory": memory,
        "raw": fanout,
        "elapsed_s": round(elapsed, 1),
    }
    write_result("hub_ws", result, f" ({elapsed:.0f} s)")


if __name__ == "__main__":
    main()
