"""The middleware chain of wirekit's HTTP API: small pieces, composed into one aiohttp middleware.

Each piece is a small function (or object) with one job, testable alone. A :class:`Chain` runs
them in one aiohttp middleware, and :func:`response_headers` runs the header pieces in one
``on_response_prepare`` hook, so that they also reach streamed responses (SSE), whose headers
leave before the handler returns. (A layer of aiohttp middleware per piece cost more than most
pieces do.) The kinds of piece, in the order a request meets them:

- the request id (:func:`request_id`), always first, so every later log line and error has it;
- *observers* ``(request, status, seconds)``: told, when the request is done, its status (500
  if it raised) and how long it took;
- recovery (:func:`recovered`) and problem+json (:meth:`Problem.response`,
  :func:`~wirekit.http.problem.http_problem`), always: whatever a guard, the handler or a
  filter raises becomes a response;
- *guards* ``(request) -> response | None``, in order: the first that answers (or raises a
  :class:`Problem`) ends the request;
- the handler, under a :class:`Timeout`;
- *filters* ``(request, response) -> response``, in order, on what the handler returned.

:func:`install` builds wirekit's chain, in the order a request meets the pieces (the two
filters in the order they see the response), the order docs/http-middleware.md explains:

1. :func:`request_id` -- ``X-Request-Id``: the client's if sane, else a new one; echoed back.
2. :func:`access_log` -- one structured log line per request (``wirekit.http.access``).
3. :class:`RequestMetrics` -- requests by route, method and status, latency by route.
4. :func:`recovered` -- an unexpected exception becomes a 500 problem+json; no trace leaks.
5. problem+json -- :class:`Problem` and aiohttp's HTTP errors as problem+json.
6. :func:`cors` -- answers preflights for allowed origins; adds CORS headers to responses.
7. :func:`body_limit` -- a declared body over the limit is refused (413) before it is read.
8. :func:`bearer_auth` -- ``Authorization: Bearer`` checked; the session is in ``request``.
9. :func:`rate_limit` -- token buckets per address and per user (429 with ``Retry-After``).
10. :class:`Timeout` -- a handler running too long is cancelled (503).
11. :func:`conditional` -- ``ETag`` on JSON GETs; ``304`` when ``If-None-Match`` matches.
12. :func:`gzip_json` -- JSON bodies over 1 KiB are gzipped for clients that accept it.

Headers on every response (one prepare hook): request id, CORS, :func:`security_headers`.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import itertools
import logging
import math
import os
import re
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from aiohttp import hdrs, web
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from ..errors import Unavailable
from ..proto.ratelimit import KeyedBuckets
from .direct import DirectRequest, Request, SyncHandler
from .problem import Handler, Problem, http_problem, problem

access = logging.getLogger("wirekit.http.access")
log = logging.getLogger("wirekit.http")

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
GZIP_MIN = 1024
CORS_HEADERS = "Authorization, Content-Type, If-None-Match, X-Api-Key, X-Request-Id"
CORS_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
UNAVAILABLE_HEADERS = {"Retry-After": "1"}  # on a 503 for an unreachable backend

Guard = Callable[[Request], web.StreamResponse | None]
Filter = Callable[[Request, web.StreamResponse], web.StreamResponse]
Observer = Callable[[Request, int, float], None]
HeaderHook = Callable[[Request, web.StreamResponse], None]
Prepare = Callable[[web.Request, web.StreamResponse], Awaitable[None]]
REQUEST_ID_KEY = web.RequestKey("request_id", str)
SESSION = web.RequestKey("session", Any)  # what bearer_auth's ``verify`` returned


def _never(request: Request) -> bool:
    return False


# -- the request id -----------------------------------------------------------------------------
class RequestIds:
    """New request ids: 32 hex digits, a random prefix per process then a counter -- unique
    without drawing a uuid4 per request. A forked child draws a prefix of its own."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._count = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"


new_request_id = RequestIds()


def request_id(request: Request) -> str:
    """The client's ``X-Request-Id`` if it is sane, else a new one."""
    given = request.headers.get(hdrs.X_REQUEST_ID)
    return given if given is not None and REQUEST_ID.fullmatch(given) else new_request_id()


def echo_request_id(request: Request, response: web.StreamResponse) -> None:
    if REQUEST_ID_KEY in request:
        response.headers[hdrs.X_REQUEST_ID] = request[REQUEST_ID_KEY]


# -- observers ----------------------------------------------------------------------------------
def access_log(request: Request, status: int, seconds: float) -> None:
    """One line per request on ``wirekit.http.access`` (nothing is built when INFO is off)."""
    if not access.isEnabledFor(logging.INFO):
        return
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


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RequestMetrics(Collector):
    """Counts requests by route template, method and status, and times them by route; its
    :meth:`record` is an observer, and it is a Prometheus collector for ``/metrics``."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self.latency: dict[str, list[float]] = {}  # route -> per-bucket counts, +Inf, sum
        self.direct = 0  # requests served without aiohttp (wirekit.http.direct)

    def record(self, request: Request, status: int, seconds: float) -> None:
        if isinstance(request, DirectRequest):
            route = request.route
            self.direct += 1
        else:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
        self.requests[route, request.method, str(status)] += 1
        counts = self.latency.get(route)
        if counts is None:
            counts = self.latency[route] = [0.0] * (len(LATENCY_BUCKETS) + 2)
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
        yield CounterMetricFamily("wirekit_http_direct_requests",
                                  "HTTP requests served without aiohttp", self.direct)  # fmt: skip


# -- recovery -----------------------------------------------------------------------------------
def recovered(request: Request) -> web.Response:
    """The answer to the unexpected exception being handled: its trace goes to the log with the
    request id; the client gets a 500 problem naming only the request id."""
    rid = request.get(REQUEST_ID_KEY)
    log.exception("handler failed", extra={"event": "handler_error", "request_id": rid,
                                           "path": request.path})  # fmt: skip
    return problem(500, "internal", f"internal error; request id {rid}")


# -- guards -------------------------------------------------------------------------------------
def origin_allowed(origin: str, allowed: Iterable[str]) -> bool:
    allowed = tuple(allowed)
    return "*" in allowed or origin in allowed


def cors(allowed: tuple[str, ...]) -> tuple[Guard, HeaderHook]:
    """A guard answering preflights: 204 for ``allowed`` origins (``*``: any), else 403; and
    the header hook giving responses to allowed origins their CORS headers."""

    def preflight(request: Request) -> web.StreamResponse | None:
        if request.method != "OPTIONS":
            return None
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None or hdrs.ACCESS_CONTROL_REQUEST_METHOD not in request.headers:
            return None
        if not origin_allowed(origin, allowed):
            raise Problem(403, "cors", f"origin {origin} is not allowed")
        return web.Response(status=204, headers={
            "Access-Control-Allow-Methods": CORS_METHODS,
            "Access-Control-Allow-Headers": CORS_HEADERS,
            "Access-Control-Max-Age": "600",
        })  # fmt: skip

    def add_headers(request: Request, response: web.StreamResponse) -> None:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and origin_allowed(origin, allowed):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "X-Request-Id, Retry-After, ETag"
            response.headers.add("Vary", "Origin")

    return preflight, add_headers


def body_limit(max_bytes: int, exempt: Callable[[Request], bool] = _never) -> Guard:
    """Refuses a declared ``Content-Length`` over ``max_bytes``; aiohttp's ``client_max_size``
    (set to the same value) stops a chunked body that grows past it while being read.
    Requests ``exempt`` names stream their body and enforce a limit of their own (uploads)."""

    def guard(request: Request) -> None:
        length = request.content_length
        if length is not None and length > max_bytes and not exempt(request):
            raise Problem(413, "too-large", f"request bodies are at most {max_bytes} bytes")

    return guard


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header (``headers``: case-insensitive,
    or with lowercased names)."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def bearer_auth(verify: Callable[[str], Any], skip: Callable[[Request], bool]) -> Guard:
    """A ``Bearer`` token, when present, must be valid (else 401); what ``verify`` returns is
    ``request[SESSION]``. Handlers that need one raise 401 when it is missing. ``verify``
    raises an exception with ``code`` for a bad token."""

    def guard(request: Request) -> None:
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

    return guard


def rate_limit(
    rate: float, burst: int, applies: Callable[[Request], bool], clock: Callable[[], float]
) -> Guard:
    """``rate`` requests per second (burst ``burst``) per client address, and the same per
    logged-in user (after :func:`bearer_auth` has set the session)."""
    per_address = KeyedBuckets(rate, burst)
    per_user = KeyedBuckets(rate, burst)

    def refuse(buckets: KeyedBuckets, key: str) -> Problem:
        wait = max(1, round(buckets.retry_after(key)))
        return Problem(429, "rate-limited", f"too many requests; retry in {wait} s",
                       {"Retry-After": str(wait)})  # fmt: skip

    def guard(request: Request) -> None:
        if applies(request):
            now = clock()
            address = str(request.remote)
            if not per_address.take(address, now):
                raise refuse(per_address, address)
            user = getattr(request.get(SESSION), "user", None)
            if user is not None and not per_user.take(user, now):
                raise refuse(per_user, user)

    return guard


# -- the handler's time limit -------------------------------------------------------------------
EXPIRED = math.inf  # the deadline of a cancelled handler: never past


class Timeout:
    """Cancels a handler running longer than ``seconds`` (503), except on requests ``exempt``
    names (streams). One timer sweeps the running handlers every ``seconds / 10`` (at most
    1 s) while there are any, instead of a timer per request (``asyncio.timeout`` costs about
    5 us a request on uvloop, this under 1 us): a handler is cancelled between ``seconds``
    and ``seconds`` plus that period after it started."""

    def __init__(self, seconds: float, exempt: Callable[[web.Request], bool] = _never) -> None:
        self.seconds = seconds
        self.exempt = exempt
        self.period = min(1.0, seconds / 10)
        self._deadlines: dict[asyncio.Task[Any], float] = {}  # the running handlers' tasks
        self._sweeper: asyncio.TimerHandle | None = None

    async def run(self, handler: Handler, request: web.Request) -> web.StreamResponse:
        if self.exempt(request):
            return await handler(request)
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        self._deadlines[task] = time.monotonic() + self.seconds
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self.period, self._sweep)
        try:
            return await handler(request)
        except asyncio.CancelledError:
            if self._deadlines[task] != EXPIRED or task.uncancel() > cancelling:
                raise  # not (only) this timeout: the client left, or the server stops
            detail = f"the request took longer than {self.seconds:g} s"
            raise Problem(503, "timeout", detail) from None
        finally:
            del self._deadlines[task]

    def _sweep(self) -> None:
        now = time.monotonic()
        for task, deadline in list(self._deadlines.items()):
            if deadline <= now:
                self._deadlines[task] = EXPIRED
                task.cancel()
        loop = asyncio.get_running_loop()
        self._sweeper = loop.call_later(self.period, self._sweep) if self._deadlines else None


# -- filters ------------------------------------------------------------------------------------
def entity_tag(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def etag_matches(tag: str, if_none_match: str) -> bool:
    """RFC 9110 13.1.2: weak comparison against a list of tags, or ``*``."""
    if if_none_match.strip() == "*":
        return True
    candidates = (t.strip().removeprefix("W/") for t in if_none_match.split(","))
    return tag.removeprefix("W/") in candidates


def conditional(request: Request, response: web.StreamResponse) -> web.StreamResponse:
    """``ETag`` on successful JSON GET/HEAD responses (a hash of the body, unless the handler
    gave one); ``If-None-Match`` with a matching tag gets ``304 Not Modified`` and no body."""
    if (
        response.status == 200
        and request.method in ("GET", "HEAD")
        and isinstance(response, web.Response)
        and isinstance(response.body, bytes)
        and response.content_type == "application/json"
    ):
        tag = response.headers.get(hdrs.ETAG)
        if tag is None:
            tag = response.headers[hdrs.ETAG] = entity_tag(response.body)
        given = request.headers.get(hdrs.IF_NONE_MATCH)
        if given is not None and etag_matches(tag, given):
            keep = (hdrs.ETAG, hdrs.CACHE_CONTROL, hdrs.VARY)
            headers = {k: v for k, v in response.headers.items() if k in keep}
            return web.Response(status=304, headers=headers)
    return response


def gzip_json(min_size: int = GZIP_MIN) -> Filter:
    """Gzip JSON bodies of ``min_size`` bytes or more for clients that accept it; the ``ETag``
    of what it compresses is made weak (same content, other bytes)."""

    def gzip(request: Request, response: web.StreamResponse) -> web.StreamResponse:
        if (
            isinstance(response, web.Response)
            and isinstance(response.body, (bytes, bytearray))
            and len(response.body) >= min_size
            and response.content_type in ("application/json", "application/problem+json")
            and "gzip" in request.headers.get(hdrs.ACCEPT_ENCODING, "").lower()
        ):
            response.enable_compression(web.ContentCoding.gzip)
            tag = response.headers.get(hdrs.ETAG)
            if tag is not None and not tag.startswith("W/"):
                response.headers[hdrs.ETAG] = "W/" + tag
        return response

    return gzip


# -- response headers ---------------------------------------------------------------------------
def security_headers(csp: str) -> HeaderHook:
    """``Content-Security-Policy`` ``csp`` and the other security headers, unless the handler
    set its own; ``Strict-Transport-Security`` on TLS requests."""
    fixed = (
        (hdrs.X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (hdrs.X_FRAME_OPTIONS, "DENY"),
        (hdrs.REFERRER_POLICY, "no-referrer"),
        (hdrs.CONTENT_SECURITY_POLICY, csp),
    )

    def add_headers(request: Request, response: web.StreamResponse) -> None:
        headers = response.headers
        for name, value in fixed:
            headers.setdefault(name, value)
        if request.secure:
            headers.setdefault(hdrs.STRICT_TRANSPORT_SECURITY, "max-age=31536000")

    return add_headers


def response_headers(*hooks: HeaderHook) -> Prepare:
    """One ``on_response_prepare`` hook running the header ``hooks`` in order."""

    async def prepare(request: web.Request, response: web.StreamResponse) -> None:
        for hook in hooks:
            hook(request, response)

    return prepare


# -- the chain ----------------------------------------------------------------------------------
class Chain:
    """One aiohttp middleware: the request id, ``observers``, recovery and problem+json,
    ``guards``, the handler (under ``timeout``), ``filters`` -- see the module's docstring."""

    __middleware_version__ = 1  # a new-style aiohttp middleware (what @web.middleware marks)

    def __init__(
        self,
        *,
        observers: Iterable[Observer] = (),
        guards: Iterable[Guard] = (),
        timeout: Timeout | None = None,
        filters: Iterable[Filter] = (),
    ) -> None:
        self.observers = tuple(observers)
        self.guards = tuple(guards)
        self.timeout = timeout
        self.filters = tuple(filters)

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        request[REQUEST_ID_KEY] = request_id(request)
        status = 500  # if it raised
        try:
            try:
                response = self._guard(request)
                if response is None:
                    timeout = self.timeout
                    response = await (
                        handler(request) if timeout is None else timeout.run(handler, request)
                    )
                    response = self._filter(request, response)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise  # a redirect: aiohttp answers it
                response = http_problem(exc)
            except Exception as exc:
                response = self._failed(request, exc)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            seconds = time.perf_counter() - started
            for observe in self.observers:
                observe(request, status, seconds)

    def respond(self, request: DirectRequest, handler: SyncHandler) -> web.StreamResponse:
        """The chain around a synchronous ``handler``, for a request served without aiohttp
        (:mod:`wirekit.http.direct`): the same pieces in the same order; no timeout, as
        nothing can interrupt a handler that does not await."""
        started = time.perf_counter()
        request[REQUEST_ID_KEY] = request_id(request)
        try:
            response = self._guard(request)
            if response is None:
                response = self._filter(request, handler(request))
        except web.HTTPException as exc:
            response = http_problem(exc) if exc.status >= 400 else self._failed(request, exc)
        except Exception as exc:
            response = self._failed(request, exc)
        seconds = time.perf_counter() - started
        for observe in self.observers:
            observe(request, response.status, seconds)
        return response

    @staticmethod
    def _failed(request: Request, exc: Exception) -> web.Response:
        """The answer to ``exc``, raised by a guard, the handler or a filter (while it is
        being handled: :func:`recovered` logs its trace)."""
        if isinstance(exc, Problem):
            return exc.response()
        if isinstance(exc, Unavailable):
            return problem(503, "unavailable", str(exc), UNAVAILABLE_HEADERS)
        return recovered(request)

    def _filter(self, request: Request, response: web.StreamResponse) -> web.StreamResponse:
        for apply in self.filters:
            response = apply(request, response)
        return response

    def _guard(self, request: Request) -> web.StreamResponse | None:
        """The first guard's answer, if one answers."""
        for guard in self.guards:
            answer = guard(request)
            if answer is not None:
                return answer
        return None


class Installed(NamedTuple):
    """What :func:`install` put in place: a front serving requests without aiohttp runs
    ``chain.respond``, then the ``headers`` hooks on the response."""

    chain: Chain
    headers: tuple[HeaderHook, ...]
    metrics: RequestMetrics


def install(
    app: web.Application,
    *,
    csp: str,
    origins: tuple[str, ...],
    max_body: int,
    rate: float,
    burst: int,
    rate_limited: Callable[[Request], bool],
    verify: Callable[[str], Any],
    auth_skip: Callable[[Request], bool],
    request_timeout: float,
    streaming: Callable[[web.Request], bool],
    clock: Callable[[], float] = time.monotonic,
    body_exempt: Callable[[Request], bool] = _never,
) -> Installed:
    """The whole chain, in the documented order."""
    preflight, cors_headers = cors(origins)
    metrics = RequestMetrics()
    chain = Chain(
        observers=(access_log, metrics.record),
        guards=(preflight, body_limit(max_body, body_exempt), bearer_auth(verify, auth_skip),
                rate_limit(rate, burst, rate_limited, clock)),
        timeout=Timeout(request_timeout, streaming),
        filters=(conditional, gzip_json()),
    )  # fmt: skip
    headers = (echo_request_id, cors_headers, security_headers(csp))
    app.middlewares.append(chain)
    app.on_response_prepare.append(response_headers(*headers))
    return Installed(chain, headers, metrics)
