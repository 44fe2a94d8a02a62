"""An HTTP/1.1 client (seed 14.4.1) behind ``wirekit http``: pooled keep-alive connections,
separate connect/read/total timeouts, retries with backoff and jitter on idempotent requests,
redirects, and a real per-phase timing of every exchange (DNS, TCP, TLS, first byte).

    async with HttpClient(ClientOptions(retries=2)) as client:
        response = await client.fetch(build_request("GET", "http://127.0.0.1:8080/healthz", ()))
"""

from __future__ import annotations

from .client import ClientOptions, ClientStatistics, HttpClient, Response, TooManyRedirects
from .connection import Timing
from .request import Request, build_request
from .wire import ResponseHead

__all__ = [
    "ClientOptions",
    "ClientStatistics",
    "HttpClient",
    "Request",
    "Response",
    "ResponseHead",
    "Timing",
    "TooManyRedirects",
    "build_request",
]
