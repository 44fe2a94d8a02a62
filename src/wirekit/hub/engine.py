"""The hub engine: rooms, private conversations, presence and delivery, shared by every front.

Every room (``#name``) and every private conversation (``@alice,bob``) is an append-only log
with contiguous offsets (1, 2, 3, ...) and an epoch that changes only if its history is lost.

Delivery: a publication is encoded at most once per wire format (:class:`Encoded`) and the same
bytes go to every subscriber. A subscriber whose send queue is full is not evicted and does not
slow the others: nothing more is queued for it, it is marked *behind* and later catches up from
the log by offset (:meth:`Subscriber.catch_up`); if it stays behind longer than
``Limits.behind_timeout`` the front disconnects it (:meth:`Hub.overdue`).

Batches: with a ``wake`` callback, :meth:`Hub.publish` queues the publication on its log and
calls ``wake``; the caller then runs :meth:`Hub.flush` soon (before its coalesced writes go
out), which hands each log's queued publications to every live subscriber as one write of
their joined bytes: a subscriber costs one check and one write per batch, not per message.
Events that are not logged (presence, membership) flush first, and a reply to one connection
takes what is queued for it first (:meth:`Hub.overtake`), so each connection still sees
everything in the order it happened. Without ``wake`` each publication is delivered at once.

No I/O here besides the store: fronts implement :class:`Subscriber` over their transport.
"""

from __future__ import annotations

import abc
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

import orjson

from ..limits import DEFAULTS, Limits
from ..proto.chat import encode_event
from ..proto.wsapi import encode_sse, encode_ws
from .store import Store, StoredMessage

ROOM = re.compile(r"#[a-z0-9][a-z0-9_.-]{0,47}")
TOPIC = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,63}")
API_SENDER = "api"  # the sender of messages published with the API key

Wire = Literal["text", "json", "ws", "sse"]
ENCODERS: dict[Wire, Callable[[dict[str, Any]], bytes]] = {
    "text": lambda event: encode_event(event, "text"),
    "json": lambda event: encode_event(event, "json"),
    "ws": encode_ws,
    "sse": encode_sse,
}
CATCH_UP_BATCH = 256


class HubError(Exception):
    """A request the hub refuses; ``code`` goes back to the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_room(name: str) -> str:
    name = name.lower()
    if not ROOM.fullmatch(name):
        raise HubError(
            "bad-room", "room names are # then a letter or digit, then up to 47 of a-z 0-9 _ . -"
        )
    return name


def room_named(name: str) -> str:
    """A room given with or without its ``#`` (in URLs and JSON bodies)."""
    return check_room(name if name.startswith("#") else "#" + name)


def check_log(name: str) -> str:
    """A room name, or a private conversation's ``@a,b`` name."""
    return name.lower() if name.startswith("@") else check_room(name)


def check_topic(name: str) -> str:
    """Any log name a WebSocket client may use: ``#room``, ``@a,b``, ``@user`` or a push
    topic."""
    name = name.lower()
    if name.startswith(("#", "@")):
        return check_log(name)
    if not TOPIC.fullmatch(name):
        raise HubError(
            "bad-topic", "topics are a letter or digit, then up to 63 of a-z 0-9 _ . : -"
        )
    return name


def message_text(data: Any, limit: int) -> tuple[str, bool]:
    """What the store keeps of a published value: a string as it is, anything else as its JSON
    text (flagged ``json``); :class:`HubError` ``too-large`` past ``limit`` bytes."""
    is_json = not isinstance(data, str)
    text = orjson.dumps(data).decode() if is_json else data
    if len(text.encode()) > limit:
        raise HubError("too-large", f"data longer than {limit} bytes once encoded")
    return text, is_json


def private_log(a: str, b: str) -> str:
    return "@" + ",".join(sorted((a, b)))


class Encoded:
    """An event, encoded at most once per wire format however many subscribers get it."""

    __slots__ = ("_cache", "event")

    def __init__(self, event: dict[str, Any]) -> None:
        self.event = event
        self._cache: dict[Wire, bytes] = {}

    def data(self, mode: Wire) -> bytes:
        try:
            return self._cache[mode]
        except KeyError:
            data = self._cache[mode] = ENCODERS[mode](self.event)
            return data


def message_event(log: Log, msg: StoredMessage, **extra: Any) -> dict[str, Any]:
    event = {
        "type": "msg",
        "room": log.name,
        "offset": msg.offset,
        "epoch": log.epoch,
        "from": msg.sender,
        "text": msg.text,
        "ts": msg.ts,
        **extra,
    }
    if msg.json:
        event["json"] = True
    if log.name.startswith("@"):
        event["to"] = next((m for m in log.members if m != msg.sender), msg.sender)
    return event


class Log:
    __slots__ = ("epoch", "head", "members", "name", "queued", "subscribers")

    def __init__(self, name: str, epoch: str, head: int) -> None:
        self.name = name
        self.epoch = epoch
        self.head = head
        self.members: set[str] = set()
        self.subscribers: set[Subscriber] = set()
        self.queued: list[tuple[int, Encoded]] = []  # published, not yet delivered (batches)

    @property
    def private(self) -> bool:
        return self.name.startswith("@")

    @property
    def topic(self) -> bool:
        """A push topic: no members, anyone allowed may subscribe."""
        return not self.name.startswith(("#", "@"))


class Subscriber(abc.ABC):
    """One logged-in connection as the hub sees it. Fronts implement :meth:`write` and keep
    :attr:`congested` true while their send queue is full, and call :meth:`catch_up` when it
    drains. An anonymous subscriber (public push topics only) has ``user == ""``."""

    __slots__ = ("behind_since", "cursors", "hub", "mode", "session_id", "user")

    def __init__(self, hub: Hub, user: str, mode: Wire) -> None:
        self.hub = hub
        self.user = user
        self.session_id = ""  # the token's id when it logged in with one (for logout)
        self.mode: Wire = mode
        self.cursors: dict[str, int] = {}  # log -> offset of the last message written
        self.behind_since: float | None = None

    @abc.abstractmethod
    def write(self, data: bytes) -> None: ...

    @property
    @abc.abstractmethod
    def congested(self) -> bool: ...

    @abc.abstractmethod
    def disconnect(self, reason: str) -> None:
        """Close the connection: ``too-slow`` (it stayed behind too long: drop it now),
        ``kicked`` or ``logged-out`` (tell the peer why, then close)."""

    def deliver(self, log: Log, offset: int, message: Encoded) -> None:
        if self.behind_since is not None:
            return  # catch_up reads it from the log
        last = self.cursors.get(log.name)
        if last is None or offset <= last:
            return
        if offset != last + 1 or self.congested:
            self._fall_behind()
            return
        self.write(message.data(self.mode))
        self.cursors[log.name] = offset
        self.hub.deliveries += 1

    def notify(self, event: Encoded) -> None:
        """Presence and membership events: not logged, so skipped while behind."""
        if self.behind_since is None and not self.congested:
            self.write(event.data(self.mode))

    def catch_up(self) -> None:
        """Write what this subscriber missed, from the log, until it is live or congested."""
        hub = self.hub
        for name, last in list(self.cursors.items()):
            log = hub.logs.get(name)
            while log is not None and last < log.head:
                if self.congested:
                    self._fall_behind()
                    return
                batch = hub.store.read(name, last, CATCH_UP_BATCH)
                if not batch:
                    break  # the store lost what the log's head promised; nothing to wait for
                for msg in batch:
                    self.write(Encoded(message_event(log, msg)).data(self.mode))
                    last = self.cursors[name] = msg.offset
                    hub.deliveries += 1
        self.behind_since = None
        hub.behind.pop(self, None)

    def _fall_behind(self) -> None:
        if self.behind_since is None:
            self.behind_since = self.hub.clock()
            self.hub.behind[self] = self.behind_since
            self.hub.fell_behind += 1


class Hub:
    def __init__(
        self,
        store: Store,
        limits: Limits = DEFAULTS,
        clock: Callable[[], float] = time.monotonic,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.limits = limits
        self.clock = clock
        self.wake = wake  # batched delivery: called when a flush is needed
        self._queued: list[Log] = []  # logs with queued publications
        self.logs: dict[str, Log] = {}
        for info in store.logs():
            log = self.logs[info.name] = Log(info.name, info.epoch, info.head)
            log.members.update(store.members(info.name))
        self.online: dict[str, set[Subscriber]] = {}
        self.behind: dict[Subscriber, float] = {}
        self.published = 0
        self.deliveries = 0
        self.fell_behind = 0

    # -- connections --------------------------------------------------------------------------
    def attach(self, sub: Subscriber, follow: bool = True) -> list[Log]:
        """A connection logged in: it counts for presence, and with ``follow`` it is
        subscribed, live, to every log its user belongs to (else it subscribes per log with
        :meth:`resume`). Logs the user joins later are followed either way."""
        logs = self.logs_of(sub.user)
        for log in logs if follow else ():
            log.subscribers.add(sub)
            sub.cursors[log.name] = log.head
        conns = self.online.setdefault(sub.user, set())
        conns.add(sub)
        if len(conns) == 1:
            self._tell(logs, {"type": "online", "user": sub.user}, skip=sub)
        return logs

    def detach(self, sub: Subscriber) -> None:
        self.flush()  # what it was sent before it left reaches it
        for name in sub.cursors:
            log = self.logs.get(name)
            if log is not None:
                log.subscribers.discard(sub)
        sub.cursors.clear()
        self.behind.pop(sub, None)
        conns = self.online.get(sub.user)
        if conns is None:
            return
        conns.discard(sub)
        if not conns:
            del self.online[sub.user]
            self._tell(self.logs_of(sub.user), {"type": "offline", "user": sub.user})

    def logs_of(self, user: str) -> list[Log]:
        return [log for log in self.logs.values() if user in log.members]

    def kick(self, user: str, reason: str, session_id: str | None = None) -> int:
        """Close every connection of ``user`` (only those of one session, if given)."""
        subs = [
            sub
            for sub in self.online.get(user, ())
            if session_id is None or sub.session_id == session_id
        ]
        for sub in subs:
            self.detach(sub)
            sub.disconnect(reason)
        return len(subs)

    def delete_user(self, user: str) -> int:
        """Delete the account: it leaves every room (members are told) and conversation, and
        its connections are closed; returns how many."""
        if not self.store.delete_user(user):
            raise HubError("no-such-user", f"no user {user}")
        for log in self.logs_of(user):
            if not log.private:
                self._tell([log], {"type": "leave", "room": log.name, "user": user})
            log.members.discard(user)
        return self.kick(user, "account-deleted")

    def overdue(self, now: float) -> list[Subscriber]:
        """Subscribers behind for longer than ``behind_timeout``: the front disconnects them."""
        deadline = now - self.limits.behind_timeout
        return [sub for sub, since in self.behind.items() if since < deadline]

    # -- rooms --------------------------------------------------------------------------------
    def join(self, user: str, room: str) -> Log:
        room = check_room(room)
        log = self.logs.get(room)
        if log is None:
            info = self.store.create_log(room)
            log = self.logs[room] = Log(info.name, info.epoch, info.head)
        if user not in log.members:
            self.store.add_member(room, user)
            log.members.add(user)
            self._follow(log, user)
            self._tell([log], {"type": "join", "room": room, "user": user})
        return log

    def leave(self, user: str, room: str) -> None:
        log = self.member_log(user, check_room(room))
        self._tell([log], {"type": "leave", "room": log.name, "user": user})
        self.store.remove_member(log.name, user)
        log.members.discard(user)
        for sub in self.online.get(user, ()):
            log.subscribers.discard(sub)
            sub.cursors.pop(log.name, None)

    def member_log(self, user: str, name: str) -> Log:
        log = self.logs.get(name)
        if log is None:
            raise HubError("no-such-room", f"no room {name}")
        if user not in log.members:
            raise HubError("not-a-member", f"you are not in {name}; /join {name} first")
        return log

    def rooms(self) -> list[dict[str, Any]]:
        return [
            {
                "room": log.name,
                "members": len(log.members),
                "online": sum(1 for m in log.members if m in self.online),
            }
            for log in sorted(self.logs.values(), key=lambda log: log.name)
            if log.name.startswith("#")
        ]

    def who(self, room: str) -> list[dict[str, Any]]:
        log = self.logs.get(check_room(room))
        if log is None:
            raise HubError("no-such-room", f"no room {room}")
        return [{"user": m, "online": m in self.online} for m in sorted(log.members)]

    # -- messages -----------------------------------------------------------------------------
    def open_log(self, user: str, name: str) -> Log:
        """The log ``name`` for reading or writing: a room or conversation ``user`` is a member
        of, or a push topic (created on first use)."""
        if name.startswith(("#", "@")):
            return self.member_log(user, name)
        log = self.logs.get(name)
        if log is None:
            info = self.store.create_log(name)
            log = self.logs[name] = Log(info.name, info.epoch, info.head)
        return log

    def publish(self, user: str, name: str, text: str, json: bool = False) -> int:
        """Append ``text`` to the log ``name`` and deliver it; returns its offset. ``json``
        marks ``text`` as the JSON encoding of a non-string value."""
        log = self.open_log(user, name)
        ts = time.time()
        offset = log.head = self.store.append(name, ts, user, text, json)
        self.published += 1
        stored = StoredMessage(name, offset, ts, user, text, json)
        encoded = Encoded(message_event(log, stored))
        if self.wake is None:
            for sub in log.subscribers:
                sub.deliver(log, offset, encoded)
            return offset
        if not log.queued:
            if not self._queued:
                self.wake()
            self._queued.append(log)
        log.queued.append((offset, encoded))
        return offset

    def overtake(self, sub: Subscriber) -> None:
        """Deliver to ``sub`` alone, now, what is queued for it: a front calls this before it
        writes ``sub`` a reply, so that the reply does not overtake them. At the flush, ``sub``
        skips them (its cursor is past them)."""
        for log in self._queued:
            if sub in log.subscribers:
                for offset, encoded in log.queued:
                    sub.deliver(log, offset, encoded)

    def flush(self) -> None:
        """Deliver the queued publications (batched delivery): to each live subscriber that is
        right before a log's batch, the batch's joined bytes in one write; the others take it
        message by message (:meth:`Subscriber.deliver` skips, or lets them fall behind)."""
        if not self._queued:
            return
        logs, self._queued = self._queued, []
        for log in logs:
            batch, log.queued = log.queued, []
            name = log.name
            before, last = batch[0][0] - 1, batch[-1][0]
            joined: dict[Wire, bytes] = {}
            whole = 0  # subscribers that took the batch in one write
            for sub in log.subscribers:
                if (
                    sub.behind_since is None
                    and not sub.congested
                    and sub.cursors.get(name) == before
                ):
                    mode = sub.mode
                    data = joined.get(mode)
                    if data is None:
                        data = joined[mode] = b"".join([e.data(mode) for _, e in batch])
                    sub.write(data)
                    sub.cursors[name] = last
                    whole += 1
                else:
                    for offset, encoded in batch:
                        sub.deliver(log, offset, encoded)
            self.deliveries += whole * len(batch)

    def private(self, user: str, to: str, text: str, json: bool = False) -> int:
        to = to.lower()
        if self.store.password_hash(to) is None:
            raise HubError("no-such-user", f"no user {to}")
        name = private_log(user, to)
        log = self.logs.get(name)
        if log is None:
            info = self.store.create_log(name)
            log = self.logs[name] = Log(info.name, info.epoch, info.head)
            for member in {user, to}:
                self.store.add_member(name, member)
                log.members.add(member)
                self._follow(log, member)
        return self.publish(user, name, text, json)

    def history(
        self, user: str, name: str, count: int, before: int | None = None
    ) -> tuple[Log, list[Encoded]]:
        log = self.open_log(user, name)
        count = max(0, min(count, self.limits.history_max))
        stored = self.store.last(name, count, before)
        return log, [Encoded(message_event(log, m, history=True)) for m in stored]

    def presence(self, user: str, name: str) -> dict[str, Any]:
        """Who is in a log: members (rooms, conversations) or subscribers (push topics)."""
        log = self.open_log(user, name)
        if log.topic:
            users = sorted({sub.user for sub in log.subscribers if sub.user})
            return {"users": [{"user": u, "online": True} for u in users],
                    "subscribers": len(log.subscribers)}  # fmt: skip
        return {"users": [{"user": m, "online": m in self.online} for m in sorted(log.members)]}

    def unsubscribe(self, sub: Subscriber, name: str) -> None:
        """``sub`` stops following ``name`` (membership is unchanged)."""
        self.flush()
        log = self.logs.get(name)
        if log is not None:
            log.subscribers.discard(sub)
        sub.cursors.pop(name, None)

    def resume(self, sub: Subscriber, name: str, after: int, epoch: str | None) -> Log:
        """Replay ``name`` to ``sub`` after offset ``after``, then go on live. A changed epoch
        means the history the client knew is gone: it is told, and replay starts at 0."""
        log = self.open_log(sub.user, name)
        if epoch is not None and epoch != log.epoch:
            sub.write(Encoded({"type": "lost", "room": name, "epoch": log.epoch}).data(sub.mode))
            after = 0
        sub.cursors[name] = max(0, min(after, log.head))
        log.subscribers.add(sub)
        sub.catch_up()
        return log

    # -- internals ----------------------------------------------------------------------------
    def _follow(self, log: Log, user: str) -> None:
        """Every connection of ``user`` follows ``log`` from now on."""
        for sub in self.online.get(user, ()):
            log.subscribers.add(sub)
            sub.cursors.setdefault(log.name, log.head)

    def _tell(
        self, logs: Iterable[Log], event: dict[str, Any], skip: Subscriber | None = None
    ) -> None:
        self.flush()  # the publications before this event go out before it
        encoded = Encoded(event)
        seen: set[Subscriber] = set()
        for log in logs:
            for sub in log.subscribers:
                if sub is not skip and sub not in seen:
                    seen.add(sub)
                    sub.notify(encoded)
