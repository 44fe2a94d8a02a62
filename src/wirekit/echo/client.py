"""``wirekit echo send``: send a message to an echo server and time the round trip."""

from __future__ import annotations

import ssl as ssl_module
import time
from dataclasses import dataclass

from ..errors import UsageError
from ..io.client import Timeouts, connect
from ..io.tls import client_context
from ..io.udp import open_udp
from ..net.addr import parse_url


@dataclass(frozen=True, slots=True)
class RoundTrip:
    seq: int
    reply: bytes
    rtt_s: float


async def send(
    target: str,
    message: bytes,
    *,
    count: int = 1,
    timeout: float = 5.0,
    ca: str | None = None,
) -> list[RoundTrip]:
    """Send ``message`` ``count`` times to ``tcp://``, ``tls://`` or ``udp://HOST:PORT``."""
    if count < 1:
        raise UsageError("--count must be at least 1")
    if not message:
        raise UsageError("the message is empty")
    scheme, host, port = parse_url(target, ("tcp", "tls", "udp"))
    if scheme == "udp":
        return await _send_udp(host, port, message, count, timeout)
    ssl: ssl_module.SSLContext | None = None
    if scheme == "tls" or ca is not None:
        ssl = client_context(ca)
    results: list[RoundTrip] = []
    timeouts = Timeouts(connect=timeout, read=timeout, write=timeout)
    async with await connect(host, port, timeouts=timeouts, ssl=ssl) as client:
        for seq in range(1, count + 1):
            started = time.perf_counter()
            await client.send(message)
            reply = await client.receive_exactly(len(message))
            results.append(RoundTrip(seq, reply, time.perf_counter() - started))
    return results


async def _send_udp(
    host: str, port: int, message: bytes, count: int, timeout: float
) -> list[RoundTrip]:
    local = "::" if ":" in host else "0.0.0.0"
    results = []
    async with await open_udp(local, 0) as endpoint:
        for seq in range(1, count + 1):
            started = time.perf_counter()
            endpoint.send(message, (host, port))
            try:
                reply, _ = await endpoint.receive(timeout)
            except TimeoutError:
                raise UsageError(
                    f"no UDP reply from {host}:{port} within {timeout:g}s (datagram {seq})"
                ) from None
            results.append(RoundTrip(seq, reply, time.perf_counter() - started))
    return results


def summarize(results: list[RoundTrip]) -> dict[str, float]:
    rtts = sorted(r.rtt_s for r in results)
    return {
        "count": len(rtts),
        "min_ms": rtts[0] * 1000,
        "avg_ms": sum(rtts) / len(rtts) * 1000,
        "max_ms": rtts[-1] * 1000,
    }
