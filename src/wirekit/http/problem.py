"""RFC 9457 problem details: every HTTP error wirekit answers is ``application/problem+json``;
and the JSON that handlers read (:func:`json_body`) and answer (:func:`json_response`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

PROBLEM_JSON = "application/problem+json"


class Problem(Exception):
    """Raised anywhere under the middleware chain; answered as problem+json."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.headers = headers

    def response(self) -> web.Response:
        return problem(self.status, self.code, str(self), self.headers)


def problem_body(status: int, code: str, detail: str) -> bytes:
    """The document: ``type``, ``title``, ``status``, ``detail`` and wirekit's ``code``."""
    return orjson.dumps({"type": "about:blank", "title": HTTPStatus(status).phrase,
                         "status": status, "detail": detail, "code": code})  # fmt: skip


def problem(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(body=problem_body(status, code, detail), status=status,
                        content_type=PROBLEM_JSON, headers=headers)  # fmt: skip


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def http_problem(exc: web.HTTPException) -> web.Response:
    """aiohttp's own HTTP errors (404, 405, 413, ...) as problem+json, with their ``Allow``
    and ``Retry-After``."""
    code = HTTPStatus(exc.status).phrase.lower().replace(" ", "-")
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    return problem(exc.status, code, exc.reason, headers)


def json_response(data: Any, status: int = 200) -> web.Response:
    """``data`` as JSON (orjson: compact, and several times faster than aiohttp's default)."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json",
                        charset="utf-8")  # fmt: skip


async def json_body(
    request: web.Request,
    *fields: str,
    text_fields: tuple[str, ...] | None = None,
    types: tuple[str, ...] = ("application/json",),
) -> dict[str, Any]:
    """The request's JSON object, with ``fields`` present (strings unless listed apart)."""
    if request.content_type not in types:
        raise Problem(415, "content-type", f"send Content-Type: {' or '.join(types)}")
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise Problem(400, "bad-json", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Problem(422, "usage", "the body must be a JSON object")
    strings = fields if text_fields is None else text_fields
    for name in fields:
        if name not in body or (name in strings and not isinstance(body[name], str)):
            raise Problem(422, "usage", f"the body needs {name!r} (a string)"
                                if name in strings else f"the body needs {name!r}")  # fmt: skip
    return body
