"""The examples in examples/ run and print what the docs say."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_line_echo_example() -> None:
    out = subprocess.run([sys.executable, str(EXAMPLES / "line_echo_server.py")],
                         capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip
    assert out.splitlines()[0] == "HELLO WIREKIT"


def test_reliable_client_example() -> None:
    out = subprocess.run([sys.executable, str(EXAMPLES / "reliable_client.py")],
                         capture_output=True, text=True, timeout=30, check=True).stdout  # fmt: skip
    assert "acked=10" in out and out.strip().endswith("10 stored")
