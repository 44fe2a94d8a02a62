"""Service discovery over UDP multicast (seed 14.3.2): announce a service, list the live ones.

Protocol and registry: :mod:`wirekit.proto.discovery`. Default group ``239.255.77.77:7946``
(administratively scoped, stays inside the site) with TTL 1 (this LAN only).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from ..errors import PeerError, UsageError
from ..io.lifecycle import stop_on_signals
from ..io.udp import open_multicast
from ..proto.discovery import MAX_NAME, Announcement, Registry, ServiceChange, decode

log = logging.getLogger("wirekit.discover")

DEFAULT_GROUP = "239.255.77.77"
DEFAULT_PORT = 7946


async def announce(
    name: str,
    port: int,
    *,
    group: str = DEFAULT_GROUP,
    group_port: int = DEFAULT_PORT,
    interval: float = 5.0,
    ttl: float = 15.0,
    interface: str = "0.0.0.0",
    hops: int = 1,
    loopback: bool = True,
    count: int | None = None,
) -> int:
    """Announce ``name`` on ``port`` every ``interval`` seconds until a stop signal (or
    ``count`` announcements), then say ``bye``. Returns how many announcements were sent.
    With ``loopback=False`` listeners on this host do not hear it, only other hosts."""
    if not 0 < len(name) <= MAX_NAME:
        raise UsageError(f"service name must be 1-{MAX_NAME} characters")
    if not 0 < port < 65536:
        raise UsageError("service port must be 1-65535")
    if interval <= 0 or ttl <= interval:
        raise UsageError("need 0 < --interval < --ttl so listeners do not expire a live service")
    instance = os.urandom(8).hex()
    hello = Announcement("announce", name, port, instance, ttl).encode()
    bye = Announcement("bye", name, port, instance).encode()
    sent = 0
    endpoint = await open_multicast(
        group, group_port, interface=interface, ttl=hops, loopback=loopback, join=False
    )
    async with endpoint:
        with stop_on_signals() as stop:
            while count is None or sent < count:
                endpoint.send(hello, (group, group_port))
                sent += 1
                log.info("announced %s on port %d", name, port, extra={"instance": instance})
                if count is not None and sent >= count:
                    break
                try:
                    async with asyncio.timeout(interval):
                        await stop.wait()
                    break
                except TimeoutError:
                    pass
            endpoint.send(bye, (group, group_port))
    return sent


async def listen(
    on_change: Callable[[ServiceChange], None],
    *,
    group: str = DEFAULT_GROUP,
    group_port: int = DEFAULT_PORT,
    interface: str = "0.0.0.0",
    duration: float | None = None,
) -> Registry:
    """Report services going up and down until a stop signal or ``duration`` seconds."""
    registry = Registry()
    loop = asyncio.get_running_loop()
    endpoint = await open_multicast(group, group_port, interface=interface)
    ends = None if duration is None else loop.time() + duration
    async with endpoint:
        with stop_on_signals() as stop:
            while not stop.is_set():
                now = loop.time()
                for change in registry.handle_timer(now):
                    on_change(change)
                deadlines = [d for d in (registry.get_timer(), ends) if d is not None]
                if ends is not None and now >= ends:
                    break
                # Wake at least twice a second so a stop signal is noticed promptly.
                wait = min([0.5, *(max(0.0, d - now) for d in deadlines)])
                try:
                    data, (host, _) = await endpoint.receive(wait)
                except TimeoutError:
                    continue
                try:
                    ann = decode(data)
                except PeerError as exc:
                    log.debug("ignored datagram from %s: %s", host, exc)
                    continue
                found = registry.handle(ann, host, loop.time())
                if found is not None:
                    on_change(found)
    return registry
