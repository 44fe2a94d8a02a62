"""The hub's WebSocket/SSE JSON protocol (docs/ws-protocol.md), sans-I/O.

Requests in: :func:`parse_request` turns one text message into a :class:`Request` or a
:class:`BadRequest`; it never raises on peer input. Events out: the hub's events are plain
dicts in the chat protocol's vocabulary (``{"type": "msg", "room": ..., "text": ...}``);
:func:`ws_event` renames them into this protocol's (``{"op": "msg", "topic": ..., "data":
...}``), :func:`encode_ws` makes one WebSocket text frame of it and :func:`encode_sse` one
Server-Sent Event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from .ws import TEXT, frame

MAX_ID = 64  # bytes of a request's encoded ``id``

# op -> (required fields with their types, optional fields with their types)
OPS: dict[str, tuple[dict[str, type | tuple[type, ...]], dict[str, type | tuple[type, ...]]]] = {
    "auth": ({"token": str}, {}),
    "sub": ({"topic": str}, {"since": int, "epoch": str}),
    "unsub": ({"topic": str}, {}),
    "leave": ({"topic": str}, {}),
    "pub": ({"topic": str, "data": object}, {}),
    "history": ({"topic": str}, {"limit": int, "before": int}),
    "presence": ({"topic": str}, {}),
    "rooms": ({}, {}),
    "ping": ({}, {}),
}


@dataclass(frozen=True, slots=True)
class Request:
    op: str
    id: Any
    args: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BadRequest:
    id: Any
    code: str
    reason: str


def parse_request(text: str) -> Request | BadRequest:
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return BadRequest(None, "bad-json", "frames must hold one JSON object")
    if not isinstance(obj, dict):
        return BadRequest(None, "bad-json", "frames must hold one JSON object")
    rid = obj.pop("id", None)
    if rid is not None and len(orjson.dumps(rid)) > MAX_ID:
        return BadRequest(None, "usage", f"id longer than {MAX_ID} bytes once encoded")
    op = obj.pop("op", None)
    shape = OPS.get(op) if isinstance(op, str) else None
    if shape is None:
        return BadRequest(rid, "unknown-op", f"unknown op {op!r}; ops: {', '.join(OPS)}")
    required, optional = shape
    args: dict[str, Any] = {}
    for name, kind in (*required.items(), *optional.items()):
        if name not in obj or (obj[name] is None and name in optional):
            if name in required:
                return BadRequest(rid, "usage", f"{op} needs {name!r}")
            continue
        value = obj[name]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            return BadRequest(rid, "usage", f"{name!r} must be an integer >= 0")
        if not isinstance(value, kind):
            return BadRequest(rid, "usage", f"{name!r} must be a {kind.__name__}")  # type: ignore[union-attr]
        args[name] = value
    return Request(op, rid, args)


def ws_event(event: dict[str, Any]) -> dict[str, Any]:
    """A hub event in this protocol's vocabulary."""
    out: dict[str, Any] = {"op": event["type"]}
    for key, value in event.items():
        if key == "room":
            out["topic"] = value
        elif key == "text":
            out["data"] = orjson.loads(value) if event.get("json") else value
        elif key not in ("type", "json"):
            out[key] = value
    return out


def encode_ws(event: dict[str, Any]) -> bytes:
    return frame(TEXT, orjson.dumps(ws_event(event)))


def encode_sse(event: dict[str, Any]) -> bytes:
    body = orjson.dumps(ws_event(event))
    head = b"id: %d\n" % event["offset"] if event["type"] == "msg" else b""
    return head + b"event: " + str(event["type"]).encode() + b"\ndata: " + body + b"\n\n"


def reply(op: str, rid: Any, **fields: Any) -> bytes:
    """An ``ok``/``pong``/``hello`` frame, with the request's ``id`` when it had one."""
    event: dict[str, Any] = {"op": op}
    if rid is not None:
        event["id"] = rid
    event.update(fields)
    return frame(TEXT, orjson.dumps(event))


def error(rid: Any, code: str, reason: str) -> bytes:
    return reply("error", rid, code=code, reason=reason)
