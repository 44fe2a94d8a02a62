"""Accounts: argon2id password hashes, rate-limited logins, signed session tokens.

Usernames: 2-32 characters, lowercase ASCII letters, digits, ``_`` and ``-``, starting with a
letter (input is lowercased). Passwords: 8-1024 characters. Tokens are HS256 JWTs signed with
``DATA/secret.key`` (created on first start, mode 0600); every front accepts the same tokens.

A login starts a *session* and gets two tokens that name it (``sid``): a short-lived access
token (``token_ttl``, 1 hour) for the fronts, and a refresh token (``refresh_ttl``, 30 days)
that :meth:`Accounts.refresh` exchanges, once, for a new pair. Presenting a refresh token a
second time revokes its whole session (it was stolen, or the client is broken). Logging out
revokes the session: both tokens stop working.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..errors import WirekitError
from ..limits import DEFAULTS, Limits
from ..proto.ratelimit import KeyedBuckets
from .store import Store, remember

USERNAME = re.compile(r"[a-z][a-z0-9_-]{1,31}")
MIN_PASSWORD, MAX_PASSWORD = 8, 1024
TOKEN_TTL = 3600.0
REFRESH_TTL = 30 * 24 * 3600.0
VERIFIED_CACHE = 10_000  # access tokens remembered as checked


@dataclass(frozen=True, slots=True)
class Session:
    """What a valid token says: who, which token (``id``, for revocation), until when."""

    user: str
    id: str
    expires: float


@dataclass(frozen=True, slots=True)
class Grant:
    """What a login, a registration or a refresh returns."""

    user: str
    token: str  # the access token
    refresh_token: str
    session: Session
    expires_in: float  # seconds the access token is valid for

    def json(self) -> dict[str, Any]:
        return {"user": self.user, "token": self.token, "refresh_token": self.refresh_token,
                "token_type": "Bearer", "expires_in": int(self.expires_in)}  # fmt: skip


class AuthError(WirekitError):
    """A refused register/login/token. ``code`` is the error code sent to the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_username(name: str) -> str:
    name = name.lower()
    if not USERNAME.fullmatch(name):
        raise AuthError(
            "bad-username",
            "usernames are 2-32 characters: a-z, 0-9, _ and -, starting with a letter",
        )
    return name


def load_secret(path: Path, make: Callable[[], bytes]) -> bytes:
    """The secret in ``path``, created with ``make()`` (mode 0600) on first use."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        secret = make()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secret)
        return secret


def load_key(data_dir: Path) -> bytes:
    """The token signing key in ``data_dir/secret.key``."""
    return load_secret(data_dir / "secret.key", lambda: secrets.token_bytes(32))


def load_api_key(data_dir: Path) -> str:
    """The API key for ``POST /api/publish`` in ``data_dir/api.key``."""
    return load_secret(data_dir / "api.key", lambda: secrets.token_urlsafe(32).encode()).decode()


class Accounts:
    def __init__(
        self,
        store: Store,
        key: bytes,
        limits: Limits = DEFAULTS,
        hasher: PasswordHasher | None = None,
        token_ttl: float = TOKEN_TTL,
        refresh_ttl: float = REFRESH_TTL,
    ) -> None:
        self._store = store
        self._key = key
        self._hasher = hasher or PasswordHasher()  # argon2id, RFC 9106 low-memory profile
        self.token_ttl = token_ttl
        self.refresh_ttl = refresh_ttl
        # Tokens already verified, while nothing was revoked or deleted since (the store's
        # generation): most requests skip the signature check and the store lookups.
        self._verified: dict[str, tuple[Session, int]] = {}
        self._per_user = KeyedBuckets(limits.login_per_user / 60, limits.login_per_user)
        self._per_address = KeyedBuckets(limits.login_per_address / 60, limits.login_per_address)
        # A hash to verify against for unknown users, so timing does not reveal who exists.
        self._dummy = self._hasher.hash(secrets.token_hex(8))

    async def register(self, name: str, password: str, address: str) -> Grant:
        """Create the account and log it in."""
        name = check_username(name)
        self.check_password(password)
        self._throttle(name, address)
        hashed = await asyncio.to_thread(self._hasher.hash, password)
        if not self._store.create_user(name, hashed):
            raise AuthError("name-taken", f"the name {name} is taken")
        return self.grant(name)

    async def login(self, name: str, password: str, address: str) -> Grant:
        """Check the password and start a session."""
        name = name.lower()
        self._throttle(name, address)
        stored = self._store.password_hash(name)
        try:
            await asyncio.to_thread(self._hasher.verify, stored or self._dummy, password)
        except (VerificationError, InvalidHashError):
            stored = None
        if stored is None:
            raise AuthError("bad-login", "wrong user name or password")
        return self.grant(name)

    @staticmethod
    def check_password(password: str) -> None:
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise AuthError(
                "bad-password", f"passwords are {MIN_PASSWORD}-{MAX_PASSWORD} characters"
            )

    def grant(self, name: str, sid: str | None = None) -> Grant:
        """A new access and refresh token for ``name``, in session ``sid`` (default: new)."""
        now = time.time()
        sid = sid or secrets.token_hex(8)
        session = Session(name, sid, now + self.token_ttl)
        access = self._sign({"sub": name, "iat": now, "exp": session.expires, "jti": sid,
                             "typ": "access"})  # fmt: skip
        jti = secrets.token_hex(8)
        refresh = self._sign({"sub": name, "iat": now, "exp": now + self.refresh_ttl,
                              "jti": jti, "sid": sid, "typ": "refresh"})  # fmt: skip
        return Grant(name, access, refresh, session, self.token_ttl)

    def session(self, token: str) -> Session:
        """The session of an access token; :class:`AuthError` if forged, revoked, expired or
        a refresh token."""
        cached = self._verified.get(token)
        if cached is not None:
            session, generation = cached
            if generation == self._store.generation and time.time() < session.expires:
                return session
            del self._verified[token]
        session = self._verify(token)
        remember(self._verified, token, (session, self._store.generation), VERIFIED_CACHE)
        return session

    def _verify(self, token: str) -> Session:
        claims = self._claims(token)
        if claims.get("typ", "access") != "access":
            raise AuthError("bad-token", "that is a refresh token: POST it to /api/refresh")
        session = Session(str(claims["sub"]), str(claims.get("jti", "")), float(claims["exp"]))
        if session.id and self._store.revoked(session.id):
            raise AuthError("bad-token", "the token was revoked (logged out)")
        if self._store.password_hash(session.user) is None:
            raise AuthError("bad-token", "the token's account no longer exists")
        return session

    def refresh(self, refresh_token: str) -> Grant:
        """Exchange a refresh token, once, for a new pair in the same session."""
        claims = self._claims(refresh_token)
        if claims.get("typ") != "refresh":
            raise AuthError("bad-token", "that is not a refresh token")
        user, sid, jti = str(claims["sub"]), str(claims["sid"]), str(claims["jti"])
        if self._store.revoked(sid):
            raise AuthError("bad-token", "the session was revoked (logged out)")
        if self._store.revoked(jti):
            self._store.revoke(sid, time.time() + self.refresh_ttl)
            self._store.commit()
            raise AuthError("bad-token", "the refresh token was already used: session revoked")
        if self._store.password_hash(user) is None:
            raise AuthError("bad-token", "the token's account no longer exists")
        self._store.revoke(jti, float(claims["exp"]))
        self._store.commit()
        return self.grant(user, sid)

    def revoke(self, session: Session) -> None:
        """Log out: every token of the session is refused from now on."""
        self._store.revoke(session.id, time.time() + max(self.token_ttl, self.refresh_ttl))
        self._store.commit()

    def _sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self._key, algorithm="HS256")

    def _claims(self, token: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token, self._key, algorithms=["HS256"], options={"require": ["sub", "exp", "jti"]}
            )
        except jwt.ExpiredSignatureError:
            raise AuthError(
                "token-expired", "the token has expired: refresh it or log in again"
            ) from None
        except jwt.PyJWTError:
            raise AuthError("bad-token", "the token is not valid") from None

    def _throttle(self, name: str, address: str) -> None:
        now = time.monotonic()
        if not (self._per_user.take(name, now) and self._per_address.take(address, now)):
            raise AuthError("rate-limited", "too many login attempts; wait a minute")
