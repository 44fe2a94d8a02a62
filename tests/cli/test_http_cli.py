"""`wirekit http` as a user runs it: a real process against real servers on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import free_port, wirekit_cmd
from wirekit.errors import PeerError
from wirekit.httpclient.wire import ResponseParser
from wirekit.io.tls import server_context

pytestmark = pytest.mark.timeout(60)

ORDERED = {"zeta": 1, "alpha": [1, 2.5, "x"], "nested": {"b": True, "a": None}, "text": "héllo"}
BLOB = bytes(range(256)) * 1200  # 300 KiB with NUL bytes: binary


class Server:
    """An aiohttp app in its own thread and loop; records what it was sent."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.hits: Counter[str] = Counter()
        self.peers: list[tuple[str, int]] = []  # client address of every request
        self.seen: list[dict[str, Any]] = []
        self._tls = tls
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner = self._call(self._start())

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_route("*", "/echo", self.echo)
        app.router.add_route("*", "/status/{code}", self.status)
        app.router.add_route("*", "/flaky/{key}", self.flaky)
        app.router.add_get("/json", self.json)
        app.router.add_get("/blob", self.blob)
        app.router.add_get("/trickle", self.trickle)
        app.router.add_route("*", "/redirect/{n}", self.redirect)
        app.router.add_route("*", "/see-other", self.see_other)
        runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=self._tls).start()
        return runner

    def close(self) -> None:
        self._call(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _record(self, request: web.Request) -> None:
        assert request.transport is not None
        self.peers.append(request.transport.get_extra_info("peername")[:2])
        self.hits[request.path] += 1

    async def echo(self, request: web.Request) -> web.Response:
        self._record(request)
        body = await request.read()
        self.seen.append({"method": request.method, "headers": dict(request.headers), "body": body})
        return web.json_response(
            {"method": request.method, "path": request.path_qs, "body": body.decode("latin-1")},
            headers={"X-Served-By": "test-server"},
        )

    async def status(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.Response(status=int(request.match_info["code"]), text="status body\n")

    async def flaky(self, request: web.Request) -> web.Response:
        """The first ``fail`` requests get ``status`` (with ``retry_after``, if given)."""
        self._record(request)
        if self.hits[request.path] <= int(request.query.get("fail", "2")):
            retry_after = request.query.get("retry_after")
            headers = {"Retry-After": retry_after} if retry_after else {}
            return web.Response(status=int(request.query.get("status", "503")), headers=headers)
        return web.Response(text="recovered")

    async def json(self, request: web.Request) -> web.Response:
        return web.json_response(ORDERED, dumps=lambda v: json.dumps(v, ensure_ascii=False))

    async def blob(self, request: web.Request) -> web.Response:
        return web.Response(body=BLOB, content_type="application/octet-stream")

    async def trickle(self, request: web.Request) -> web.StreamResponse:
        """A chunked body, one byte every 100 ms for 2 s: no read waits long, the whole does."""
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(20):
            await response.write(b".")
            await asyncio.sleep(0.1)
        await response.write_eof()
        return response

    async def redirect(self, request: web.Request) -> web.Response:
        self._record(request)
        n = int(request.match_info["n"])
        if n == 0:
            return web.Response(text=f"arrived by {request.method}")
        raise web.HTTPFound(f"/redirect/{n - 1}")

    async def see_other(self, request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/echo")


class Scripted:
    """A raw server for what aiohttp will not do. Connection ``i`` plays ``script[i]``: for each
    reply, read one request head, then send the reply (``None``: close without answering)."""

    def __init__(self, script: list[list[bytes | None]]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        self.requests: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, args=(script,), daemon=True)
        self._thread.start()

    def _serve(self, script: list[list[bytes | None]]) -> None:
        try:
            for replies in script:
                conn, _ = self.listener.accept()
                with conn:
                    self.connections += 1
                    for reply in replies:
                        head = b""
                        while b"\r\n\r\n" not in head and (chunk := conn.recv(65536)):
                            head += chunk
                        self.requests.append(head)
                        if reply is None:
                            break
                        conn.sendall(reply)
        except OSError:  # closed by close()
            pass

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept()
        self.listener.close()
        self._thread.join(10)


KEEP_ALIVE_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("certs")
    made = wk("certs", "--out", str(out), "localhost", "127.0.0.1", "--json")
    return json.loads(made.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def tls_server(pki: dict[str, str]) -> Iterator[Server]:
    srv = Server(server_context(pki["cert"], pki["key"]))
    yield srv
    srv.close()


def wk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(wirekit_cmd(*args), capture_output=True, text=True, timeout=30)


def wk_bytes(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(wirekit_cmd(*args), capture_output=True, timeout=30, input=input)


def http_json(*args: str) -> tuple[int, dict[str, Any]]:
    proc = wk("http", *args, "--json")
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wirekit: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_help_has_examples_and_exit_codes() -> None:
    assert "  http " in wk("--help").stdout
    out = wk("http", "--help").stdout
    assert "Example:" in out and "Exit codes:" in out and "28 timed out" in out


def test_headers_go_out_and_come_back(server: Server) -> None:
    proc = wk("http", "GET", f"{server.url}/echo?q=1", "-i", "-H", "X-Trace: abc 123",
              "-H", "User-Agent: probe/1", "-H", "Accept:", "-H", "X-Empty;")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    sent = server.seen[-1]["headers"]
    assert sent["X-Trace"] == "abc 123" and sent["User-Agent"] == "probe/1"
    assert "Accept" not in sent and sent["X-Empty"] == ""  # 'Name:' drops, 'Name;' sends empty
    assert sent["Host"] == f"127.0.0.1:{server.port}"
    head, _, body = proc.stdout.partition("\n\n")
    assert head.splitlines()[0] == "HTTP/1.1 200 OK"
    assert "X-Served-By: test-server" in head.splitlines()
    assert json.loads(body)["path"] == "/echo?q=1"


def test_json_fields_arrive_with_their_types(server: Server) -> None:
    proc = wk("http", "POST", f"{server.url}/echo", "-j", "name=ann", "-j", "age:=30",
              "-j", "admin:=true", "-j", "gone:=null", "-j", "tags:=[\"a\", 1]",
              "-j", "meta:={\"k\": {\"n\": 1.5}}", "-j", "eq=a=b", "-j", "num=30")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    got = server.seen[-1]
    assert got["method"] == "POST"
    assert got["headers"]["Content-Type"] == "application/json"
    assert got["headers"]["Accept"].startswith("application/json")
    assert json.loads(got["body"]) == {"name": "ann", "age": 30, "admin": True, "gone": None,
                                       "tags": ["a", 1], "meta": {"k": {"n": 1.5}},
                                       "eq": "a=b", "num": "30"}  # fmt: skip


def test_raw_body_from_file_stdin_and_text(server: Server, tmp_path: Path) -> None:
    payload = b"line one\nline two\r\n\x00\xff binary tail\n"
    (tmp_path / "body.bin").write_bytes(payload)
    proc = wk("http", "PUT", f"{server.url}/echo", "-d", f"@{tmp_path / 'body.bin'}")
    assert proc.returncode == 0, proc.stderr
    assert server.seen[-1]["body"] == payload  # byte for byte, newlines kept
    assert server.seen[-1]["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    piped = wk_bytes("http", "POST", f"{server.url}/echo", "-d", "@-",
                     "--content-type", "text/plain", input=payload)  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert server.seen[-1]["body"] == payload
    assert server.seen[-1]["headers"]["Content-Type"] == "text/plain"
    assert wk("http", "PATCH", f"{server.url}/echo", "-d", "a=1&b=2").returncode == 0
    assert server.seen[-1]["body"] == b"a=1&b=2"
    assert server.seen[-1]["headers"]["Content-Length"] == "7"


def test_json_is_pretty_printed_in_its_own_order(server: Server) -> None:
    proc = wk("http", "GET", f"{server.url}/json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == json.dumps(ORDERED, indent=2, ensure_ascii=False) + "\n"


def test_json_output_describes_the_exchange(server: Server) -> None:
    code, r = http_json("POST", f"{server.url}/echo", "-j", "x:=1")
    assert code == 0
    assert r["status"] == 200 and r["reason"] == "OK" and r["http_version"] == "1.1"
    assert r["body_encoding"] == "json" and r["body"]["method"] == "POST"
    assert ["X-Served-By", "test-server"] in r["headers"]
    assert r["request"]["method"] == "POST" and r["request"]["url"] == f"{server.url}/echo"
    assert r["peer"] == f"127.0.0.1:{server.port}"
    assert r["attempts"] == 1 and r["redirects"] == [] and r["reused_connection"] is False
    t = r["timing"]
    assert t["tls_ms"] is None
    for key in ("dns_ms", "connect_ms", "wait_ms", "transfer_ms", "first_byte_ms", "total_ms"):
        assert t[key] >= 0
    assert t["total_ms"] >= t["first_byte_ms"] >= t["dns_ms"] + t["connect_ms"]
    code, r = http_json("GET", f"{server.url}/blob")
    assert r["body_encoding"] == "base64" and r["body_bytes"] == len(BLOB)


@pytest.mark.parametrize(
    ("path", "method", "code"),
    [("/status/200", "GET", 0), ("/status/204", "DELETE", 0), ("/status/302", "GET", 0),
     ("/status/404", "GET", 4), ("/status/418", "POST", 4), ("/status/500", "GET", 5),
     ("/status/503", "HEAD", 5)],
)  # fmt: skip
def test_exit_code_follows_the_status(server: Server, path: str, method: str, code: int) -> None:
    proc = wk("http", method, server.url + path)
    assert proc.returncode == code, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout == ("" if method == "HEAD" or "204" in path else "status body\n")
    assert wk("http", method, server.url + path, "--ignore-status").returncode == 0


def test_connection_refused() -> None:
    proc = wk("http", "GET", f"http://127.0.0.1:{free_port()}/")
    assert_one_line_error(proc, 7, "cannot connect", "Connection refused")


def test_unknown_host() -> None:
    assert_one_line_error(wk("http", "GET", "http://no-such-host.invalid/"), 7, "cannot resolve")


def test_read_timeout_on_a_server_that_never_answers() -> None:
    with socket.socket() as silent:  # the kernel accepts; nobody ever reads or answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        proc = wk("http", "GET", f"http://127.0.0.1:{silent.getsockname()[1]}/",
                  "--read-timeout", "500ms")  # fmt: skip
    assert_one_line_error(proc, 28, "read timed out after 0.5s")
    assert time.monotonic() - started < 5


def test_connect_timeout_when_the_handshake_never_completes() -> None:
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        held = []  # fill the accept queue: later SYNs are dropped, connects hang
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            held.append(s)
        time.sleep(0.1)
        try:
            proc = wk("http", "GET", f"http://127.0.0.1:{port}/", "--connect-timeout", "300ms")
        finally:
            for s in held:
                s.close()
    assert_one_line_error(proc, 28, "connect timed out after 0.3s")


def test_total_timeout_bounds_a_body_that_trickles(server: Server) -> None:
    started = time.monotonic()
    proc = wk("http", "GET", f"{server.url}/trickle", "--read-timeout", "2s", "--timeout", "1s")
    assert_one_line_error(proc, 28, "request timed out after 1s")
    assert time.monotonic() - started < 4
    assert wk("http", "GET", f"{server.url}/trickle", "--read-timeout", "2s").stdout == "." * 20


def test_retries_503_twice_then_success(server: Server) -> None:
    proc = wk("http", "GET", f"{server.url}/flaky/a?fail=2", "--retries", "2", "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["status"] == 200 and r["body"] == "recovered" and r["attempts"] == 3
    assert server.hits["/flaky/a"] == 3  # exactly: two failures and the success
    assert proc.stderr.count("retrying in") == 2 and "503 Service Unavailable" in proc.stderr


def test_retries_give_up_with_the_last_status(server: Server) -> None:
    proc = wk("http", "GET", f"{server.url}/flaky/b?fail=9&status=502", "--retries", "2")
    assert proc.returncode == 5
    assert server.hits["/flaky/b"] == 3
    assert wk("http", "GET", f"{server.url}/flaky/c?fail=9").returncode == 5  # default: no retry
    assert server.hits["/flaky/c"] == 1


def test_post_is_not_retried_unless_asked(server: Server) -> None:
    proc = wk("http", "POST", f"{server.url}/flaky/d?fail=2", "-j", "a=1", "--retries", "2")
    assert proc.returncode == 5
    assert server.hits["/flaky/d"] == 1
    proc = wk("http", "POST", f"{server.url}/flaky/e?fail=2", "--retries", "2", "--retry-any")
    assert proc.returncode == 0
    assert server.hits["/flaky/e"] == 3


def test_retry_after_is_honoured(server: Server) -> None:
    started = time.monotonic()
    proc = wk("http", "GET", f"{server.url}/flaky/f?fail=1&status=429&retry_after=1",
              "--retries", "1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started >= 1.0
    assert "retrying in 1.00s" in proc.stderr
    # Longer than the 10 s cap: not worth the wait, the 429 is the answer.
    proc = wk("http", "GET", f"{server.url}/flaky/g?fail=1&status=429&retry_after=3600",
              "--retries", "1")  # fmt: skip
    assert proc.returncode == 4 and server.hits["/flaky/g"] == 1


def test_connection_errors_are_retried_with_backoff() -> None:
    proc = wk("http", "POST", f"http://127.0.0.1:{free_port()}/", "--retries", "2")
    assert proc.returncode == 7
    assert proc.stderr.count("retrying in") == 2  # nothing was sent: safe even for POST
    assert proc.stderr.strip().splitlines()[-1].startswith("wirekit: error: cannot connect")


def test_repeat_reuses_one_pooled_connection(server: Server) -> None:
    code, r = http_json("GET", f"{server.url}/echo", "--repeat", "5")
    assert code == 0
    assert r["repeat"]["requests"] == 5 and r["repeat"]["statuses"] == {"200": 5}
    assert r["repeat"]["connections_opened"] == 1 and r["repeat"]["connections_reused"] == 4
    assert len(server.peers) == 5 and len(set(server.peers)) == 1  # the server agrees
    assert r["reused_connection"] is True and r["timing"]["dns_ms"] is None
    proc = wk("http", "GET", f"{server.url}/echo", "--repeat", "3", "-o", os.devnull)
    assert "3 requests over 1 connection(s) (2 reuses)" in proc.stderr


def test_repeat_with_concurrency_opens_at_most_that_many(server: Server) -> None:
    code, r = http_json("GET", f"{server.url}/echo", "--repeat", "12", "--concurrency", "3")
    assert code == 0 and r["repeat"]["requests"] == 12
    assert 1 <= r["repeat"]["connections_opened"] <= 3
    assert len(set(server.peers)) == r["repeat"]["connections_opened"]
    assert len(server.peers) == 12


def test_timing_phases_plain_http(server: Server) -> None:
    proc = wk("http", "GET", f"{server.url}/echo", "--timing")
    assert proc.returncode == 0
    lines = proc.stderr.splitlines()
    names = [line[:18].strip() for line in lines]
    assert names == ["DNS lookup", "TCP connect", "Server processing", "Content transfer"]
    assert "TLS" not in proc.stderr
    assert json.loads(proc.stdout)["method"] == "GET"  # stdout keeps only the body


def test_https_with_the_local_ca(tls_server: Server, pki: dict[str, str]) -> None:
    url = f"https://localhost:{tls_server.port}/echo"
    code, r = http_json("GET", url, "--ca", pki["ca"])
    assert code == 0 and r["status"] == 200
    t = r["timing"]
    assert t["tls_ms"] > 0 and t["first_byte_ms"] >= t["dns_ms"] + t["connect_ms"] + t["tls_ms"]
    proc = wk("http", "GET", url, "--ca", pki["ca"], "--timing")
    assert "TLS handshake" in proc.stderr and "appconnect" in proc.stderr
    proc = wk("http", "GET", url)  # the system store does not know the local CA
    assert_one_line_error(proc, 7, "TLS verification of localhost:", "--ca")
    assert wk("http", "GET", url, "-k").returncode == 0
    code, r = http_json("GET", url, "--ca", pki["ca"], "--repeat", "3")
    assert r["repeat"]["connections_opened"] == 1 and r["timing"]["tls_ms"] is None


def test_https_to_a_plain_server_fails_cleanly(server: Server) -> None:
    proc = wk("http", "GET", f"https://127.0.0.1:{server.port}/", "-k")
    assert_one_line_error(proc, 7, "TLS handshake with 127.0.0.1")


def test_redirects(server: Server) -> None:
    proc = wk("http", "GET", f"{server.url}/redirect/3", "-i")
    assert proc.returncode == 0 and proc.stdout.startswith("HTTP/1.1 302 Found")
    assert "Location: /redirect/2" in proc.stdout
    code, r = http_json("GET", f"{server.url}/redirect/3", "--follow")
    assert code == 0 and r["body"] == "arrived by GET" and r["url"] == f"{server.url}/redirect/0"
    assert r["redirects"] == [f"{server.url}/redirect/{n}" for n in (3, 2, 1)]
    proc = wk("http", "PUT", f"{server.url}/redirect/3", "-L", "--max-redirects", "2")
    assert_one_line_error(proc, 6, "more than 2 redirects")
    code, r = http_json("POST", f"{server.url}/see-other", "-L", "-j", "a=1")
    assert code == 0 and r["request"]["method"] == "GET"
    assert server.seen[-1]["method"] == "GET" and server.seen[-1]["body"] == b""


def test_body_bytes_match_curl(server: Server, tmp_path: Path) -> None:
    curl = subprocess.run(["curl", "-s", f"{server.url}/blob"], capture_output=True, timeout=30)
    assert curl.stdout == BLOB
    ours = wk_bytes("http", "GET", f"{server.url}/blob")
    assert ours.returncode == 0 and ours.stdout == curl.stdout
    proc = wk("http", "GET", f"{server.url}/blob", "-o", str(tmp_path / "blob"), "-i")
    assert proc.returncode == 0 and proc.stdout.endswith("\n\n")  # headers only
    assert (tmp_path / "blob").read_bytes() == BLOB


def test_body_limit_in_memory_but_not_to_a_file(server: Server, tmp_path: Path) -> None:
    proc = wk("http", "GET", f"{server.url}/blob", "--max-body", "1000")
    assert_one_line_error(proc, 1, "exceeds the limit of 1000 bytes", "-o FILE")
    proc = wk("http", "GET", f"{server.url}/blob", "--max-body", "1000", "-o", str(tmp_path / "b"))
    assert proc.returncode == 0 and (tmp_path / "b").stat().st_size == len(BLOB)


def test_verbose_prints_the_request(server: Server) -> None:
    proc = wk("http", "POST", f"{server.url}/echo?x=1", "-v", "-d", "hello")
    request, response = proc.stdout.split("\nHTTP/1.1 200 OK\n")
    assert request.splitlines()[:3] == [
        "POST /echo?x=1 HTTP/1.1", f"Host: 127.0.0.1:{server.port}", "Content-Length: 5"
    ]  # fmt: skip
    assert request.endswith("\n\nhello\n")
    assert "X-Served-By: test-server" in response


def run_in_terminal(*args: str) -> tuple[int, bytes]:
    """Run with stdout and stderr on a pseudo-terminal; what the terminal showed."""
    main, sub = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(wirekit_cmd(*args), stdout=sub, stderr=sub, env=env)
    os.close(sub)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    return proc.wait(30), shown


def test_terminal_gets_colour_and_no_binary(server: Server) -> None:
    code, shown = run_in_terminal("http", "GET", f"{server.url}/json")
    assert code == 0 and b"\x1b[" in shown and "héllo".encode() in shown
    code, shown = run_in_terminal("http", "GET", f"{server.url}/blob")
    assert code == 0 and b"binary body (307200 bytes) not shown" in shown and b"-o FILE" in shown
    assert BLOB[:300] not in shown


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["GET", "ftp://x/"], ["bad URL"]),
        (["GET", "http://127.0.0.1:99999/"], ["bad port"]),
        (["G(T", "http://127.0.0.1/"], ["bad method"]),
        (["GET", "http://127.0.0.1/", "-H", "NoColon"], ["bad header"]),
        (["POST", "http://127.0.0.1/", "-j", "a=1", "-d", "x"], ["not both"]),
        (["POST", "http://127.0.0.1/", "-j", "n:=[1,"], ["bad JSON in -j"]),
        (["POST", "http://127.0.0.1/", "-j", "=1"], ["bad -j item"]),
        (["POST", "http://127.0.0.1/", "-d", "@/no/such/file"], ["cannot read -d"]),
        (["GET", "https://127.0.0.1/", "--ca", "/no/such/ca.pem"], ["cannot read CA"]),
        (["GET", "http://127.0.0.1/", "--repeat", "0"], ["at least 1"]),
    ],
)  # fmt: skip
def test_user_mistakes_are_one_line_errors(args: list[str], needles: list[str]) -> None:
    assert_one_line_error(wk("http", *args), 1, *needles)


def test_a_kept_alive_connection_dropped_while_idle_is_replaced_for_get() -> None:
    # The first connection answers once, then closes on the next request without a word, as a
    # server does when its idle timeout races the client's reuse.
    srv = Scripted([[KEEP_ALIVE_OK, None], [KEEP_ALIVE_OK]])
    try:
        code, r = http_json("GET", srv.url + "/", "--repeat", "2")
    finally:
        srv.close()
    assert code == 0 and r["repeat"]["statuses"] == {"200": 2}
    assert r["repeat"]["connections_opened"] == 2 and r["repeat"]["exchanges"] == 3
    assert srv.connections == 2 and len(srv.requests) == 3


def test_a_post_is_not_replayed_on_a_dropped_connection() -> None:
    srv = Scripted([[KEEP_ALIVE_OK, None], [KEEP_ALIVE_OK]])
    try:
        proc = wk("http", "POST", srv.url + "/", "-d", "x", "--repeat", "2")
    finally:
        srv.close()
    assert_one_line_error(proc, 7, "closed the connection")
    assert srv.connections == 1 and len(srv.requests) == 2


def test_body_until_close_and_malformed_responses() -> None:
    srv = Scripted([[b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close"],
                    [b"NOT HTTP AT ALL\r\n\r\n"],
                    [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"]])  # fmt: skip
    try:
        proc = wk("http", "GET", srv.url + "/")
        assert proc.returncode == 0 and proc.stdout == "until the close"
        assert_one_line_error(wk("http", "GET", srv.url + "/"), 1, "malformed HTTP response")
        assert_one_line_error(wk("http", "GET", srv.url + "/"), 7, "closed the connection")
    finally:
        srv.close()


RESPONSE = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\nX-A: 2\r\n\r\n"
    b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
)


def parse(chunks: list[bytes], method: str = "GET") -> tuple[Any, bytes]:
    parser = ResponseParser(method)
    body = b""
    for chunk in chunks:
        parser.feed(chunk)
        body += b"".join(parser.take_body())
    assert parser.complete and parser.keep_alive
    return parser.head, body


@given(st.lists(st.integers(0, len(RESPONSE)), max_size=8))
def test_parser_gives_the_same_answer_however_the_bytes_are_split(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(RESPONSE)]
    head, body = parse([RESPONSE[a:b] for a, b in pairwise(bounds)])
    assert (head.status, head.reason, body) == (200, "OK", b"hello world")  # 100 skipped
    assert head.headers == (("Transfer-Encoding", "chunked"), ("X-A", "1"), ("X-A", "2"))


def test_parser_head_response_has_no_body_and_heads_are_bounded() -> None:
    head, body = parse([b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"], method="HEAD")
    assert head.status == 200 and body == b""
    parser = ResponseParser("GET", max_head=100)
    with pytest.raises(PeerError, match="exceeds the limit of 100 bytes"):
        parser.feed(b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * 200 + b"\r\n\r\n")


@given(st.binary(max_size=300))
def test_parser_rejects_any_garbage_with_a_peer_error(data: bytes) -> None:
    parser = ResponseParser("GET")
    try:
        parser.feed(RESPONSE[:40] + data)
        parser.feed(data)
    except PeerError:
        pass
