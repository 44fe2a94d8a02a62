"""Where the hub keeps accounts, logs, memberships and messages.

:class:`Store` is the interface the engine uses; :class:`SqliteStore` is the embedded default
(one SQLite file in WAL mode under the data directory). The multi-node engine adds a Redis
store behind the same interface.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from ..errors import Unavailable, UsageError

SCHEMA_VERSION = 4
# Defaults of the multi-node engine, here so that `wirekit serve` (and every other command)
# does not import redis-py unless --engine asks for it.
MAX_LENGTH = 1_000_000  # messages kept per log (approximately: Redis trims whole nodes)
PRESENCE_TTL = 30.0  # seconds before a crashed node's users go offline
USER_CACHE = 10_000  # accounts kept in memory (SqliteStore's records, the REST API's JSON)

K = TypeVar("K")
V = TypeVar("V")


def remember(cache: dict[K, V], key: K, value: V, most: int) -> None:
    """``cache[key] = value``, forgetting the oldest entry when ``cache`` already holds ``most``."""
    if len(cache) >= most and key not in cache:
        del cache[next(iter(cache))]
    cache[key] = value


class HubError(Exception):
    """A request the hub refuses; ``code`` goes back to the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class StoreUnavailable(HubError, Unavailable):
    """The store cannot be reached (the multi-node engine's Redis is down): nothing was done;
    the client may retry. HTTP answers 503, the chat and WebSocket fronts an ``unavailable``
    error."""

    def __init__(self, message: str) -> None:
        super().__init__("unavailable", message)


Stored = Callable[[int], None]  # told the offset a message got
Failed = Callable[[HubError], None]  # told why a message could not be stored


@dataclass(frozen=True, slots=True)
class StoredMessage:
    log: str
    offset: int
    ts: float
    sender: str
    text: str
    json: bool = False  # ``text`` is the JSON encoding of a non-string value


@dataclass(frozen=True, slots=True)
class UserRecord:
    name: str
    created: float
    profile: Mapping[str, Any]  # display_name, bio, age: see wirekit.hub.rest


@dataclass(frozen=True, slots=True)
class Membership:
    """What :meth:`Store.add_member` or :meth:`Store.remove_member` did, in the same atomic
    step: whether the membership changed, the log's head then, and its membership sequence
    (bumped by every change of the log's members: with several nodes, an announced change with
    a lower sequence than the state a node has seen is older than that state)."""

    changed: bool
    head: int
    seq: int


@dataclass(frozen=True, slots=True)
class LogInfo:
    name: str
    epoch: str
    head: int  # offset of the newest message; 0 when empty


class Store(Protocol):
    generation: int  # bumped by every revocation and account deletion (cached tokens recheck)

    def create_user(self, name: str, password_hash: str) -> bool:
        """Add an account; ``False`` if the name is taken."""

    def password_hash(self, name: str) -> str | None:
        """The account's hash; ``None`` if there is no such account (or it was deleted)."""

    def user(self, name: str) -> UserRecord | None:
        """The account (``None`` if there is none); a cache may hand out the same record until
        the account changes."""

    def users(self, prefix: str, after: str, limit: int) -> list[UserRecord]:
        """Accounts whose names start with ``prefix`` and sort after ``after``, by name."""

    def set_profile(self, name: str, profile: dict[str, Any]) -> None: ...

    def delete_user(self, name: str) -> bool:
        """Delete the account and its memberships. The name stays taken (a tombstone), so
        nobody can inherit its conversations. ``False`` if there was no such account."""

    def logs(self) -> list[LogInfo]: ...

    def create_log(self, name: str) -> LogInfo:
        """Create the log ``name`` (a new epoch) or return the existing one."""

    def append(self, log: str, ts: float, sender: str, text: str, json: bool = False) -> int:
        """Append one message and return its offset (the previous head + 1)."""

    def read(self, log: str, after: int, limit: int) -> list[StoredMessage]:
        """Messages with offset > ``after``, oldest first, at most ``limit``."""

    def last(self, log: str, count: int, before: int | None = None) -> list[StoredMessage]:
        """The newest ``count`` messages (older than offset ``before``), oldest first."""

    def members(self, log: str) -> list[str]: ...

    def add_member(self, log: str, user: str) -> Membership:
        """Make ``user`` a member of ``log`` (whether or not they were already)."""

    def remove_member(self, log: str, user: str) -> Membership:
        """``user`` is no longer a member of ``log`` (whether or not they were)."""

    def revoke(self, token_id: str, expires: float) -> None:
        """Refuse the token ``token_id`` from now on (kept until it would expire anyway)."""

    def revoked(self, token_id: str) -> bool: ...

    def commit(self) -> None:
        """Make every append so far durable."""

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, hash TEXT NOT NULL, created REAL NOT NULL,
    profile TEXT NOT NULL DEFAULT '{}', deleted REAL);
CREATE TABLE IF NOT EXISTS logs (
    name TEXT PRIMARY KEY, epoch TEXT NOT NULL, head INTEGER NOT NULL, created REAL NOT NULL,
    mseq INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS members (
    log TEXT NOT NULL, user TEXT NOT NULL, PRIMARY KEY (log, user)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS members_by_user ON members (user);
CREATE TABLE IF NOT EXISTS messages (
    log TEXT NOT NULL, offset INTEGER NOT NULL, ts REAL NOT NULL, sender TEXT NOT NULL,
    text TEXT NOT NULL, json INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (log, offset))
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS revoked (
    id TEXT PRIMARY KEY, expires REAL NOT NULL) WITHOUT ROWID;
"""
_MIGRATIONS = {  # from version N to N + 1
    1: ["ALTER TABLE messages ADD COLUMN json INTEGER NOT NULL DEFAULT 0"],
    2: ["ALTER TABLE users ADD COLUMN profile TEXT NOT NULL DEFAULT '{}'",
        "ALTER TABLE users ADD COLUMN deleted REAL"],
    3: ["ALTER TABLE logs ADD COLUMN mseq INTEGER NOT NULL DEFAULT 0"],
}  # fmt: skip


_COLUMNS = "log, offset, ts, sender, text, json"


def _message(row: tuple[str, int, float, str, str, int]) -> StoredMessage:
    return StoredMessage(row[0], row[1], row[2], row[3], row[4], bool(row[5]))


class SqliteStore:
    """The embedded store: ``DIR/hub.db``, WAL mode. Each append is its own transaction, so a
    message that was delivered is on disk (in the WAL) even if the process is killed next."""

    def __init__(
        self, data_dir: str | Path, defer: Callable[[Callable[[], None]], object] | None = None
    ) -> None:
        """With ``defer`` (e.g. ``loop.call_soon``), appends are grouped into one transaction
        committed by :meth:`commit`, which ``defer`` schedules: group commit per loop turn."""
        self._defer = defer
        self._in_transaction = False
        self.generation = 0
        self._users: dict[str, UserRecord] = {}  # read recently; dropped when one changes
        path = Path(data_dir)
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path / "hub.db", isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(f"cannot open the data directory {path}: {exc}") from None
        db = self._db
        db.execute("PRAGMA synchronous=NORMAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise UsageError(f"{path}/hub.db is from a newer wirekit (schema {version})")
        for step in range(version, SCHEMA_VERSION) if version else ():
            for statement in _MIGRATIONS[step]:
                db.execute(statement)
        db.executescript(_SCHEMA)
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def create_user(self, name: str, password_hash: str) -> bool:
        cur = self._db.execute(
            "INSERT OR IGNORE INTO users (name, hash, created) VALUES (?, ?, ?)",
            (name, password_hash, time.time()),
        )
        return cur.rowcount == 1

    def password_hash(self, name: str) -> str | None:
        row = self._db.execute(
            "SELECT hash FROM users WHERE name = ? AND deleted IS NULL", (name,)
        ).fetchone()
        return None if row is None else str(row[0])

    def user(self, name: str) -> UserRecord | None:
        record = self._users.get(name)
        if record is None:
            row = self._db.execute(
                "SELECT name, created, profile FROM users WHERE name = ? AND deleted IS NULL",
                (name,),
            ).fetchone()
            if row is None:
                return None
            record = UserRecord(row[0], row[1], orjson.loads(row[2]))
            remember(self._users, name, record, USER_CACHE)
        return record

    def users(self, prefix: str, after: str, limit: int) -> list[UserRecord]:
        rows = self._db.execute(
            "SELECT name, created, profile FROM users WHERE name > ? AND name >= ?"
            " AND name < ? AND deleted IS NULL ORDER BY name LIMIT ?",
            (after, prefix, prefix + "\x7f", limit),
        )
        return [UserRecord(row[0], row[1], orjson.loads(row[2])) for row in rows]

    def set_profile(self, name: str, profile: dict[str, Any]) -> None:
        self._users.pop(name, None)
        self._db.execute(
            "UPDATE users SET profile = ? WHERE name = ?", (orjson.dumps(profile).decode(), name)
        )

    def delete_user(self, name: str) -> bool:
        self.generation += 1
        self._users.pop(name, None)
        self.commit()
        with self._db:
            self._db.execute("BEGIN")
            cur = self._db.execute(
                "UPDATE users SET hash = '', profile = '{}', deleted = ?"
                " WHERE name = ? AND deleted IS NULL",
                (time.time(), name),
            )
            self._db.execute("DELETE FROM members WHERE user = ?", (name,))
        return cur.rowcount == 1

    def logs(self) -> list[LogInfo]:
        rows = self._db.execute("SELECT name, epoch, head FROM logs ORDER BY name").fetchall()
        return [LogInfo(*row) for row in rows]

    def create_log(self, name: str) -> LogInfo:
        self._db.execute(
            "INSERT OR IGNORE INTO logs (name, epoch, head, created) VALUES (?, ?, 0, ?)",
            (name, os.urandom(6).hex(), time.time()),
        )
        row = self._db.execute("SELECT name, epoch, head FROM logs WHERE name = ?", (name,))
        return LogInfo(*row.fetchone())

    def append(self, log: str, ts: float, sender: str, text: str, json: bool = False) -> int:
        db = self._db
        if not self._in_transaction:
            db.execute("BEGIN IMMEDIATE")
            self._in_transaction = True
            if self._defer is not None:
                self._defer(self.commit)
        try:
            (offset,) = db.execute(
                "UPDATE logs SET head = head + 1 WHERE name = ? RETURNING head", (log,)
            ).fetchone()
            db.execute(
                "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)",
                (log, offset, ts, sender, text, json),
            )
        except BaseException:
            db.execute("ROLLBACK")
            self._in_transaction = False
            raise
        if self._defer is None:
            self.commit()
        return int(offset)

    def commit(self) -> None:
        """Make the appends so far durable (a no-op when none is pending)."""
        if self._in_transaction:
            self._db.execute("COMMIT")
            self._in_transaction = False

    def read(self, log: str, after: int, limit: int) -> list[StoredMessage]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE log = ? AND offset > ? ORDER BY offset LIMIT ?",
            (log, after, limit),
        )
        return [_message(row) for row in rows]

    def last(self, log: str, count: int, before: int | None = None) -> list[StoredMessage]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE log = ? AND offset < ?"
            " ORDER BY offset DESC LIMIT ?",
            (log, (1 << 62) if before is None else before, count),
        ).fetchall()
        return [_message(row) for row in reversed(rows)]

    def members(self, log: str) -> list[str]:
        rows = self._db.execute("SELECT user FROM members WHERE log = ? ORDER BY user", (log,))
        return [str(row[0]) for row in rows]

    def add_member(self, log: str, user: str) -> Membership:
        cur = self._db.execute("INSERT OR IGNORE INTO members VALUES (?, ?)", (log, user))
        return self._membership(log, cur.rowcount == 1)

    def remove_member(self, log: str, user: str) -> Membership:
        cur = self._db.execute("DELETE FROM members WHERE log = ? AND user = ?", (log, user))
        return self._membership(log, cur.rowcount == 1)

    def _membership(self, log: str, changed: bool) -> Membership:
        """The log's head and membership sequence, bumped if the membership ``changed``."""
        if changed:
            sql = "UPDATE logs SET mseq = mseq + 1 WHERE name = ? RETURNING head, mseq"
        else:
            sql = "SELECT head, mseq FROM logs WHERE name = ?"
        head, seq = self._db.execute(sql, (log,)).fetchone() or (0, 0)
        return Membership(changed, int(head), int(seq))

    def revoke(self, token_id: str, expires: float) -> None:
        self.generation += 1
        db = self._db
        db.execute("DELETE FROM revoked WHERE expires < ?", (time.time(),))
        db.execute("INSERT OR REPLACE INTO revoked VALUES (?, ?)", (token_id, expires))

    def revoked(self, token_id: str) -> bool:
        row = self._db.execute("SELECT 1 FROM revoked WHERE id = ?", (token_id,)).fetchone()
        return row is not None

    def close(self) -> None:
        self.commit()
        self._db.close()
