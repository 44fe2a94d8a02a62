"""The OpenAPI 3.1 description of ``/api``, served at ``/api/openapi.json``.

Written by hand next to the handlers in :mod:`wirekit.hub.rest` (and :mod:`wirekit.hub.files`);
the test suite runs schemathesis against the live document, so a handler that answers
something this does not describe fails the build.
"""

from __future__ import annotations

from typing import Any

from .. import __version__
from .accounts import MAX_PASSWORD, MIN_PASSWORD
from .rest import AGE_MAX, MAX_OFFSET, PAGE_MAX, PROFILE_TEXT

JSON = "application/json"
PROBLEM = "application/problem+json"
USERNAME = "^[A-Za-z][A-Za-z0-9_-]{1,31}$"
ROOM = "^#?[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$"
TOPIC = "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
ERRORS = {
    400: "Malformed request (query parameter, JSON)",
    401: "Missing, invalid, expired or revoked token (or API key)",
    403: "Authenticated, but not allowed",
    404: "No such resource",
    405: "Method not allowed (see Allow)",
    409: "Conflict with the current state",
    413: "Body or value too large",
    415: "Unsupported Content-Type",
    422: "Well-formed, but invalid",
    429: "Rate limited (see Retry-After)",
    503: "The request took longer than request_timeout",
}
COMMON = (401, 405, 429, 503)  # any operation may answer these (401: a bad Bearer token)


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


def nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


def body(schema: dict[str, Any], *types: str) -> dict[str, Any]:
    return {"required": True, "content": {t: {"schema": schema} for t in types or (JSON,)}}


def ok(description: str, schema: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {JSON: {"schema": schema}}
    if headers:
        out["headers"] = {k: {"description": v, "schema": {"type": "string"}}
                          for k, v in headers.items()}  # fmt: skip
    return out


def op(
    operation_id: str,
    summary: str,
    responses: dict[int, dict[str, Any]],
    errors: tuple[int, ...] = (),
    *,
    auth: str | None = "bearer",
    request: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"operationId": operation_id, "summary": summary, "responses": {}}
    out["security"] = [{auth: []}] if auth else []
    if request is not None:
        out["requestBody"] = request
    if params:
        out["parameters"] = params
    for status, response in responses.items():
        out["responses"][str(status)] = response
    for status in sorted({*errors, *COMMON, *((400, 415, 422, 413) if request else ())}):
        out["responses"].setdefault(str(status), {"$ref": f"#/components/responses/E{status}"})
    return out


def path_param(name: str, pattern: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "pattern": pattern}}  # fmt: skip


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}  # fmt: skip


USER_ID = path_param("id", USERNAME, "user name (case-insensitive)")
ROOM_NAME = path_param("room", ROOM, "room name, with or without the leading # (%23)")
MEMBER = path_param("user", USERNAME, "user name")
LIMIT = query("limit", {"type": "integer", "minimum": 1, "maximum": PAGE_MAX}, "page size (50)")


def schemas() -> dict[str, Any]:
    text = {"type": "string"}
    return {
        "Problem": obj(["type", "title", "status", "detail", "code"],
                       type=text, title=text, status={"type": "integer"}, detail=text,
                       code={**text, "description": "wirekit's error code"}),
        "Credentials": obj(["user", "password"], user=text, password=text),
        "NewUser": obj(["user", "password"],
                       user={"type": "string", "pattern": USERNAME,
                             "description": "2-32 of a-z 0-9 _ -, from a letter (lowercased)"},
                       password={"type": "string", "minLength": MIN_PASSWORD,
                                 "maxLength": MAX_PASSWORD}),
        "Grant": obj(["user", "token", "refresh_token", "token_type", "expires_in"],
                     user=text, token={**text, "description": "access token (Bearer)"},
                     refresh_token={**text, "description": "single use, for /api/refresh"},
                     token_type={"const": "Bearer"}, expires_in={"type": "integer"}),
        "Refresh": obj(["refresh_token"], refresh_token=text),
        "User": obj(["id", "display_name", "bio", "age", "created", "admin", "online"],
                    id=text, display_name=nullable("string"), bio=nullable("string"),
                    age=nullable("integer"), created={**text, "format": "date-time"},
                    admin={"type": "boolean"}, online={"type": "boolean"}),
        "UserPage": obj(["items", "next_cursor"], items={"type": "array", "items": ref("User")},
                        next_cursor=nullable("string")),
        "ProfilePatch": {
            "type": "object", "additionalProperties": False,
            "description": "JSON merge patch (RFC 7396): null clears a field",
            "properties": {
                **{name: nullable("string", maxLength=most, pattern=pattern)
                   for name, (most, pattern) in PROFILE_TEXT.items()},
                "age": nullable("integer", minimum=0, maximum=AGE_MAX),
            },
        },
        "Room": obj(["room", "members", "online", "head", "epoch"], room=text,
                    members={"type": "integer"}, online={"type": "integer"},
                    head={"type": "integer", "description": "offset of the newest message"},
                    epoch={**text, "description": "changes only if the history is lost"}),
        "RoomSummary": obj(["room", "members", "online"], room=text,
                           members={"type": "integer"}, online={"type": "integer"}),
        "RoomList": obj(["items"], items={"type": "array", "items": ref("RoomSummary")}),
        "NewRoom": obj(["room"], room={"type": "string", "pattern": ROOM}),
        "Member": obj(["user", "online"], user=text, online={"type": "boolean"}),
        "MemberList": obj(["items"], items={"type": "array", "items": ref("Member")}),
        "Membership": obj(["room", "user"], room=text, user=text),
        "Message": obj(["offset", "from", "ts", "data"], offset={"type": "integer"},
                       **{"from": text}, ts={"type": "number"},
                       data={"description": "a string, or any JSON value"}),
        "MessagePage": obj(["room", "epoch", "head", "items"], room=text, epoch=text,
                           head={"type": "integer"},
                           items={"type": "array", "items": ref("Message")}),
        "NewMessage": obj(["data"], data={"description": "a string, or any JSON value"}),
        "Posted": obj(["room", "offset"], room=text, offset={"type": "integer"}),
        "Publish": obj(["topic", "data"], topic={"type": "string", "pattern": TOPIC},
                       data={"description": "a string, or any JSON value"}),
        "Published": obj(["topic", "offset"], topic=text, offset={"type": "integer"}),
        "Kick": obj(["user"], user=text),
        "Kicked": obj(["user", "closed"], user=text, closed={"type": "integer"}),
    }  # fmt: skip


def paths() -> dict[str, Any]:
    user = ok("The user", ref("User"), ETag="entity tag; send it back in If-None-Match")
    room = ok("The room", ref("Room"), ETag="entity tag")
    not_modified = {304: {"description": "Not modified (If-None-Match matched)"}}
    grant = ok("A session: access and refresh token", ref("Grant"))
    return {
        "/api/users": {
            "post": op("register", "Register (and log in)", {201: {**grant, "headers": {
                "Location": {"schema": {"type": "string"}}}}}, (409,), auth=None,
                request=body(ref("NewUser"))),
            "get": op("listUsers", "List users by name, a page at a time",
                      {200: ok("A page", ref("UserPage"), Link='rel="next" when more')}, (400,),
                      params=[LIMIT, query("cursor", {"type": "string"}, "next_cursor of the last"
                                           " page"),
                              query("prefix", {"type": "string", "pattern": "^[A-Za-z0-9_-]*$"},
                                    "only names starting with this")]),
        },
        "/api/users/{id}": {
            "parameters": [USER_ID],
            "get": op("getUser", "A user", {200: user, **not_modified}, (404,)),
            "patch": op("updateUser", "Change the profile (self or admin)", {200: user}, (403, 404),
                        request=body(ref("ProfilePatch"), "application/merge-patch+json",
                                     JSON)),
            "delete": op("deleteUser", "Delete the account (self or admin); its connections close",
                         {204: ok("Deleted")}, (403, 404)),
        },
        "/api/login": {"post": op("login", "Log in", {200: grant}, auth=None,
                                  request=body(ref("Credentials")))},
        "/api/refresh": {"post": op("refresh", "Exchange a refresh token (once) for a new pair",
                                    {200: grant}, (401,), auth=None,
                                    request=body(ref("Refresh")))},
        "/api/logout": {"post": op("logout", "Revoke the session (both tokens); its connections"
                                   " close", {204: ok("Logged out")})},
        "/api/rooms": {
            "get": op("listRooms", "List rooms", {200: ok("Rooms", ref("RoomList"))}),
            "post": op("createRoom", "Create a room and join it", {201: {**room, "headers": {
                "Location": {"schema": {"type": "string"}}}}}, (409,),
                request=body(ref("NewRoom"))),
        },
        "/api/rooms/{room}": {
            "parameters": [ROOM_NAME],
            "get": op("getRoom", "A room", {200: room, **not_modified}, (404,)),
        },
        "/api/rooms/{room}/members": {
            "parameters": [ROOM_NAME],
            "get": op("listMembers", "Members and who is online",
                      {200: ok("Members", ref("MemberList"))}, (404,)),
        },
        "/api/rooms/{room}/members/{user}": {
            "parameters": [ROOM_NAME, MEMBER],
            "put": op("join", "Join (self, or an admin for anyone)",
                      {201: ok("Joined", ref("Membership")), 204: ok("Already a member")},
                      (403, 404)),
            "delete": op("leave", "Leave (self, or an admin for anyone)", {204: ok("Left")},
                         (403, 404)),
        },
        "/api/rooms/{room}/messages": {
            "parameters": [ROOM_NAME],
            "get": op("listMessages", "History: the last `limit`, or those after offset `after`"
                      " (members)",
                      {200: ok("Messages, oldest first", ref("MessagePage")), **not_modified},
                      (400, 403, 404),
                      params=[query("after", {"type": "integer", "minimum": 0,
                                              "maximum": MAX_OFFSET}, "offset"),
                              query("limit", {"type": "integer", "minimum": 1,
                                              "maximum": 1000}, "most messages (50)")]),
            "post": op("postMessage", "Post a message (members)",
                       {201: ok("Posted", ref("Posted"))}, (403, 404),
                       request=body(ref("NewMessage"))),
        },
        "/api/publish": {"post": op("publish", "Publish into a push topic (backend services)",
                                    {200: ok("Published", ref("Published"))}, auth="apiKey",
                                    request=body(ref("Publish")))},
        "/api/kick": {"post": op("kick", "Close every connection of a user (backend services)",
                                 {200: ok("Closed", ref("Kicked"))}, auth="apiKey",
                                 request=body(ref("Kick")))},
    }  # fmt: skip


def spec(
    extra_paths: dict[str, Any] | None = None, extra_schemas: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "wirekit hub API", "version": __version__,
                 "description": "The REST API of `wirekit serve`. Errors are RFC 9457 "
                                "problem+json; see docs/rest-api.md."},
        "paths": {**paths(), **(extra_paths or {})},
        "components": {
            "schemas": {**schemas(), **(extra_schemas or {})},
            "responses": {f"E{status}": {"description": text,
                                         "content": {PROBLEM: {"schema": ref("Problem")}}}
                          for status, text in ERRORS.items()},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            },
        },
    }  # fmt: skip
