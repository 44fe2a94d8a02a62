"""Cluster benchmark: fan-out through 1 node (embedded), 1 node (Redis) and 2 nodes (Redis).

The same TCP chat fan-out as hub_tcp.py (benchmarks/hub_load.c: N subscribers and one publisher
in one room; all N logged in as the same user, which is in #bench), in three configurations
with the same total N:

* ``embedded``: one ``wirekit serve`` with the embedded engine (SQLite, delivery in-process);
* ``redis1``: one ``wirekit serve --engine redis://...``: each publication is appended to a
  Redis stream by a Lua script, PUBLISHed, and delivered by the node from its subscription;
* ``redis2``: two such nodes sharing that Redis; the load client spreads the subscribers over
  both chat ports (about half each: the split is read from each node's /metrics and printed)
  and the publisher connects to node A, so node B gets every message through Redis pub/sub.

Each configuration starts its own processes (a fresh redis-server on a free loopback port, no
persistence, in a temporary directory; fresh data directories) and stops them after its run.
For each: deliveries/s at max rate (WINDOW messages outstanding, ROUNDS x DURATION s, median),
publish-to-deliver p50/p99 at max rate and open-loop at half that configuration's max message
rate, and the CPU each process used over the max-rate window (cores: CPU seconds per second,
from /proc/PID/stat): node A, node B, redis-server, the load client, and everything else
(machine busy time not charged to those). On a 2-core machine two nodes, Redis and the load
client compete for 2 cores: the CPU columns show which one is the bottleneck.

Targets (issue): one Redis node >= 0.7x the embedded engine's deliveries/s; two Redis nodes
>= 1.3x one Redis node. Results go to benchmarks/results/hub_cluster.json.

``--node-cores C`` caps each wirekit node at C cores (its own cgroup, CFS quota over a 10 ms
period; root needed), so that the nodes, not the machine, are the bottleneck: on a machine
with fewer cores than processes, whether a second node adds capacity shows only this way.
Those results go to benchmarks/results/hub_cluster_node_cores.json; the targets are checked
on the uncapped run.

About 1 minute per subscriber count (20 s per configuration with the defaults).

usage: python benchmarks/hub_cluster.py [--ns 1000] [--duration 3] [--configs embedded,...]
                                        [--node-cores C]
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench_common import (
    ROOM,
    Phases,
    build_c,
    chat_token,
    cpu_cgroup,
    free_port_range,
    join_cgroup,
    machine,
    package_version,
    raise_nofile,
    run_fanout,
    start_redis,
    start_wirekit,
    stop,
    write_result,
)

NS = (1000,)
DURATION, ROUNDS, WINDOW = 3.0, 3, 16
CONFIGS = {
    "embedded": "1 node, embedded",
    "redis1": "1 node, Redis",
    "redis2": "2 nodes, Redis",
}
TARGET_REDIS1, TARGET_REDIS2 = 0.7, 1.3  # redis1 / embedded, redis2 / redis1
PROCS = ("node A", "node B", "redis", "load", "other")


# -- processes ------------------------------------------------------------------------------
def wait_ready(http_port: int, proc: subprocess.Popen[Any], log: Path) -> None:
    """Until the node's /readyz answers 200 (its Redis subscription is up)."""
    url = f"http://127.0.0.1:{http_port}/readyz"
    for _ in range(200):
        if proc.poll() is not None:
            raise SystemExit(f"wirekit exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise SystemExit(f"wirekit on http {http_port} never became ready:\n{log.read_text()[-2000:]}")


def subscribers(metrics_port: int) -> int | None:
    """The node's ``wirekit_hub_subscribers`` gauge (logged-in connections)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    for line in text.splitlines():
        if line.startswith("wirekit_hub_subscribers "):
            return int(float(line.split()[1]))
    return None


def log_tail(log: Path, start: int, end: int | None = None, limit: int = 10) -> list[str]:
    """The lines a process logged between the offsets ``start`` and ``end`` (bytes; ``None``:
    the end of the file), at most ``limit``."""
    try:
        with log.open("rb") as f:
            f.seek(start)
            data = f.read() if end is None else f.read(max(0, end - start))
    except OSError:
        return []
    lines = [x for x in data.decode(errors="replace").splitlines() if x.strip()]
    return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


def log_sizes(logs: dict[str, Path]) -> dict[str, int]:
    return {name: log.stat().st_size if log.exists() else 0 for name, log in logs.items()}


def redis_version() -> str | None:
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.split(" sha=")[0].strip() or None


# -- one configuration ----------------------------------------------------------------------
def by_process(cpu: dict[str, Any]) -> dict[str, Any]:
    """run_fanout's CPU figures named by process."""
    return {"node A": cpu["server"], "node B": cpu.get("node B"), "redis": cpu.get("redis"),
            "load": cpu["client"]}  # fmt: skip


def run_config(
    config: str, n: int, load: Path, tmp: Path, phases: Phases, node_cores: float | None
) -> dict[str, Any]:
    """Start the configuration's processes (each node capped at ``node_cores`` if given), run
    one fan-out, stop them; the row."""
    logs: dict[str, Path] = {}
    with contextlib.ExitStack() as stack:
        extra: tuple[str, ...] = ()
        others: dict[str, int] = {}
        if config != "embedded":
            redis, redis_port, logs["redis"] = start_redis(tmp)
            stack.callback(stop, redis)
            extra = ("--engine", f"redis://127.0.0.1:{redis_port}/0")
            others["redis"] = redis.pid
        # two nodes: consecutive chat ports, which hub_load spreads its connections over
        # ("FIRST+2"); the publisher connects last, when no connect is unanswered: to FIRST
        first = free_port_range(2) if config == "redis2" else None
        node_a, ports_a, logs["node A"] = start_wirekit(tmp, *extra, chat_port=first)
        if node_cores is not None:
            join_cgroup(node_a.pid, cpu_cgroup(node_cores, stack))
        stack.callback(stop, node_a)
        wait_ready(ports_a["http"], node_a, logs["node A"])
        token = chat_token(ports_a["chat"])  # registers the user, who joins ROOM
        metrics = {"node A": ports_a["metrics"]}
        target = str(ports_a["chat"])
        if first is not None:
            node_b, ports_b, logs["node B"] = start_wirekit(tmp, *extra, chat_port=first + 1)
            if node_cores is not None:
                join_cgroup(node_b.pid, cpu_cgroup(node_cores, stack))
            stack.callback(stop, node_b)
            wait_ready(ports_b["http"], node_b, logs["node B"])
            others["node B"] = node_b.pid
            metrics["node B"] = ports_b["metrics"]
            target = f"{first}+2"

        def split() -> dict[str, int | None]:
            return {name: subscribers(port) for name, port in metrics.items()}

        start = log_sizes(logs)
        row = run_fanout(
            load, "wirekit", node_a, target, n, token, tmp, phases, others=others, on_ready=split
        )
        end = log_sizes(logs)
    cpu = row.pop("cpu_max")
    row["cpu"] = {**by_process(cpu), "other": row["other_cpu_max"]}
    row["cpu_half_rate"] = by_process(row.pop("cpu_half"))
    # logged-in connections per node once all were in; node A's count includes the publisher
    row["connections"] = row.pop("at_ready")
    # what the processes logged during the run, and while they stopped
    row["logs"] = {
        k: lines for k, log in logs.items() if (lines := log_tail(log, start[k], end[k]))
    }
    row["logs_at_stop"] = {k: lines for k, log in logs.items() if (lines := log_tail(log, end[k]))}
    return {"config": config, "label": CONFIGS[config], **row}


# -- main -----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=__doc__.split("\n\n")[0],
        epilog="Each configuration: a 1 s warm-up, ROUNDS x DURATION s at max rate (WINDOW "
        "messages outstanding), then DURATION + 1 s open-loop at half that rate.",
    )
    parser.add_argument("--ns", default=",".join(map(str, NS)), help="total subscriber counts")
    parser.add_argument(
        "--duration", type=float, default=DURATION, help="seconds per max-rate round"
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="max-rate rounds (median)")
    parser.add_argument(
        "--window", type=int, default=WINDOW, help="messages outstanding at max rate"
    )
    parser.add_argument("--configs", default=",".join(CONFIGS), help="configurations to run")
    parser.add_argument(
        "--node-cores", type=float, help="cap each node at this many cores (cgroup; root)"
    )
    opts = parser.parse_args()
    ns = [int(x) for x in opts.ns.split(",")]
    configs = [c for c in opts.configs.split(",") if c]
    if unknown := set(configs) - set(CONFIGS):
        raise SystemExit(f"unknown configuration(s): {', '.join(sorted(unknown))}")
    if opts.duration <= 0 or opts.rounds < 1 or opts.window < 1:
        raise SystemExit("--duration must be > 0, --rounds and --window >= 1")
    if opts.node_cores is not None and not 0.1 <= opts.node_cores <= machine()["cpus"]:
        raise SystemExit("--node-cores must be between 0.1 and the machine's CPU count")
    phases = Phases(opts.duration, opts.rounds, opts.window, opts.duration + 1.0)
    started = time.monotonic()
    raise_nofile(max(ns) + 1000)
    load = build_c("hub_load", "-Wall")
    if "redis2" in configs:
        print("2 nodes: the subscribers are spread over node A and node B; the publisher is on "
              "node A", flush=True)  # fmt: skip
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="hub-cluster-bench-") as tmpname:
        tmp = Path(tmpname)
        for n in ns:
            for config in configs:
                row = run_config(config, n, load, tmp, phases, opts.node_cores)
                rows.append(row)
                cpu = ", ".join(f"{k} {v:.2f}" for k, v in row["cpu"].items() if v is not None)
                print(
                    f"{CONFIGS[config]:17} N={n}: {row['deliveries_per_s']:,.0f} deliveries/s, "
                    f"p99 at half rate {row['half_p99_ms']:.1f} ms (cores: {cpu})",
                    flush=True,
                )
    report(ns, configs, rows, phases, opts.node_cores, time.monotonic() - started)


def ratio(rows: list[dict[str, Any]], n: int, a: str, b: str) -> float | None:
    """deliveries/s of configuration ``a`` over ``b`` at ``n`` subscribers."""
    by = {r["config"]: r for r in rows if r["n"] == n}
    if a not in by or b not in by or not by[b]["deliveries_per_s"]:
        return None
    return float(by[a]["deliveries_per_s"] / by[b]["deliveries_per_s"])


def report(
    ns: list[int],
    configs: list[str],
    rows: list[dict[str, Any]],
    phases: Phases,
    node_cores: float | None,
    elapsed: float,
) -> None:
    if node_cores is not None:
        print(f"\nevery node capped at {node_cores:g} cores (cgroup CFS quota)")
    print(
        f"\nfan-out: N subscribers (total) + 1 publisher in {ROOM}; max rate = {phases.window} "
        f"messages outstanding, {phases.rounds} x {phases.seconds:g} s (median); then "
        f"{phases.half_seconds:g} s open-loop at half that configuration's message rate.\n"
        "CPU: cores used during the max-rate phase (CPU s per s, /proc/PID/stat); 'other' is "
        f"the rest of the machine's busy time; machine: {machine()['cpus']} CPUs"
    )
    head = (
        f"{'N':>5} {'configuration':17} {'deliveries/s':>13} {'msgs/s':>8} {'p99@max':>8} "
        f"{'p50@half':>9} {'p99@half':>9} | "
        + " ".join(f"{p:>6}" for p in PROCS)
        + f" {'total':>6} | {'subs A/B':>9}"
    )
    print(head)
    for r in rows:
        cells = [
            f"{r['n']:>5}",
            f"{r['label']:17}",
            f"{r['deliveries_per_s']:>13,.0f}",
            f"{r['msgs_per_s']:>8,.0f}",
            f"{r['max_p99_ms']:>6.1f}ms",
            f"{r['half_p50_ms']:>7.1f}ms",
            f"{r['half_p99_ms']:>7.1f}ms",
            "|",
            *(f"{'-' if r['cpu'][p] is None else format(r['cpu'][p], '.2f'):>6}" for p in PROCS),
            f"{r['machine_cpu_max']:>6.2f}",
            "|",
        ]
        conns = r["connections"] or {}
        a, b = conns.get("node A"), conns.get("node B")
        subs = "?" if a is None else str(a - 1) if "node B" not in conns else f"{a - 1}/{b}"
        cells.append(f"{subs:>9}")
        print(" ".join(cells))
    busy = [f"{r['label']} N={r['n']}" for r in rows if r["other_cpu_max"] > 0.3]
    if busy:
        print(
            "warning: other work kept the machine busy during "
            + ", ".join(busy)
            + " (other CPU > 0.3 cores): those numbers are low; run again on a quiet machine"
        )
    uneven = [
        f"N={r['n']}: {r['connections']}"
        for r in rows
        if r["config"] == "redis2"
        and None not in (r["connections"] or {None: None}).values()
        and abs((r["connections"]["node A"] - 1) - r["connections"]["node B"]) > 0.1 * r["n"]
    ]
    if uneven:
        print("warning: the 2-node split is uneven (> 10% of N apart): " + "; ".join(uneven))

    print("\ntargets (deliveries/s at max rate):")
    ratios = []
    for n in ns:
        for a, b, target in (("redis1", "embedded", TARGET_REDIS1),
                             ("redis2", "redis1", TARGET_REDIS2)):  # fmt: skip
            value = ratio(rows, n, a, b)
            if value is None:
                continue
            ok = value >= target
            ratios.append({"n": n, "of": a, "over": b, "ratio": value, "target": target,
                           "pass": ok})  # fmt: skip
            print(
                f"  N={n}: {CONFIGS[a]} / {CONFIGS[b]} = {value:.2f}x >= {target:g}x: "
                f"{'PASS' if ok else 'FAIL'}"
            )
    for r in rows:
        if r["busiest_other_max"]:
            print(f"\nbusiest other processes during {r['label']} N={r['n']} (max rate):")
            for u in r["busiest_other_max"]:
                print(f"  {u['cores']:.2f} cores  pid {u['pid']} {u.get('cmd') or u['comm']}")
        for name, lines in r["logs"].items():
            print(f"\n{r['label']} N={r['n']}: {name} logged during the run:")
            for line in lines:
                print(f"  {line[:300]}")

    result = {
        "benchmark": "hub_cluster",
        "machine": machine(),
        "versions": {
            "wirekit": package_version("wirekit"),
            "uvloop": package_version("uvloop"),
            "redis-py": package_version("redis"),
            "hiredis": package_version("hiredis"),
            "redis-server": redis_version(),
        },
        "params": {
            "ns": ns,
            "configs": configs,
            "window": phases.window,
            "seconds": phases.seconds,
            "rounds": phases.rounds,
            "half_seconds": phases.half_seconds,
            "message_text_bytes": 64,
            "publisher": "node A",
            "node_cores": node_cores,
        },
        "targets": {"redis1_over_embedded": TARGET_REDIS1, "redis2_over_redis1": TARGET_REDIS2},
        "ratios": ratios,
        "results": [{k: v for k, v in r.items() if k != "raw"} for r in rows],
        "raw": [{"config": r["config"], "n": r["n"], **r["raw"]} for r in rows],
        "elapsed_s": round(elapsed, 1),
    }
    name = "hub_cluster" if node_cores is None else "hub_cluster_node_cores"
    write_result(name, result, f" ({elapsed:.0f} s)")


if __name__ == "__main__":
    main()
