"""TcpServer over real loopback sockets, under asyncio and uvloop."""

from __future__ import annotations

import asyncio
import logging

import pytest

from wirekit import ConnectionClosed, Handler, Limits, TcpServer, connect
from wirekit.echo.server import EchoHandler
from wirekit.io.client import Timeouts
from wirekit.io.loop import loop_name
from wirekit.io.server import Connection, Flusher

pytestmark = pytest.mark.anyio


async def test_runs_on_the_loop_it_was_given(anyio_backend: tuple[str, dict[str, bool]]) -> None:
    assert loop_name() == ("uvloop" if anyio_backend[1]["use_uvloop"] else "asyncio")


async def test_echo_round_trips_and_counts() -> None:
    async with TcpServer(EchoHandler, name="t") as server:
        await server.start("127.0.0.1", 0)
        async with await connect(*server.address) as client:
            for size in (1, 1000, 200_000):
                payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
                await client.send(payload)
                assert await client.receive_exactly(len(payload)) == payload
            snap = server.statistics(connections=True)
            assert snap.open_connections == 1
            assert snap.bytes_in == snap.bytes_out == 201_001
            [conn] = snap.connections
            assert conn["bytes_in"] == 201_001 and conn["peer"].startswith("127.0.0.1:")
        await asyncio.sleep(0.05)
        snap = server.statistics()
        assert snap.open_connections == 0 and snap.closed == {"peer-closed": 1}


@pytest.mark.parametrize("framing", ["line", "length"])
async def test_framed_echo_records_response_times(framing: str) -> None:
    async with TcpServer(EchoHandler, framing=framing) as server:  # type: ignore[arg-type]
        await server.start("127.0.0.1", 0)
        async with await connect(*server.address, framing=framing) as client:  # type: ignore[arg-type]
            for i in range(5):
                assert await client.request(b"msg %d" % i) == b"msg %d" % i
        snap = server.statistics()
        assert snap.frames_in == 5 and sum(snap.response_buckets) == 5


async def test_oversized_frame_closes_only_that_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limits = Limits(max_frame=1024)
    async with TcpServer(EchoHandler, framing="length", limits=limits) as server:
        await server.start("127.0.0.1", 0)
        good = await connect(*server.address, framing="length", limits=limits)
        bad = await connect(*server.address)
        with caplog.at_level(logging.WARNING, logger="wirekit.server"):
            await bad.send((5000).to_bytes(4, "big") + b"x" * 100)
            with pytest.raises(ConnectionClosed):
                await bad.receive()
        [record] = caplog.records
        assert record.reason == "frame-too-large" and "exceeds the limit" in record.getMessage()
        assert await good.request(b"still here") == b"still here"
        snap = server.statistics()
        assert snap.errors == {"frame-too-large": 1}
        assert snap.closed == {"frame-too-large": 1}
        await good.aclose()
        await bad.aclose()


async def test_long_line_closes_the_connection() -> None:
    limits = Limits(max_line=16)
    async with TcpServer(EchoHandler, framing="line", limits=limits) as server:
        await server.start("127.0.0.1", 0)
        async with await connect(*server.address) as client:
            await client.send(b"short\n" + b"y" * 40)
            assert await client.receive_exactly(6) == b"short\n"  # the line before still echoes
            with pytest.raises(ConnectionClosed):
                await client.receive()
        assert server.statistics().errors == {"line-too-long": 1}


async def test_max_connections_rejects_extra_connections() -> None:
    async with TcpServer(EchoHandler, limits=Limits(max_connections=2)) as server:
        await server.start("127.0.0.1", 0)
        clients = [await connect(*server.address) for _ in range(2)]
        for c in clients:
            assert await c.request(b"a") == b"a"
        extra = await connect(*server.address)
        with pytest.raises(ConnectionClosed):
            await extra.request(b"b")
        assert server.statistics().rejected == 1
        await clients[0].aclose()
        await asyncio.sleep(0.05)
        again = await connect(*server.address)
        assert await again.request(b"c") == b"c"  # a slot freed up
        for c in [*clients[1:], extra, again]:
            await c.aclose()


async def test_idle_connections_are_closed() -> None:
    async with TcpServer(EchoHandler, limits=Limits(idle_timeout=0.3)) as server:
        await server.start("127.0.0.1", 0)
        async with await connect(*server.address, timeouts=Timeouts(read=3)) as client:
            assert await client.request(b"x") == b"x"
            with pytest.raises(ConnectionClosed):
                await client.receive()
        assert server.statistics().closed == {"idle-timeout": 1}


class Exploding(Handler):
    def frame_received(self, frame: bytes) -> None:
        if frame.startswith(b"boom"):
            raise RuntimeError("handler bug")
        self.conn.send(frame)


async def test_a_failing_handler_costs_only_its_connection() -> None:
    async with TcpServer(Exploding) as server:
        await server.start("127.0.0.1", 0)
        a = await connect(*server.address)
        b = await connect(*server.address)
        await a.send(b"boom")
        with pytest.raises(ConnectionClosed):
            await a.receive()
        assert await b.request(b"fine") == b"fine"
        assert server.statistics().errors == {"handler-error": 1}
        await a.aclose()
        await b.aclose()


async def test_slow_reader_is_back_pressured_not_buffered() -> None:
    limits = Limits(write_buffer_high=64 * 1024, write_buffer_low=16 * 1024)
    async with TcpServer(EchoHandler, limits=limits) as server:
        await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.address)
        chunk = b"z" * 65536
        sent = 0
        try:  # never read: the server must stop reading, so our writes stall
            async with asyncio.timeout(1.0):
                while sent < 64 * 1024 * 1024:
                    writer.write(chunk)
                    await writer.drain()
                    sent += len(chunk)
        except TimeoutError:
            pass
        assert sent < 32 * 1024 * 1024, "server kept reading from a peer that never reads"
        data = await reader.readexactly(1024)
        assert data == b"z" * 1024
        writer.transport.abort()


async def test_bind_error_reaches_the_caller() -> None:
    from wirekit import UsageError

    async with TcpServer(EchoHandler) as first:
        await first.start("127.0.0.1", 0)
        with pytest.raises(UsageError, match="address already in use"):
            await TcpServer(EchoHandler).start(*first.address)


async def test_shutdown_lets_in_flight_connections_finish() -> None:
    server = TcpServer(EchoHandler)
    await server.start("127.0.0.1", 0)
    client = await connect(*server.address)
    await client.send(b"first")
    shutdown = asyncio.ensure_future(server.shutdown(grace=5))
    await asyncio.sleep(0.1)
    with pytest.raises(OSError):  # no new connections
        await asyncio.open_connection(*server.address)
    assert not shutdown.done()  # still waiting for our connection
    await client.send(b"-second")
    assert await client.receive_exactly(12) == b"first-second"
    await client.aclose()
    await asyncio.wait_for(shutdown, 2)


async def test_shutdown_closes_stragglers_after_grace() -> None:
    server = TcpServer(EchoHandler)
    await server.start("127.0.0.1", 0)
    client = await connect(*server.address)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await server.shutdown(grace=0.3)
    assert 0.25 < loop.time() - started < 2
    with pytest.raises(ConnectionClosed):
        await client.receive()
    assert server.stats.closed == {"shutdown": 1}
    await client.aclose()


class Burst(Handler):
    """Answers each frame with three frames."""

    def frame_received(self, frame: bytes) -> None:
        for i in range(3):
            self.conn.send(frame + b"-%d" % i)


async def test_coalesced_writes_go_out_once_per_turn_after_before_flush() -> None:
    events: list[str] = []
    writes: list[bytes] = []

    def track(conn_made: Handler) -> Handler:
        transport = conn_made.conn.transport
        assert transport is not None
        real_write = transport.write
        if loop_name() == "asyncio":  # uvloop's transport is a C type: nothing to wrap

            def write(data: bytes) -> None:
                events.append("write")
                writes.append(bytes(data))
                real_write(data)

            transport.write = write  # type: ignore[method-assign]
        return conn_made

    server = TcpServer(
        lambda conn: track(Burst(conn)),
        framing="line",
        flusher=Flusher(lambda: events.append("before_flush") or False),
    )
    async with server:
        await server.start("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b"a\nb\n")
        lines = [await reader.readline() for _ in range(6)]
        assert lines == [b"a-0\n", b"a-1\n", b"a-2\n", b"b-0\n", b"b-1\n", b"b-2\n"]
        if loop_name() == "asyncio":
            assert events[0] == "before_flush" and "write" in events
            assert len(writes) == events.count("write") < 6  # fewer writes than frames
            assert b"".join(writes) == b"".join(lines)
        writer.close()
        await writer.wait_closed()


async def test_a_flusher_whose_before_has_more_flushes_again_on_a_later_turn() -> None:
    """``before`` returning true (more to hand out than one turn's share) gets another flush,
    on a later loop turn: what was already due (the sockets' reads) runs in between."""
    turns: list[str] = []
    left = 3

    def before() -> bool:
        nonlocal left
        left -= 1
        turns.append("flush")
        return left > 0

    flusher = Flusher(before)
    flusher.request()
    asyncio.get_running_loop().call_soon(turns.append, "other")  # due after the first flush
    for _ in range(10):
        await asyncio.sleep(0)
    assert turns == ["flush", "other", "flush", "flush"]


class Ticker(Handler):
    """Sends a line every 0.1 s without ever being spoken to."""

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self._timer = asyncio.get_running_loop().call_later(0.1, self._tick)

    def _tick(self) -> None:
        self.conn.send(b"tick")
        self._timer = asyncio.get_running_loop().call_later(0.1, self._tick)

    def frame_received(self, frame: bytes) -> None:
        pass

    def connection_lost(self, reason: str) -> None:
        self._timer.cancel()


async def test_idle_timeout_counts_sending_as_activity() -> None:
    limits = Limits(idle_timeout=0.4)
    async with (
        TcpServer(Ticker, framing="line", limits=limits) as talker,
        TcpServer(EchoHandler, framing="line", limits=limits) as silent,
    ):
        await talker.start("127.0.0.1", 0)
        await silent.start("127.0.0.1", 0)
        listen_r, listen_w = await asyncio.open_connection(*talker.address)
        quiet_r, quiet_w = await asyncio.open_connection(*silent.address)
        await asyncio.sleep(1.5)
        assert talker.statistics().open_connections == 1  # only listening, never idle
        assert silent.statistics().closed == {"idle-timeout": 1}
        assert await quiet_r.read() == b""
        assert (await listen_r.readline()) == b"tick\n"
        for w in (listen_w, quiet_w):
            w.close()
