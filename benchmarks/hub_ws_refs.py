"""Reference WebSocket fan-out hubs for benchmarks/hub_ws.py, each on uvloop.

usage: python hub_ws_refs.py {aiohttp|websockets|picows} PORT

Each speaks the subset of docs/ws-protocol.md that the load client (hub_load.c, PROTO ws) uses,
with the same bytes as ``wirekit serve``:

* ``GET /ws?topic=bench``: a subscriber; it is in the subscriber set before its
  ``{"op":"hello",...}`` frame goes out (the load client counts it ready on that frame);
* ``GET /ws?token=T`` (any T): the publisher; for each ``{"op":"pub","topic":"bench","data":D}``
  text frame the hub parses it, encodes ONE ``{"op":"msg","topic":"bench","offset":K,
  "epoch":...,"from":"bench","data":D,"ts":...}`` event (175 bytes for a 64-byte D, the size of
  wirekit's) and sends that same string to every subscriber, then ``{"op":"ok",...}`` to the
  publisher.

No storage, no authentication, no rate limits: the references do strictly less work than
wirekit (which also appends every publication to SQLite).

* aiohttp: ``web.WebSocketResponse``, a set of subscribers, publish =
  ``for ws in subs: await ws.send_str(event)`` (naive: one send per subscriber, in order);
* websockets: the asyncio API (``websockets.asyncio.server.serve``), ``websockets.broadcast``;
* picows: ``ws_create_server``, a ``WSListener`` per connection, publish =
  ``transport.send(WSMsgType.TEXT, event)`` for each subscriber (no Task per connection; picows
  runs on aiofastnet's transports when that is installed, its default).
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from typing import Any

import uvloop

EPOCH = "0123456789ab"  # wirekit's log epochs are 12 hex digits
HELLO = json.dumps(
    {"op": "hello", "server": "ref", "version": 1, "user": None, "ping_interval": 25.0,
     "timeout": 60.0},
    separators=(",", ":"),
)  # fmt: skip
BACKLOG = 4096


class Topic:
    """The one topic's log head, and the encoding of its events (same fields as wirekit's)."""

    def __init__(self) -> None:
        self.head = 0

    def publish(self, raw: str | bytes) -> tuple[str, str] | None:
        """(msg event for the subscribers, ok reply for the publisher), or None if not a pub."""
        try:
            request = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(request, dict) or request.get("op") != "pub":
            return None
        self.head += 1
        event = {"op": "msg", "topic": "bench", "offset": self.head, "epoch": EPOCH,
                 "from": "bench", "data": request.get("data"), "ts": time.time()}  # fmt: skip
        ok = {"op": "ok", "topic": "bench", "offset": self.head}
        return json.dumps(event, separators=(",", ":")), json.dumps(ok, separators=(",", ":"))


def is_subscriber(target: str) -> bool:
    return "topic=bench" in target.partition("?")[2]


# -- aiohttp ------------------------------------------------------------------------------------
async def serve_aiohttp(port: int, stop: asyncio.Event) -> None:
    from aiohttp import WSMsgType, web

    topic, subs = Topic(), set[web.WebSocketResponse]()

    async def handler(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        if is_subscriber(request.path_qs):
            subs.add(ws)
            try:
                await ws.send_str(HELLO)
                async for _ in ws:
                    pass
            finally:
                subs.discard(ws)
            return ws
        await ws.send_str(HELLO)
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            out = topic.publish(msg.data)
            if out is None:
                continue
            event, ok = out
            for sub in list(subs):
                try:
                    await sub.send_str(event)
                except ConnectionError:
                    subs.discard(sub)
            await ws.send_str(ok)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=BACKLOG).start()
    await stop.wait()
    await runner.cleanup()


# -- websockets ---------------------------------------------------------------------------------
async def serve_websockets(port: int, stop: asyncio.Event) -> None:
    from websockets import ConnectionClosed, broadcast
    from websockets.asyncio.server import ServerConnection, serve

    topic, subs = Topic(), set[ServerConnection]()

    async def handler(conn: ServerConnection) -> None:
        if is_subscriber(conn.request.path if conn.request else ""):
            subs.add(conn)
            try:
                await conn.send(HELLO)
                await conn.wait_closed()
            finally:
                subs.discard(conn)
            return
        await conn.send(HELLO)
        try:
            async for message in conn:
                out = topic.publish(message)
                if out is not None:
                    broadcast(subs, out[0])
                    await conn.send(out[1])
        except ConnectionClosed:
            pass  # the load client exits without a close frame

    async with serve(handler, "127.0.0.1", port, compression=None, backlog=BACKLOG):
        await stop.wait()


# -- picows -------------------------------------------------------------------------------------
async def serve_picows(port: int, stop: asyncio.Event) -> None:
    from picows import (
        WSFrame,
        WSListener,
        WSMsgType,
        WSTransport,
        WSUpgradeRequest,
        ws_create_server,
    )

    topic, subs = Topic(), set[WSTransport]()
    hello = HELLO.encode()

    class Subscriber(WSListener):
        def on_ws_connected(self, transport: WSTransport) -> None:
            subs.add(transport)
            transport.send(WSMsgType.TEXT, hello)

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

        def on_ws_disconnected(self, transport: WSTransport) -> None:
            subs.discard(transport)

    class Publisher(Subscriber):
        def on_ws_connected(self, transport: WSTransport) -> None:
            transport.send(WSMsgType.TEXT, hello)

        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            if frame.msg_type != WSMsgType.TEXT:
                super().on_ws_frame(transport, frame)
                return
            out = topic.publish(frame.get_payload_as_bytes())
            if out is None:
                return
            event = out[0].encode()
            for sub in subs:
                sub.send(WSMsgType.TEXT, event)
            transport.send(WSMsgType.TEXT, out[1].encode())

    def route(request: WSUpgradeRequest) -> Any:
        return Subscriber() if is_subscriber(request.path.decode()) else Publisher()

    server = await ws_create_server(route, "127.0.0.1", port, backlog=BACKLOG)
    async with server:
        await stop.wait()


SERVERS = {"aiohttp": serve_aiohttp, "websockets": serve_websockets, "picows": serve_picows}


async def main(kind: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await SERVERS[kind](port, stop)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in SERVERS:
        raise SystemExit(__doc__.split("\n\n")[1])
    uvloop.run(main(sys.argv[1], int(sys.argv[2])))
