"""wirekit.http.direct without sockets: which requests it takes, its routes, the bytes it
writes (read back with httptools), and the chain run around a synchronous handler."""

from __future__ import annotations

import gzip
from typing import Any

import httptools
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from wirekit.errors import Unavailable
from wirekit.http import middleware as mw
from wirekit.http.direct import (
    DirectRequest,
    DirectRoutes,
    Request,
    encode_response,
    parse_request,
)
from wirekit.http.problem import Problem, json_response

HOST = [("Host", "x")]


def request(target: str = "/a", fields: list[tuple[str, str]] | None = None) -> DirectRequest:
    made = parse_request("GET", target, "HTTP/1.1", HOST if fields is None else fields,
                         "127.0.0.1", False)  # fmt: skip
    assert made is not None
    return made


@pytest.mark.parametrize(
    ("method", "target", "version", "fields"),
    [
        ("POST", "/a", "HTTP/1.1", HOST),
        ("HEAD", "/a", "HTTP/1.1", HOST),
        ("GET", "/a", "HTTP/1.0", HOST),
        ("GET", "/a%20b", "HTTP/1.1", HOST),  # an escape: aiohttp decodes
        ("GET", "/a?q=a+b", "HTTP/1.1", HOST),  # "+" is a space in a query
        ("GET", "/a#frag", "HTTP/1.1", HOST),
        ("GET", "/a/{x}", "HTTP/1.1", HOST),
        ("GET", "http://x/a", "HTTP/1.1", HOST),  # absolute form
        ("GET", "/é", "HTTP/1.1", HOST),
        ("GET", "/a", "HTTP/1.1", [*HOST, ("Content-Length", "3")]),
        ("GET", "/a", "HTTP/1.1", [*HOST, ("Content-Length", "0"), ("Content-Length", "3")]),
        ("GET", "/a", "HTTP/1.1", [*HOST, ("Transfer-Encoding", "chunked")]),
        ("GET", "/a", "HTTP/1.1", [*HOST, ("Upgrade", "websocket")]),
        ("GET", "/a", "HTTP/1.1", [*HOST, ("Expect", "100-continue")]),
    ],
)
def test_requests_left_to_aiohttp(
    method: str, target: str, version: str, fields: list[tuple[str, str]]
) -> None:
    assert parse_request(method, target, version, fields, None, False) is None


def test_a_plain_get_with_its_query_headers_and_state() -> None:
    req = request("/api/users?limit=2&prefix=&limit=3", [("x-request-id", "r1"),
                                                          ("Content-Length", "0")])  # fmt: skip
    assert (req.method, req.path, req.content_length) == ("GET", "/api/users", None)
    assert req.query.getall("limit") == ["2", "3"] and req.query["prefix"] == ""
    assert req.headers["X-Request-ID"] == "r1"  # case-insensitive, as aiohttp's
    assert mw.SESSION not in req and req.get(mw.SESSION) is None
    req[mw.SESSION] = "s"
    assert mw.SESSION in req and req[mw.SESSION] == "s" and req.get(mw.SESSION) == "s"


def test_routes_match_as_aiohttp_templates() -> None:
    routes = DirectRoutes()

    def handler(name: str) -> Any:
        return lambda request: name

    routes.add("/api/users", handler("users"))
    routes.add("/api/users/{id}", handler("user"))
    routes.add("/api/rooms/{room}/messages", handler("messages"))
    for path, name, route, params in [
        ("/api/users", "users", "/api/users", {}),
        ("/api/users/alice", "user", "/api/users/{id}", {"id": "alice"}),
        (
            "/api/rooms/general/messages",
            "messages",
            "/api/rooms/{room}/messages",
            {"room": "general"},
        ),
    ]:
        req = request(path)
        found = routes.resolve(req)
        assert found is not None and found(req) == name
        assert (req.route, req.match_info) == (route, params)
    for path in ("/api/users/", "/api/users/a/b", "/api/users/..", "/api/users/.", "/api",
                 "/api/rooms//messages", "/api/usersx"):  # fmt: skip
        assert routes.resolve(request(path)) is None, path


def parse(data: bytes) -> tuple[int, dict[str, str], bytes, bool]:
    """Status, headers, body and whether the message was complete, per httptools."""
    got: dict[str, Any] = {"headers": {}, "body": b"", "complete": False}

    class Callbacks:
        def on_header(self, name: bytes, value: bytes) -> None:
            got["headers"][name.decode().lower()] = value.decode()

        def on_body(self, body: bytes) -> None:
            got["body"] += body

        def on_message_complete(self) -> None:
            got["complete"] = True

    parser = httptools.HttpResponseParser(Callbacks())
    parser.feed_data(data)
    return parser.get_status_code(), got["headers"], got["body"], got["complete"]


def test_encoded_responses_are_well_formed_http() -> None:
    status, headers, body, complete = parse(encode_response(json_response({"a": 1}), True))
    assert (status, body, complete) == (200, b'{"a":1}', True)
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert headers["content-length"] == "7" and "connection" not in headers
    assert headers["date"].endswith(" GMT") and headers["server"]
    status, headers, body, complete = parse(encode_response(web.Response(status=204), False))
    assert (status, body, complete) == (204, b"", True)
    assert "content-length" not in headers and headers["connection"] == "close"
    not_modified = web.Response(status=304, headers={"ETag": '"x"'})
    status, headers, body, _ = parse(encode_response(not_modified, True))
    assert (status, body, headers["etag"]) == (304, b"", '"x"')
    assert "content-length" not in headers
    big = json_response({"items": ["x" * 40] * 100})
    big.enable_compression(web.ContentCoding.gzip)
    status, headers, body, _ = parse(encode_response(big, True))
    assert headers["content-encoding"] == "gzip" and int(headers["content-length"]) == len(body)
    assert gzip.decompress(body) == big.body
    assert parse(encode_response(web.Response(body=b"\x00\x01"), True))[1]["content-type"] == (
        "application/octet-stream"
    )
    with pytest.raises(TypeError):
        encode_response(web.StreamResponse(), True)


def test_the_chain_runs_around_a_synchronous_handler(caplog: Any) -> None:
    seen: list[tuple[str, int]] = []

    def refuse_post_x(req: Request) -> web.StreamResponse | None:
        return web.Response(status=418) if req.path == "/teapot" else None

    def stamp(req: Request, response: web.StreamResponse) -> web.StreamResponse:
        response.headers["X-Filtered"] = "1"
        return response

    chain = mw.Chain(observers=[lambda r, status, s: seen.append((r.path, status))],
                     guards=[refuse_post_x], filters=[stamp])  # fmt: skip

    def ok(req: Request) -> web.Response:
        return json_response({"rid": req[mw.REQUEST_ID_KEY]})

    def problem(req: Request) -> web.Response:
        raise Problem(409, "conflict", "no")

    def down(req: Request) -> web.Response:
        raise Unavailable("redis is down")

    def crash(req: Request) -> web.Response:
        raise RuntimeError("secret internals")

    answered = chain.respond(request("/ok", [("X-Request-Id", "given")]), ok)
    assert isinstance(answered, web.Response) and answered.body == b'{"rid":"given"}'
    assert answered.headers["X-Filtered"] == "1"
    assert chain.respond(request("/teapot"), ok).status == 418
    assert chain.respond(request("/p"), problem).status == 409
    unavailable = chain.respond(request("/u"), down)
    assert unavailable.status == 503 and unavailable.headers["Retry-After"] == "1"
    crashed = chain.respond(request("/c"), crash)
    assert isinstance(crashed, web.Response) and isinstance(crashed.body, bytes)
    assert crashed.status == 500 and b"secret" not in crashed.body
    assert "secret internals" in caplog.text
    assert seen == [("/ok", 200), ("/teapot", 418), ("/p", 409), ("/u", 503), ("/c", 500)]


@given(st.text(alphabet=st.characters(codec="latin-1"), max_size=60))
def test_any_target_is_taken_whole_or_left_to_aiohttp(target: str) -> None:
    routes = DirectRoutes()
    routes.add("/api/rooms/{room}/messages", lambda request: json_response({}))
    made = parse_request("GET", target, "HTTP/1.1", HOST, None, False)
    if made is None:
        return
    assert target.isascii() and "%" not in target and "+" not in target
    assert made.path + (f"?{made.query_string}" if "?" in target else "") == target
    dict(made.query)  # parses
    if routes.resolve(made) is not None:
        (room,) = made.match_info.values()
        assert "/" not in room and room not in (".", "..")
        assert made.path == f"/api/rooms/{room}/messages"
