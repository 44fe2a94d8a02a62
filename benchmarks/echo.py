"""Echo benchmark: round trips/s of small messages over 50 connections.

One C load generator (benchmarks/echo_load.c, built here with gcc) drives, in one run and on the
same input: wirekit's echo server (1 worker and 2 workers), a bare uvloop Protocol echo (the
reference: the ceiling for one Python process) and an asyncio-streams echo on uvloop. Each
target runs ROUNDS times; the table shows medians and the ratio to the reference. Results go
to benchmarks/results/echo.json.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_common import build_c, free_port, machine, wait_port, write_result

HERE = Path(__file__).parent
BUILD = HERE / "build"
CONNS, SIZE, SECONDS, ROUNDS = 50, 64, 5.0, 3


def targets(port: int) -> dict[str, list[str]]:
    py = sys.executable
    wk = [py, "-m", "wirekit", "--log-level", "warning", "echo", "serve"]
    return {
        "bare uvloop Protocol (reference)": [py, str(HERE / "echo_refs.py"), "protocol", str(port)],
        "wirekit echo (1 process)": [*wk, "--tcp", f"127.0.0.1:{port}"],
        "wirekit echo --workers 2": [*wk, "--tcp", f"127.0.0.1:{port}", "--workers", "2"],
        "asyncio streams on uvloop": [py, str(HERE / "echo_refs.py"), "streams", str(port)],
    }


def cpu_seconds(pid: int) -> float:
    """User+system CPU of a process and its children (workers), from /proc."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (FileNotFoundError, IndexError):
            pass
    return total


def measure(load: Path, name: str) -> dict[str, float]:
    port = free_port()
    proc = subprocess.Popen(targets(port)[name], stdout=subprocess.DEVNULL)
    try:
        wait_port(port)
        time.sleep(0.5)
        cpu0 = cpu_seconds(proc.pid)
        out = subprocess.run(
            [str(load), "127.0.0.1", str(port), str(CONNS), str(SIZE), str(SECONDS)],
            capture_output=True, text=True, check=True, timeout=SECONDS + 30,
        )  # fmt: skip
        server_cpu = (cpu_seconds(proc.pid) - cpu0) / SECONDS
        return {"rps": int(out.stdout.strip()) / SECONDS, "server_cpu": server_cpu}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    load = build_c("echo_load")
    names = list(targets(0))
    runs: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for r in range(ROUNDS):  # interleave so drift hits every target alike
        for name in names:
            runs[name].append(measure(load, name))
            print(f"round {r + 1}/{ROUNDS} {name}: {runs[name][-1]['rps']:,.0f} rt/s", flush=True)
    ref = statistics.median(x["rps"] for x in runs[names[0]])
    rows = []
    for name in names:
        rps = statistics.median(x["rps"] for x in runs[name])
        cpu = statistics.median(x["server_cpu"] for x in runs[name])
        rows.append({"target": name, "rps": rps, "ratio": rps / ref, "server_cpu_cores": cpu})
    print(f"\n{CONNS} connections, {SIZE}-byte messages, {SECONDS:g}s x {ROUNDS} rounds (median)")
    print(f"{'target':36} {'round trips/s':>14} {'vs ref':>7} {'server CPU':>10}")
    for row in rows:
        print(f"{row['target']:36} {row['rps']:>14,.0f} {row['ratio']:>6.2f}x "
              f"{row['server_cpu_cores']:>9.2f}")  # fmt: skip
    result = {
        "benchmark": "echo",
        "machine": machine(),
        "params": {"connections": CONNS, "size": SIZE, "seconds": SECONDS, "rounds": ROUNDS},
        "rows": rows,
        "runs": runs,
    }  # fmt: skip
    write_result("echo", result)


if __name__ == "__main__":
    main()
