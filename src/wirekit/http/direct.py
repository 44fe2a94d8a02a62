"""Serving plain GETs without aiohttp: the request, the route table and the response bytes.

aiohttp's request and response machinery costs more CPU than wirekit's whole middleware chain
and handler: the same GET of the REST API took 107 us of server CPU through aiohttp against 50 us
here (benchmarks/results/rest.json, loopback, 2 cores). A front that reads request
heads itself (the hub's :class:`~wirekit.hub.web.HttpSniffer`) serves the requests it fully
understands here -- a bodiless HTTP/1.1 ``GET`` of a route registered in :class:`DirectRoutes`,
with a plain ASCII target -- through the same :class:`~wirekit.http.middleware.Chain`, and
hands anything else to aiohttp. The handlers are synchronous (``def``, not ``async def``):
they answer from memory or from the store's synchronous calls, so they cannot be cancelled
and need no Task; :func:`asynchronous` registers the same functions with aiohttp.

A :class:`DirectRequest` has what the chain and those handlers read of an aiohttp request:
``method``, ``path``, ``headers``, ``query``, ``match_info``, ``remote``, ``secure``,
``content_length`` and per-request state by :class:`aiohttp.web.RequestKey`.
"""

from __future__ import annotations

import re
import time
import zlib
from collections.abc import Callable, Iterable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from aiohttp import hdrs, web
from aiohttp.http import SERVER_SOFTWARE
from multidict import CIMultiDict, CIMultiDictProxy, MultiDict, MultiDictProxy

T = TypeVar("T")

# A target served directly: printable ASCII, no escapes ("%"), no "+" (a space in a query),
# no fragment, no braces. Anything else goes to aiohttp, whose decoding is then the only one.
PLAIN_TARGET = re.compile(r"/[A-Za-z0-9/_.~!$&'()*,;=:@?-]*")
PARAM = "[^/{}?]+"  # what aiohttp's ``{name}`` matches, in a target already known to be plain
EMPTY_BODY = frozenset({204, 304})


class DirectRequest:
    """One request served without aiohttp (see the module doc)."""

    __slots__ = ("_query", "_state", "headers", "match_info", "method", "path",
                 "query_string", "remote", "route", "secure")  # fmt: skip

    def __init__(
        self,
        method: str,
        path: str,
        query_string: str,
        headers: CIMultiDictProxy[str],
        remote: str | None,
        secure: bool,
    ) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.remote = remote
        self.secure = secure
        self.match_info: dict[str, str] = {}
        self.route = ""  # the matched route's template, as aiohttp's ``resource.canonical``
        self._query: MultiDictProxy[str] | None = None
        self._state: dict[web.RequestKey[Any], Any] = {}

    @property
    def query(self) -> MultiDictProxy[str]:
        if self._query is None:
            pairs = parse_qsl(self.query_string, keep_blank_values=True)
            self._query = MultiDictProxy(MultiDict(pairs))
        return self._query

    @property
    def content_length(self) -> int | None:
        return None  # only bodiless requests are served directly

    def __getitem__(self, key: web.RequestKey[T]) -> T:
        value: T = self._state[key]
        return value

    def __setitem__(self, key: web.RequestKey[T], value: T) -> None:
        self._state[key] = value

    def __contains__(self, key: object) -> bool:
        return key in self._state

    def get(self, key: web.RequestKey[Any], default: Any = None) -> Any:
        return self._state.get(key, default)


Request = web.Request | DirectRequest  # what the chain's pieces and direct handlers take
SyncHandler = Callable[[Request], web.Response]  # a handler with no await


def parse_request(
    method: str,
    target: str,
    version: str,
    fields: Iterable[tuple[str, str]],
    remote: str | None,
    secure: bool,
) -> DirectRequest | None:
    """The request if it may be served directly: an HTTP/1.1 ``GET`` of a plain target, with
    no body and nothing that changes the connection (upgrade, ``Expect``); else ``None``."""
    if method != "GET" or version != "HTTP/1.1" or not PLAIN_TARGET.fullmatch(target):
        return None
    headers = CIMultiDictProxy(CIMultiDict(fields))
    if (
        hdrs.TRANSFER_ENCODING in headers
        or headers.getall(hdrs.CONTENT_LENGTH, ["0"]) != ["0"]  # one "0" or none
        or hdrs.UPGRADE in headers
        or hdrs.EXPECT in headers
    ):
        return None
    path, _, query = target.partition("?")
    return DirectRequest(method, path, query, headers, remote, secure)


class DirectRoutes:
    """``GET`` routes served directly, by aiohttp-style template (``/api/users/{id}``)."""

    def __init__(self) -> None:
        self._static: dict[str, tuple[str, SyncHandler]] = {}
        self._dynamic: list[tuple[re.Pattern[str], str, SyncHandler]] = []

    def add(self, template: str, handler: SyncHandler) -> None:
        if "{" not in template:
            self._static[template] = (template, handler)
            return
        pattern = re.sub(r"\\\{(\w+)\\\}", rf"(?P<\1>{PARAM})", re.escape(template))
        self._dynamic.append((re.compile(pattern), template, handler))

    def resolve(self, request: DirectRequest) -> SyncHandler | None:
        """The handler of ``request``'s path, with ``match_info`` and ``route`` set."""
        path = request.path
        found = self._static.get(path)
        if found is not None:
            request.route, handler = found
            return handler
        for pattern, template, handler in self._dynamic:
            match = pattern.fullmatch(path)
            if match is not None:
                params = match.groupdict()
                if any(value in (".", "..") for value in params.values()):
                    return None  # a dot segment: aiohttp normalises the path first
                request.route, request.match_info = template, params
                return handler
        return None


def asynchronous(handler: SyncHandler) -> Callable[[web.Request], Any]:
    """``handler`` as an aiohttp handler (a coroutine function)."""

    async def run(request: web.Request) -> web.Response:
        return handler(request)

    return run


class HttpDate:
    """The ``Date`` header's value, formatted once a second."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self) -> str:
        second = int(time.time())
        if second != self._second:
            self._second, self._text = second, formatdate(second, usegmt=True)
        return self._text


http_date = HttpDate()


def encode_response(response: web.StreamResponse, keep_alive: bool) -> bytes:
    """``response`` (to a ``GET``) as HTTP/1.1 bytes, with the headers aiohttp would add:
    ``Content-Length``, ``Content-Type`` for a body, ``Date``, ``Server``, and ``Connection:
    close`` when the connection ends; a body :meth:`~aiohttp.web.StreamResponse.enable_compression`
    asked for is gzipped."""
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes | None):
        raise TypeError("a direct handler answers with a web.Response of bytes")
    headers = response.headers
    status = response.status
    body = response.body or b""
    if status in EMPTY_BODY:
        body = b""
        headers.popall(hdrs.CONTENT_LENGTH, None)
    else:
        if response.compression:
            gzip = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
            body = gzip.compress(body) + gzip.flush()
            headers[hdrs.CONTENT_ENCODING] = "gzip"
        headers[hdrs.CONTENT_LENGTH] = str(len(body))
        if body:
            headers.setdefault(hdrs.CONTENT_TYPE, "application/octet-stream")
    headers.setdefault(hdrs.DATE, http_date())
    headers.setdefault(hdrs.SERVER, SERVER_SOFTWARE)
    if not keep_alive:
        headers.setdefault(hdrs.CONNECTION, "close")
    reason = response.reason or HTTPStatus(status).phrase
    lines = "".join([f"{name}: {value}\r\n" for name, value in headers.items()])
    return f"HTTP/1.1 {status} {reason}\r\n{lines}\r\n".encode() + body
