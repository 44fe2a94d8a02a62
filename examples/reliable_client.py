"""A session server and a ReconnectingClient: every message acknowledged, none lost.

Run: python examples/reliable_client.py
"""

from __future__ import annotations

from wirekit import ReconnectingClient, SessionServer, run


async def main() -> None:
    stored: list[bytes] = []
    server = SessionServer(lambda session, seq, payload: stored.append(payload))
    await server.start("127.0.0.1", 0)
    async with ReconnectingClient(*server.address) as client:
        for i in range(10):
            await client.send(b"event %d" % i)
        await client.flush()  # every message acknowledged by the server
        print(client.statistics())
    await server.shutdown()
    print(len(stored), "stored")


if __name__ == "__main__":
    run(main())
