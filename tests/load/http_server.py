"""A small HTTP/1.1 server the load tests measure against: it counts what it serves.

Run as ``python -m tests.load.http_server PORT [--stall-at S --stall-for D]``. ``GET /__count``
returns the number of requests served so far (not counting itself), ``GET /__bytes`` the body
bytes they carried. Paths change the answer:
``/close`` answers with ``Connection: close``, ``/half`` sends half a response and closes,
``/garbage`` answers bytes that are not HTTP, ``/slow`` waits 50 ms. For scenarios:
``POST /login`` with ``{"user": U}`` answers ``{"token": "tok-U"}``; ``/whoami`` answers U for
``Authorization: Bearer tok-U`` and 401 otherwise; ``GET /__whoami`` lists who was seen. With
``--stall-at`` the whole server stops answering for ``--stall-for`` seconds, ``--stall-at``
seconds after start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter

import httptools

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class Server:
    def __init__(self, stall_at: float | None, stall_for: float) -> None:
        self.count = 0
        self.body_bytes = 0
        self.seen: Counter[str] = Counter()
        self.start = time.monotonic()
        self.stall_at = stall_at
        self.stall_for = stall_for

    def stall_left(self) -> float:
        if self.stall_at is None:
            return 0.0
        now = time.monotonic() - self.start
        end = self.stall_at + self.stall_for
        return end - now if self.stall_at <= now < end else 0.0


class Handler(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body += body  # quadratic in the chunks: tests keep bodies to a few MiB

    def reply(self, status: str, body: bytes) -> None:
        assert self.transport is not None
        head = b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n" % (status.encode(), len(body))
        self.transport.write(head + body)

    def on_message_complete(self) -> None:
        url, self.url = self.url, b""
        headers, self.headers = self.headers, {}
        body, self.body = self.body, b""
        transport = self.transport
        assert transport is not None
        if url == b"/__count":
            self.reply("200 OK", str(self.server.count).encode())
            return
        if url == b"/__whoami":
            self.reply("200 OK", json.dumps(self.server.seen).encode())
            return
        if url == b"/__bytes":
            self.reply("200 OK", str(self.server.body_bytes).encode())
            return
        self.server.count += 1
        self.server.body_bytes += len(body)
        loop = asyncio.get_running_loop()
        if url == b"/login":
            user = json.loads(body)["user"]
            self.reply("200 OK", json.dumps({"token": f"tok-{user}"}).encode())
        elif url == b"/whoami":
            auth = headers.get(b"authorization", b"").decode()
            if auth.startswith("Bearer tok-"):
                self.server.seen[auth.removeprefix("Bearer tok-")] += 1
                self.reply("200 OK", auth.removeprefix("Bearer tok-").encode())
            else:
                self.reply("401 Unauthorized", b"who?")
        elif url == b"/close":
            transport.write(OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
            transport.close()
        elif url == b"/half":
            transport.write(OK[:20])
            transport.close()
        elif url == b"/garbage":
            transport.write(b"NOT HTTP AT ALL\r\n\r\n")
        elif url == b"/slow":
            loop.call_later(0.05, transport.write, OK)
        elif (delay := self.server.stall_left()) > 0:
            loop.call_later(delay, transport.write, OK)
        else:
            transport.write(OK)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--stall-at", type=float, default=None)
    parser.add_argument("--stall-for", type=float, default=0.0)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), default=None)
    args = parser.parse_args()
    server = Server(args.stall_at, args.stall_for)
    ssl = None
    if args.tls:
        from wirekit.io.tls import server_context

        ssl = server_context(*args.tls)
    srv = await asyncio.get_running_loop().create_server(
        lambda: Handler(server), "127.0.0.1", args.port, backlog=4096, ssl=ssl
    )
    print("ready", flush=True)
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
