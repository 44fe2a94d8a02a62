"""TLS echo with generated certificates, the connection pool, UDP and multicast."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path

import pytest

from wirekit import (
    ConnectError,
    ConnectionPool,
    PoolTimeout,
    TcpClient,
    TcpServer,
    client_context,
    connect,
    open_multicast,
    open_udp,
    server_context,
)
from wirekit.certs import issue
from wirekit.echo.server import EchoHandler

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    good = issue(tmp_path_factory.mktemp("ca"), ["localhost", "127.0.0.1"])
    other = issue(tmp_path_factory.mktemp("other"), ["localhost"])
    return {"cert": good.cert, "key": good.key, "ca": good.ca, "other_ca": other.ca}


async def test_tls_echo_with_generated_certs(pki: dict[str, Path]) -> None:
    ctx = server_context(pki["cert"], pki["key"])
    async with TcpServer(EchoHandler, ssl=ctx) as server:
        await server.start("127.0.0.1", 0)
        async with await connect(*server.address, ssl=client_context(pki["ca"])) as client:
            assert await client.request(b"secret") == b"secret"
        # Connecting by DNS name checks the name in the certificate too.
        async with await connect(
            "localhost", server.address[1], ssl=client_context(pki["ca"])
        ) as client:
            assert await client.request(b"by name") == b"by name"


async def test_untrusted_certificate_is_rejected_and_server_survives(pki: dict[str, Path]) -> None:
    async with TcpServer(EchoHandler, ssl=server_context(pki["cert"], pki["key"])) as server:
        await server.start("127.0.0.1", 0)
        with pytest.raises(ConnectError, match="verif"):
            await connect(*server.address, ssl=client_context(pki["other_ca"]))
        # Garbage instead of a ClientHello: the handshake fails, the server goes on.
        _, writer = await asyncio.open_connection(*server.address)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass
        async with await connect(*server.address, ssl=client_context(pki["ca"])) as client:
            assert await client.request(b"alive") == b"alive"
        # Both failed handshakes are counted (the client's alert and the garbage).
        for _ in range(50):
            if server.statistics().errors.get("tls-handshake") == 2:
                break
            await asyncio.sleep(0.02)
        assert server.statistics().errors.get("tls-handshake") == 2
        stats = server.statistics()
        assert stats.accepted == 3 and stats.closed["tls-handshake"] == 2


async def test_silent_tls_peer_is_cut_at_the_handshake_timeout(pki: dict[str, Path]) -> None:
    ctx = server_context(pki["cert"], pki["key"])
    async with TcpServer(EchoHandler, ssl=ctx, ssl_handshake_timeout=0.3) as server:
        await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.address)
        async with asyncio.timeout(3):
            assert await reader.read() == b""  # the server hung up; we never sent a hello
        writer.close()
        stats = server.statistics()
        assert stats.errors == {"tls-handshake-timeout": 1}
        assert stats.closed == {"tls-handshake-timeout": 1}


async def test_tls_below_1_2_is_refused(pki: dict[str, Path]) -> None:
    async with TcpServer(EchoHandler, ssl=server_context(pki["cert"], pki["key"])) as server:
        await server.start("127.0.0.1", 0)
        host, port = server.address

        def probe(flag: str) -> str:
            proc = subprocess.run(
                ["openssl", "s_client", "-connect", f"{host}:{port}", flag, "-CAfile",
                 str(pki["ca"]), "-brief"],
                input=b"", capture_output=True, timeout=10,
            )  # fmt: skip
            return (proc.stdout + proc.stderr).decode(errors="replace")

        assert "TLSv1.3" in await asyncio.to_thread(probe, "-tls1_3")
        assert "TLSv1.2" in await asyncio.to_thread(probe, "-tls1_2")
        old = await asyncio.to_thread(probe, "-tls1_1")
        assert "TLSv1.1" not in old.split("Protocol version:")[-1][:12]


def test_unreadable_certificate_is_a_usage_error(tmp_path: Path) -> None:
    from wirekit import UsageError

    with pytest.raises(UsageError, match="cannot read"):
        server_context(tmp_path / "missing.pem", tmp_path / "missing-key.pem")
    (tmp_path / "bad.pem").write_text("not a cert")
    with pytest.raises(UsageError):
        server_context(tmp_path / "bad.pem", tmp_path / "bad.pem")
    assert isinstance(client_context(None), ssl.SSLContext)


async def make_pool(address: tuple[str, int], **kw: object) -> ConnectionPool[TcpClient]:
    async def healthy(c: TcpClient) -> bool:
        return not c.is_closed

    return ConnectionPool(
        lambda: connect(*address),
        lambda c: c.aclose(),
        health_check=healthy,
        **kw,  # type: ignore[arg-type]
    )


async def test_pool_reuses_bounds_and_times_out() -> None:
    async with TcpServer(EchoHandler) as server:
        await server.start("127.0.0.1", 0)
        pool = await make_pool(server.address, max_size=2, pool_timeout=0.5)
        for _ in range(5):
            async with pool.connection() as c:
                assert await c.request(b"x") == b"x"
        stats = pool.statistics()
        assert stats.created == 1 and stats.reused == 4 and stats.size == 1

        async def hold(n: int) -> None:
            async with pool.connection() as c:
                await c.request(b"h")
                await asyncio.sleep(0.8)  # past the first waiter's 0.5 s timeout

        holders = [asyncio.ensure_future(hold(i)) for i in range(2)]
        await asyncio.sleep(0.1)
        with pytest.raises(PoolTimeout):
            await pool.acquire()
        assert pool.statistics().timeouts == 1 and pool.statistics().size == 2
        # A waiter that asks while both are busy gets one as soon as it is released.
        async with pool.connection() as c:
            assert await c.request(b"late") == b"late"
        await asyncio.gather(*holders)
        assert server.statistics().accepted == 2  # never more than max_size connections
        await pool.aclose()


async def test_pool_replaces_unhealthy_and_expired_connections() -> None:
    async with TcpServer(EchoHandler) as server:
        await server.start("127.0.0.1", 0)
        pool = await make_pool(server.address, max_size=2, idle_timeout=0.2)
        async with pool.connection() as c:
            await c.request(b"a")
        # The server drops every connection: the pooled one is now dead.
        for conn in list(server._connections.values()):
            conn.close("test")
        await asyncio.sleep(0.1)
        async with pool.connection() as c:
            assert await c.request(b"b") == b"b"
        assert pool.statistics().unhealthy == 1
        await asyncio.sleep(0.3)
        async with pool.connection() as c:
            assert await c.request(b"c") == b"c"
        stats = pool.statistics()
        assert stats.expired == 1 and stats.created == 3
        # An exception inside the block discards the connection.
        with pytest.raises(RuntimeError):
            async with pool.connection():
                raise RuntimeError("oops")
        assert pool.statistics().discarded == 1 and pool.statistics().size == 0
        await pool.aclose()


async def test_udp_echo_and_bounded_queue() -> None:
    from wirekit.echo.server import EchoConfig, EchoService

    service = EchoService(EchoConfig(tcp=None, udp=("127.0.0.1", 0)))
    await service.start()
    host, port = service.udp_stats.address.rsplit(":", 1)
    async with await open_udp("127.0.0.1", 0, recv_buffer=1 << 20) as ep:
        for i in range(10):
            ep.send(b"dgram %d" % i, (host, int(port)))
            data, _ = await ep.receive(2)
            assert data == b"dgram %d" % i
        assert ep.statistics().recv_buffer >= 1 << 20
    await service.shutdown()
    async with await open_udp("127.0.0.1", 0, queue_size=3) as sink:
        async with await open_udp("127.0.0.1", 0) as src:
            for _ in range(10):
                src.send(b"x", sink.local_address)
            await asyncio.sleep(0.1)
        stats = sink.statistics()
        assert stats.datagrams_in == 10 and stats.dropped == 7


async def test_broadcast_on_loopback() -> None:
    async with (
        await open_udp("0.0.0.0", 0) as rx,
        await open_udp("127.0.0.1", 0, broadcast=True) as tx,
    ):
        tx.send(b"to all", ("127.255.255.255", rx.local_address[1]))
        data, _ = await rx.receive(2)
        assert data == b"to all"


async def test_multicast_join_ttl_loopback_and_leave() -> None:
    group, port = "239.255.42.99", 0
    rx = await open_multicast(group, 0, interface="127.0.0.1")
    port = rx.local_address[1]
    tx = await open_multicast(group, 0, interface="127.0.0.1", ttl=1, join=False)
    tx.send(b"hello group", (group, port))
    data, _ = await rx.receive(2)
    assert data == b"hello group"
    rx.leave(group, "127.0.0.1")
    tx.send(b"after leave", (group, port))
    with pytest.raises(TimeoutError):
        await rx.receive(0.3)
    rx.join(group, "127.0.0.1")  # and back in
    tx.send(b"rejoined", (group, port))
    data, _ = await rx.receive(2)
    assert data == b"rejoined"
    for ep in (rx, tx):
        ep.close()
