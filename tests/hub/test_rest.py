"""The REST API under /api: users and profiles, sessions (refresh, expiry, revocation), rooms and
their messages, ETags, with real HTTP clients, WebSockets and TCP chat peers on loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from wirekit.hub.rest import RestApi
from wirekit.hub.store import UserRecord, remember

from .conftest import HubFixture, Web, restart

pytestmark = pytest.mark.anyio


class Api:
    """JSON calls as one logged-in user."""

    def __init__(self, web: Web, user: str, grant: dict[str, Any]) -> None:
        self.web = web
        self.user = user
        self.grant = grant

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.grant['token']}"}

    async def call(
        self, method: str, path: str, status: int | None = None, **kwargs: Any
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        async with self.web.session.request(
            method, self.web.base + path, headers=headers, **kwargs
        ) as resp:
            body = await resp.json(content_type=None) if await resp.read() else None
            if status is not None:
                assert resp.status == status, (resp.status, body)
            return resp.status, body, resp


async def register(web: Web, user: str, status: int = 201) -> Api:
    body = {"user": user, "password": f"password-{user}"}
    async with web.session.post(web.base + "/api/users", json=body) as resp:
        grant = await resp.json(content_type=None)
        assert resp.status == status, grant
        if status == 201:
            assert resp.headers["Location"] == f"/api/users/{user.lower()}"
    return Api(web, user.lower(), grant)


async def login(web: Web, user: str) -> dict[str, Any]:
    body = {"user": user, "password": f"password-{user}"}
    async with web.session.post(web.base + "/api/login", json=body) as resp:
        assert resp.status == 200
        grant: dict[str, Any] = await resp.json()
        return grant


async def refresh(web: Web, token: str) -> tuple[int, dict[str, Any]]:
    async with web.session.post(web.base + "/api/refresh", json={"refresh_token": token}) as r:
        return r.status, await r.json(content_type=None)


async def test_register_returns_a_session_and_lists_page_by_cursor(web: Web) -> None:
    alice = await register(web, "Alice")
    grant = alice.grant
    assert grant["user"] == "alice" and grant["token_type"] == "Bearer"
    assert grant["expires_in"] == 3600 and grant["refresh_token"] != grant["token"]
    for name in ("al", "alfred", "bob", "albert", "carol", "alina", "al-2"):
        await register(web, name)
    seen: list[str] = []
    path = "/api/users?limit=3"
    while True:
        _, page, resp = await alice.call("GET", path, 200)
        assert len(page["items"]) <= 3
        seen += [u["id"] for u in page["items"]]
        if page["next_cursor"] is None:
            assert "Link" not in resp.headers
            break
        assert resp.headers["Link"].endswith('; rel="next"')
        path = resp.headers["Link"][1:].split(">;")[0]
    assert seen == sorted(seen) == ["al", "al-2", "albert", "alfred", "alice", "alina", "bob",
                                    "carol"]  # fmt: skip
    _, page, _ = await alice.call("GET", "/api/users?prefix=AL&limit=2", 200)
    assert [u["id"] for u in page["items"]] == ["al", "al-2"]
    _, rest, _ = await alice.call("GET", f"/api/users?prefix=al&cursor={page['next_cursor']}",
                                  200)  # fmt: skip
    assert [u["id"] for u in rest["items"]] == ["albert", "alfred", "alice", "alina"]
    assert rest["next_cursor"] is None
    first = page["items"][0]
    assert first == {"id": "al", "display_name": None, "bio": None, "age": None,
                     "created": first["created"], "admin": False, "online": False}  # fmt: skip
    assert first["created"].endswith("Z")
    _, tail, _ = await alice.call("GET", "/api/users?cursor=b", 200)  # any name: after it
    assert [u["id"] for u in tail["items"]] == ["bob", "carol"]
    for bad in (
        "limit=0",
        "limit=101",
        "limit=x",
        "limit=%C2%B2",
        "limit=" + "9" * 5000,
        "prefix=a%20b",
    ):
        status, problem, _ = await alice.call("GET", f"/api/users?{bad}")
        assert status == 400 and problem["status"] == 400, (bad, problem)
    async with web.session.get(web.base + "/api/users") as resp:
        assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
    await register(web, "alice", 409)
    await register(web, "x", 422)


async def test_profiles_with_etags_merge_patch_and_permissions(hub: HubFixture, web: Web) -> None:
    await restart(hub, admins=frozenset({"root"}))
    alice, bob, root = [await register(web, n) for n in ("alice", "bob", "root")]
    _, user, resp = await bob.call("GET", "/api/users/ALICE", 200)
    tag = resp.headers["ETag"]
    assert user["id"] == "alice" and user["admin"] is False
    status, body, again = await bob.call("GET", "/api/users/alice", headers={"If-None-Match": tag})
    assert status == 304 and body is None and again.headers["ETag"] == tag
    patch = {"display_name": "Alice A.", "bio": "hi", "age": 33}
    _, changed, _ = await alice.call("PATCH", "/api/users/alice", 200, json=patch)
    assert changed["display_name"] == "Alice A." and changed["age"] == 33
    status, fresh, resp = await bob.call("GET", "/api/users/alice", headers={"If-None-Match": tag})
    assert status == 200 and fresh == changed and resp.headers["ETag"] != tag
    merge = {"Content-Type": "application/merge-patch+json"}
    _, cleared, _ = await alice.call("PATCH", "/api/users/alice", 200, data=b'{"bio": null}',
                                     headers=merge)  # fmt: skip
    assert cleared["bio"] is None and cleared["display_name"] == "Alice A."
    for bad in ({"age": -1}, {"age": True}, {"age": "33"}, {"display_name": "x" * 65},
                {"display_name": "a\nb"}, {"email": "a@b"}):  # fmt: skip
        status, problem, _ = await alice.call("PATCH", "/api/users/alice", json=bad)
        assert status == 422 and problem["code"] == "bad-profile", bad
    status, problem, _ = await alice.call("PATCH", "/api/users/alice", data=b"age=3",
                                          headers={"Content-Type": "text/plain"})  # fmt: skip
    assert status == 415
    assert (
        await alice.call(
            "PATCH", "/api/users/alice", data=b"{", headers={"Content-Type": "application/json"}
        )
    )[0] == 400
    assert (await alice.call("PATCH", "/api/users/alice", json=[1]))[0] == 422
    status, problem, _ = await bob.call("PATCH", "/api/users/alice", json={"age": 1})
    assert status == 403 and problem["code"] == "forbidden"
    _, by_admin, _ = await root.call("PATCH", "/api/users/alice", 200, json={"age": 34})
    assert by_admin["age"] == 34
    assert (await root.call("GET", "/api/users/root", 200))[1]["admin"] is True
    assert (await bob.call("GET", "/api/users/nobody"))[0] == 404
    assert (await bob.call("GET", "/api/users/..%2Fetc"))[0] == 404
    # the profile is stored: it survives a restart
    await restart(hub)
    alice.grant = await login(web, "alice")
    assert (await alice.call("GET", "/api/users/alice", 200))[1]["age"] == 34
    status, problem, resp = await alice.call("PUT", "/api/users/alice")
    assert status == 405 and problem["status"] == 405 and "PATCH" in resp.headers["Allow"]


async def test_delete_closes_connections_leaves_rooms_and_keeps_the_name(
    hub: HubFixture, web: Web
) -> None:
    await restart(hub, admins=frozenset({"root"}))
    alice, bob, root = [await register(web, n) for n in ("alice", "bob", "root")]
    ws_alice = await web.connect()
    await ws_alice.ok("auth", token=alice.grant["token"])
    await ws_alice.ok("sub", topic="#general")
    chat_bob = await hub.peer()
    await chat_bob.send(f"/auth {bob.grant['token']}", "/join #general")
    await chat_bob.expect(lambda e: e.get("cmd") == "joined")
    assert (await bob.call("DELETE", "/api/users/alice"))[0] == 403
    await alice.call("DELETE", "/api/users/alice", 204)
    assert await ws_alice.closed() == (1008, "account deleted")
    left = await chat_bob.expect(lambda e: e["type"] == "leave")
    assert left == {"type": "leave", "room": "#general", "user": "alice"}
    _, members, _ = await bob.call("GET", "/api/rooms/general/members", 200)
    assert members["items"] == [{"user": "bob", "online": True}]
    status, problem, _ = await alice.call("GET", "/api/users/bob")
    assert status == 401 and problem["code"] == "bad-token"
    assert (await bob.call("GET", "/api/users/alice"))[0] == 404
    assert (await refresh(web, alice.grant["refresh_token"]))[0] == 401
    await register(web, "alice", 409)  # the name is not handed to someone else
    async with web.session.post(
        web.base + "/api/login", json={"user": "alice", "password": "password-alice"}
    ) as resp:
        assert resp.status == 401  # fmt: skip
    await root.call("DELETE", "/api/users/bob", 204)
    assert (await chat_bob.expect(lambda e: e["type"] == "error"))["code"] == "account-deleted"
    _, page, _ = await root.call("GET", "/api/users", 200)
    assert [u["id"] for u in page["items"]] == ["root"]


async def test_refresh_rotates_detects_reuse_and_logout_revokes_both(web: Web) -> None:
    alice = await register(web, "alice")
    first = alice.grant
    status, second = await refresh(web, first["refresh_token"])
    assert status == 200 and second["token"] != first["token"]
    assert second["refresh_token"] != first["refresh_token"]
    alice.grant = second
    await alice.call("GET", "/api/users/alice", 200)
    # a refresh token is not an access token, nor the reverse
    alice.grant = {"token": second["refresh_token"]}
    assert (await alice.call("GET", "/api/users/alice"))[0] == 401
    assert (await refresh(web, second["token"]))[0] == 401
    # using the first refresh token again: theft; the whole session is revoked
    status, problem = await refresh(web, first["refresh_token"])
    assert status == 401 and "already used" in problem["detail"]
    alice.grant = second
    assert (await alice.call("GET", "/api/users/alice"))[0] == 401
    assert (await refresh(web, second["refresh_token"]))[0] == 401
    # logout revokes the access token and the refresh token of that session only
    other = Api(web, "alice", await login(web, "alice"))
    kept = Api(web, "alice", await login(web, "alice"))
    await other.call("POST", "/api/logout", 204)
    assert (await other.call("GET", "/api/users/alice"))[0] == 401
    assert (await refresh(web, other.grant["refresh_token"]))[0] == 401
    await kept.call("GET", "/api/users/alice", 200)
    assert (await refresh(web, kept.grant["refresh_token"]))[0] == 200
    for body in ({"refresh_token": 5}, {}, {"refresh_token": "forged"}):
        async with web.session.post(web.base + "/api/refresh", json=body) as resp:
            assert resp.status in (401, 422), body


async def test_access_tokens_expire_and_refresh_renews_them(hub: HubFixture, web: Web) -> None:
    await restart(hub, token_ttl=3.0)  # long enough for a loaded machine to use it in time
    alice = await register(web, "alice")
    assert alice.grant["expires_in"] == 3
    await alice.call("GET", "/api/users/alice", 200)
    await asyncio.sleep(3.5)
    status, problem, _ = await alice.call("GET", "/api/users/alice")
    assert status == 401 and problem["code"] == "token-expired"
    peer = await web.connect()
    assert (await peer.request("auth", token=alice.grant["token"]))["code"] == "token-expired"
    status, renewed = await refresh(web, alice.grant["refresh_token"])
    assert status == 200
    alice.grant = renewed
    await alice.call("GET", "/api/users/alice", 200)
    await peer.ok("auth", token=renewed["token"])


async def test_rooms_members_and_messages(hub: HubFixture, web: Web) -> None:
    await restart(hub, admins=frozenset({"root"}))
    alice, bob, root = [await register(web, n) for n in ("alice", "bob", "root")]
    _, room, resp = await alice.call("POST", "/api/rooms", 201, json={"room": "#Dev"})
    assert resp.headers["Location"] == "/api/rooms/dev"
    assert room == {"room": "#dev", "members": 1, "online": 0, "head": 0, "epoch": room["epoch"]}
    assert (await bob.call("POST", "/api/rooms", json={"room": "dev"}))[0] == 409
    status, problem, _ = await bob.call("POST", "/api/rooms", json={"room": "#no spaces"})
    assert status == 422 and problem["code"] == "bad-room"
    _, rooms, _ = await bob.call("GET", "/api/rooms", 200)
    assert rooms["items"] == [{"room": "#dev", "members": 1, "online": 0}]
    _, same, resp = await bob.call("GET", "/api/rooms/%23dev", 200)
    assert same == room
    status, _, _ = await bob.call("GET", "/api/rooms/dev",
                                  headers={"If-None-Match": resp.headers["ETag"]})  # fmt: skip
    assert status == 304
    assert (await bob.call("GET", "/api/rooms/nope"))[0] == 404
    # a TCP chat member sees what is posted over REST, and the other way round
    chat = await hub.peer()
    await chat.send(f"/auth {alice.grant['token']}")
    await chat.expect(lambda e: e.get("cmd") == "auth")
    _, posted, _ = await alice.call("POST", "/api/rooms/dev/messages", 201, json={"data": "hi"})
    assert posted == {"room": "#dev", "offset": 1}
    live = await chat.expect(lambda e: e["type"] == "msg")
    assert live["text"] == "hi" and live["from"] == "alice" and live["offset"] == 1
    await alice.call("POST", "/api/rooms/dev/messages", 201, json={"data": {"n": [1, 2]}})
    await chat.send("/join #dev", "from chat")
    await chat.expect(lambda e: e["type"] == "msg" and e["text"] == "from chat")
    # bob is not a member: no history, no posting
    status, problem, _ = await bob.call("GET", "/api/rooms/dev/messages")
    assert status == 403 and problem["code"] == "not-a-member"
    assert (await bob.call("POST", "/api/rooms/dev/messages", json={"data": "x"}))[0] == 403
    # membership: self, or an admin for anyone
    assert (await bob.call("PUT", "/api/rooms/dev/members/alice"))[0] == 403
    _, joined, _ = await bob.call("PUT", "/api/rooms/dev/members/bob", 201)
    assert joined == {"room": "#dev", "user": "bob"}
    await bob.call("PUT", "/api/rooms/dev/members/bob", 204)
    await root.call("PUT", "/api/rooms/dev/members/root", 201)
    assert (await root.call("PUT", "/api/rooms/dev/members/ghost"))[0] == 404
    _, members, _ = await bob.call("GET", "/api/rooms/dev/members", 200)
    assert members["items"] == [{"user": "alice", "online": True}, {"user": "bob", "online": False},
                                {"user": "root", "online": False}]  # fmt: skip
    _, page, _ = await bob.call("GET", "/api/rooms/dev/messages", 200)
    assert [(m["offset"], m["from"], m["data"]) for m in page["items"]] == [
        (1, "alice", "hi"), (2, "alice", {"n": [1, 2]}), (3, "alice", "from chat")]  # fmt: skip
    assert page["head"] == 3 and page["epoch"] == room["epoch"]
    _, after, _ = await bob.call("GET", "/api/rooms/dev/messages?after=1&limit=1", 200)
    assert [m["offset"] for m in after["items"]] == [2]
    _, last, _ = await bob.call("GET", "/api/rooms/dev/messages?limit=1", 200)
    assert [m["offset"] for m in last["items"]] == [3]
    assert (await bob.call("GET", "/api/rooms/dev/messages?after=99", 200))[1]["items"] == []
    for bad in ("after=-1", "limit=0", "limit=1001", "after=x"):
        assert (await bob.call("GET", f"/api/rooms/dev/messages?{bad}"))[0] == 400, bad
    too_big = {"data": "x" * (hub.limits.max_line + 1)}
    assert (await bob.call("POST", "/api/rooms/dev/messages", json=too_big))[0] == 413
    await root.call("DELETE", "/api/rooms/dev/members/bob", 204)
    assert (await bob.call("DELETE", "/api/rooms/dev/members/bob"))[0] == 404
    assert (await bob.call("GET", "/api/rooms/dev/messages"))[0] == 403
    # everything above is stored
    await restart(hub)
    bob.grant = await login(web, "bob")
    _, members, _ = await bob.call("GET", "/api/rooms/dev/members", 200)
    assert [m["user"] for m in members["items"]] == ["alice", "root"]


async def test_rate_limits_answer_429_with_retry_after(hub: HubFixture, web: Web) -> None:
    await hub.stop()
    await hub.start(api_rate=1.0, api_burst=3, login_per_user=2)
    alice = await register(web, "alice")  # one login attempt and one API request spent
    statuses = [(await alice.call("GET", "/api/users/alice"))[0] for _ in range(4)]
    assert statuses[:2] == [200, 200] and statuses[-1] == 429, statuses
    status, problem, resp = await alice.call("GET", "/api/users/alice")
    assert status == 429 and problem["status"] == 429 and int(resp.headers["Retry-After"]) >= 1
    await asyncio.sleep(1.1)  # the bucket refills at api_rate
    assert (await alice.call("GET", "/api/users/alice"))[0] == 200
    await hub.stop()
    await hub.start(api_rate=50.0, api_burst=100, login_per_user=2)
    body = {"user": "alice", "password": "wrong-password"}
    for status in (401, 401, 429):  # two attempts a minute for one account
        async with web.session.post(web.base + "/api/login", json=body) as resp:
            problem = await resp.json()
            assert resp.status == status, problem
    assert problem["detail"] == "too many login attempts; wait a minute"


async def test_a_users_json_is_made_once_per_version_and_never_stale(
    hub: HubFixture, web: Web, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = await register(web, "alice"), await register(web, "bob")
    assert hub.service is not None
    store = hub.service.store
    assert store.user("alice") is store.user("alice")  # the store keeps the record
    made: list[str] = []
    user_json = RestApi._user_json

    def counted(api: RestApi, record: UserRecord) -> dict[str, Any]:
        made.append(record.name)
        return user_json(api, record)

    monkeypatch.setattr(RestApi, "_user_json", counted)

    async def get() -> tuple[dict[str, Any], str]:
        async with web.session.get(web.base + "/api/users/alice", headers=bob.headers) as resp:
            assert resp.status == 200
            raw = await resp.read()
        user: dict[str, Any] = orjson.loads(raw)
        assert raw == orjson.dumps(user)  # compact JSON
        return user, resp.headers["ETag"]

    first, tag = await get()
    assert await get() == (first, tag) and made == ["alice"]  # the second GET: from memory
    _, patched, _ = await alice.call("PATCH", "/api/users/alice", 200, json={"bio": "new"})
    user, new_tag = await get()
    assert user == patched and user["bio"] == "new" and new_tag != tag
    store.set_profile("alice", {"bio": "by another writer"})  # under the API's feet
    assert (await get())[0]["bio"] == "by another writer"
    peer = await web.connect()
    await peer.ok("auth", token=alice.grant["token"])
    assert (await get())[0]["online"] is True
    await peer.ws.close()
    for _ in range(100):  # until the hub has seen the connection go
        if "alice" not in hub.service.hub.online:
            break
        await asyncio.sleep(0.02)
    assert (await get())[0]["online"] is False
    await alice.call("DELETE", "/api/users/alice", 204)
    assert store.user("alice") is None
    assert (await bob.call("GET", "/api/users/alice"))[0] == 404


def test_remember_keeps_at_most_so_many_forgetting_the_oldest() -> None:
    cache: dict[str, int] = {}
    for n, key in enumerate("abc"):
        remember(cache, key, n, 3)
    remember(cache, "b", 10, 3)  # a key it has: replaced, nothing forgotten
    assert cache == {"a": 0, "b": 10, "c": 2}
    remember(cache, "d", 3, 3)
    assert cache == {"b": 10, "c": 2, "d": 3}
