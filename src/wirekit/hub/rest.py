"""The REST API of ``wirekit serve --http`` under ``/api``: accounts and sessions, users and
profiles, rooms and their messages, and the API-key endpoints for backend services.

Specified in :mod:`wirekit.hub.openapi` (served at ``/api/openapi.json``) and docs/rest-api.md.
Every error is RFC 9457 problem+json; successful JSON GETs carry an ``ETag`` (middleware).
"""

from __future__ import annotations

import asyncio
import hmac
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import quote, urlencode

import orjson
from aiohttp import hdrs, web

from ..http import middleware
from ..http.direct import DirectRoutes, Request, asynchronous
from ..http.problem import Problem, json_body, json_response
from .accounts import USERNAME, AuthError, Grant, Session
from .engine import API_SENDER, Log, check_topic, message_text, room_named
from .store import USER_CACHE, HubError, StoredMessage, UserRecord, remember

if TYPE_CHECKING:
    from .service import HubService

API_KEY_PATHS = frozenset({"/api/publish", "/api/kick"})  # these take the API key, not a token
AUTH_STATUS = {"bad-login": 401, "bad-token": 401, "token-expired": 401, "name-taken": 409,
               "bad-username": 422, "bad-password": 422, "rate-limited": 429}  # fmt: skip
HUB_STATUS = {"too-large": 413, "not-a-member": 403, "no-such-room": 404, "no-such-user": 404,
              "not-public": 401, "bad-room": 422, "bad-topic": 422,
              "unavailable": 503}  # fmt: skip
PAGE_DEFAULT, PAGE_MAX = 50, 100
# Profile fields: text of at most N characters, matching the pattern (no control characters;
# a bio may have line breaks and tabs), and an age.
PROFILE_TEXT = {
    "display_name": (64, "^[^\\x00-\\x1f\\x7f-\\x9f]*$"),
    "bio": (1000, "^[^\\x00-\\x08\\x0b-\\x1f\\x7f-\\x9f]*$"),
}
AGE_MAX = 150
MAX_OFFSET = 1 << 62
DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII only: str.isdigit() also takes "²", which int() refuses
MERGE_PATCH = ("application/merge-patch+json", "application/json")


def hub_problem(exc: HubError | AuthError) -> Problem:
    table = AUTH_STATUS if isinstance(exc, AuthError) else HUB_STATUS
    headers = middleware.UNAVAILABLE_HEADERS if exc.code == "unavailable" else None
    return Problem(table.get(exc.code, 422), exc.code, str(exc), headers)


def address(request: Request) -> str:
    return str(request.remote or "?")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not DIGITS.fullmatch(text) or not low <= int(text) <= high:
        raise Problem(400, "usage", f"{name} is an integer from {low} to {high}")
    return int(text)


def check_profile(patch: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7396) of the profile: known fields only, ``null`` clears."""
    for name, value in patch.items():
        if name in PROFILE_TEXT:
            most, pattern = PROFILE_TEXT[name]
            if value is not None and not (
                isinstance(value, str) and len(value) <= most and re.fullmatch(pattern, value)
            ):
                detail = f"{name} is text of at most {most} characters, no control codes"
                raise Problem(422, "bad-profile", detail)
        elif name == "age":
            if isinstance(value, float) and value.is_integer():
                value = patch[name] = int(value)  # JSON Schema: 33.0 is an integer
            if value is not None and not (
                type(value) is int and 0 <= value <= AGE_MAX  # bool is not an age
            ):
                raise Problem(422, "bad-profile", f"age is an integer from 0 to {AGE_MAX}")
        else:
            known = ", ".join([*PROFILE_TEXT, "age"])
            raise Problem(422, "bad-profile", f"unknown field {name!r}; profiles have {known}")
    return patch


class UserBody(NamedTuple):
    """What ``GET /api/users/{id}`` answers for one version of a user."""

    record: UserRecord  # the store hands out another one when the account changes
    online: bool  # the state the JSON shows besides the record
    admin: bool
    body: bytes
    etag: str


def message_item(msg: StoredMessage) -> dict[str, Any]:
    return {"offset": msg.offset, "from": msg.sender, "ts": msg.ts,
            "data": orjson.loads(msg.text) if msg.json else msg.text}  # fmt: skip


class RestApi:
    """The ``/api`` routes; ``session(request)`` is the caller's session or a 401."""

    def __init__(
        self,
        service: HubService,
        api_key: str,
        session: Callable[[Request], Session],
        spec: dict[str, Any],
    ) -> None:
        self.service = service
        self.hub = service.hub
        self.accounts = service.accounts
        self.api_key = api_key
        self.session = session
        self._spec = orjson.dumps(spec)
        self._user_bodies: dict[str, UserBody] = {}  # by name

    def add_routes(self, router: web.UrlDispatcher, direct: DirectRoutes) -> None:
        """The routes, on aiohttp's ``router``; the GETs, which never wait, on ``direct`` too."""
        for path, get in (
            ("/api/openapi.json", self._openapi),
            ("/api/users", self._users),
            ("/api/users/{id}", self._user),
            ("/api/rooms", self._rooms),
            ("/api/rooms/{room}", self._get_room),
            ("/api/rooms/{room}/members", self._members),
            ("/api/rooms/{room}/messages", self._messages),
        ):
            router.add_route("GET", path, asynchronous(get))
            direct.add(path, get)
        for method, path, handler in (
            ("POST", "/api/users", self._register),
            ("PATCH", "/api/users/{id}", self._patch_user),
            ("DELETE", "/api/users/{id}", self._delete_user),
            ("POST", "/api/login", self._login),
            ("POST", "/api/refresh", self._refresh),
            ("POST", "/api/logout", self._logout),
            ("POST", "/api/rooms", self._create_room),
            ("PUT", "/api/rooms/{room}/members/{user}", self._join),
            ("DELETE", "/api/rooms/{room}/members/{user}", self._leave),
            ("POST", "/api/rooms/{room}/messages", self._post_message),
            ("POST", "/api/publish", self._publish),
            ("POST", "/api/kick", self._kick),
        ):
            router.add_route(method, path, handler)

    def _openapi(self, request: Request) -> web.Response:
        return web.Response(body=self._spec, content_type="application/json")

    # -- accounts and sessions ----------------------------------------------------------------
    async def _register(self, request: web.Request) -> web.Response:
        grant = await self._sign_in(request, self.accounts.register)
        response = json_response(grant.json(), status=201)
        response.headers["Location"] = f"/api/users/{grant.user}"
        return response

    async def _login(self, request: web.Request) -> web.Response:
        return json_response((await self._sign_in(request, self.accounts.login)).json())

    async def _sign_in(
        self, request: web.Request, attempt: Callable[[str, str, str], Awaitable[Grant]]
    ) -> Grant:
        """Register or log in from a ``{"user", "password"}`` body."""
        body = await json_body(request, "user", "password")
        try:
            return await attempt(body["user"], body["password"], address(request))
        except AuthError as exc:
            raise hub_problem(exc) from None

    async def _refresh(self, request: web.Request) -> web.Response:
        body = await json_body(request, "refresh_token")
        try:
            grant = self.accounts.refresh(body["refresh_token"])
        except AuthError as exc:
            raise hub_problem(exc) from None
        return json_response(grant.json())

    async def _logout(self, request: web.Request) -> web.Response:
        session = self.session(request)
        self.accounts.revoke(session)
        self.hub.kick(session.user, "logged-out", session.id)
        return web.Response(status=204)

    # -- users --------------------------------------------------------------------------------
    def _user_json(self, record: UserRecord) -> dict[str, Any]:
        profile = record.profile
        return {"id": record.name, "display_name": profile.get("display_name"),
                "bio": profile.get("bio"), "age": profile.get("age"),
                "created": iso(record.created), "admin": record.name in self._admins,
                "online": self.hub.is_online(record.name)}  # fmt: skip

    @property
    def _admins(self) -> frozenset[str]:
        return self.service.config.admins

    def _record(self, request: Request) -> UserRecord:
        name = request.match_info["id"].lower()
        record = self.service.store.user(name) if USERNAME.fullmatch(name) else None
        if record is None:
            raise Problem(404, "no-such-user", f"no user {name}")
        return record

    def _self_or_admin(self, request: Request, user: str) -> Session:
        session = self.session(request)
        if session.user != user and session.user not in self._admins:
            raise Problem(403, "forbidden", f"only {user} or an administrator may do this")
        return session

    def _users(self, request: Request) -> web.Response:
        self.session(request)
        limit = query_int(request, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
        prefix = request.query.get("prefix", "").lower()
        if not all(c.isascii() and (c.isalnum() or c in "_-") for c in prefix):
            raise Problem(400, "usage", "prefix is the start of a user name: a-z 0-9 _ -")
        after = request.query.get("cursor", "")  # the page goes on after this name
        records = self.service.store.users(prefix, after, limit + 1)
        page, more = records[:limit], len(records) > limit
        cursor = page[-1].name if more else None
        response = json_response(
            {"items": [self._user_json(r) for r in page], "next_cursor": cursor}
        )
        if cursor is not None:
            query = urlencode({"limit": limit, "prefix": prefix, "cursor": cursor})
            response.headers["Link"] = f'</api/users?{query}>; rel="next"'
        return response

    def _user(self, request: Request) -> web.Response:
        self.session(request)
        made = self._user_body(self._record(request))
        response = web.Response(body=made.body, content_type="application/json", charset="utf-8")
        response.headers[hdrs.ETAG] = made.etag
        return response

    def _user_body(self, record: UserRecord) -> UserBody:
        """The user's JSON and ETag, made again only for another version of the user."""
        name = record.name
        online, admin = self.hub.is_online(name), name in self._admins
        made = self._user_bodies.get(name)
        if (
            made is None
            or made.record is not record
            or (made.online, made.admin) != (online, admin)
        ):
            body = orjson.dumps(self._user_json(record))
            made = UserBody(record, online, admin, body, middleware.entity_tag(body))
            remember(self._user_bodies, name, made, USER_CACHE)
        return made

    async def _patch_user(self, request: web.Request) -> web.Response:
        record = self._record(request)
        self._self_or_admin(request, record.name)
        patch = check_profile(await json_body(request, types=MERGE_PATCH))
        profile = {k: v for k, v in {**record.profile, **patch}.items() if v is not None}
        self.service.store.set_profile(record.name, profile)
        updated = UserRecord(record.name, record.created, profile)
        return json_response(self._user_json(updated))

    async def _delete_user(self, request: web.Request) -> web.Response:
        record = self._record(request)
        self._self_or_admin(request, record.name)
        self.hub.delete_user(record.name)
        return web.Response(status=204)

    # -- rooms --------------------------------------------------------------------------------
    def _room(self, request: Request) -> Log:
        """The room ``{room}`` of a path (``general`` or ``%23general``), else 404."""
        given = request.match_info["room"]
        try:
            log = self.hub.logs.get(room_named(given))
        except HubError:
            log = None
        if log is None or log.private or log.topic:
            raise Problem(404, "no-such-room", f"no room {given}")
        return log

    def _room_json(self, log: Log) -> dict[str, Any]:
        members = log.members
        return {"room": log.name, "members": len(members),
                "online": sum(1 for m in members if self.hub.is_online(m)),
                "head": log.head, "epoch": log.epoch}  # fmt: skip

    def _rooms(self, request: Request) -> web.Response:
        self.session(request)
        return json_response({"items": self.hub.rooms()})

    async def _create_room(self, request: web.Request) -> web.Response:
        session = self.session(request)
        body = await json_body(request, "room")
        try:
            name = room_named(body["room"])
        except HubError as exc:
            raise hub_problem(exc) from None
        if name in self.hub.logs:
            raise Problem(409, "room-exists", f"{name} exists; join it with PUT .../members/USER")
        response = json_response(self._room_json(self.hub.join(session.user, name)), status=201)
        response.headers["Location"] = f"/api/rooms/{quote(name[1:])}"
        return response

    def _get_room(self, request: Request) -> web.Response:
        self.session(request)
        return json_response(self._room_json(self._room(request)))

    def _members(self, request: Request) -> web.Response:
        self.session(request)
        return json_response({"items": self.hub.who(self._room(request).name)})

    def _membership(self, request: Request) -> tuple[str, str]:
        """``(room, user)`` of a ``/members/{user}`` path, both existing, caller allowed."""
        name = self._room(request).name
        user = request.match_info["user"].lower()
        self._self_or_admin(request, user)
        if not USERNAME.fullmatch(user) or self.service.store.user(user) is None:
            raise Problem(404, "no-such-user", f"no user {user}")
        return name, user

    async def _join(self, request: web.Request) -> web.Response:
        name, user = self._membership(request)
        member = user in self.hub.logs[name].members
        self.hub.join(user, name)  # even so: with peers, the store decides (this node may lag)
        if member:
            return web.Response(status=204)
        return json_response({"room": name, "user": user}, status=201)

    async def _leave(self, request: web.Request) -> web.Response:
        name, user = self._membership(request)
        try:
            self.hub.leave(user, name)
        except HubError as exc:
            raise Problem(404, exc.code, f"{user} is not in {name}") from None
        return web.Response(status=204)

    def _messages(self, request: Request) -> web.Response:
        session = self.session(request)
        name = self._room(request).name
        most = self.hub.limits.history_max
        limit = query_int(request, "limit", PAGE_DEFAULT, 1, most)
        after = query_int(request, "after", -1, 0, MAX_OFFSET)
        try:
            log = self.hub.member_log(session.user, name)
        except HubError as exc:
            raise hub_problem(exc) from None
        store = self.service.store
        stored = store.last(name, limit) if after < 0 else store.read(name, after, limit)
        items = [message_item(m) for m in stored]
        return json_response({"room": name, "epoch": log.epoch, "head": log.head,
                              "items": items})  # fmt: skip

    async def _post_message(self, request: web.Request) -> web.Response:
        session = self.session(request)
        name = self._room(request).name
        body = await json_body(request, "data", text_fields=())
        try:
            text, is_json = message_text(body["data"], self.hub.limits.max_line)
            offset = await self._append(session.user, name, text, is_json)
        except HubError as exc:
            raise hub_problem(exc) from None
        return json_response({"room": name, "offset": offset}, status=201)

    async def _append(self, user: str, name: str, text: str, is_json: bool) -> int:
        """Publish and wait for the offset; with a shared store, the append goes with the
        others of its loop turn (:meth:`Hub.post`) instead of a round trip of its own."""
        stored: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def done(offset: int) -> None:
            if not stored.done():  # the request may have been cancelled meanwhile
                stored.set_result(offset)

        def failed(exc: HubError) -> None:
            if not stored.done():
                stored.set_exception(exc)

        self.hub.post(user, name, text, failed, json=is_json, done=done)
        return await stored

    # -- backend services (API key) -----------------------------------------------------------
    def _require_api_key(self, request: Request) -> None:
        given = request.headers.get("X-Api-Key") or middleware.bearer_token(request.headers) or ""
        if not hmac.compare_digest(given.encode(), self.api_key.encode()):
            raise Problem(401, "bad-api-key", "send the API key as X-Api-Key")

    async def _publish(self, request: web.Request) -> web.Response:
        self._require_api_key(request)
        body = await json_body(request, "topic", "data", text_fields=("topic",))
        try:
            name = check_topic(body["topic"])
            if name.startswith(("#", "@")):
                raise HubError("bad-topic", "the API publishes into push topics, not rooms")
            text, is_json = message_text(body["data"], self.hub.limits.max_line)
            offset = await self._append(API_SENDER, name, text, is_json)
        except HubError as exc:
            raise hub_problem(exc) from None
        return json_response({"topic": name, "offset": offset})

    async def _kick(self, request: web.Request) -> web.Response:
        self._require_api_key(request)
        user = str((await json_body(request, "user"))["user"]).lower()
        closed = self.hub.kick(user, "kicked")
        return json_response({"user": user, "closed": closed})
