"""`wirekit serve` and `wirekit chat` as users run them: subprocesses on loopback."""

from __future__ import annotations

import json
import os
import pty
import resource
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import free_port, wait_for_port, wirekit_cmd

Spawn = Any


def serve(
    spawn: Spawn, data: Path, chat: int, metrics: int, *extra: str
) -> subprocess.Popen[bytes]:
    args = ["--data", str(data), "--chat", f"127.0.0.1:{chat}", "--metrics", f"127.0.0.1:{metrics}",
            "--http", "127.0.0.1:0"]  # fmt: skip
    proc: subprocess.Popen[bytes] = spawn(wirekit_cmd("serve", *args, *extra))
    wait_for_port(chat, timeout=20)
    return proc


class LinePeer:
    """A blocking JSON-mode chat connection."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.file.readline()  # greeting
        self.send("/json")
        self.until(lambda e: e.get("cmd") == "json")

    def send(self, *lines: str) -> None:
        self.sock.sendall("".join(line + "\n" for line in lines).encode())

    def until(self, match: Any) -> dict[str, Any]:
        while True:
            line = self.file.readline()
            assert line, "server closed"
            event: dict[str, Any] = json.loads(line)
            if match(event):
                return event

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def test_chat_client_resumes_after_a_server_kill_with_no_gap_and_no_duplicate(
    spawn: Spawn, tmp_path: Path
) -> None:
    data, chat, metrics = tmp_path / "data", free_port(), free_port()
    server = serve(spawn, data, chat, metrics)
    (tmp_path / "pw").write_text("bob-password\n")
    client = spawn(wirekit_cmd("chat", "--server", f"127.0.0.1:{chat}", "--user", "bob",
                               "--password-file", str(tmp_path / "pw"), "--register", "--json"),
                   stdin=subprocess.PIPE)  # fmt: skip
    client.stdin.write(b"/join #news\n")
    client.stdin.flush()
    alice = LinePeer(chat)
    alice.send("/register alice alice-password", "/join #news")
    alice.until(lambda e: e.get("cmd") == "joined")
    time.sleep(1.0)  # bob's client has logged in and joined
    for i in range(1, 21):
        alice.send(f"m{i}")
    alice.until(lambda e: e.get("offset") == 20)
    # Freeze the client, publish while it cannot read, kill the server, publish more on a new
    # server: the client must read 21-30 from its socket, then resume 31-50 by offset.
    client.send_signal(signal.SIGSTOP)
    for i in range(21, 31):
        alice.send(f"m{i}")
    alice.until(lambda e: e.get("offset") == 30)
    alice.close()
    server.kill()
    server.wait()
    serve(spawn, data, chat, metrics)
    alice = LinePeer(chat)
    alice.send("/login alice alice-password")
    alice.until(lambda e: e.get("cmd") == "login")
    for i in range(31, 51):
        alice.send(f"m{i}")
    alice.until(lambda e: e.get("offset") == 50)
    alice.close()
    client.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 30
    events: list[dict[str, Any]] = []
    assert client.stdout is not None
    while time.monotonic() < deadline:
        line = client.stdout.readline()
        assert line, "the client exited"
        events.append(json.loads(line))
        if events[-1].get("offset") == 50:
            break
    client.stdin.write(b"/quit\n")
    client.stdin.close()
    assert client.wait(timeout=15) == 0
    texts = [e["text"] for e in events if e["type"] == "msg"]
    assert texts == [f"m{i}" for i in range(1, 51)]  # none missed, none twice, in order
    states = [e["state"] for e in events if e["type"] == "status"]
    assert states[0] == "disconnected" and states[-1] == "connected"


def test_serve_holds_ten_thousand_idle_connections(spawn: Spawn, tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    chat, metrics = free_port(), free_port()
    serve(spawn, tmp_path / "data", chat, metrics, "--max-connections", "10001")
    socks = []
    try:
        for _ in range(10_000):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", chat))
            socks.append(sock)
        peer = LinePeer(chat)  # the 10,001st still gets served
        peer.send("/register late late-password", "/join #r", "still fine")
        assert peer.until(lambda e: e["type"] == "msg")["text"] == "still fine"
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics").read().decode()
        open_line = next(x for x in text.splitlines() if x.startswith("wirekit_connections_open{"))
        assert float(open_line.split()[-1]) == 10_001
        with socket.create_connection(("127.0.0.1", chat), timeout=10) as extra:
            assert extra.recv(100) == b""  # past --max-connections: closed at once
        peer.close()
    finally:
        for sock in socks:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_chat_client_errors_are_one_line(spawn: Spawn, tmp_path: Path) -> None:
    chat, metrics = free_port(), free_port()
    serve(spawn, tmp_path / "data", chat, metrics)
    (tmp_path / "pw").write_text("wrong-password\n")
    base = ["chat", "--server", f"127.0.0.1:{chat}", "--user", "ghost"]
    for args, message in (
        (["--password-file", str(tmp_path / "pw")], "wrong user name or password"),
        ([], "give --password-file"),
        (["--password-file", str(tmp_path / "missing")], "cannot read a password"),
    ):
        proc = subprocess.run(wirekit_cmd(*base, *args), capture_output=True, timeout=30,
                              stdin=subprocess.DEVNULL, env={**os.environ})  # fmt: skip
        err = proc.stderr.decode().strip()
        assert proc.returncode != 0 and message in err and len(err.splitlines()) == 1, err
    refused = subprocess.run(
        wirekit_cmd("chat", "--server", f"127.0.0.1:{free_port()}", "--user", "x",
                    "--password-file", str(tmp_path / "pw"), "--retries", "2"),
        capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "gave up after 2 attempts" in refused.stderr.decode().strip().splitlines()[-1]


def test_chat_over_tls_and_hub_metrics(spawn: Spawn, tmp_path: Path) -> None:
    data, chat, metrics = tmp_path / "data", free_port(), free_port()
    serve(spawn, data, chat, metrics, "--tls")
    (tmp_path / "pw").write_text("carol-password\n")
    proc = subprocess.run(
        wirekit_cmd("chat", "--server", f"localhost:{chat}", "--ca", str(data / "certs/ca.pem"),
                    "--user", "carol", "--password-file", str(tmp_path / "pw"), "--register",
                    "--json"),
        input=b"/join #secure\nover tls\n/history #secure\n", capture_output=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["text"] for e in events if e["type"] == "msg"] == ["over tls", "over tls"]
    with socket.create_connection(("127.0.0.1", chat), timeout=10) as plain:
        plain.sendall(b"/help\n")  # plain text on the TLS port: the handshake fails
        assert plain.recv(100) == b""  # closed; the server goes on
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics").read().decode()
    values = {
        line.split()[0]: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("wirekit_")
    }
    assert values["wirekit_hub_published_total"] == 1
    assert values["wirekit_hub_deliveries_total"] == 1
    assert values["wirekit_hub_rooms"] == 1
    labels = 'server="chat",transport="tcp",worker="0"'
    assert values[f'wirekit_errors_total{{kind="tls-handshake",{labels}}}'] == 1
    # The readiness probe connected and left without a hello: not an error.
    assert values[f'wirekit_connections_closed_total{{reason="tls-no-hello",{labels}}}'] >= 1


def test_interactive_client_shows_messages_while_you_type(spawn: Spawn, tmp_path: Path) -> None:
    chat, metrics = free_port(), free_port()
    serve(spawn, tmp_path / "data", chat, metrics)
    pid, fd = pty.fork()
    if pid == 0:  # the child: the client on a terminal
        try:
            os.environ["TERM"] = "xterm"
            args = ["chat", "--server", f"127.0.0.1:{chat}", "--user", "dora", "--register"]
            os.execv(sys.executable, [sys.executable, "-m", "wirekit", *args])
        finally:
            os._exit(127)

    def read_until(needle: bytes, timeout: float = 10.0) -> bytes:
        out, deadline = b"", time.monotonic() + timeout
        while needle not in out and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.1)[0]:
                out += os.read(fd, 65536)
        assert needle in out, out
        return out

    try:
        read_until(b"password for dora: ")
        os.write(fd, b"dora-password\r")
        read_until(b"* welcome, dora")
        os.write(fd, b"/join #t\r")
        read_until(b"now talking in #t")
        eve = LinePeer(chat)
        eve.send("/register eve eve-password", "/join #t")
        eve.until(lambda e: e.get("cmd") == "joined")
        os.write(fd, b"half a li")  # typing, not sent yet
        time.sleep(0.3)
        eve.send("hello dora")
        read_until(b"[#t] eve: hello dora")  # shown while the line is being typed
        os.write(fd, b"ne\r")
        assert eve.until(lambda e: e["type"] == "msg" and e["from"] == "dora")["text"] == (
            "half a line"
        )
        os.write(fd, b"/quit\r")
        read_until(b"* bye")
        eve.close()
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0
