"""What to send: the URL, headers and body of a request, built from curl/httpie-style arguments.

Nothing here does I/O except :func:`read_data` (``-d @file`` / ``-d @-``).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from .. import __version__
from ..errors import UsageError
from ..io.sockets import format_hostport

USER_AGENT = f"wirekit/{__version__}"
JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded"

# RFC 9110 section 5.6.2: a token (methods and header names).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Characters left alone when re-quoting a path or query: reserved ones and '%' (already quoted).
_URL_SAFE = "/%:@!$&'()*+,;=~?"
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str  # http | https
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == _DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def address(self) -> str:
        return format_hostport(self.host, self.port)


@dataclass(frozen=True, slots=True)
class Request:
    """One request. ``headers`` are sent in order, after the defaults they do not replace."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    @property
    def origin(self) -> Origin:
        return split_url(self.url)[0]

    def head(self) -> tuple[str, list[tuple[str, str]]]:
        """The request line and the headers as they go on the wire (with Host and
        Content-Length added unless given)."""
        origin, target = split_url(self.url)
        names = {name.lower() for name, _ in self.headers}
        headers = []
        if "host" not in names:
            headers.append(("Host", origin.host_header))
        if "content-length" not in names and (self.body or self.method in ("POST", "PUT", "PATCH")):
            headers.append(("Content-Length", str(len(self.body))))
        return f"{self.method} {target} HTTP/1.1", headers + list(self.headers)

    def encode(self) -> bytes:
        line, headers = self.head()
        text = "".join([line, "\r\n", *(f"{n}: {v}\r\n" for n, v in headers), "\r\n"])
        return text.encode() + self.body  # header values as typed (UTF-8), as curl sends them


def normalize_url(url: str) -> str:
    """Complete a URL the way curl and httpie do: no scheme means ``http://``, and a leading
    ``:PORT`` means ``localhost:PORT``; non-ASCII and spaces in the path and query are quoted."""
    if "://" not in url:
        url = "http://" + ("localhost" + url if url.startswith(":") else url)
    split_url(url)  # reject a bad URL now, with a message naming it
    parts = urlsplit(url)
    path = quote(parts.path or "/", safe=_URL_SAFE)
    query = f"?{quote(parts.query, safe=_URL_SAFE)}" if parts.query else ""
    return f"{parts.scheme}://{parts.netloc}{path}{query}"


def split_url(url: str) -> tuple[Origin, str]:
    """``(origin, request target)`` of an ``http://`` or ``https://`` URL."""
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise UsageError(f"bad URL {url!r}: expected http://HOST[:PORT]/PATH or https://...")
    try:
        port = parts.port or _DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise UsageError(f"bad port in URL {url!r}: expected 1-65535") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Origin(parts.scheme, parts.hostname, port), target


def check_method(method: str) -> str:
    """``method`` upper-cased, if it is an HTTP token."""
    if not _TOKEN.fullmatch(method):
        raise UsageError(f"bad method {method!r}: expected a token such as GET or PURGE")
    return method.upper()


def parse_header_args(values: tuple[str, ...]) -> tuple[list[tuple[str, str]], set[str]]:
    """curl's ``-H`` rules: ``'Name: value'`` sends a header (replacing a default of that name),
    ``'Name:'`` removes a default header, ``'Name;'`` sends it with an empty value.

    Returns the headers to send and the lower-cased names to leave out.
    """
    send: list[tuple[str, str]] = []
    drop: set[str] = set()
    for text in values:
        if text.endswith(";") and _TOKEN.fullmatch(text[:-1]):
            send.append((text[:-1], ""))
            continue
        name, sep, value = text.partition(":")
        if not sep or not _TOKEN.fullmatch(name) or any(c in value for c in "\r\n\0"):
            raise UsageError(f"bad header {text!r}: expected 'Name: value'")
        if value.strip():
            send.append((name, value.strip()))
        else:
            drop.add(name.lower())
    return send, drop


def json_body(items: tuple[str, ...]) -> bytes:
    """httpie's JSON items as one object: ``key=text`` is a string, ``key:=json`` any JSON value
    (number, true/false/null, array, object). A repeated key keeps its last value."""
    body: dict[str, Any] = {}
    for item in items:
        at = item.find("=")
        raw = at > 0 and item[at - 1] == ":"
        key = item[: at - 1] if raw else item[:at]
        if at < 0 or not key:
            raise UsageError(f"bad -j item {item!r}: expected key=text or key:=json")
        value = item[at + 1 :]
        if raw:
            try:
                body[key] = json.loads(value)
            except ValueError as exc:
                raise UsageError(f"bad JSON in -j {item!r}: {exc}") from None
        else:
            body[key] = value
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def read_data(arg: str) -> bytes:
    """``-d`` as curl's ``--data-binary``: ``@FILE`` is the file's bytes, ``@-`` standard input,
    anything else the text itself (UTF-8). Bytes are sent unchanged (newlines kept)."""
    if not arg.startswith("@"):
        return arg.encode()
    if arg == "@-":
        return sys.stdin.buffer.read()
    try:
        with open(arg[1:], "rb") as f:
            return f.read()
    except OSError as exc:
        raise UsageError(f"cannot read -d {arg}: {exc.strerror}") from None


def build_request(
    method: str,
    url: str,
    header_args: tuple[str, ...],
    *,
    json_items: tuple[str, ...] = (),
    data: str | None = None,
    content_type: str | None = None,
) -> Request:
    """The request the command line describes, with the defaults curl/httpie users expect:
    ``User-Agent``, ``Accept`` (JSON first with ``-j``) and ``Content-Type`` (``-j``: JSON,
    ``-d``: form-urlencoded, as curl) unless ``-H`` or ``--content-type`` say otherwise."""
    if json_items and data is not None:
        raise UsageError("give -j items or -d, not both")
    body = json_body(json_items) if json_items else read_data(data) if data is not None else b""
    if content_type is None and (json_items or data is not None):
        content_type = JSON_TYPE if json_items else FORM_TYPE
    defaults = [
        ("User-Agent", USER_AGENT),
        ("Accept", f"{JSON_TYPE}, */*;q=0.5" if json_items else "*/*"),
    ]
    if content_type is not None:
        defaults.append(("Content-Type", content_type))
    send, drop = parse_header_args(header_args)
    given = {name.lower() for name, _ in send} | drop
    headers = [(n, v) for n, v in defaults if n.lower() not in given] + send
    return Request(check_method(method), normalize_url(url), tuple(headers), body)
