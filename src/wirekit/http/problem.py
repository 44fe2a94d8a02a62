"""RFC 9457 problem details: every HTTP error wirekit answers is ``application/problem+json``."""

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


@web.middleware
async def problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """:class:`Problem` and aiohttp's own HTTP errors (404, 405, 413, ...) as problem+json."""
    try:
        return await handler(request)
    except Problem as exc:
        return problem(exc.status, exc.code, str(exc), exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTPStatus(exc.status).phrase.lower().replace(" ", "-")
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return problem(exc.status, code, exc.reason, headers)


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
