"""aiohttp WebSocket servers for the load tests: ``/echo`` echoes and counts messages
(``GET /count``) and pings often; ``/pubsub`` subscribes a socket that sends ``sub`` and
broadcasts any other text to every subscriber."""

from __future__ import annotations

import sys

from aiohttp import WSMsgType, web

COUNT = web.AppKey("count", list[int])
SUBSCRIBERS = web.AppKey("subscribers", set[web.WebSocketResponse])


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=0.2)  # pings the load client: it must answer
    await ws.prepare(request)
    async for msg in ws:
        if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            request.app[COUNT][0] += 1
            await ws.send_str(msg.data) if msg.type == WSMsgType.TEXT else await ws.send_bytes(
                msg.data
            )
    return ws


async def pubsub(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    subscribers = request.app[SUBSCRIBERS]
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            if msg.data == "sub":
                subscribers.add(ws)
            else:
                for sub in list(subscribers):
                    await sub.send_str(msg.data)
    finally:
        subscribers.discard(ws)
    return ws


async def count(request: web.Request) -> web.Response:
    return web.Response(text=str(request.app[COUNT][0]))


def main() -> None:
    app = web.Application()
    app[COUNT] = [0]
    app[SUBSCRIBERS] = set()
    app.router.add_get("/echo", echo)
    app.router.add_get("/pubsub", pubsub)
    app.router.add_get("/count", count)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)


if __name__ == "__main__":
    main()
