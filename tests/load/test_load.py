"""`wirekit load` against real servers started by the tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tracemalloc
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httptools
import pytest

from tests.conftest import free_port, wait_for_port, wirekit_cmd
from wirekit.load.engine import Engine, LoadConfig
from wirekit.load.recorder import FastHistogram, Recorder, clamp_us, summary
from wirekit.load.target import HttpRequest, parse_target

ROOT = Path(__file__).resolve().parents[2]


class CountingServer:
    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.load.http_server", str(self.port), *args],
            cwd=ROOT, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port)
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def count(self) -> int:
        return int(urllib.request.urlopen(f"{self.url}/__count", timeout=5).read())

    @property
    def body_bytes(self) -> int:
        return int(urllib.request.urlopen(f"{self.url}/__bytes", timeout=5).read())

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def server() -> Iterator[CountingServer]:
    srv = CountingServer()
    yield srv
    srv.stop()


def load(*args: str, timeout: float = 60) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(wirekit_cmd("load", *args, "--json"), capture_output=True,
                          timeout=timeout)  # fmt: skip
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_counts_are_exact(server: CountingServer) -> None:
    _, r = load(server.url + "/", "-n", "5000", "-c", "20")
    assert r["requests"] == {"sent": 5000, "completed": 5000, "errors": 0, "error_rate_pct": 0.0}
    assert r["status"] == {"200": 5000}
    assert server.count == 5000
    _, r = load(server.url + "/", "-d", "2s", "-c", "8", "--pipeline", "4")
    assert r["requests"]["errors"] == 0
    assert server.count == 5000 + r["requests"]["completed"]  # every request sent was answered
    assert sum(row["completed"] for row in r["timeline"]) == r["requests"]["completed"]
    # `make install` builds the per-response path with mypyc (setup.py; gcc comes from
    # system-deps): the run above went through the compiled modules
    assert r["compiled"] is True


@pytest.mark.anyio
async def test_requests_larger_than_the_socket_buffer_go_out_whole(
    server: CountingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request goes out with os.write only while the transport has nothing buffered. One
    larger than the socket buffer goes partly that way and the rest through the transport,
    which pauses the fast path until it has written everything: the server gets every byte
    once, in order."""
    body = bytes(range(256)) * 8192  # 2 MiB
    target = parse_target(server.url + "/", HttpRequest("POST", body=body))
    engine = Engine(LoadConfig(target, connections=2, count=12, pipeline=4, duration=None))
    buffered: list[int] = []  # what the transport held at each os.write on a connection
    partial: list[int] = []  # os.writes that left the rest of a request to the transport
    os_write = os.write

    def write(fd: int, data: bytes) -> int:
        for conn in engine.conns:
            if conn.transport and conn.transport.get_extra_info("socket").fileno() == fd:
                buffered.append(conn.transport.get_write_buffer_size())
        n = os_write(fd, data)
        if n < len(data):
            partial.append(n)
        return n

    monkeypatch.setattr(os, "write", write)
    rec = await engine.run()
    assert (rec.completed, rec.errors, rec.status) == (12, {}, {200: 12})
    # requests went partly through the transport, yet no os.write ever ran while it held bytes:
    # it paused the fast path each time until it had written them all
    assert partial and buffered and not any(buffered)
    assert server.count == 12 and server.body_bytes == 12 * len(body)


@pytest.mark.anyio
async def test_a_repeated_response_is_replayed_not_parsed_and_counted_exactly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bytes equal to the last ones that were exactly one whole keep-alive response complete a
    response without the parser; anything else is parsed. A different response of the same
    length, one split over two reads and one that closes the connection are parsed, and every
    status is counted as sent."""
    head = "HTTP/1.1 {} {}\r\nContent-Length: 5\r\n{}\r\nhello"
    ok, busy = head.format(200, "OK", "").encode(), head.format(503, "No", "").encode()
    closing = head.format(200, "OK", "Connection: close\r\n").encode()
    assert len(ok) == len(busy)
    script = [ok] * 4 + [busy] * 3 + [ok] * 2 + [b"split"] + [ok] * 2 + [closing] + [ok] * 2
    replies = iter(script)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.closing(writer), contextlib.suppress(asyncio.IncompleteReadError):
            while await reader.readuntil(b"\r\n\r\n"):  # until the client closes
                reply = next(replies)
                if reply == b"split":
                    writer.write(ok[:9])
                    await writer.drain()
                    await asyncio.sleep(0.05)  # the two halves arrive in two reads
                    reply = ok[9:]
                writer.write(reply)
                if reply == closing:
                    await writer.drain()
                    return

    feeds: list[bytes] = []
    parser_class = httptools.HttpResponseParser

    class CountingParser:
        def __init__(self, protocol: Any) -> None:
            self._parser = parser_class(protocol)
            self.get_status_code = self._parser.get_status_code
            self.should_keep_alive = self._parser.should_keep_alive

        def feed_data(self, data: bytes) -> None:
            feeds.append(data)
            self._parser.feed_data(data)

    monkeypatch.setattr(httptools, "HttpResponseParser", CountingParser)
    srv = await asyncio.start_server(answer, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}/"
    async with srv:
        target = parse_target(url, HttpRequest("GET"))
        engine = Engine(LoadConfig(target, connections=1, count=len(script), duration=None))
        rec = await engine.run()
    assert (rec.completed, rec.errors, rec.status) == (len(script), {}, {200: 12, 503: 3})
    # parsed: the first ok and busy, ok after busy, both halves of the split one, the closing
    # one, the first ok on the new connection; the other 8 were replays
    assert feeds == [ok, busy, ok, ok[:9], ok[9:], closing, ok]


def test_workers_counts_are_exact(server: CountingServer) -> None:
    _, r = load(server.url + "/", "-n", "3000", "-c", "10", "--workers", "2")
    assert r["workers"] == 2
    assert r["requests"]["completed"] == 3000 == server.count
    _, r = load(server.url + "/", "-d", "2s", "-c", "4", "--workers", "2")
    assert 1.9 <= r["duration_s"] <= 2.3  # timed from the common start, not each worker's
    assert server.count == 3000 + r["requests"]["completed"]


def test_open_model_holds_its_rate(server: CountingServer) -> None:
    _, r = load(server.url + "/", "--rate", "1000", "-d", "5s", "-c", "20")
    assert r["model"] == "open" and r["rate"] == 1000
    assert 4950 <= r["requests"]["completed"] <= 5050  # within 1%
    assert abs(r["throughput_rps"] - 1000) <= 10, r["throughput_rps"]
    assert server.count == r["requests"]["completed"]
    assert r["scheduler_lag_ms"]["p50"] < 1.0


def test_corrected_latency_shows_a_stall_the_uncorrected_hides() -> None:
    stalling = CountingServer("--stall-at", "1.5", "--stall-for", "1.0")
    try:
        _, r = load(stalling.url + "/", "--rate", "500", "-d", "4s", "-c", "5")
    finally:
        stalling.stop()
    corrected, uncorrected = r["latency_ms"]["corrected"], r["latency_ms"]["uncorrected"]
    # ~500 requests were due during the 1 s stall: they waited up to a second from their due
    # time, but only the 5 in flight waited after being sent.
    assert corrected["p99"] > 400, corrected
    assert uncorrected["p99"] < 50, uncorrected
    assert corrected["max"] > 900
    assert r["requests"]["errors"] == 0


def test_merged_histograms_equal_one_process() -> None:
    whole, parts = Recorder(0), [Recorder(0), Recorder(0)]
    for i in range(1, 20_001):
        intended, done = i * 1_000_000, i * 1_000_000 + (i % 977) * 37_000
        for rec in (whole, parts[i % 2]):
            rec.response(intended, intended, done, 200 if i % 10 else 503)
    merged = Recorder(0)
    for part in parts:
        merged.merge(json.loads(json.dumps(part.to_wire())))  # over a pipe: plain data
    assert summary(merged.corrected) == summary(whole.corrected)
    assert merged.corrected.to_hdr().get_total_count() == 20_000
    assert merged.status == whole.status
    assert [s.completed for s in merged.seconds] == [s.completed for s in whole.seconds]
    assert summary(merged.seconds[3].latency) == summary(whole.seconds[3].latency)


def test_batched_recording_equals_recording_each_response() -> None:
    """Latencies wait in lists until their second ends or a histogram is read; the result is
    what recording each one at once gives, out-of-order seconds and clamped values included."""
    rec = Recorder(0)
    corrected, uncorrected = FastHistogram(), FastHistogram()
    by_second: dict[int, FastHistogram] = {}
    for i in range(5_000):
        done = (i * 7_919 % 4_000) * 1_000_000  # seconds 0..3, back and forth
        intended = done - (i * 104_729 % 3_000_000_000) - (0 if i % 5 else 2 * 3_600 * 10**9)
        sent = intended if i % 3 else done - 400  # < 1 us after sending: clamped to 1 us
        rec.response(intended, sent, done, 200)
        corrected.record(clamp_us(done - intended))
        uncorrected.record(clamp_us(done - sent))
        by_second.setdefault(done // 10**9, FastHistogram(2)).record(clamp_us(done - intended))
        if i == 2_500:  # a read in the middle (progress, a failure) settles what is pending
            assert sum(rec.corrected.counts) == i + 1
    assert rec.corrected.counts == corrected.counts
    assert rec.uncorrected.counts == uncorrected.counts
    assert [sec.latency.nonzero() for sec in rec.seconds] == [
        by_second[i].nonzero() for i in range(4)]  # fmt: skip
    assert [sec.completed for sec in rec.seconds] == [sum(by_second[i].counts) for i in range(4)]


def test_past_seconds_keep_only_their_non_zero_counts() -> None:
    """A soak test's timeline must not cost a full histogram per second: 20 minutes of it (at
    100 distinct latencies a second) stay under 1.5 MiB (0.8 measured), where full histograms
    take 31 MiB and (index, count) pairs 2.1."""
    tracemalloc.start()
    try:
        rec = Recorder(0)
        before = tracemalloc.get_traced_memory()[0]
        for second in range(1_200):
            for i in range(100):
                done = second * 10**9 + i * 1_000_000
                rec.response(done - (50 + i * 37) * 1_000, done - 40_000, done, 200)
        rec.settle()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert used < 1.5 * 2**20, f"{used / 2**20:.1f} MiB for 20 minutes of timeline"
    assert sum(rec.seconds[1_000].latency.nonzero().values()) == 100


def test_thresholds_set_the_exit_code(server: CountingServer) -> None:
    code, r = load(server.url + "/", "-n", "500", "--threshold", "p99 < 5s",
                   "--threshold", "errors < 0.1%", "--threshold", "rps > 1")  # fmt: skip
    assert code == 0 and all(t["passed"] for t in r["thresholds"])
    code, r = load(server.url + "/", "-n", "500", "--threshold", "p50 < 1us")
    assert code == 1 and r["thresholds"][0]["passed"] is False
    code, r = load(server.url + "/half", "-n", "50", "--threshold", "errors < 1%")
    assert code == 1 and r["thresholds"][0]["actual"] == 100.0


def test_faults_are_counted_by_kind_never_a_hang(server: CountingServer) -> None:
    cases = {
        "/half": "closed-mid-response",
        "/garbage": "malformed-response",
    }
    for path, kind in cases.items():
        _, r = load(server.url + path, "-n", "40", "-c", "4")
        assert r["errors"] == {kind: 40}, (path, r["errors"])
    _, r = load(server.url + "/close", "-n", "40", "-c", "4")  # Connection: close is fine
    assert r["requests"]["completed"] == 40 and not r["errors"]
    _, r = load(f"http://127.0.0.1:{free_port()}/", "-n", "7")
    assert r["errors"] == {"refused": 7}
    _, r = load("http://no-such-host.invalid/", "-n", "3")
    assert r["errors"] == {"dns": 3}
    _, r = load(server.url + "/slow", "-n", "4", "-c", "2", "--timeout", "10ms")
    assert r["errors"] == {"timeout": 4}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ftp://example.com/"], "bad URL 'ftp://example.com/'"),
        (["http://127.0.0.1:99999/"], "bad port in URL"),
        (["http://127.0.0.1:1/", "--threshold", "p99 fast"], "bad threshold 'p99 fast'"),
        (["http://127.0.0.1:1/", "--steps", "100"], "bad --steps part '100'"),
        (["http://127.0.0.1:1/", "-H", "nocolon"], "bad header 'nocolon'"),
        (["http://127.0.0.1:1/", "--body-file", "/nonexistent"], "cannot read --body-file"),
        (["http://127.0.0.1:1/", "-d", "soon"], "'soon' is not a duration"),
    ],
)
def test_bad_input_is_one_error_line(args: list[str], message: str) -> None:
    proc = subprocess.run(wirekit_cmd("load", *args), capture_output=True, timeout=30)
    err = proc.stderr.decode().strip()
    assert proc.returncode not in (0, 3) and message in err and len(err.splitlines()) == 1, err


def test_csv_and_html_report(server: CountingServer, tmp_path: Path) -> None:
    html, csv = tmp_path / "report.html", tmp_path / "timeline.csv"
    _, r = load(server.url + "/", "--rate", "300", "-d", "3s", "--html", str(html),
                "--csv", str(csv))  # fmt: skip
    rows = csv.read_text().splitlines()
    assert rows[0].startswith("second,completed,errors")
    assert sum(int(row.split(",")[1]) for row in rows[1:]) == r["requests"]["completed"]
    text = html.read_text()
    assert "<script" not in text and "http://" not in text.replace(server.url, "")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        try:
            page = browser.new_page()
            page.route("**/*", lambda route: route.abort() if not route.request.url.startswith(
                "file:") else route.continue_())  # fmt: skip
            page.goto(html.as_uri())
            charts = page.locator("svg.chart")
            assert charts.count() == 3
            for i in range(3):
                box = charts.nth(i).bounding_box()
                assert box is not None and box["width"] > 500 and box["height"] > 200
            series = page.locator("polyline.series")
            assert {series.nth(i).get_attribute("data-series") for i in range(series.count())} == {
                "p50",
                "p99",
                "max",
                "spectrum",
            }
            points = page.locator('polyline[data-series="p99"]').get_attribute("points") or ""
            assert len(points.split()) == len(r["timeline"])  # one point per second
            assert page.locator("rect.bar").count() == len(r["timeline"])
            assert "VALID" in page.inner_text("body")
        finally:
            browser.close()


SCENARIO = """
base = "{url}"
thresholds = ["errors < 1%"]

[vars]
greeting = "hi"

[[feeder]]
file = "users.csv"

[[request]]
name = "login"
once = true
method = "POST"
path = "/login"
body = '{{"user": "${{user}}"}}'
headers = {{ "Content-Type" = "application/json" }}
extract = {{ token = "json:$.token" }}

[[request]]
name = "whoami"
weight = 3
path = "/whoami"
headers = {{ Authorization = "Bearer ${{token}}" }}

[[request]]
name = "home"
weight = 1
path = "/?g=${{greeting}}"
"""


def test_scenario_weights_feeders_and_extraction(server: CountingServer, tmp_path: Path) -> None:
    (tmp_path / "users.csv").write_text("user\nann\nbob\ncy\n")
    (tmp_path / "shop.toml").write_text(SCENARIO.format(url=server.url))
    code, r = load("--scenario", str(tmp_path / "shop.toml"), "-c", "3", "-n", "803",
                   "--seed", "1")  # fmt: skip
    assert code == 0, r["thresholds"]
    assert r["status"] == {"200": 803}  # every /whoami carried a token it had extracted
    names = r["requests_by_name"]
    assert names["login"] == 3  # once per virtual user
    assert abs(names["whoami"] / (names["whoami"] + names["home"]) - 0.75) < 0.06
    seen = json.loads(urllib.request.urlopen(f"{server.url}/__whoami").read())
    assert set(seen) == {"ann", "bob", "cy"}  # one feeder row per user
    assert r["thresholds"] == [{"threshold": "errors < 1%", "actual": 0.0, "passed": True}]


def test_scenario_missing_variable_and_bad_files(server: CountingServer, tmp_path: Path) -> None:
    no_login = SCENARIO.replace("once = true", "weight = 0").replace('file = "users.csv"', "")
    no_login = no_login.replace("[[feeder]]", "")
    (tmp_path / "s.toml").write_text(no_login.format(url=server.url))
    code, r = load("--scenario", str(tmp_path / "s.toml"), "-n", "200", "--seed", "3")
    assert code == 1  # the file's threshold failed
    assert set(r["errors"]) == {"missing-variable"}  # ${token} was never extracted
    assert r["errors"]["missing-variable"] + r["requests_by_name"]["home"] == 200
    for text, message in (
        ("nonsense = 1\n[[request]]\npath = '/'", "unknown key(s) nonsense"),
        (
            "[[request]]\npath = 'x'",
            "request #1 (request-1): path must be a string starting with /",
        ),
        ("[[request]]\nextract = { t = 'xpath://a' }", "expected 'json:$.path'"),
        ("[[request]]\npath = '/'\n[[feeder]]\nfile = 'none.csv'", "cannot read"),
        ("[[request", "is not valid TOML"),
    ):
        (tmp_path / "bad.toml").write_text(text)
        args = ["load", server.url, "--scenario", str(tmp_path / "bad.toml")]
        proc = subprocess.run(wirekit_cmd(*args), capture_output=True, timeout=30)
        err = proc.stderr.decode().strip()
        assert proc.returncode == 1 and message in err and len(err.splitlines()) == 1, err
        assert "bad.toml" in err


def test_tcp_and_udp_request_response_with_loss(tmp_path: Path) -> None:
    port = free_port()
    echo = subprocess.Popen(wirekit_cmd("echo", "serve", "--tcp", f"127.0.0.1:{port}",
                                        "--udp", f"127.0.0.1:{port}", "--framing", "line"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    table = f"wirekit_loss_{port}"
    try:
        wait_for_port(port)
        _, r = load(f"tcp://127.0.0.1:{port}", "--body", "hello", "-n", "3000", "-c", "5")
        assert r["requests"]["completed"] == 3000 and not r["errors"] and r["status"] == {}
        _, r = load(f"udp://127.0.0.1:{port}", "--body", "hello", "-n", "2000", "-c", "5")
        assert r["requests"]["completed"] == 2000 and not r["errors"]
        # Drop 30% of the datagrams to the echo port: each is a request with no reply.
        rules = "\n".join([
            f"add table inet {table}",
            f"add chain inet {table} in {{ type filter hook input priority 0; }}",
            f"add rule inet {table} in udp dport {port} numgen random mod 10 < 3 drop",
        ])  # fmt: skip
        subprocess.run(["nft", "-f", "-"], input=rules.encode(), check=True)
        _, r = load(f"udp://127.0.0.1:{port}", "--body", "hello", "-n", "2000", "-c", "5",
                    "--timeout", "100ms")  # fmt: skip
        lost = r["errors"].get("timeout", 0)
        assert lost + r["requests"]["completed"] == 2000
        assert 0.25 * 2000 < lost < 0.35 * 2000, r["errors"]
    finally:
        subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True)
        echo.kill()
        echo.wait()


def test_websocket_echo_round_trips() -> None:
    port = free_port()
    ws = subprocess.Popen([sys.executable, "-m", "tests.load.ws_server", str(port)], cwd=ROOT,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for_port(port)
        _, r = load(f"ws://127.0.0.1:{port}/echo", "--body", "hello", "-n", "3000", "-c", "10")
        assert r["requests"]["completed"] == 3000 and not r["errors"]
        served = int(urllib.request.urlopen(f"http://127.0.0.1:{port}/count").read())
        assert served == 3000
        # Long enough for the server's 0.2 s pings: the client answers them and stays up.
        _, r = load(f"ws://127.0.0.1:{port}/echo", "--rate", "500", "-d", "2s", "-c", "4")
        assert 990 <= r["requests"]["completed"] <= 1010 and not r["errors"]
        _, r = load(f"ws://127.0.0.1:{port}/count", "-n", "5", "-c", "1")  # not a WebSocket
        assert set(r["errors"]) == {"ws-handshake"}
        # Fan-out: 30 subscribers, 100 messages/s for 2 s: every message reaches every one.
        _, r = load(f"ws://127.0.0.1:{port}/pubsub", "--fanout", "30", "--subscribe", "sub",
                    "--body", "news ${ts}", "--rate", "100", "-d", "2s")  # fmt: skip
        assert r["model"] == "fanout" and r["connections"] == 30
        assert r["requests"]["sent"] == 200 and not r["errors"]
        assert r["requests"]["completed"] == 200 * 30
        assert 0 < r["latency_ms"]["corrected"]["p50"] < 100
        _, r = load(
            f"ws://127.0.0.1:{port}/pubsub",
            "--fanout",
            "5",
            "--body",
            "x ${ts}",
            "--rate",
            "50",
            "-d",
            "1s",
            "--timeout",
            "200ms",
        )  # nobody subscribed
        assert r["errors"] == {"undelivered": 50 * 5} and r["requests"]["completed"] == 0
    finally:
        ws.kill()
        ws.wait()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_live_progress_on_a_terminal(server: CountingServer, workers: str) -> None:
    import os
    import pty

    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.environ.update(TERM="xterm", COLUMNS="120")
            args = ["load", server.url + "/", "-c", "4", "-d", "3s", "--workers", workers]
            os.execv(sys.executable, [sys.executable, "-m", "wirekit", *args])
        finally:
            os._exit(127)
    out = b""
    try:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = out.decode(errors="replace")
    assert "/3 s" in text and "req/s" in text and "done" in text  # the live line
    assert "responses" in text and os.waitstatus_to_exitcode(status) in (0, 3)


def test_https_with_the_local_ca(tmp_path: Path) -> None:
    from wirekit.certs import issue

    pki = issue(tmp_path, ["localhost", "127.0.0.1"])
    srv = CountingServer("--tls", str(pki.cert), str(pki.key))
    try:
        url = f"https://localhost:{srv.port}/"
        _, r = load(url, "-n", "500", "-c", "5", "--ca", str(pki.ca))
        assert r["requests"]["completed"] == 500 and not r["errors"]
        _, r = load(url, "-n", "5", "-c", "1")  # the system store does not know our CA
        assert set(r["errors"]) == {"tls"}
        _, r = load(url, "-n", "20", "-c", "2", "--insecure")
        assert r["requests"]["completed"] == 20
    finally:
        srv.stop()
