"""The multi-node engine: hubs on several nodes (processes or machines) sharing one Redis.

:class:`Cluster` is the :class:`~wirekit.hub.engine.Peers` of a hub over a
:class:`~wirekit.hub.redisstore.RedisStore`:

* **Delivery.** One pub/sub connection per node (an asyncio Protocol parsing RESP with hiredis:
  no task per message). The node subscribes to ``wk:DB:msg:LOG`` only while ``LOG`` has local
  subscribers, so a node without members of a room gets none of its traffic. Each message goes
  to :meth:`Hub.receive`; a gap in the offsets (the subscription just started, or the
  connection came back) is first filled from the log's stream, so nothing acknowledged is lost.
* **Events.** Membership changes, kicks and deletions are announced on ``wk:DB:events`` and
  applied by the other nodes (:meth:`Hub.apply`); profile changes and revocations drop the
  caches of the other nodes (:meth:`RedisStore.forget`, ``generation``).
* **Presence.** Each logged-in connection is an entry of ``wk:presence`` whose score is its
  deadline (Redis time + ``presence_ttl``); ``wk:online`` counts entries per user. The first
  entry of a user publishes ``online``, the last one ``offline``. Every node refreshes its
  entries every ``presence_ttl / 3`` and removes expired ones (a crashed node's), so its users
  go offline within ``presence_ttl`` plus that period.
* **Availability.** When Redis goes away the node is not ready (:attr:`reason`), calls fail
  with ``unavailable``, and it reconnects with backoff; on reconnecting it reloads rooms,
  memberships and presence and reads what each followed log got meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import hiredis
import orjson

from ..proto.backoff import Backoff
from .redisstore import RedisStore, parse_message
from .store import PRESENCE_TTL, Failed, Stored, StoredMessage, StoreUnavailable

if TYPE_CHECKING:
    from .engine import Hub, Log, Subscriber

log = logging.getLogger("wirekit.hub.cluster")

REAP_BATCH = 1000  # expired presence entries removed per script call
HEARTBEAT_BATCH = 500  # presence entries refreshed per script call
FILL_BATCH = 1000  # messages read per call when filling a gap

# KEYS: wk:presence, wk:online. ARGV: channel, ttl, then member and user for each entry.
# Adds or refreshes entries; a user's first entry publishes ``online``.
PRESENT = """
local now = redis.call('TIME')
local deadline = tonumber(now[1]) + tonumber(now[2]) / 1e6 + tonumber(ARGV[2])
for i = 3, #ARGV, 2 do
  if redis.call('ZADD', KEYS[1], deadline, ARGV[i]) == 1 then
    if redis.call('HINCRBY', KEYS[2], ARGV[i + 1], 1) == 1 then
      redis.call('PUBLISH', ARGV[1], cjson.encode({type = 'online', user = ARGV[i + 1]}))
    end
  end
end
return 1
"""

# KEYS: wk:presence, wk:online. ARGV: channel, then member and user (ABSENT) or the most
# expired entries to remove (REAP). A user's last entry publishes ``offline``.
_GONE = """
local function gone(member, user)
  if redis.call('ZREM', KEYS[1], member) == 1 then
    if redis.call('HINCRBY', KEYS[2], user, -1) <= 0 then
      redis.call('HDEL', KEYS[2], user)
      redis.call('PUBLISH', ARGV[1], cjson.encode({type = 'offline', user = user}))
    end
  end
end
"""
ABSENT = _GONE + "gone(ARGV[2], ARGV[3])\nreturn 1\n"
REAP = (
    _GONE
    + """
local now = redis.call('TIME')
local limit = tonumber(now[1]) + tonumber(now[2]) / 1e6
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', limit, 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(expired) do gone(member, string.match(member, '^[^|]*')) end
return #expired
"""
)
PRESENCE_KEYS = ["wk:presence", "wk:online"]


def command(*args: str | bytes) -> bytes:
    """A Redis command in RESP."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class Cluster:
    """The hub's :class:`~wirekit.hub.engine.Peers` over Redis (see the module's notes).
    Create it, create the hub with ``peers=cluster``, then :meth:`bind` and :meth:`start`."""

    def __init__(self, store: RedisStore, presence_ttl: float = PRESENCE_TTL) -> None:
        self.store = store
        self.presence_ttl = presence_ttl
        self.hub: Hub | None = None
        self.received = 0  # messages that came through the channels (metrics, tests)
        self.reconnects = 0
        self._followed: set[str] = set()  # logs with local subscribers
        self._requested: set[str] = set()  # those the subscription connection asked for
        self._transport: asyncio.Transport | None = None
        self._connected = False  # subscribed to the events channel
        self._backoff = Backoff(base=0.1, cap=5.0)
        self._task: asyncio.Task[None] | None = None
        self._lost: asyncio.Event | None = None
        self._present = store.script(PRESENT)
        self._absent = store.script(ABSENT)
        self._reap = store.script(REAP)
        self._timer: asyncio.TimerHandle | None = None

    def bind(self, hub: Hub) -> None:
        self.hub = hub

    @property
    def reason(self) -> str:
        """Why this node is not ready ("" when it is)."""
        if not self.store.up:
            return f"redis unreachable: {self.store.reason}"
        if not self._connected:
            return "redis subscription not connected"
        return ""

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect the subscription (failing if Redis is unreachable now) and keep it up."""
        self._lost = asyncio.Event()
        await self._connect()
        self._task = asyncio.get_running_loop().create_task(self._keep_connected())
        self._tick()

    async def close(self) -> None:
        self._lost = None  # the subscription ends now on purpose: no reconnecting
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        host, port = self.store.address
        transport, _ = await asyncio.wait_for(
            loop.create_connection(lambda: _Subscription(self, ready), host, port), 5.0
        )
        user, password = self.store.credentials
        hello = [command("AUTH", *([user] if user else []), password)] if password else []
        self._requested = set(self._followed)
        channels = [self.store.events] + [self.store.messages + n for n in sorted(self._requested)]
        transport.write(b"".join([*hello, command("SUBSCRIBE", *channels)]))
        await asyncio.wait_for(ready, 5.0)

    async def _keep_connected(self) -> None:
        lost = self._lost
        assert lost is not None
        while True:
            await lost.wait()
            lost.clear()
            while True:
                delay = self._backoff.next_delay() or self._backoff.cap
                await asyncio.sleep(delay)
                try:
                    await self._connect()
                except (OSError, TimeoutError, StoreUnavailable) as exc:
                    log.warning("redis: reconnect failed (%s); retrying in up to %.1fs", exc,
                                self._backoff.cap)  # fmt: skip
                    continue
                self.reconnects += 1
                self._backoff.reset()
                log.info("redis: reconnected", extra={"event": "redis-reconnected"})
                break

    def _connected_now(self, transport: asyncio.Transport) -> None:
        """The events subscription is confirmed: catch up with what changed meanwhile."""
        self._transport = transport
        if self._connected:
            return
        # What the node followed or unfollowed since that connection's SUBSCRIBE was written
        # could not be sent then (no transport until now): send it now.
        for verb, names in (("SUBSCRIBE", self._followed - self._requested),
                            ("UNSUBSCRIBE", self._requested - self._followed)):  # fmt: skip
            if names:
                transport.write(command(verb, *(self.store.messages + n for n in sorted(names))))
        self.store.check()
        hub = self.hub
        assert hub is not None
        if self._task is not None:  # a reconnection (start() creates the task afterwards)
            self._reload(hub)
        self._connected = True

    def _disconnected(self) -> None:
        self._connected = False
        self._transport = None
        if self._lost is not None:
            log.warning("redis: subscription lost; node not ready until it is back")
            self._lost.set()

    def _reload(self, hub: Hub) -> None:
        """After a disconnection: rooms, memberships and presence as Redis has them now, the
        local subscribers told what changed meanwhile."""
        present = set(self.store.call("HKEYS", "wk:online"))
        for user in sorted(hub.present - present):
            hub.apply({"type": "offline", "user": user})
        for user in sorted(present - hub.present):
            hub.apply({"type": "online", "user": user})
        for info in self.store.logs():
            # a log this node had not loaded (created meanwhile): its members join it here,
            # those online here follow it
            log_ = hub.logs.get(info.name) or hub.load(info)
            members = set(self.store.members(info.name))
            for user in members - log_.members:  # they joined from the store's head now
                hub.apply({"type": "join", "room": info.name, "user": user, "head": info.head}
                          if not log_.private else
                          {"type": "members", "log": info.name, "users": [user],
                           "head": info.head})  # fmt: skip
            for user in log_.members - members:
                if not log_.private:
                    hub.apply({"type": "leave", "room": info.name, "user": user})

    # -- Peers --------------------------------------------------------------------------------
    def announce(self, event: dict[str, Any]) -> None:
        try:
            self.store.announce(event)
        except StoreUnavailable as exc:
            log.warning("redis: could not announce %s: %s", event.get("type"), exc)

    def follow(self, log_: Log) -> None:
        name = log_.name
        self._followed.add(name)
        self._write(command("SUBSCRIBE", self.store.messages + name))

    def unfollow(self, log_: Log) -> None:
        self._followed.discard(log_.name)
        self._write(command("UNSUBSCRIBE", self.store.messages + log_.name))

    def present(self, sub: Subscriber) -> None:
        try:
            self._present(PRESENCE_KEYS, [self.store.events, self.presence_ttl,
                                          self._member(sub), sub.user])  # fmt: skip
        except StoreUnavailable as exc:
            log.warning("redis: presence of %s not recorded: %s", sub.user, exc)

    def absent(self, sub: Subscriber) -> None:
        try:
            self._absent(PRESENCE_KEYS, [self.store.events, self._member(sub), sub.user])
        except StoreUnavailable:
            pass  # the entry expires

    def append_later(self, msg: StoredMessage, done: Stored | None, failed: Failed) -> None:
        self.store.append_later(msg, done, failed)

    def _member(self, sub: Subscriber) -> str:
        return f"{sub.user}|{self.store.node}|{id(sub):x}"

    def _write(self, data: bytes) -> None:
        if self._transport is not None:
            self._transport.write(data)

    # -- what the subscription brings -----------------------------------------------------------
    def _on_subscribed(self, channel: str) -> None:
        """A log's channel is live: read what it got before (the gap since ``follow``)."""
        hub = self.hub
        assert hub is not None
        log_ = hub.logs.get(channel.removeprefix(self.store.messages))
        if log_ is not None and log_.subscribers:
            self._fill(hub, log_, None)

    def _on_message(self, channel: str, data: bytes) -> None:
        hub = self.hub
        assert hub is not None
        if channel == self.store.events:
            self._on_event(hub, orjson.loads(data))
            return
        self.received += 1
        name = channel.removeprefix(self.store.messages)
        log_ = hub.logs.get(name)
        if log_ is None:
            return
        msg, epoch = parse_message(name, data)
        if epoch != log_.epoch:
            hub.lost(log_, epoch)
        if msg.offset > log_.head + 1:
            self._fill(hub, log_, msg.offset - 1)
        hub.receive(msg)

    def _on_event(self, hub: Hub, event: dict[str, Any]) -> None:
        if event.get("node") == self.store.node:
            return  # this node did it already
        kind = event.get("type")
        if kind == "revoked":
            self.store.generation += 1
        elif kind in ("profile", "deleted"):
            self.store.forget(str(event["user"]))
        if kind not in ("revoked", "profile"):
            hub.apply(event)

    def _fill(self, hub: Hub, log_: Log, until: int | None) -> None:
        """Receive ``log_``'s messages after its head (up to ``until``) from its stream."""
        while until is None or log_.head < until:
            batch = self.store.read(log_.name, log_.head, FILL_BATCH)
            for msg in batch:
                if until is not None and msg.offset > until:
                    return
                hub.receive(msg)
            if len(batch) < FILL_BATCH:
                return

    # -- presence upkeep ----------------------------------------------------------------------
    def _tick(self) -> None:
        """Refresh this node's presence entries and remove expired ones (every ttl/3)."""
        self._timer = asyncio.get_running_loop().call_later(self.presence_ttl / 3, self._tick)
        hub = self.hub
        if hub is None or not self._connected:
            return
        subs = [sub for conns in hub.online.values() for sub in conns]
        try:
            for start in range(0, len(subs), HEARTBEAT_BATCH):
                args: list[Any] = [self.store.events, self.presence_ttl]
                for sub in subs[start : start + HEARTBEAT_BATCH]:
                    args += [self._member(sub), sub.user]
                self._present(PRESENCE_KEYS, args)
            self._reap(PRESENCE_KEYS, [self.store.events, REAP_BATCH])
        except StoreUnavailable as exc:
            log.warning("redis: presence upkeep failed: %s", exc)


class _Subscription(asyncio.Protocol):
    """The node's pub/sub connection: RESP in, callbacks on :class:`Cluster` out."""

    def __init__(self, cluster: Cluster, ready: asyncio.Future[None]) -> None:
        self.cluster = cluster
        self.ready = ready
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        cluster = self.cluster
        reader = self.reader
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            try:
                self._handle(cluster, reply)
            except Exception:  # a bad event or a store failure must not end the subscription
                log.exception("redis: could not handle %r", reply[:2] if isinstance(reply, list)
                              else reply)  # fmt: skip

    def _handle(self, cluster: Cluster, reply: Any) -> None:
        if isinstance(reply, hiredis.ReplyError):
            if not self.ready.done():
                self.ready.set_exception(StoreUnavailable(f"redis refused: {reply}"))
            return
        if not isinstance(reply, list) or len(reply) < 3:
            return  # +OK of AUTH
        kind, channel = reply[0], reply[1].decode()
        if kind == b"message":
            cluster._on_message(channel, reply[2])
        elif kind == b"subscribe":
            if channel == cluster.store.events:
                assert self.transport is not None
                cluster._connected_now(self.transport)
                if not self.ready.done():
                    self.ready.set_result(None)
            else:
                cluster._on_subscribed(channel)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(StoreUnavailable("redis closed the subscription"))
        if self.cluster._transport is self.transport:
            self.cluster._disconnected()
