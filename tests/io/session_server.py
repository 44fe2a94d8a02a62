"""A session server for the reconnect test: appends each message to a file, then acks.

Run as ``python session_server.py PORT LOGFILE``; prints ``ready`` once listening.
"""

from __future__ import annotations

import asyncio
import os
import sys

from wirekit import SessionServer, run


async def main(port: int, path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def store(session_id: bytes, seq: int, payload: bytes) -> None:
        os.write(fd, payload + b"\n")  # in the kernel before the ACK leaves: survives kill -9

    server = SessionServer(store)
    await server.start("127.0.0.1", port, reuse_port=True)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    run(main(int(sys.argv[1]), sys.argv[2]))
