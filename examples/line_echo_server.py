"""A line-framed uppercase server on wirekit's TcpServer, with a client.

Run: python examples/line_echo_server.py
"""

from __future__ import annotations

from wirekit import Handler, Limits, TcpServer, connect, run


class Upper(Handler):
    def frame_received(self, frame: bytes) -> None:
        self.conn.send(frame.upper())


async def main() -> None:
    async with TcpServer(Upper, framing="line", limits=Limits(max_line=1024)) as server:
        await server.start("127.0.0.1", 0)
        async with await connect(*server.address, framing="line") as client:
            print((await client.request(b"hello wirekit")).decode())
        print(server.statistics())


if __name__ == "__main__":
    run(main())
