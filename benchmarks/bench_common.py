"""Helpers every benchmark script shares: ports, the machine's description and load, C builds.

The scripts run as ``python benchmarks/NAME.py``, so this module is importable beside them.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
BUILD = HERE / "build"
TICK = os.sysconf("SC_CLK_TCK")


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
