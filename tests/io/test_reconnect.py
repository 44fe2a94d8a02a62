"""The reconnecting client survives kill -9 and restart of its server with nothing lost."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from wirekit import Backoff, GaveUp, ReconnectingClient

pytestmark = pytest.mark.anyio
HELPER = Path(__file__).with_name("session_server.py")


async def start_server(port: int, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(  # noqa: ASYNC220 - a quick fork, read in a thread below
        [sys.executable, str(HELPER), str(port), str(log)], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    line = await asyncio.to_thread(proc.stdout.readline)
    assert line.strip() == b"ready"
    return proc


async def test_no_acknowledged_message_is_lost_across_kill_and_restart(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "received.log"
    server = await start_server(port, log)
    client = ReconnectingClient("127.0.0.1", port, backoff=Backoff(base=0.02, cap=0.2))
    await client.start()
    acked_before_kill = 0
    try:
        for i in range(300):
            seq = await client.send(b"m%d" % i)
            if i == 150:
                await client.wait_acked(seq - 50)
                acked_before_kill = client.statistics().acked
                server.kill()  # SIGKILL mid-stream: in-flight messages die with it
                server.wait()
                server.stdout.close()  # type: ignore[union-attr]
                server = await start_server(port, log)
        async with asyncio.timeout(20):
            await client.flush()
        stats = client.statistics()
    finally:
        await client.aclose()
        server.kill()
        server.wait()
        server.stdout.close()  # type: ignore[union-attr]
    received = log.read_bytes().split()
    assert acked_before_kill >= 100
    assert stats.acked == 300 and stats.unacked == 0 and stats.connects == 2
    # Every message arrived, in order; the only repeats are ones the dead server stored but
    # never acknowledged, which the client rightly sent again.
    assert sorted(set(received), key=lambda m: int(m[1:])) == [b"m%d" % i for i in range(300)]
    first_seen = list(dict.fromkeys(received))
    assert first_seen == [b"m%d" % i for i in range(300)]


async def test_reconnecting_client_gives_up_after_max_attempts() -> None:
    port = free_port()
    client = ReconnectingClient(
        "127.0.0.1", port, backoff=Backoff(base=0.01, cap=0.02, max_attempts=3)
    )
    await client.start()
    with pytest.raises(GaveUp, match="after 3 attempts"):
        async with asyncio.timeout(5):
            await client.wait_connected()
    await client.aclose()
