"""Run a load test in this process or across worker processes, and build its result."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import resource
from collections.abc import Callable, Sequence
from dataclasses import replace
from time import perf_counter_ns
from typing import Any, cast

from ..errors import UsageError, WirekitError
from ..io.loop import run
from .engine import Engine, LoadConfig
from .fanout import FanoutRun
from .raw import RawTarget
from .recorder import Recorder, summary
from .report import Threshold, build_result
from .schedule import Step

# Workers start together at an instant the parent picks this far ahead: a spawned process
# needs up to ~1 s here to import wirekit before it can run.
START_DELAY_NS = 1_500_000_000

Progress = Callable[[dict[str, Any]], None]


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _run(
    config: LoadConfig, start_ns: int, progress: Progress | None
) -> tuple[Recorder, int]:
    engine = Engine(config, start_ns)

    def tick(e: Engine) -> None:
        assert progress is not None
        rec = e.recorder
        last = rec.seconds[-2] if len(rec.seconds) > 1 else None  # the last full second
        progress({"elapsed_s": (perf_counter_ns() - rec.start_ns) / 1e9,
                  "completed": rec.completed, "errors": sum(rec.errors.values()),
                  "rate": last.completed if last else None,
                  "p99_ms": summary(last.latency)["p99"] if last else None})  # fmt: skip

    recorder = await engine.run(tick if progress is not None else None)
    return recorder, engine.elapsed_ns


def _split(config: LoadConfig, index: int, workers: int) -> LoadConfig:
    """Worker ``index``'s share: connections, count and rate divided as evenly as possible."""

    def share(n: int) -> int:
        return n // workers + (1 if index < n % workers else 0)

    steps = None
    if config.steps is not None:
        steps = [Step(s.seconds, s.rate_from / workers, s.rate_to / workers) for s in config.steps]
    return replace(
        config,
        connections=max(1, share(config.connections)),
        count=None if config.count is None else share(config.count),
        steps=steps,
        seed=None if config.seed is None else config.seed + index,
    )


def _worker(config: LoadConfig, start_ns: int, conn: Any, live: bool) -> None:
    def report(p: dict[str, Any]) -> None:
        conn.send(("progress", p, 0, 0.0))

    cpu0 = _cpu_seconds()  # not counting this process's start-up
    try:
        recorder, elapsed = run(_run(config, start_ns, report if live else None))
        conn.send(("ok", recorder.to_wire(), elapsed, _cpu_seconds() - cpu0))
    except WirekitError as exc:
        conn.send(("error", str(exc), 0, 0.0))
    finally:
        conn.close()


def execute(
    config: LoadConfig,
    url: str,
    *,
    workers: int = 1,
    thresholds: Sequence[Threshold] = (),
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the test and return its result dict (see :func:`build_result`)."""
    if workers < 1 or workers > (os.cpu_count() or 1) * 4:
        raise WirekitError(f"--workers must be 1-{(os.cpu_count() or 1) * 4}")
    cpu0 = _cpu_seconds()
    if config.fanout:
        if workers != 1 or config.steps is None or not isinstance(config.target, RawTarget):
            raise UsageError("--fanout runs in one process and needs ws:// and --rate/--steps")
        body = config.target.payload
        fan = FanoutRun(config.target, config.fanout, config.steps, body, config.subscribe,
                        config.timeout, config.connect_timeout)  # fmt: skip
        recorder, elapsed = run(fan.run())
        cpu = _cpu_seconds() - cpu0
    elif workers == 1:
        recorder, elapsed = run(_run(config, perf_counter_ns(), progress))
        cpu = _cpu_seconds() - cpu0
    else:
        recorder, elapsed, cpu = _execute_workers(config, workers, progress)
    rate = None
    if config.steps is not None:
        rate = max(s.rate_to for s in config.steps)
    model = "open" if config.steps is not None else "closed"
    return build_result(
        url=url,
        model="fanout" if config.fanout else model,
        connections=config.fanout or config.connections,
        recorder=recorder,
        elapsed_ns=elapsed,
        cpu_fraction=cpu / (elapsed / 1e9),
        workers=workers,
        rate=rate,
        thresholds=thresholds,
    )


def _execute_workers(
    config: LoadConfig, workers: int, progress: Progress | None
) -> tuple[Recorder, int, float]:
    ctx = multiprocessing.get_context("spawn")
    start_ns = perf_counter_ns() + START_DELAY_NS + 200_000_000 * workers
    pipes: dict[Any, int] = {}
    procs = []
    for index in range(workers):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_worker, args=(_split(config, index, workers), start_ns, child,
                                                 progress is not None),
                           name=f"wirekit-load-{index}", daemon=True)  # fmt: skip
        proc.start()
        child.close()
        pipes[parent] = index
        procs.append(proc)
    merged = Recorder(start_ns)
    elapsed = 0
    cpu = 0.0
    latest: dict[int, dict[str, Any]] = {}
    try:
        while pipes:
            for ready in multiprocessing.connection.wait(list(pipes), timeout=1.0):
                pipe = cast(multiprocessing.connection.Connection, ready)
                index = pipes[pipe]
                try:
                    kind, payload, worker_elapsed, worker_cpu = pipe.recv()
                except EOFError:
                    raise WirekitError(f"load worker {index} died") from None
                if kind == "progress":
                    latest[index] = payload
                    if progress is not None:
                        progress(_merge_progress(list(latest.values())))
                    continue
                del pipes[pipe]
                if kind == "error":
                    raise WirekitError(payload)
                merged.merge(payload)
                elapsed = max(elapsed, worker_elapsed)
                cpu += worker_cpu
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
    return merged, elapsed, cpu


def _merge_progress(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Workers' progress as one line: sums, and the worst p99 (for display only)."""
    p99s = [p["p99_ms"] for p in parts if p["p99_ms"] is not None]
    rates = [p["rate"] for p in parts if p["rate"] is not None]
    return {
        "elapsed_s": max(p["elapsed_s"] for p in parts),
        "completed": sum(p["completed"] for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "rate": sum(rates) if rates else None,
        "p99_ms": max(p99s) if p99s else None,
    }
