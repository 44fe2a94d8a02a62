"""Address facts (seed 14.1.3): parse IPs and CIDRs, split HOST:PORT, resolve names."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import UsageError


def parse_hostport(text: str, *, default_port: int | None = None) -> tuple[str, int]:
    """Split ``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (host ``0.0.0.0``).

    >>> parse_hostport("[::1]:8080")
    ('::1', 8080)
    """
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = text, ""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise UsageError(f"bad address {text!r}: write IPv6 addresses as [ADDR]:PORT")
    if not port_text:
        if default_port is None:
            raise UsageError(f"bad address {text!r}: expected HOST:PORT")
        port_text = str(default_port)
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UsageError(f"bad address {text!r}: port must be a number from 0 to 65535")
    return host or "0.0.0.0", int(port_text)


def parse_url(text: str, schemes: tuple[str, ...]) -> tuple[str, str, int]:
    """Split ``SCHEME://HOST:PORT`` into its parts, with ``SCHEME`` one of ``schemes``."""
    parts = urlsplit(text)
    if parts.scheme not in schemes or not parts.netloc:
        raise UsageError(
            f"bad target {text!r}: expected {' or '.join(s + '://HOST:PORT' for s in schemes)}"
        )
    host, port = parse_hostport(parts.netloc)
    return parts.scheme, host, port


def describe(text: str) -> dict[str, Any]:
    """Everything about an address or network, as a JSON-ready dict.

    ``10.0.0.7/24`` is read as the host 10.0.0.7 on the network 10.0.0.0/24.
    """
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    net: ipaddress.IPv4Network | ipaddress.IPv6Network
    first: ipaddress.IPv4Address | ipaddress.IPv6Address
    last: ipaddress.IPv4Address | ipaddress.IPv6Address
    try:
        if "/" in text:
            iface = ipaddress.ip_interface(text)
            net = iface.network
            address = iface.ip
        else:
            address = ipaddress.ip_address(text)
            net = ipaddress.ip_network(f"{address}/{address.max_prefixlen}")
    except ValueError:
        raise UsageError(f"not an IP address or CIDR: {text!r}") from None
    size = net.num_addresses
    if net.version == 4 and net.prefixlen < 31:
        first, last, hosts = net.network_address + 1, net.broadcast_address - 1, size - 2
    elif net.version == 6 and net.prefixlen < 127:
        first, last, hosts = net.network_address + 1, net.broadcast_address, size - 1
    else:  # /31, /32, /127, /128: every address is a host (RFC 3021)
        first, last, hosts = net.network_address, net.broadcast_address, size
    info: dict[str, Any] = {
        "input": text,
        "version": net.version,
        "address": str(address),
        "network": str(net),
        "netmask": str(net.netmask),
        "hostmask": str(net.hostmask),
        "prefix": net.prefixlen,
        "first_host": str(first),
        "last_host": str(last),
        "hosts": hosts,
        "addresses": size,
        "kind": kind_of(address),
    }
    if net.version == 4:
        info["broadcast"] = str(net.broadcast_address)
    return info


def kind_of(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    for name in ("loopback", "multicast", "link_local", "private", "reserved", "unspecified"):
        if getattr(address, f"is_{name}"):
            return name.replace("_", "-")
    return "global"


def contains(network: str, address: str) -> bool:
    try:
        net = ipaddress.ip_network(network, strict=False)
        ip = ipaddress.ip_address(address)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return ip in net


@dataclass(frozen=True, slots=True)
class Resolution:
    name: str
    addresses: list[str]
    a: list[str]
    aaaa: list[str]
    seconds: float


async def resolve(name: str, *, timeout: float = 5.0) -> Resolution:
    """Resolve ``name`` to its A and AAAA addresses through the system resolver, timed."""
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise UsageError(f"resolving {name!r} timed out after {timeout:g}s") from None
    except socket.gaierror as exc:
        raise UsageError(f"cannot resolve {name!r}: {exc.strerror}") from None
    seconds = time.perf_counter() - started
    a: list[str] = []
    aaaa: list[str] = []
    for family, *_, sockaddr in infos:
        target = aaaa if family == socket.AF_INET6 else a
        if str(sockaddr[0]) not in target:
            target.append(str(sockaddr[0]))
    return Resolution(name, a + aaaa, a, aaaa, seconds)
