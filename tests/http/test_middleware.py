"""The HTTP middleware chain: how a Chain composes pieces, each piece alone, then the whole
chain, over loopback sockets."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from wirekit.http import middleware as mw
from wirekit.http.problem import Problem

pytestmark = pytest.mark.anyio

Factory = Callable[..., Any]


async def echo(request: web.Request) -> web.Response:
    session = request.get(mw.SESSION)
    return web.json_response({"session": session, "path": request.path})


async def boom(request: web.Request) -> web.Response:
    raise ValueError("secret internals")


async def refuse(request: web.Request) -> web.Response:
    raise Problem(409, "taken", "that name is taken")


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(1)
    return web.json_response({})


async def big(request: web.Request) -> web.Response:
    return web.json_response({"items": list(range(2000))})


async def post(request: web.Request) -> web.Response:
    return web.json_response({"size": len(await request.read())})


async def stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b"data")
    return response


async def moved(request: web.Request) -> web.Response:
    raise web.HTTPFound("/echo")


async def tagged(request: web.Request) -> web.Response:
    response = web.json_response({"tagged": True})
    response.headers["ETag"] = '"given"'
    return response


CANCELLED: list[str] = []


async def stubborn(request: web.Request) -> web.Response:
    try:
        await asyncio.sleep(1)
    except asyncio.CancelledError:
        CANCELLED.append(request.path)
        raise
    return web.json_response({})


@pytest.fixture
async def serve() -> AsyncIterator[Factory]:
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(
        chain: mw.Chain | None = None, headers: tuple[mw.HeaderHook, ...] = (), max_body: int = 1024
    ) -> Any:
        app = web.Application(middlewares=[chain] if chain else [], client_max_size=max_body)
        if headers:
            app.on_response_prepare.append(mw.response_headers(*headers))
        for path, handler in (("/echo", echo), ("/boom", boom), ("/refuse", refuse),
                              ("/slow", slow), ("/big", big), ("/stream", stream),
                              ("/open/echo", echo), ("/moved", moved), ("/tagged", tagged),
                              ("/stubborn", stubborn)):  # fmt: skip
            app.router.add_get(path, handler)
        app.router.add_post("/post", post)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


def names(pieces: tuple[Any, ...]) -> list[str]:
    return [p.__qualname__.split(".")[0] for p in pieces]


async def test_chain_guards_in_order_first_answer_wins_then_filters_in_order(
    serve: Factory,
) -> None:
    seen: list[str] = []

    def guard(name: str, answer: int | None = None) -> mw.Guard:
        def check(request: web.Request) -> web.StreamResponse | None:
            seen.append(name)
            return None if answer is None else web.Response(status=answer)

        return check

    def stamp(name: str) -> mw.Filter:
        def apply(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
            response.headers.add("X-Filters", name)
            return response

        return apply

    chain = mw.Chain(guards=[guard("a"), guard("b")], filters=[stamp("1"), stamp("2")])
    client = await serve(chain)
    resp = await client.get("/echo")
    assert resp.status == 200 and seen == ["a", "b"]
    assert resp.headers.getall("X-Filters") == ["1", "2"]
    seen.clear()
    client = await serve(mw.Chain(guards=[guard("a", 204), guard("b")], filters=[stamp("1")]))
    resp = await client.get("/boom")  # the handler would fail: it does not run
    assert resp.status == 204 and seen == ["a"] and "X-Filters" not in resp.headers


async def test_chain_observers_see_every_outcome(serve: Factory) -> None:
    seen: list[tuple[str, int]] = []
    client = await serve(mw.Chain(observers=[lambda r, status, s: seen.append((r.path, status))]))
    for path in ("/echo", "/refuse", "/boom", "/nowhere"):
        await client.get(path)
    moved = await client.get("/moved", allow_redirects=False)
    assert moved.status == 302 and moved.headers["Location"] == "/echo"  # raised, passed on
    assert seen == [("/echo", 200), ("/refuse", 409), ("/boom", 500), ("/nowhere", 404),
                    ("/moved", 302)]  # fmt: skip


async def test_request_id_is_generated_kept_or_replaced(serve: Factory) -> None:
    client = await serve(mw.Chain(), headers=(mw.echo_request_id,))
    fresh = (await client.get("/echo")).headers["X-Request-Id"]
    assert len(fresh) == 32 and fresh != (await client.get("/echo")).headers["X-Request-Id"]
    kept = await client.get("/echo", headers={"X-Request-Id": "abc-123"})
    assert kept.headers["X-Request-Id"] == "abc-123"
    odd = await client.get("/echo", headers={"X-Request-Id": "x" * 65})
    assert len(odd.headers["X-Request-Id"]) == 32


def test_new_request_ids_are_a_process_prefix_and_a_counter() -> None:
    first, second = mw.new_request_id(), mw.new_request_id()
    assert re.fullmatch("[0-9a-f]{32}", first) and mw.REQUEST_ID.fullmatch(first)
    assert first[:16] == second[:16] and int(second[16:], 16) == int(first[16:], 16) + 1
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id
        os.write(write, mw.new_request_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    os.close(read)
    assert len(child) == 32 and child[:16] != mw.new_request_id()[:16]  # a prefix of its own


async def test_access_log_writes_one_structured_line(
    serve: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await serve(mw.Chain(observers=[mw.access_log]))
    with caplog.at_level(logging.INFO, logger="wirekit.http.access"):
        await client.get("/refuse")
    (record,) = [r for r in caplog.records if r.name == "wirekit.http.access"]
    assert record.status == 409 and record.path == "/refuse" and record.method == "GET"  # type: ignore[attr-defined]
    assert record.ms >= 0 and len(record.request_id) == 32  # type: ignore[attr-defined]


async def test_recover_answers_500_without_leaking(
    serve: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    client = await serve(mw.Chain())
    with caplog.at_level(logging.ERROR, logger="wirekit.http"):
        resp = await client.get("/boom")
    body = await resp.text()
    assert resp.status == 500 and resp.content_type == "application/problem+json"
    assert "secret" not in body and "Traceback" not in body and "ValueError" not in body
    assert any(r.exc_info for r in caplog.records)  # the trace goes to the log instead
    assert (await client.get("/echo")).status == 200  # the server carries on


async def test_problems_for_raised_problems_and_routing_errors(serve: Factory) -> None:
    client = await serve(mw.Chain())
    resp = await client.get("/refuse")
    assert resp.status == 409 and (await resp.json())["code"] == "taken"
    missing = await client.get("/nowhere")
    assert missing.status == 404 and missing.content_type == "application/problem+json"
    wrong = await client.delete("/echo")
    assert wrong.status == 405 and "GET" in wrong.headers["Allow"]
    assert (await wrong.json())["status"] == 405


async def test_cors_preflight_and_response_headers(serve: Factory) -> None:
    preflight, cors_headers = mw.cors(("https://app.example",))
    client = await serve(mw.Chain(guards=[preflight]), headers=(cors_headers,))
    pre = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    ok = await client.options("/echo", headers=pre)
    assert ok.status == 204 and "Authorization" in ok.headers["Access-Control-Allow-Headers"]
    assert ok.headers["Access-Control-Allow-Origin"] == "https://app.example"
    bad = await client.options("/echo", headers={**pre, "Origin": "https://evil.example"})
    assert bad.status == 403
    simple = await client.get("/echo", headers={"Origin": "https://app.example"})
    assert simple.headers["Access-Control-Allow-Origin"] == "https://app.example"
    other = await client.get("/echo", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


async def test_body_limit_refuses_declared_and_streamed_bodies(serve: Factory) -> None:
    client = await serve(mw.Chain(guards=[mw.body_limit(1024)]), max_body=1024)
    assert (await (await client.post("/post", data=b"x" * 1024)).json())["size"] == 1024
    declared = await client.post("/post", data=b"x" * 1025)
    assert declared.status == 413 and (await declared.json())["code"] == "too-large"

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"y" * 512

    streamed = await client.post("/post", data=chunks())  # chunked: no Content-Length
    assert streamed.status == 413


async def test_bearer_auth(serve: Factory) -> None:
    def verify(token: str) -> str:
        if token != "good":
            raise Problem(401, "bad-token", "no")  # any exception with a code
        return "alice"

    auth = mw.bearer_auth(verify, lambda r: r.path.startswith("/open"))
    client = await serve(mw.Chain(guards=[auth]))
    assert (await (await client.get("/echo")).json())["session"] is None
    good = await client.get("/echo", headers={"Authorization": "Bearer good"})
    assert (await good.json())["session"] == "alice"
    bad = await client.get("/echo", headers={"Authorization": "Bearer forged"})
    assert bad.status == 401 and bad.headers["WWW-Authenticate"] == "Bearer"
    basic = await client.get("/echo", headers={"Authorization": "Basic eDp5"})
    assert basic.status == 401
    skipped = await client.get("/open/echo", headers={"Authorization": "Bearer api-key"})
    assert skipped.status == 200


async def test_rate_limit_per_address_with_retry_after(serve: Factory) -> None:
    limiter = mw.rate_limit(0.5, 3, lambda r: r.path == "/echo", lambda: 0.0)
    client = await serve(mw.Chain(guards=[limiter]))
    statuses = [(await client.get("/echo")).status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = await client.get("/echo")
    assert (
        limited.headers["Retry-After"] == "2" and (await limited.json())["code"] == "rate-limited"
    )
    assert (await client.get("/big")).status == 200  # a path it does not apply to


async def test_rate_limit_per_user(serve: Factory) -> None:
    now = [0.0]
    limiter = mw.rate_limit(1, 2, lambda r: True, lambda: now[0])
    auth = mw.bearer_auth(lambda token: token, lambda r: False)
    client = await serve(mw.Chain(guards=[auth, limiter]))
    as_user = {"Authorization": "Bearer alice"}
    assert [(await client.get("/echo", headers=as_user)).status for _ in range(2)] == [200, 200]
    assert (await client.get("/echo", headers=as_user)).status == 429
    now[0] = 10.0  # refilled
    assert (await client.get("/echo", headers=as_user)).status == 200


async def test_timeout_cancels_slow_handlers_but_not_streams(serve: Factory) -> None:
    client = await serve(mw.Chain(timeout=mw.Timeout(0.2, lambda r: r.path == "/stream")))
    slow_resp = await client.get("/slow")
    assert slow_resp.status == 503 and (await slow_resp.json())["code"] == "timeout"
    assert (await client.get("/stream")).status == 200


async def test_timeout_cancels_on_time_with_one_timer_while_handlers_run(serve: Factory) -> None:
    timeout = mw.Timeout(0.3)
    client = await serve(mw.Chain(timeout=timeout))
    CANCELLED.clear()
    assert timeout.period == pytest.approx(0.03) and mw.Timeout(60).period == 1.0
    started = time.monotonic()
    statuses = await asyncio.gather(*(client.get("/stubborn") for _ in range(3)))
    took = time.monotonic() - started
    assert [r.status for r in statuses] == [503] * 3 and CANCELLED == ["/stubborn"] * 3
    assert 0.3 <= took < 0.9  # cancelled after 0.3 s (+ a period), not after their 1 s sleep
    assert not timeout._deadlines  # none left running
    await asyncio.sleep(timeout.period * 2)
    assert timeout._sweeper is None  # nothing runs: the timer stopped
    assert (await client.get("/echo")).status == 200


async def test_gzip_for_large_json_only(serve: Factory) -> None:
    client = await serve(mw.Chain(filters=[mw.gzip_json()]))
    large = await client.get("/big", headers={"Accept-Encoding": "gzip"})
    assert (
        large.headers["Content-Encoding"] == "gzip" and len((await large.json())["items"]) == 2000
    )
    small = await client.get("/echo", headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in small.headers
    plain = await client.get("/big", headers={"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers


async def test_conditional_etag_and_304(serve: Factory) -> None:
    client = await serve(mw.Chain(filters=[mw.conditional]))
    first = await client.get("/echo")
    tag = first.headers["ETag"]
    assert tag.startswith('"') and tag == mw.entity_tag(await first.read())
    for given in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        again = await client.get("/echo", headers={"If-None-Match": given})
        assert again.status == 304 and again.headers["ETag"] == tag
        assert await again.read() == b""
    other = await client.get("/echo", headers={"If-None-Match": '"stale"'})
    assert other.status == 200 and await other.json() == {"session": None, "path": "/echo"}
    # errors and non-JSON responses carry no tag
    assert "ETag" not in (await client.get("/refuse")).headers
    assert "ETag" not in (await client.get("/stream")).headers
    # a handler that knows its tag gives it: it is used as it is
    assert (await client.get("/tagged")).headers["ETag"] == '"given"'
    assert (await client.get("/tagged", headers={"If-None-Match": '"given"'})).status == 304


async def test_gzip_weakens_the_etag_of_what_it_compresses(serve: Factory) -> None:
    client = await serve(mw.Chain(filters=[mw.conditional, mw.gzip_json()]))
    plain = await client.get("/big", headers={"Accept-Encoding": "identity"})
    zipped = await client.get("/big", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.headers["ETag"] == "W/" + plain.headers["ETag"]
    again = await client.get(
        "/big", headers={"Accept-Encoding": "gzip", "If-None-Match": zipped.headers["ETag"]}
    )
    assert again.status == 304


async def test_security_headers_reach_streamed_responses(serve: Factory) -> None:
    client = await serve(headers=(mw.security_headers("default-src 'self'"),))
    for path in ("/echo", "/stream"):
        resp = await client.get(path)
        assert resp.headers["Content-Security-Policy"] == "default-src 'self'"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert "Strict-Transport-Security" not in resp.headers  # plain HTTP: no HSTS


async def test_the_whole_chain_in_order(serve: Factory, caplog: pytest.LogCaptureFixture) -> None:
    app_client: Any = None

    def verify(token: str) -> str:
        if token != "good":
            raise Problem(401, "bad-token", "no")
        return "alice"

    app = web.Application(client_max_size=1024)
    mw.install(app, csp="default-src 'self'", origins=(), max_body=1024, rate=0.001, burst=2,
               rate_limited=lambda r: True, verify=verify, auth_skip=lambda r: False,
               request_timeout=0.2, streaming=lambda r: False)  # fmt: skip
    app.router.add_get("/boom", boom)
    app.router.add_get("/echo", echo)
    app_client = TestClient(TestServer(app, host="127.0.0.1"))
    await app_client.start_server()
    try:
        with caplog.at_level(logging.INFO, logger="wirekit.http.access"):
            crashed = await app_client.get("/boom", headers={"X-Request-Id": "req-1"})
        assert crashed.status == 500 and "req-1" in (await crashed.json())["detail"]
        assert crashed.headers["X-Request-Id"] == "req-1"  # recovered inside the request id
        assert crashed.headers["Content-Security-Policy"] == "default-src 'self'"
        logged = [r for r in caplog.records if r.name == "wirekit.http.access"]
        assert logged[0].status == 500  # type: ignore[attr-defined]
        forged = await app_client.get("/echo", headers={"Authorization": "Bearer forged"})
        assert forged.status == 401  # auth runs before the rate limit spends anything
        assert (await app_client.get("/echo")).status == 200  # the 2nd token (/boom had the 1st)
        assert (await app_client.get("/echo")).status == 429
    finally:
        await app_client.close()


def test_install_order_is_the_documented_one() -> None:
    app = web.Application()
    installed = mw.install(app, csp="x", origins=(), max_body=1, rate=1, burst=1,
                           rate_limited=lambda r: True, verify=str, auth_skip=lambda r: False,
                           request_timeout=1, streaming=lambda r: False)  # fmt: skip
    (chain,) = app.middlewares  # one aiohttp middleware, one prepare hook
    assert chain is installed.chain and len(app.on_response_prepare) == 1
    assert chain.observers == (mw.access_log, installed.metrics.record)
    assert names(installed.headers) == ["echo_request_id", "cors", "security_headers"]
    assert names(chain.guards) == ["cors", "body_limit", "bearer_auth", "rate_limit"]
    assert isinstance(chain.timeout, mw.Timeout)
    assert names(chain.filters) == ["conditional", "gzip_json"]


async def test_request_metrics_by_route_and_status(serve: Factory) -> None:
    metrics = mw.RequestMetrics()
    client = await serve(mw.Chain(observers=[metrics.record]))
    for path in ("/echo", "/echo", "/refuse", "/boom", "/nowhere"):
        await client.get(path)
    assert metrics.requests == {
        ("/echo", "GET", "200"): 2, ("/refuse", "GET", "409"): 1, ("/boom", "GET", "500"): 1,
        ("unmatched", "GET", "404"): 1,
    }  # fmt: skip
    (_, histogram, direct) = list(metrics.collect())
    assert direct.samples[0].value == 0  # all served by aiohttp
    echo = [s for s in histogram.samples if s.labels.get("route") == "/echo"]
    assert [s.value for s in echo if s.name.endswith("_count")] == [2]
    assert [s.value for s in echo if s.labels.get("le") == "+Inf"] == [2]
