"""What the load generator sends over HTTP: the request (encoded once) and the target URL.

Kept apart from :mod:`.http`, which mypyc compiles: these are frozen dataclasses that worker
processes receive pickled, and they are not on the per-response path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..errors import UsageError

USER_AGENT = "wirekit-load"


@dataclass(frozen=True)
class HttpRequest:
    method: str = "GET"
    path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def encode(self, host_header: str) -> bytes:
        """The request's bytes, built once and written as is for every send."""
        names = {name.lower() for name, _ in self.headers}
        lines = [f"{self.method} {self.path} HTTP/1.1"]
        if "host" not in names:
            lines.append(f"Host: {host_header}")
        if "user-agent" not in names:
            lines.append(f"User-Agent: {USER_AGENT}")
        if self.body and "content-length" not in names:
            lines.append(f"Content-Length: {len(self.body)}")
        lines += [f"{name}: {value}" for name, value in self.headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


@dataclass(frozen=True)
class HttpTarget:
    scheme: str  # http | https
    host: str
    port: int
    request: HttpRequest = field(default_factory=HttpRequest)

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def parse_target(url: str, request: HttpRequest) -> HttpTarget:
    """``http(s)://HOST[:PORT]/PATH?QUERY`` with ``request`` (whose path is replaced)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"bad port in URL {url!r}: expected 1-65535") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"bad URL {url!r}: expected http://HOST[:PORT]/PATH or https://...")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    req = HttpRequest(request.method, path, request.headers, request.body)
    port = port or (443 if parts.scheme == "https" else 80)
    return HttpTarget(parts.scheme, parts.hostname, port, req)
