"""Accounts: argon2id password hashes, rate-limited logins, signed session tokens.

Usernames: 2-32 characters, lowercase ASCII letters, digits, ``_`` and ``-``, starting with a
letter (input is lowercased). Passwords: 8-1024 characters. Tokens are HS256 JWTs signed with
``DATA/secret.key`` (created on first start, mode 0600); every front accepts the same tokens.
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

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..errors import WirekitError
from ..limits import DEFAULTS, Limits
from ..proto.ratelimit import KeyedBuckets
from .store import Store

USERNAME = re.compile(r"[a-z][a-z0-9_-]{1,31}")
MIN_PASSWORD, MAX_PASSWORD = 8, 1024
TOKEN_TTL = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Session:
    """What a valid token says: who, which token (``id``, for revocation), until when."""

    user: str
    id: str
    expires: float


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


def token_id(token: str) -> str:
    """The ``jti`` of a token this server issued (not verified: use on checked tokens)."""
    return str(jwt.decode(token, options={"verify_signature": False}).get("jti", ""))


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
    ) -> None:
        self._store = store
        self._key = key
        self._hasher = hasher or PasswordHasher()  # argon2id, RFC 9106 low-memory profile
        self._token_ttl = token_ttl
        self._per_user = KeyedBuckets(limits.login_per_user / 60, limits.login_per_user)
        self._per_address = KeyedBuckets(limits.login_per_address / 60, limits.login_per_address)
        # A hash to verify against for unknown users, so timing does not reveal who exists.
        self._dummy = self._hasher.hash(secrets.token_hex(8))

    async def register(self, name: str, password: str, address: str) -> tuple[str, str]:
        """Create the account; returns ``(user, token)``."""
        name = check_username(name)
        if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise AuthError(
                "bad-password", f"passwords are {MIN_PASSWORD}-{MAX_PASSWORD} characters"
            )
        self._throttle(name, address)
        hashed = await asyncio.to_thread(self._hasher.hash, password)
        if not self._store.create_user(name, hashed):
            raise AuthError("name-taken", f"the name {name} is taken")
        return name, self.issue(name)

    async def login(self, name: str, password: str, address: str) -> tuple[str, str]:
        """Check the password; returns ``(user, token)``."""
        name = name.lower()
        self._throttle(name, address)
        stored = self._store.password_hash(name)
        try:
            await asyncio.to_thread(self._hasher.verify, stored or self._dummy, password)
        except (VerificationError, InvalidHashError):
            stored = None
        if stored is None:
            raise AuthError("bad-login", "wrong user name or password")
        return name, self.issue(name)

    def issue(self, name: str) -> str:
        now = int(time.time())
        claims = {"sub": name, "iat": now, "exp": now + int(self._token_ttl)}
        return jwt.encode({**claims, "jti": secrets.token_hex(8)}, self._key, algorithm="HS256")

    def verify(self, token: str) -> str:
        """The user a token was issued to; :class:`AuthError` if forged, revoked or expired."""
        return self.session(token).user

    def session(self, token: str) -> Session:
        try:
            claims = jwt.decode(
                token, self._key, algorithms=["HS256"], options={"require": ["sub", "exp"]}
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token-expired", "the token has expired; log in again") from None
        except jwt.PyJWTError:
            raise AuthError("bad-token", "the token is not valid") from None
        session = Session(str(claims["sub"]), str(claims.get("jti", "")), float(claims["exp"]))
        if session.id and self._store.revoked(session.id):
            raise AuthError("bad-token", "the token was revoked (logged out)")
        if self._store.password_hash(session.user) is None:
            raise AuthError("bad-token", "the token's account no longer exists")
        return session

    def revoke(self, session: Session) -> None:
        """Log out: the token is refused from now on."""
        self._store.revoke(session.id, session.expires)
        self._store.commit()

    def _throttle(self, name: str, address: str) -> None:
        now = time.monotonic()
        if not (self._per_user.take(name, now) and self._per_address.take(address, now)):
            raise AuthError("rate-limited", "too many login attempts; wait a minute")
