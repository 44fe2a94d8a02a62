"""The bare reference of benchmarks/rest.py: a plain aiohttp app on uvloop, no middleware.

usage: python rest_ref.py SPEC.json PORT [--reuse-port] [--chain]

SPEC.json: ``{"user": NAME, "password": PASSWORD, "user_body": TEXT}``, where ``user_body`` is
the exact body ``wirekit serve`` answers to ``GET /api/users/NAME`` (benchmarks/rest.py
fetches it once). Routes:

* ``GET /api/users/{id}``: that body, from a dict in memory (``application/json``; 404 for
  any other id). No authentication: the ``Authorization`` header is not looked at.
* ``POST /api/login`` ``{"user", "password"}``: what wirekit does per login minus the chain
  and the store: the body parsed with orjson, an argon2id verify (argon2-cffi's
  ``PasswordHasher()`` defaults, as ``wirekit serve``; the hash is made at start) in a thread
  (``asyncio.to_thread``), two HS256 JWTs (access and refresh, the claims of wirekit's) signed
  with PyJWT, and JSON of the same shape (``web.json_response``). 401 on a wrong password.

With ``--chain`` (``rest.py --with-chain``), the app gets wirekit's whole middleware chain
(:func:`wirekit.http.middleware.install`, as ``wirekit serve`` installs it, with the limiter out
of reach) whose bearer check accepts any token without verifying it: the chain's own cost,
without the JWT, the store and wirekit's HTTP front.

With ``--reuse-port`` several processes share PORT (SO_REUSEPORT: the kernel spreads the
connections); benchmarks/rest.py starts one per worker. Prints ``ready`` when it listens and
runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
import orjson
import uvloop
from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

TOKEN_TTL, REFRESH_TTL = 3600.0, 30 * 86400.0  # wirekit serve's defaults
BACKLOG = 4096


@dataclass(frozen=True)
class AnySession:
    user: str


def install_chain(app: web.Application, user: str) -> None:
    from wirekit.http import middleware
    from wirekit.hub.web import CSP

    middleware.install(
        app, csp=CSP, origins=(), max_body=64 * 1024, rate=1e9, burst=2 * 10**9,
        rate_limited=lambda r: r.path.startswith("/api/"), verify=lambda token: AnySession(user),
        auth_skip=lambda r: False, request_timeout=30.0,
        streaming=lambda r: r.path in ("/sse", "/ws"),
    )  # fmt: skip


def make_app(spec: dict[str, str], chain: bool = False) -> web.Application:
    user = spec["user"]
    bodies = {user: spec["user_body"].encode()}
    hasher = PasswordHasher()
    hashes = {user: hasher.hash(spec["password"])}
    dummy = hasher.hash(secrets.token_hex(8))
    key = secrets.token_bytes(32)

    async def get_user(request: web.Request) -> web.Response:
        body = bodies.get(request.match_info["id"].lower())
        if body is None:
            return web.Response(status=404)
        return web.Response(body=body, content_type="application/json")

    async def login(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        name, password = str(body["user"]).lower(), str(body["password"])
        stored = hashes.get(name)
        try:
            await asyncio.to_thread(hasher.verify, stored or dummy, password)
        except (VerificationError, InvalidHashError):
            stored = None
        if stored is None:
            return web.Response(status=401)
        now = time.time()
        sid, jti = secrets.token_hex(8), secrets.token_hex(8)
        access = jwt.encode({"sub": name, "iat": now, "exp": now + TOKEN_TTL, "jti": sid,
                             "typ": "access"}, key, algorithm="HS256")  # fmt: skip
        refresh = jwt.encode({"sub": name, "iat": now, "exp": now + REFRESH_TTL, "jti": jti,
                              "sid": sid, "typ": "refresh"}, key, algorithm="HS256")  # fmt: skip
        grant = {"user": name, "token": access, "refresh_token": refresh,
                 "token_type": "Bearer", "expires_in": int(TOKEN_TTL)}  # fmt: skip
        return web.json_response(grant)

    app = web.Application()
    if chain:
        install_chain(app, user)
    app.router.add_get("/api/users/{id}", get_user)
    app.router.add_post("/api/login", login)
    return app


async def serve(spec: dict[str, str], port: int, reuse_port: bool, chain: bool) -> None:
    # handler_cancellation as wirekit's runner: a request whose client left is cancelled (its
    # argon2 verify, if still queued for a thread, never runs)
    runner = web.AppRunner(
        make_app(spec, chain), handle_signals=False, access_log=None, handler_cancellation=True
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=BACKLOG, reuse_port=reuse_port or None)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    flags = {"--reuse-port", "--chain"}
    args = [a for a in sys.argv[1:] if a not in flags]
    if len(args) != 2 or any(a.startswith("-") for a in args):
        raise SystemExit(__doc__.split("\n\n")[1])
    spec = json.loads(Path(args[0]).read_text())
    given = set(sys.argv[1:])
    uvloop.run(serve(spec, int(args[1]), "--reuse-port" in given, "--chain" in given))


if __name__ == "__main__":
    main()
