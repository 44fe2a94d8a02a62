"""Multicast loopback control, shown between two network namespaces joined by a veth pair.

On ``lo`` a host always hears itself, so IP_MULTICAST_LOOP can only be seen with a second
"host": namespace A announces, listeners run in A and in B.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.conftest import wirekit_cmd

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2"
)

GROUP = ["--group", "239.255.77.90", "--group-port", "7990"]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def hosts() -> Iterator[dict[str, str]]:
    """Namespaces A (10.77.0.1) and B (10.77.0.2) on one veth link, multicast routed on it."""
    tag = str(os.getpid())
    names = {"a": f"wk-a-{tag}", "b": f"wk-b-{tag}"}
    for ns in names.values():
        ip("netns", "add", ns)
    try:
        ip("link", "add", f"wka{tag}", "netns", names["a"], "type", "veth",
           "peer", "name", f"wkb{tag}", "netns", names["b"])  # fmt: skip
        for key, addr in (("a", "10.77.0.1/24"), ("b", "10.77.0.2/24")):
            dev = f"wk{key}{tag}"
            ip("-n", names[key], "addr", "add", addr, "dev", dev)
            ip("-n", names[key], "link", "set", dev, "up", "multicast", "on")
            ip("-n", names[key], "link", "set", "lo", "up")
            ip("-n", names[key], "route", "add", "224.0.0.0/4", "dev", dev)
        yield names
    finally:
        for ns in names.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def in_ns(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *wirekit_cmd(*args)]


def heard(hosts: dict[str, str], loopback: str) -> dict[str, list[str]]:
    """Which namespaces' listeners heard an announcement from A."""
    listeners = {
        key: subprocess.Popen(
            in_ns(ns, "discover", "listen", "--json", "--duration", "4", *GROUP),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for key, ns in hosts.items()
    }
    try:
        subprocess.run(
            in_ns(hosts["a"], "discover", "announce", "api", "--port", "8080", "--interval",
                  "0.3", "--count", "4", "--interface", "10.77.0.1", loopback, *GROUP),
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        result = {}
        for key, proc in listeners.items():
            out, _ = proc.communicate(timeout=30)
            result[key] = [json.loads(line)["host"] for line in out.decode().splitlines()]
        return result
    finally:
        for proc in listeners.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_no_loopback_reaches_other_hosts_only(hosts: dict[str, str]) -> None:
    result = heard(hosts, "--no-loopback")
    assert result["b"] and set(result["b"]) == {"10.77.0.1"}
    assert result["a"] == []


def test_loopback_reaches_this_host_too(hosts: dict[str, str]) -> None:
    result = heard(hosts, "--loopback")
    assert result["b"] and set(result["b"]) == {"10.77.0.1"}
    assert result["a"] and set(result["a"]) == {"10.77.0.1"}
