"""The multi-node engine's store: the hub's accounts, logs and memberships in one Redis that
every node shares (``wirekit serve --engine redis://HOST:PORT/DB``).

Layout (every key starts with ``wk:``):

* ``wk:user:NAME`` hash (``hash``, ``created``, ``profile``, ``deleted``) and ``wk:users``, a
  sorted set of live names (paging by name); ``wk:userlogs:NAME``, the logs NAME is in.
* ``wk:log:NAME`` hash (``epoch``, ``head``, ``created``, ``mseq``: the membership sequence,
  see :data:`MEMBER`), ``wk:logs`` (every name),
  ``wk:members:NAME`` (a set) and ``wk:stream:NAME``: the messages, a Redis stream whose entry
  ids are ``OFFSET-0``. One script (:data:`APPEND`) takes the next offset, adds the entry, trims
  by length and age and publishes it on the channel ``wk:DB:msg:NAME``: offsets are assigned
  atomically, and the channel carries them in order.
* ``wk:revoked`` (token ids by expiry), ``wk:secret`` and ``wk:api-key`` (shared by every node),
  ``wk:presence`` and ``wk:online`` (see :mod:`wirekit.hub.cluster`).
* ``wk:DB:events``: the channel on which nodes tell each other what changed (:meth:`announce`).
  (Channels are not per database in Redis: their names carry the database number.)

The calls are synchronous, like SQLite's in the embedded store: one round trip on the event
loop's thread (tens of microseconds on a local network). When Redis cannot be reached a call
raises :class:`StoreUnavailable` and the store stays *down* for a backoff delay, during which
calls fail at once instead of waiting on a dead peer; :meth:`check` (run by the cluster's
reconnect loop) brings it back.
"""

from __future__ import annotations

import os
import secrets
import time
from typing import Any

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..errors import UsageError
from ..proto.backoff import Backoff
from .store import (
    MAX_LENGTH,
    USER_CACHE,
    Failed,
    LogInfo,
    Membership,
    Stored,
    StoredMessage,
    StoreUnavailable,
    UserRecord,
    remember,
)

Pending = tuple[StoredMessage, Stored | None, Failed]  # a message waiting for commit()
CONNECT_TIMEOUT = 1.0
CALL_TIMEOUT = 2.0

# KEYS: log hash, stream, logs set. ARGV: name, ts, sender, text, json, new epoch, max length,
# oldest ts to keep (0: no age limit), channel. A log Redis lost (data dir wiped) starts again
# with a new epoch. The channel message: "OFFSET EPOCH\n" then the JSON [ts, sender, text, json].
APPEND = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[6]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'head', 0, 'created', ARGV[2])
  redis.call('SADD', KEYS[3], ARGV[1])
end
local offset = redis.call('HINCRBY', KEYS[1], 'head', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], offset .. '-0',
           't', ARGV[2], 'f', ARGV[3], 'x', ARGV[4], 'j', ARGV[5])
if ARGV[8] ~= '0' then
  local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 16)
  local keep = nil
  for _, entry in ipairs(oldest) do
    if tonumber(entry[2][2]) >= tonumber(ARGV[8]) then keep = entry[1]; break end
  end
  if keep then redis.call('XTRIM', KEYS[2], 'MINID', keep)
  elseif #oldest > 0 then redis.call('XTRIM', KEYS[2], 'MINID', offset .. '-0') end
end
redis.call('PUBLISH', ARGV[9], offset .. ' ' .. epoch .. '\\n' ..
           cjson.encode({ARGV[2], ARGV[3], ARGV[4], ARGV[5] == '1'}))
return offset
"""

# KEYS: user hash, users set. ARGV: name, hash, created.
CREATE_USER = """
if redis.call('HSETNX', KEYS[1], 'created', ARGV[3]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'hash', ARGV[2], 'profile', '{}')
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1
"""

# KEYS: user hash, users set, the user's logs. ARGV: name, now.
DELETE_USER = """
if redis.call('HGET', KEYS[1], 'hash') == false or redis.call('HEXISTS', KEYS[1], 'deleted') == 1
then return 0 end
redis.call('HSET', KEYS[1], 'hash', '', 'profile', '{}', 'deleted', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
for _, log in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  redis.call('SREM', 'wk:members:' .. log, ARGV[1])
end
redis.call('DEL', KEYS[3])
return 1
"""

# KEYS: log hash, logs set. ARGV: name, epoch, now.
CREATE_LOG = """
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[2]) == 1 then
  redis.call('HSET', KEYS[1], 'head', 0, 'created', ARGV[3])
  redis.call('SADD', KEYS[2], ARGV[1])
end
return redis.call('HMGET', KEYS[1], 'epoch', 'head')
"""

# KEYS: members set, the user's logs, log hash. ARGV: user, log, "1" to add (else remove).
# Returns whether the membership changed, the log's head and its membership sequence (``mseq``
# in the log hash, bumped by each change), all as of this one atomic step.
MEMBER = """
local changed
if ARGV[3] == '1' then
  changed = redis.call('SADD', KEYS[1], ARGV[1])
  redis.call('SADD', KEYS[2], ARGV[2])
else
  changed = redis.call('SREM', KEYS[1], ARGV[1])
  redis.call('SREM', KEYS[2], ARGV[2])
end
local seq
if changed == 1 then
  seq = redis.call('HINCRBY', KEYS[3], 'mseq', 1)
else
  seq = tonumber(redis.call('HGET', KEYS[3], 'mseq') or '0')
end
return {changed, tonumber(redis.call('HGET', KEYS[3], 'head') or '0'), seq}
"""


def offset_of(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


def stored(log: str, entry_id: str, fields: dict[str, str]) -> StoredMessage:
    return StoredMessage(
        log, offset_of(entry_id), float(fields["t"]), fields["f"], fields["x"], fields["j"] == "1"
    )


def parse_message(log: str, data: bytes) -> tuple[StoredMessage, str]:
    """A ``wk:msg:LOG`` channel message: the message and the log's epoch."""
    head, _, body = data.partition(b"\n")
    offset, _, epoch = head.partition(b" ")
    ts, sender, text, is_json = orjson.loads(body)
    return StoredMessage(log, int(offset), float(ts), sender, text, bool(is_json)), epoch.decode()


class RedisStore:
    """The :class:`~wirekit.hub.store.Store` interface over Redis (see the module's notes)."""

    def __init__(self, url: str, max_length: int = MAX_LENGTH, max_age: float = 0.0) -> None:
        self.url = url
        self.max_length = max_length
        self.max_age = max_age  # seconds a message is kept; 0: by length only
        self.generation = 0
        self.node = secrets.token_hex(6)  # this process, as the other nodes know it
        self.reason = ""  # why the store is down ("" while it is up)
        self._users: dict[str, UserRecord] = {}
        self._down_until = 0.0
        # no jitter: after a failure, calls are refused for 0.1 s, doubling up to 2 s
        self._backoff = Backoff(base=0.1, cap=2.0, rand=lambda: 1.0)
        try:
            params = redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
        except ValueError as exc:
            raise UsageError(f"--engine {url}: {exc}") from None
        if "connection_class" in params:
            raise UsageError(f"--engine {url}: use redis://HOST:PORT/DB (no TLS or unix socket)")
        self.address = (str(params.get("host", "localhost")), int(params.get("port", 6379)))
        self.credentials = (params.get("username"), params.get("password"))
        db = int(params.get("db", 0))
        self.events = f"wk:{db}:events"  # what nodes announce to each other
        self.messages = f"wk:{db}:msg:"  # + a log's name: that log's messages
        self._redis = redis.Redis(
            host=self.address[0],
            port=self.address[1],
            db=db,
            username=self.credentials[0],
            password=self.credentials[1],
            decode_responses=True,
            socket_connect_timeout=CONNECT_TIMEOUT,
            socket_timeout=CALL_TIMEOUT,
            # One immediate retry, for a pooled connection Redis closed (a restart). redis-py's
            # default (10 retries with backoff) kept a call to a dead Redis waiting about 5 s,
            # and the node's loop with it.
            retry=Retry(NoBackoff(), 1),
        )

        self._append_script = self._redis.register_script(APPEND)
        self._pending: list[Pending] = []
        self._create_user = self.script(CREATE_USER)
        self._delete_user = self.script(DELETE_USER)
        self._create_log = self.script(CREATE_LOG)
        self._member = self.script(MEMBER)

    # -- availability -------------------------------------------------------------------------
    @property
    def up(self) -> bool:
        return not self.reason

    def call(self, command: str, *args: Any) -> Any:
        """One Redis command: :class:`StoreUnavailable` while Redis is down."""
        return self._guarded(self._redis.execute_command, command, *args)

    def _guarded(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self.reason and time.monotonic() < self._down_until:
            raise StoreUnavailable(f"the hub's Redis is unreachable ({self.reason}); retry shortly")
        try:
            result = fn(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self.reason = str(exc) or type(exc).__name__
            self._down_until = time.monotonic() + (self._backoff.next_delay() or 2.0)
            raise StoreUnavailable(
                f"the hub's Redis is unreachable ({self.reason}); retry shortly"
            ) from None
        except redis.ResponseError as exc:
            raise StoreUnavailable(f"the hub's Redis refused a command: {exc}") from None
        if self.reason:
            self.reason = ""
            self._backoff.reset()
        return result

    def script(self, source: str) -> Any:
        """A Lua script: ``run(keys, args)``, guarded like :meth:`call`."""
        script = self._redis.register_script(source)
        return lambda keys, args: self._guarded(script, keys, args)

    def check(self) -> bool:
        """Ping Redis now (whatever the backoff says); ``True`` if it answered."""
        self._down_until = 0.0
        try:
            self.call("PING")
        except StoreUnavailable:
            return False
        return True

    def persistent(self) -> bool:
        """Whether Redis keeps its data across a restart (AOF or RDB snapshots)."""
        try:
            config = self._guarded(self._redis.config_get, "appendonly")
            config.update(self._guarded(self._redis.config_get, "save"))
        except StoreUnavailable:
            return True  # CONFIG is not allowed (a managed Redis): assume it persists
        return config.get("appendonly") == "yes" or bool(config.get("save"))

    def shared_secret(self, name: str, make: str) -> str:
        """``wk:NAME``, set to ``make`` by the first node that asks: a secret all nodes share."""
        self.call("SET", f"wk:{name}", make, "NX")
        return str(self.call("GET", f"wk:{name}"))

    def announce(self, event: dict[str, Any]) -> None:
        """Tell every node (this one too) about ``event`` on ``wk:events``."""
        self.call("PUBLISH", self.events, orjson.dumps({**event, "node": self.node}))

    def forget(self, name: str) -> None:
        """Another node changed or deleted the account ``name``: drop what is cached of it."""
        self._users.pop(name, None)
        self.generation += 1

    # -- accounts -----------------------------------------------------------------------------
    def create_user(self, name: str, password_hash: str) -> bool:
        keys = [f"wk:user:{name}", "wk:users"]
        created = self._create_user(keys, [name, password_hash, time.time()])
        return bool(created)

    def password_hash(self, name: str) -> str | None:
        fields = self.call("HMGET", f"wk:user:{name}", "hash", "deleted")
        return None if not fields[0] or fields[1] is not None else str(fields[0])

    def user(self, name: str) -> UserRecord | None:
        record = self._users.get(name)
        if record is None:
            record = self._record(name, self.call("HMGET", f"wk:user:{name}", *_USER_FIELDS))
            if record is None:
                return None
            remember(self._users, name, record, USER_CACHE)
        return record

    @staticmethod
    def _record(name: str, fields: list[str | None]) -> UserRecord | None:
        hashed, created, profile, deleted = fields
        if not hashed or created is None or deleted is not None:
            return None
        return UserRecord(name, float(created), orjson.loads(profile or "{}"))

    def users(self, prefix: str, after: str, limit: int) -> list[UserRecord]:
        low = f"({after}" if after >= prefix else f"[{prefix}"
        high = f"({prefix}\x7f" if prefix else "+"
        names = self.call("ZRANGEBYLEX", "wk:users", low, high, "LIMIT", 0, limit)
        rows = self._hmgets([f"wk:user:{name}" for name in names], _USER_FIELDS)
        records = (self._record(name, row) for name, row in zip(names, rows, strict=True))
        return [r for r in records if r is not None]

    def _hmgets(self, keys: list[str], fields: tuple[str, ...]) -> list[Any]:
        """HMGET ``fields`` of every key, in one round trip."""
        if not keys:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, *fields)
        return list(self._guarded(pipe.execute))

    def set_profile(self, name: str, profile: dict[str, Any]) -> None:
        self._users.pop(name, None)
        self.call("HSET", f"wk:user:{name}", "profile", orjson.dumps(profile).decode())
        self.announce({"type": "profile", "user": name})

    def delete_user(self, name: str) -> bool:
        self.generation += 1
        self._users.pop(name, None)
        keys = [f"wk:user:{name}", "wk:users", f"wk:userlogs:{name}"]
        return bool(self._delete_user(keys, [name, time.time()]))

    def revoke(self, token_id: str, expires: float) -> None:
        self.generation += 1
        self.call("ZREMRANGEBYSCORE", "wk:revoked", "-inf", time.time())
        self.call("ZADD", "wk:revoked", expires, token_id)
        self.announce({"type": "revoked"})

    def revoked(self, token_id: str) -> bool:
        return self.call("ZSCORE", "wk:revoked", token_id) is not None

    # -- logs ---------------------------------------------------------------------------------
    def logs(self) -> list[LogInfo]:
        names = sorted(self.call("SMEMBERS", "wk:logs"))
        rows = self._hmgets([f"wk:log:{name}" for name in names], ("epoch", "head"))
        return [
            LogInfo(name, epoch, int(head))
            for name, (epoch, head) in zip(names, rows, strict=True)
            if epoch is not None
        ]

    def create_log(self, name: str) -> LogInfo:
        keys = [f"wk:log:{name}", "wk:logs"]
        epoch, head = self._create_log(keys, [name, os.urandom(6).hex(), time.time()])
        return LogInfo(name, epoch, int(head))

    def append(self, log: str, ts: float, sender: str, text: str, json: bool = False) -> int:
        msg = StoredMessage(log, 0, ts, sender, text, json)
        return int(self._guarded(self._append_script, *self._append_args(msg)))

    def _append_args(self, msg: StoredMessage) -> tuple[list[str], list[Any]]:
        log, ts = msg.log, msg.ts
        keys = [f"wk:log:{log}", f"wk:stream:{log}", "wk:logs"]
        oldest = repr(ts - self.max_age) if self.max_age else "0"
        args = [log, repr(ts), msg.sender, msg.text, "1" if msg.json else "0",
                os.urandom(6).hex(), self.max_length, oldest, self.messages + log]  # fmt: skip
        return keys, args

    def append_later(self, msg: StoredMessage, done: Stored | None, failed: Failed) -> None:
        """Append ``msg`` at the next :meth:`commit`, with the others queued until then (one
        round trip for all); then ``done`` is told its offset, or ``failed`` why not."""
        self._pending.append((msg, done, failed))

    def read(self, log: str, after: int, limit: int) -> list[StoredMessage]:
        entries = self.call("XRANGE", f"wk:stream:{log}", f"({after}-0", "+", "COUNT", limit)
        return [stored(log, entry_id, _fields(raw)) for entry_id, raw in entries]

    def last(self, log: str, count: int, before: int | None = None) -> list[StoredMessage]:
        if count <= 0:
            return []
        high = "+" if before is None else f"({before}-0"
        entries = self.call("XREVRANGE", f"wk:stream:{log}", high, "-", "COUNT", count)
        return [stored(log, entry_id, _fields(raw)) for entry_id, raw in reversed(entries)]

    def members(self, log: str) -> list[str]:
        return sorted(self.call("SMEMBERS", f"wk:members:{log}"))

    def add_member(self, log: str, user: str) -> Membership:
        return self._membership(log, user, "1")

    def remove_member(self, log: str, user: str) -> Membership:
        return self._membership(log, user, "0")

    def _membership(self, log: str, user: str, add: str) -> Membership:
        keys = [f"wk:members:{log}", f"wk:userlogs:{user}", f"wk:log:{log}"]
        changed, head, seq = self._member(keys, [user, log, add])
        return Membership(bool(changed), int(head), int(seq))

    def commit(self) -> None:
        """Append what :meth:`append_later` queued, in one pipeline (the channel then brings
        each message back with its offset)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        try:
            results = self._appends(pending)
            if isinstance(results[0], redis.exceptions.NoScriptError):
                # Redis restarted (it keeps no scripts): none of them ran; load, run again
                self.call("SCRIPT", "LOAD", APPEND)
                results = self._appends(pending)
        except StoreUnavailable as exc:
            for _, _, failed in pending:
                failed(exc)
            return
        for result, (_, done, failed) in zip(results, pending, strict=True):
            if isinstance(result, Exception):
                failed(StoreUnavailable(f"the hub's Redis refused a message: {result}"))
            elif done is not None:
                done(int(result))

    def _appends(self, pending: list[Pending]) -> list[Any]:
        """EVALSHA of each message's append in one pipeline: the results, errors included."""
        pipe = self._redis.pipeline(transaction=False)
        for msg, _, _ in pending:
            keys, args = self._append_args(msg)
            pipe.evalsha(self._append_script.sha, len(keys), *keys, *args)
        return list(self._guarded(pipe.execute, raise_on_error=False))

    def close(self) -> None:
        self._redis.close()


_USER_FIELDS = ("hash", "created", "profile", "deleted")


def _fields(raw: Any) -> dict[str, str]:
    """A stream entry's fields: a dict (RESP3) or a flat list (RESP2) from redis-py."""
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=True))
