"""The HTTP front's direct path (wirekit.http.direct): plain GETs answered without aiohttp, over
real sockets, checked against what aiohttp answers for the same request through the same chain.

A target with an escape (``%``) always goes to aiohttp, so ``/api/users/%61lice`` is the
aiohttp-served twin of the direct ``/api/users/alice``, and ``?_=%20`` (a parameter no handler
reads) makes any GET an aiohttp one.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
from typing import Any, cast

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wirekit.hub.web import Head, HeadReader, parse_head
from wirekit.io.server import Connection

from .conftest import HubFixture, Web

pytestmark = pytest.mark.anyio

VARYING = {"date", "x-request-id"}  # differ between any two responses


def direct_count(hub: HubFixture) -> int:
    assert hub.service is not None and hub.service.web is not None
    return hub.service.web.chain.metrics.direct


class Raw:
    """HTTP/1.1 by hand on one connection: pipelining, split heads, exact bytes."""

    def __init__(self, web: Web) -> None:
        self.sock = socket.create_connection(("127.0.0.1", int(web.base.rsplit(":", 1)[1])))
        self.sock.settimeout(5)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        """The next response: status, headers (lowercased names), body."""
        while b"\r\n\r\n" not in self.buf:
            self._read()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self._read()
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(lines[0].split(" ")[1]), headers, body

    def closed(self) -> bool:
        try:
            return not self.buf and self.sock.recv(1) == b""
        except TimeoutError:
            return False

    def _read(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        self.buf += chunk


def get(target: str, *headers: str, version: str = "HTTP/1.1") -> bytes:
    lines = [f"GET {target} {version}", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def fetch(web: Web, target: str, *headers: str) -> tuple[int, dict[str, str], bytes]:
    return await exchange(web, get(target, *headers))


async def exchange(web: Web, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request on a new connection, and its response."""
    raw = Raw(web)
    try:
        raw.send(request)
        return await asyncio.to_thread(raw.response)
    finally:
        raw.sock.close()


async def test_direct_gets_answer_what_aiohttp_answers(hub: HubFixture, web: Web) -> None:
    token = await web.token("alice")
    await web.token("bob")
    auth = f"Authorization: Bearer {token}"
    async with web.session.post(web.base + "/api/rooms", json={"room": "#general"},
                                headers={"Authorization": f"Bearer {token}"}) as resp:  # fmt: skip
        assert resp.status == 201
    async with web.session.post(web.base + "/api/rooms/general/messages", json={"data": "hi"},
                                headers={"Authorization": f"Bearer {token}"}) as resp:  # fmt: skip
        assert resp.status == 201
    etag = (await fetch(web, "/api/users/alice", auth))[1]["etag"]
    cases: list[tuple[str, str, tuple[str, ...]]] = [
        # (direct target, its aiohttp twin, headers)
        ("/api/users/alice", "/api/users/%61lice", (auth,)),
        ("/api/users/alice", "/api/users/%61lice", (auth, f"If-None-Match: {etag}")),
        ("/api/users/nobody", "/api/users/%6Eobody", (auth,)),
        ("/api/users/alice", "/api/users/%61lice", ()),  # 401: login required
        ("/api/users/alice", "/api/users/%61lice", ("Authorization: Bearer forged",)),
        ("/api/users?limit=1", "/api/users?limit=1&_=%20", (auth,)),
        ("/api/users?limit=0", "/api/users?limit=0&_=%20", (auth,)),  # 400
        ("/api/rooms", "/api/rooms?_=%20", (auth,)),
        ("/api/rooms/general", "/api/rooms/%23general", (auth,)),
        ("/api/rooms/general/members", "/api/rooms/%23general/members", (auth,)),
        (
            "/api/rooms/general/messages?after=0",
            "/api/rooms/%23general/messages?after=0",
            (auth,),
        ),
        ("/api/rooms/nowhere", "/api/rooms/%6Eowhere", (auth,)),  # 404
        ("/api/openapi.json", "/api/openapi.json?_=%20", ("Accept-Encoding: gzip",)),
        ("/healthz", "/healthz?_=%20", ()),
        ("/readyz", "/readyz?_=%20", ()),
        ("/", "/?_=%20", ()),
        ("/static/app.js", "/static/app%2Ejs", ()),
        ("/static/nothing.js", "/static/nothing%2Ejs", ()),
        ("/api/rooms", "/api/rooms?_=%20", (auth, "Origin: http://evil.example")),
        ("/api/rooms", "/api/rooms?_=%20", (auth, "X-Request-Id: mine-1")),
    ]
    for target, twin, headers in cases:
        before = direct_count(hub)
        direct = await fetch(web, target, *headers)
        assert direct_count(hub) == before + 1, target
        aio = await fetch(web, twin, *headers)
        assert direct_count(hub) == before + 1, twin
        (status, dh, dbody), (astatus, ah, abody) = direct, aio
        assert status == astatus, (target, status, dbody)
        if dh.get("content-encoding") == "gzip":
            assert ah["content-encoding"] == "gzip", target
            dbody, abody = gzip.decompress(dbody), gzip.decompress(abody)
            del dh["content-length"], ah["content-length"]  # other zlib settings
        if status == 200 and dh.get("content-type", "").startswith("application/json"):
            assert orjson.loads(dbody) == orjson.loads(abody), target
        else:
            assert dbody == abody, target
        assert {k: v for k, v in dh.items() if k not in VARYING} == {
            k: v for k, v in ah.items() if k not in VARYING
        }, target
        assert "date" in dh and "x-request-id" in dh
        if "X-Request-Id: mine-1" in headers:
            assert dh["x-request-id"] == "mine-1"
    assert (await fetch(web, "/api/users/alice", auth))[0] == 200
    assert (await fetch(web, "/api/users/alice", auth, f"If-None-Match: {etag}"))[0] == 304


async def test_a_keep_alive_connection_goes_to_aiohttp_at_its_first_other_request(
    hub: HubFixture, web: Web
) -> None:
    token = await web.token("carol")
    auth = f"Authorization: Bearer {token}"
    body = b'{"room":"#lobby"}'
    post = (
        f"POST /api/rooms HTTP/1.1\r\nHost: x\r\n{auth}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    raw = Raw(web)
    before = direct_count(hub)
    # four pipelined requests in one segment: two direct, then a POST, then a GET (aiohttp's)
    raw.send(get("/api/rooms", auth) + get("/api/users/carol", auth) + post
             + get("/api/rooms/lobby", auth))  # fmt: skip
    statuses = [(await asyncio.to_thread(raw.response))[0] for _ in range(4)]
    assert statuses == [200, 200, 201, 200]
    assert direct_count(hub) == before + 2
    raw.send(get("/healthz"))
    assert (await asyncio.to_thread(raw.response))[0] == 200
    assert direct_count(hub) == before + 2  # still aiohttp's connection
    raw.sock.close()


async def test_a_head_in_pieces_connection_close_and_bad_heads(hub: HubFixture, web: Web) -> None:
    raw = Raw(web)
    before = direct_count(hub)
    for byte in get("/healthz"):  # one byte per segment
        raw.send(bytes([byte]))
        await asyncio.sleep(0)
    status, headers, body = await asyncio.to_thread(raw.response)
    assert status == 200 and orjson.loads(body)["status"] == "ok"
    assert "connection" not in headers
    raw.send(get("/readyz", "Connection: close") + get("/healthz"))
    status, headers, _ = await asyncio.to_thread(raw.response)
    assert status == 200 and headers["connection"] == "close"
    assert await asyncio.to_thread(raw.closed)  # the pipelined /healthz is not answered
    assert direct_count(hub) == before + 2
    raw.sock.close()
    # what the direct path does not take, aiohttp answers: HTTP/1.0, a body, a bad head
    assert (await exchange(web, get("/healthz", version="HTTP/1.0")))[0] == 200
    assert (await exchange(web, get("/healthz", "Content-Length: 2") + b"{}"))[0] == 200
    assert (await fetch(web, "/healthz", "Bad Header: x"))[0] == 400
    assert direct_count(hub) == before + 2
    # a head over the limit is still refused before anything parses it
    status, _, body = await fetch(web, "/healthz", "X-Long: " + "a" * 20_000)
    assert status == 431 and orjson.loads(body)["code"] == "head-too-large"


async def test_a_direct_handler_that_fails_gets_a_problem_not_a_trace(
    hub: HubFixture, web: Web, caplog: Any
) -> None:
    assert hub.service is not None
    token = await web.token("dave")

    def broken(*args: Any) -> None:
        raise RuntimeError("secret internals")

    hub.service.hub.rooms = broken  # type: ignore[method-assign]
    status, headers, body = await fetch(web, "/api/rooms", f"Authorization: Bearer {token}")
    problem = orjson.loads(body)
    assert status == 500 and problem["code"] == "internal"
    assert headers["x-request-id"] in problem["detail"] and "secret" not in problem["detail"]
    assert headers["content-type"] == "application/problem+json"
    assert "secret internals" in caplog.text  # in the log, with the trace
    assert (await fetch(web, "/healthz"))[0] == 200  # and the server goes on


@given(st.binary(max_size=300))
def test_parse_head_takes_any_bytes_without_raising(raw: bytes) -> None:
    head = parse_head(raw)
    if head is not None:
        assert head.version.startswith("HTTP/1.") and " " not in head.target
        assert all(name and ":" not in name for name, _ in head.fields)


TOKENS = st.text(alphabet="!#$%&'*+.^_`|~abcXYZ019-", min_size=1, max_size=12)
VALUES = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


@given(
    TOKENS,
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1),
    st.lists(st.tuples(TOKENS, VALUES), max_size=6),
    st.lists(st.integers(min_value=1, max_value=40), max_size=8),
)
def test_well_formed_heads_parse_the_same_in_any_pieces(
    method: str, target: str, fields: list[tuple[str, str]], cuts: list[int]
) -> None:
    lines = [f"{method} {target} HTTP/1.1", *(f"{n}:{v}" for n, v in fields)]
    raw = "\r\n".join(lines).encode()
    head = parse_head(raw)
    assert head is not None
    assert (head.method, head.target, head.version) == (method, target, "HTTP/1.1")
    assert head.fields == [(n, v.strip()) for n, v in fields]
    # two requests, fed to a HeadReader cut anywhere: the same two heads, in order
    seen: list[Head | None] = []

    class Reader(HeadReader):
        def head_received(self, head: Head | None, data: bytes, body: int) -> bool:
            seen.append(head)
            return True

    reader = Reader(cast(Connection, None))
    stream, at = raw + b"\r\n\r\n" + raw + b"\r\n\r\n", 0
    for cut in [*cuts, len(stream)]:
        reader.frame_received(stream[at : at + cut])
        at += cut
    reader.frame_received(stream[at:])
    assert seen == [head, head]
