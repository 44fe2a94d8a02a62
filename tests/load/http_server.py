"""A small HTTP/1.1 server the load tests measure against: it counts what it serves.

Run as ``python -m tests.load.http_server PORT [--stall-at S --stall-for D]``. ``GET /__count``
returns the number of requests served so far (not counting itself). Paths change the answer:
``/close`` answers with ``Connection: close``, ``/half`` sends half a response and closes,
``/garbage`` answers bytes that are not HTTP, ``/slow`` waits 50 ms. With ``--stall-at`` the
whole server stops answering for ``--stall-for`` seconds, ``--stall-at`` seconds after start.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import httptools

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class Server:
    def __init__(self, stall_at: float | None, stall_for: float) -> None:
        self.count = 0
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
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []

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

    def on_message_complete(self) -> None:
        url, self.url = self.url, b""
        assert self.transport is not None
        if url == b"/__count":
            body = str(self.server.count).encode()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            return
        self.server.count += 1
        if url == b"/close":
            self.transport.write(OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
            self.transport.close()
        elif url == b"/half":
            self.transport.write(OK[:20])
            self.transport.close()
        elif url == b"/garbage":
            self.transport.write(b"NOT HTTP AT ALL\r\n\r\n")
        elif url == b"/slow":
            asyncio.get_running_loop().call_later(0.05, self.transport.write, OK)
        else:
            delay = self.server.stall_left()
            if delay > 0:
                asyncio.get_running_loop().call_later(delay, self.transport.write, OK)
            else:
                self.transport.write(OK)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--stall-at", type=float, default=None)
    parser.add_argument("--stall-for", type=float, default=0.0)
    args = parser.parse_args()
    server = Server(args.stall_at, args.stall_for)
    srv = await asyncio.get_running_loop().create_server(
        lambda: Handler(server), "127.0.0.1", args.port, backlog=4096
    )
    print("ready", flush=True)
    async with srv:
        await srv.serve_forever()


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
