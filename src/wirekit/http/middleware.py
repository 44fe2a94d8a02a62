"""The middleware chain of wirekit's HTTP API, one small composable piece each.

Pieces that decide what happens to a request are aiohttp middlewares; pieces that only add
response headers hook ``on_response_prepare`` so they also reach streamed responses (SSE),
whose headers leave before the handler returns. :func:`install` puts them on an app in this
order (outermost first), the order docs/http-middleware.md explains:

1. :func:`request_id` -- ``X-Request-Id``: the client's if sane, else a new one; echoed back.
2. :func:`access_log` -- one structured log line per request (``wirekit.http.access``).
3. :class:`RequestMetrics` -- requests by route, method and status, latency by route.
4. :func:`recover` -- an unexpected exception becomes a 500 problem+json; no trace leaks.
5. :func:`~wirekit.http.problem.problems` -- :class:`Problem` and aiohttp errors as problem+json.
6. :func:`cors` -- answers preflights for allowed origins; adds CORS headers to responses.
7. :func:`body_limit` -- a declared body over the limit is refused (413) before it is read.
8. :func:`bearer_auth` -- ``Authorization: Bearer`` checked; the session is in ``request``.
9. :func:`rate_limit` -- token buckets per address and per user (429 with ``Retry-After``).
10. :func:`timeout` -- a handler running too long is cancelled (503).
11. :func:`gzip_json` -- JSON bodies over 1 KiB are gzipped for clients that accept it.

Headers on every response (prepare hooks): request id, CORS, :func:`security_headers`.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import itertools
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..proto.ratelimit import KeyedBuckets
from .problem import Handler, Problem, problem, problems

access = logging.getLogger("wirekit.http.access")
log = logging.getLogger("wirekit.http")

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
GZIP_MIN = 1024
CORS_HEADERS = "Authorization, Content-Type, If-None-Match, X-Api-Key, X-Request-Id"
CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"

Prepare = Callable[[web.Request, web.StreamResponse], Any]
REQUEST_ID_KEY = web.RequestKey("request_id", str)
SESSION = web.RequestKey("session", Any)  # what bearer_auth's ``verify`` returned


def request_id() -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        given = request.headers.get("X-Request-Id", "")
        request[REQUEST_ID_KEY] = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        return await handler(request)

    return middleware


async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    if REQUEST_ID_KEY in request:
        response.headers["X-Request-Id"] = request[REQUEST_ID_KEY]


async def _observe(
    request: web.Request, handler: Handler, report: Callable[[web.Request, int, float], None]
) -> web.StreamResponse:
    """Run ``handler`` and ``report`` its status (500 if it raised) and duration in seconds."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        report(request, status, time.perf_counter() - started)


def _log_access(request: web.Request, status: int, seconds: float) -> None:
    session = request.get(SESSION)
    access.info(
        "%s %s %d",
        request.method,
        request.path,
        status,
        extra={"event": "request", "method": request.method, "path": request.path,
               "status": status, "ms": round(seconds * 1e3, 2),
               "request_id": request.get(REQUEST_ID_KEY), "peer": request.remote,
               "user": getattr(session, "user", None)},
    )  # fmt: skip


def access_log() -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await _observe(request, handler, _log_access)

    return middleware


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RequestMetrics(Collector):
    """Counts requests by route template, method and status, and times them by route; its
    :attr:`middleware` records, and it is a Prometheus collector for ``/metrics``."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self.latency: dict[str, list[float]] = {}  # route -> per-bucket counts, +Inf, sum

        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await _observe(request, handler, self.record)

        self.middleware = middleware

    def record(self, request: web.Request, status: int, seconds: float) -> None:
        info = request.match_info
        route = info.route.resource.canonical if info.route.resource is not None else "unmatched"
        self.requests[route, request.method, str(status)] += 1
        counts = self.latency.setdefault(route, [0.0] * (len(LATENCY_BUCKETS) + 2))
        counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        counts[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("wirekit_http_requests", "HTTP requests",
                                       labels=["route", "method", "status"])  # fmt: skip
        for labels, count in sorted(self.requests.items()):
            requests.add_metric(list(labels), count)
        yield requests
        latency = HistogramMetricFamily("wirekit_http_request_seconds",
                                        "HTTP request latency", labels=["route"])  # fmt: skip
        for route, counts in sorted(self.latency.items()):
            cumulative = list(itertools.accumulate(counts[:-1]))
            bounds = [*(str(b) for b in LATENCY_BUCKETS), "+Inf"]
            latency.add_metric([route], list(zip(bounds, cumulative, strict=True)), counts[-1])
        yield latency


def recover() -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except (web.HTTPException, asyncio.CancelledError):
            raise
        except Exception:
            rid = request.get(REQUEST_ID_KEY)
            log.exception("handler failed", extra={"event": "handler_error", "request_id": rid,
                                                   "path": request.path})  # fmt: skip
            return problem(500, "internal", f"internal error; request id {rid}")

    return middleware


def origin_allowed(origin: str, allowed: Iterable[str]) -> bool:
    allowed = tuple(allowed)
    return "*" in allowed or origin in allowed


def cors(allowed: tuple[str, ...]) -> tuple[Middleware, Prepare]:
    """Preflights for ``allowed`` origins (``*``: any) get 204; others 403."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get(hdrs.ORIGIN)
        preflight = request.method == "OPTIONS" and hdrs.ACCESS_CONTROL_REQUEST_METHOD in (
            request.headers
        )
        if origin is None or not preflight:
            return await handler(request)
        if not origin_allowed(origin, allowed):
            raise Problem(403, "cors", f"origin {origin} is not allowed")
        return web.Response(status=204, headers={
            "Access-Control-Allow-Methods": CORS_METHODS,
            "Access-Control-Allow-Headers": CORS_HEADERS,
            "Access-Control-Max-Age": "600",
        })  # fmt: skip

    async def prepare(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and origin_allowed(origin, allowed):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "X-Request-Id, Retry-After, ETag"
            response.headers.add("Vary", "Origin")

    return middleware, prepare


def _never(request: web.Request) -> bool:
    return False


def body_limit(max_bytes: int, exempt: Callable[[web.Request], bool] = _never) -> Middleware:
    """Refuses a declared ``Content-Length`` over ``max_bytes``; aiohttp's ``client_max_size``
    (set to the same value) stops a chunked body that grows past it while being read.
    Requests ``exempt`` names stream their body and enforce a limit of their own (uploads)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > max_bytes and not exempt(request):
            raise Problem(413, "too-large", f"request bodies are at most {max_bytes} bytes")
        return await handler(request)

    return middleware


def rate_limit(
    rate: float, burst: int, applies: Callable[[web.Request], bool], clock: Callable[[], float]
) -> Middleware:
    """``rate`` requests per second (burst ``burst``) per client address, and the same per
    logged-in user (runs after :func:`bearer_auth` has set the session)."""
    per_address = KeyedBuckets(rate, burst)
    per_user = KeyedBuckets(rate, burst)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if applies(request):
            now = clock()
            address = str(request.remote)
            user = getattr(request.get(SESSION), "user", None)
            for buckets, key in ((per_address, address), (per_user, user)):
                if key is not None and not buckets.take(key, now):
                    wait = max(1, round(buckets.retry_after(key)))
                    raise Problem(429, "rate-limited", f"too many requests; retry in {wait} s",
                                  {"Retry-After": str(wait)})  # fmt: skip
        return await handler(request)

    return middleware


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header (``headers``: case-insensitive,
    or with lowercased names)."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def bearer_auth(verify: Callable[[str], Any], skip: Callable[[web.Request], bool]) -> Middleware:
    """A ``Bearer`` token, when present, must be valid (else 401); what ``verify`` returns is
    ``request[SESSION]``. Handlers that need one raise 401 when it is missing. ``verify``
    raises an exception with ``code`` for a bad token."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if hdrs.AUTHORIZATION in request.headers and not skip(request):
            token = bearer_token(request.headers)
            if token is None:
                raise Problem(401, "bad-token", "use Authorization: Bearer TOKEN",
                              {"WWW-Authenticate": "Bearer"})  # fmt: skip
            try:
                request[SESSION] = verify(token)
            except Exception as exc:
                code = str(getattr(exc, "code", "bad-token"))
                raise Problem(401, code, str(exc), {"WWW-Authenticate": "Bearer"}) from None
        return await handler(request)

    return middleware


def timeout(seconds: float, exempt: Callable[[web.Request], bool]) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if exempt(request):
            return await handler(request)
        try:
            async with asyncio.timeout(seconds):
                return await handler(request)
        except TimeoutError:
            raise Problem(503, "timeout", f"the request took longer than {seconds:g} s") from None

    return middleware


def entity_tag(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def etag_matches(tag: str, if_none_match: str) -> bool:
    """RFC 9110 13.1.2: weak comparison against a list of tags, or ``*``."""
    if if_none_match.strip() == "*":
        return True
    candidates = (t.strip().removeprefix("W/") for t in if_none_match.split(","))
    return tag.removeprefix("W/") in candidates


def conditional() -> Middleware:
    """``ETag`` on successful JSON GET/HEAD responses (a hash of the body); ``If-None-Match``
    with a matching tag gets ``304 Not Modified`` and no body."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if (
            request.method in ("GET", "HEAD")
            and response.status == 200
            and isinstance(response, web.Response)
            and isinstance(response.body, bytes)
            and response.content_type == "application/json"
        ):
            tag = response.headers.setdefault(hdrs.ETAG, entity_tag(response.body))
            given = request.headers.get(hdrs.IF_NONE_MATCH)
            if given is not None and etag_matches(tag, given):
                keep = (hdrs.ETAG, hdrs.CACHE_CONTROL, hdrs.VARY)
                headers = {k: v for k, v in response.headers.items() if k in keep}
                return web.Response(status=304, headers=headers)
        return response

    return middleware


def gzip_json(min_size: int = GZIP_MIN) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if (
            isinstance(response, web.Response)
            and response.content_type in ("application/json", "application/problem+json")
            and response.body is not None
            and len(response.body) >= min_size  # type: ignore[arg-type]
            and "gzip" in request.headers.get(hdrs.ACCEPT_ENCODING, "").lower()
        ):
            response.enable_compression(web.ContentCoding.gzip)
            tag = response.headers.get(hdrs.ETAG)
            if tag is not None and not tag.startswith("W/"):
                response.headers[hdrs.ETAG] = "W/" + tag  # same content, other bytes
        return response

    return middleware


def security_headers(csp: str) -> Prepare:
    async def prepare(request: web.Request, response: web.StreamResponse) -> None:
        headers = response.headers
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Referrer-Policy", "no-referrer")
        headers.setdefault("Content-Security-Policy", csp)
        if request.secure:
            headers.setdefault("Strict-Transport-Security", "max-age=31536000")

    return prepare


def install(
    app: web.Application,
    *,
    csp: str,
    origins: tuple[str, ...],
    max_body: int,
    rate: float,
    burst: int,
    rate_limited: Callable[[web.Request], bool],
    verify: Callable[[str], Any],
    auth_skip: Callable[[web.Request], bool],
    request_timeout: float,
    streaming: Callable[[web.Request], bool],
    clock: Callable[[], float] = time.monotonic,
    body_exempt: Callable[[web.Request], bool] = _never,
) -> RequestMetrics:
    """The whole chain, in the documented order; returns its metrics collector."""
    cors_middleware, cors_prepare = cors(origins)
    metrics = RequestMetrics()
    app.middlewares.extend([
        request_id(), access_log(), metrics.middleware, recover(), problems, cors_middleware,
        body_limit(max_body, body_exempt), bearer_auth(verify, auth_skip),
        rate_limit(rate, burst, rate_limited, clock), timeout(request_timeout, streaming),
        gzip_json(), conditional(),
    ])  # fmt: skip
    for hook in (echo_request_id, cors_prepare, security_headers(csp)):
        app.on_response_prepare.append(hook)
    return metrics
