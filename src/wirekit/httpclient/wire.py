"""Sans-I/O HTTP/1.1 response reading on httptools: bytes in; the head, body chunks and the end
of the response out. No sockets, no loop: :mod:`.connection` feeds it what it reads."""

from __future__ import annotations

from dataclasses import dataclass

import httptools

from ..errors import BadMessage, OversizeError, PeerError

MAX_HEAD = 64 * 1024  # bytes of status line and headers; more is an OversizeError


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    reason: str
    http_version: str
    headers: tuple[tuple[str, str], ...]

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or ``None``."""
        name = name.lower()
        return next((v for n, v in self.headers if n.lower() == name), None)

    @property
    def status_line(self) -> str:
        return f"HTTP/{self.http_version} {self.status} {self.reason}".rstrip()


class ResponseParser:
    """Reads one response to a ``method`` request; interim (1xx) responses are skipped.

    After each :meth:`feed`: :attr:`head` is set once the final response's headers are in,
    :meth:`take_body` returns the body bytes parsed so far, :attr:`complete` says the response
    ended. :meth:`feed_eof` ends a body delimited by the connection closing.
    """

    def __init__(self, method: str, max_head: int = MAX_HEAD) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._no_body = method == "HEAD"
        self._max_head = max_head
        self._head_bytes = 0
        self._reason = b""
        self._headers: list[tuple[str, str]] = []
        self._body: list[bytes] = []
        self._until_close = False
        self.head: ResponseHead | None = None
        self.complete = False
        self.keep_alive = False

    def feed(self, data: bytes) -> None:
        """Parse ``data``. Raises :class:`~wirekit.errors.PeerError` for bytes that are not
        an HTTP/1.x response (or bytes after its end), :class:`OversizeError` for a huge head."""
        if self.complete and data:
            raise BadMessage("the server sent bytes after the end of the response")
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, PeerError):
                raise exc.__context__ from None
            raise BadMessage(f"malformed HTTP response: {exc}") from None
        except httptools.HttpParserUpgrade:
            raise BadMessage("the server switched protocols (101); not supported") from None
        except httptools.HttpParserError as exc:
            raise BadMessage(f"malformed HTTP response: {exc}") from None

    def feed_eof(self) -> bool:
        """The connection closed. Returns whether that ended the response (a body with neither
        Content-Length nor chunked encoding runs until the close)."""
        if not self.complete and self.head is not None and self._until_close:
            self.complete = True
            self.keep_alive = False
        return self.complete

    def take_body(self) -> list[bytes]:
        chunks, self._body = self._body, []
        return chunks

    # -- httptools callbacks ------------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self.complete:
            raise BadMessage("the server sent a second response to one request")
        self._head_bytes = 0
        self._reason = b""
        self._headers = []

    def on_status(self, status: bytes) -> None:
        self._reason += status
        self._count(len(status))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))
        self._count(len(name) + len(value) + 4)

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:  # interim: 100 Continue, 103 Early Hints (101 raises an upgrade)
            return
        self.head = ResponseHead(
            status,
            self._reason.decode("latin-1"),
            self._parser.get_http_version(),
            tuple(self._headers),
        )
        names = {name.lower() for name, _ in self._headers}
        self._until_close = (
            "content-length" not in names
            and "transfer-encoding" not in names
            and status not in (204, 304)
        )
        if self._no_body:  # a HEAD response has headers only, whatever Content-Length says
            self._finish()

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self.head is not None and not self.complete:
            self._finish()

    def _finish(self) -> None:
        self.complete = True
        self.keep_alive = self._parser.should_keep_alive()

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self._max_head:
            raise OversizeError(
                f"response head exceeds the limit of {self._max_head} bytes",
                self._head_bytes,
                self._max_head,
            )
