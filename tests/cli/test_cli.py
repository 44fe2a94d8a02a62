"""The commands as a user runs them: real processes, real sockets, one-line errors."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_for_port, wirekit_cmd

Spawn = Callable[..., subprocess.Popen[bytes]]


def wk(
    *args: str, cwd: Path | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        wirekit_cmd(*args), capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("wirekit: error: ")
    for needle in needles:
        assert needle in lines[0]


def test_help_lists_every_command_and_each_has_an_example() -> None:
    out = wk("--help").stdout
    for command in ("serve", "chat", "echo", "discover", "addr", "certs"):
        assert f"  {command} " in out
    commands = [["serve"], ["chat"], ["echo", "serve"], ["echo", "send"], ["discover", "announce"],
                ["discover", "listen"], ["addr"], ["certs"]]  # fmt: skip
    for command in commands:
        assert "Example:" in wk(*command, "--help").stdout, command


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["nope"], ["No such command"]),
        (["echo", "serve", "--tcp", "bad"], ["expected HOST:PORT"]),
        (["echo", "serve", "--tcp", "127.0.0.1:99999"], ["0 to 65535"]),
        (["echo", "serve", "--tcp", "127.0.0.1:0", "--cert", "nope.pem", "--key", "nope.key"],
         ["cannot read certificate"]),
        (["echo", "send", "ftp://x:1", "hi"], ["bad target"]),
        (["echo", "send", f"tcp://127.0.0.1:{free_port()}", "hi"], ["cannot connect"]),
        (["addr", "300.1.1.1"], ["not an IP address"]),
        (["addr", "--resolve", "no-such-host.invalid"], ["cannot resolve"]),
    ],
)  # fmt: skip
def test_user_mistakes_are_one_line_errors(args: list[str], needles: list[str]) -> None:
    assert_one_line_error(wk(*args), *needles)


def test_port_in_use_is_one_line_error() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert_one_line_error(
            wk("echo", "serve", "--tcp", f"127.0.0.1:{port}"), "address already in use"
        )
        assert_one_line_error(
            wk("echo", "serve", "--tcp", f"127.0.0.1:{port}", "--workers", "2"),
            "address already in use",
        )


def test_addr_json() -> None:
    info = json.loads(wk("addr", "10.1.2.3/30", "--contains", "10.1.2.4", "--json").stdout)
    assert info["network"] == "10.1.2.0/30" and info["broadcast"] == "10.1.2.3"
    assert info["hosts"] == 2 and info["first_host"] == "10.1.2.1"
    assert info["contains"]["inside"] is False
    v6 = json.loads(wk("addr", "2001:db8::1/64", "--json").stdout)
    assert v6["hosts"] == 2**64 - 1 and "broadcast" not in v6
    res = json.loads(wk("addr", "--resolve", "localhost", "--json").stdout)
    assert "127.0.0.1" in res["a"] and res["ms"] >= 0


def test_certs_then_tls_echo(tmp_path: Path, spawn: Spawn) -> None:
    made = json.loads(wk("certs", "--out", str(tmp_path / "c"), "--json").stdout)
    assert made["ca_created"] is True and made["names"] == ["localhost", "127.0.0.1", "::1"]
    again = json.loads(wk("certs", "--out", str(tmp_path / "c"), "localhost", "--json").stdout)
    assert again["ca_created"] is False  # the CA is reused
    port = free_port()
    spawn(wirekit_cmd("echo", "serve", "--tcp", f"127.0.0.1:{port}",
                      "--cert", made["cert"], "--key", made["key"]))  # fmt: skip
    wait_for_port(port)
    ok = wk("echo", "send", f"tls://localhost:{port}", "secure", "--ca", made["ca"], "--json")
    assert json.loads(ok.stdout)["replies"][0]["reply"] == "secure"
    other = json.loads(wk("certs", "--out", str(tmp_path / "o"), "--json").stdout)
    bad = wk("echo", "send", f"tls://localhost:{port}", "x", "--ca", other["ca"])
    assert_one_line_error(bad, "verification")


def test_echo_serve_tcp_and_udp_exports_metrics_and_stops_on_sigterm(spawn: Spawn) -> None:
    tcp, udp, metrics = free_port(), free_port(socket.SOCK_DGRAM), free_port()
    proc = spawn(wirekit_cmd("echo", "serve", "--tcp", f"127.0.0.1:{tcp}", "--udp",
                             f"127.0.0.1:{udp}", "--metrics", f"127.0.0.1:{metrics}"))  # fmt: skip
    wait_for_port(metrics)
    out = json.loads(wk("echo", "send", f"tcp://127.0.0.1:{tcp}", "hey", "--count", "3",
                        "--json").stdout)  # fmt: skip
    assert [r["reply"] for r in out["replies"]] == ["hey"] * 3
    assert out["summary"]["count"] == 3
    out = json.loads(wk("echo", "send", f"udp://127.0.0.1:{udp}", "dgram", "--json").stdout)
    assert out["replies"][0]["reply"] == "dgram"
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics").read().decode()
    assert (
        'wirekit_bytes_total{direction="in",server="echo",transport="tcp",worker="0"} 9.0' in text
    )
    assert (
        'wirekit_frames_total{direction="in",server="echo",transport="udp",worker="0"} 1.0' in text
    )
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0


def test_workers_share_the_port(spawn: Spawn) -> None:
    tcp, metrics = free_port(), free_port()
    proc = spawn(wirekit_cmd("--log-format", "json", "echo", "serve", "--tcp", f"127.0.0.1:{tcp}",
                             "--workers", "2", "--metrics", f"127.0.0.1:{metrics}"))  # fmt: skip
    wait_for_port(metrics, timeout=30)
    wait_for_port(tcp)
    for i in range(20):
        out = wk("echo", "send", f"tcp://127.0.0.1:{tcp}", f"w{i}", "--json")
        assert json.loads(out.stdout)["replies"][0]["reply"] == f"w{i}"
    time.sleep(1.5)  # workers report statistics once a second
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics").read().decode()
    accepted = {
        line.split('worker="')[1][0]: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("wirekit_connections_accepted_total{")
    }
    assert set(accepted) == {"0", "1"}
    assert sum(accepted.values()) >= 20  # the readiness probe may add one
    assert all(n > 0 for n in accepted.values()), accepted  # the kernel spread the load
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    # The workers log in the parent's --log-format: every stderr line is JSON.
    assert proc.stderr is not None
    lines = [json.loads(line) for line in proc.stderr.read().decode().splitlines()]
    assert sum(1 for line in lines if line.get("event") == "listening") == 2


def test_graceful_shutdown_finishes_in_flight_echo(spawn: Spawn) -> None:
    port = free_port()
    proc = spawn(wirekit_cmd("echo", "serve", "--tcp", f"127.0.0.1:{port}", "--grace", "5"))
    wait_for_port(port)
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"part one ")
        assert s.recv(100) == b"part one "
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None  # waiting for us
        s.sendall(b"part two")
        assert s.recv(100) == b"part two"
    assert proc.wait(timeout=10) == 0


def test_discover_announce_and_listen_over_multicast(spawn: Spawn) -> None:
    gport = free_port(socket.SOCK_DGRAM)
    group = ["--group", "239.255.77.78", "--group-port", str(gport), "--interface", "127.0.0.1"]
    listener = spawn(wirekit_cmd("discover", "listen", "--json", "--duration", "4", *group))
    time.sleep(1.0)
    announcer = spawn(wirekit_cmd("discover", "announce", "api", "--port", "8080",
                                  "--interval", "0.3", "--ttl", "1", *group))  # fmt: skip
    time.sleep(1.0)
    announcer.send_signal(signal.SIGTERM)
    assert announcer.wait(timeout=10) == 0
    out, _ = listener.communicate(timeout=15)
    events = [json.loads(line) for line in out.decode().splitlines()]
    assert [(e["change"], e["reason"]) for e in events] == [("up", "announce"), ("down", "bye")]
    assert events[0]["name"] == "api" and events[0]["port"] == 8080
    assert events[0]["host"] == "127.0.0.1"


def test_a_light_command_does_not_import_the_heavy_ones() -> None:
    """Commands load lazily: `wirekit addr` must not pay for aiohttp, the hub or the load tester."""
    heavy = ["aiohttp", "prometheus_client", "wirekit.cli.serve", "wirekit.cli.load"]
    code = (
        "import sys\n"
        "from wirekit.cli.main import main\n"
        "try:\n"
        "    main(['addr', '10.1.2.3/30', '--json'])\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        f"print([m for m in {heavy!r} if m in sys.modules])\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"
