"""The hub engine: rooms, private conversations, presence and delivery, shared by every front.

Every room (``#name``) and every private conversation (``@alice,bob``) is an append-only log
with contiguous offsets (1, 2, 3, ...) and an epoch that changes only if its history is lost.

Delivery: a publication is encoded at most once per wire format (:class:`Encoded`) and the same
bytes go to every subscriber. A subscriber whose send queue is full is not evicted and does not
slow the others: nothing more is queued for it, it is marked *behind* and later catches up from
the log by offset (:meth:`Subscriber.catch_up`); if it stays behind longer than
``Limits.behind_timeout`` the front disconnects it (:meth:`Hub.overdue`).

Batches: with a ``wake`` callback, :meth:`Hub.publish` queues the publication on its log and
calls ``wake``; the caller then runs :meth:`Hub.flush_some` soon (before its coalesced writes
go out), and again while it returns true, which hands each log's queued publications to every
live subscriber as one write of their joined bytes: a subscriber costs one check and one write
per batch, not per message. A big log's subscribers are handed them in passes, a few hundred
per call, so that publications arriving meanwhile join the pass under way.
Events that are not logged (presence, membership) flush first, and a reply to one connection
takes what is queued for it first (:meth:`Hub.overtake`), so each connection still sees
everything in the order it happened. Without ``wake`` each publication is delivered at once.

Several nodes (the multi-node engine) share one store; :class:`Peers` connects this hub to
the others. Then a publication is not delivered by the node that stored it: every node,
that one too, gets it from the store's channel in offset order (:meth:`Hub.receive`), but only
for the logs it *follows* (those with local subscribers). Changes of membership, kicks and
deletions are announced to the other nodes, which :meth:`Hub.apply` them; presence is counted
across nodes (:meth:`Peers.present`) and each node is told who came online or went offline.

No I/O here besides the store: fronts implement :class:`Subscriber` over their transport.
"""

from __future__ import annotations

import abc
import re
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal, Protocol

import orjson

from ..limits import DEFAULTS, Limits
from ..proto.chat import encode_event
from ..proto.wsapi import encode_sse, encode_ws
from .store import Failed, HubError, LogInfo, Store, Stored, StoredMessage

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
    __slots__ = (
        "changes",
        "epoch",
        "head",
        "members",
        "name",
        "pass_at",
        "pass_last",
        "pass_order",
        "queued",
        "subscribers",
    )

    def __init__(self, name: str, epoch: str, head: int) -> None:
        self.name = name
        self.epoch = epoch
        self.head = head
        self.members: set[str] = set()
        # With peers: user -> the store's membership sequence of the newest change of their
        # membership this node applied (or saw the result of); an older one comes too late.
        self.changes: dict[str, int] = {}
        self.subscribers: set[Subscriber] = set()
        self.queued: list[tuple[int, Encoded]] = []  # published, not yet delivered (batches)
        # The delivery pass under way over the subscribers (Hub.flush_some): who, in what
        # order, how many have been handed the queue, and its last offset when the pass began.
        self.pass_order: list[Subscriber] = []
        self.pass_at = 0
        self.pass_last = 0

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
                # Up to the log's head only: with peers, what the store has after it comes
                # through Hub.receive (a resume from a lower offset must not repeat it).
                batch = hub.store.read(name, last, min(CATCH_UP_BATCH, log.head - last))
                batch = [msg for msg in batch if msg.offset <= log.head]
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


class Peers(Protocol):
    """The other nodes sharing this hub's store (``None`` for a hub on its own)."""

    def announce(self, event: dict[str, Any]) -> None:
        """Tell the other nodes: they :meth:`Hub.apply` it."""

    def follow(self, log: Log) -> None:
        """``log`` got its first local subscriber: receive its messages after ``log.head``
        (:meth:`Hub.receive`), those already published first."""

    def unfollow(self, log: Log) -> None:
        """``log`` lost its last local subscriber: stop receiving its messages."""

    def present(self, sub: Subscriber) -> None:
        """``sub`` logged in here; if its user was offline everywhere, every node is told
        ``online`` (:meth:`Hub.apply`). Never raises: presence is kept up by heartbeats."""

    def absent(self, sub: Subscriber) -> None:
        """``sub`` left; if that was its user's last connection anywhere, ``offline``."""

    def append_later(self, msg: StoredMessage, done: Stored | None, failed: Failed) -> None:
        """Store ``msg`` (its offset is still to come) with the others of this loop turn, in
        one round trip at the next flush; then ``done`` is told its offset, or ``failed`` why
        it could not be stored."""


class Hub:
    def __init__(
        self,
        store: Store,
        limits: Limits = DEFAULTS,
        clock: Callable[[], float] = time.monotonic,
        wake: Callable[[], None] | None = None,
        peers: Peers | None = None,
    ) -> None:
        self.store = store
        self.limits = limits
        self.clock = clock
        self.wake = wake  # batched delivery: called when a flush is needed
        self.peers = peers
        self.present: set[str] = set()  # with peers: users online on any node
        self._queued: list[Log] = []  # logs with queued publications
        self.logs: dict[str, Log] = {}
        for info in store.logs():
            self.load(info).members.update(store.members(info.name))
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
            self._subscribe(log, sub)
            sub.cursors[log.name] = log.head
        conns = self.online.setdefault(sub.user, set())
        conns.add(sub)
        if self.peers is not None:
            self.peers.present(sub)
        elif len(conns) == 1:
            self._tell(logs, {"type": "online", "user": sub.user}, skip_user=sub.user)
        return logs

    def detach(self, sub: Subscriber) -> None:
        self.flush()  # what it was sent before it left reaches it
        for name in sub.cursors:
            log = self.logs.get(name)
            if log is not None:
                self._unsubscribe(log, sub)
        sub.cursors.clear()
        self.behind.pop(sub, None)
        conns = self.online.get(sub.user)
        if conns is None or sub not in conns:
            return
        conns.discard(sub)
        if not conns:
            del self.online[sub.user]
        if self.peers is not None:
            self.peers.absent(sub)
        elif not conns:
            self._tell(self.logs_of(sub.user), {"type": "offline", "user": sub.user})

    def logs_of(self, user: str) -> list[Log]:
        return [log for log in self.logs.values() if user in log.members]

    def is_online(self, user: str) -> bool:
        """Whether ``user`` has a connection here (or, with peers, on any node)."""
        return user in self.online or user in self.present

    def kick(self, user: str, reason: str, session_id: str | None = None) -> int:
        """Close every connection of ``user`` (only those of one session, if given), on every
        node; returns how many were here."""
        if self.peers is not None:
            self.peers.announce({"type": "kick", "user": user, "reason": reason,
                                 "session": session_id})  # fmt: skip
        return self._kick(user, reason, session_id)

    def _kick(self, user: str, reason: str, session_id: str | None) -> int:
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
        if self.peers is not None:
            self.peers.announce({"type": "deleted", "user": user})
        return self._deleted(user)

    def _deleted(self, user: str) -> int:
        for log in self.logs_of(user):
            if not log.private:
                self._tell([log], {"type": "leave", "room": log.name, "user": user})
            log.members.discard(user)
        return self._kick(user, "account-deleted", None)

    def overdue(self, now: float) -> list[Subscriber]:
        """Subscribers behind for longer than ``behind_timeout``: the front disconnects them."""
        deadline = now - self.limits.behind_timeout
        return [sub for sub, since in self.behind.items() if since < deadline]

    # -- rooms --------------------------------------------------------------------------------
    def join(self, user: str, room: str) -> Log:
        """``user`` joins ``room`` (created if there is none). With peers, this node's view may
        lag another node's change of that membership, so the store decides: its answer is
        applied here, and announced if it changed the membership, with the log's head and
        membership sequence as of the change (the user's connections follow from that head)."""
        room = check_room(room)
        log = self._log(room)
        if self.peers is None:
            if user not in log.members:
                self.store.add_member(room, user)
                self._joined(log, user)
            return log
        change = self.store.add_member(room, user)
        self._changed(log, user, change.seq)
        if user not in log.members:
            self._joined(log, user, change.head)
        if change.changed:
            self.peers.announce({"type": "join", "room": room, "user": user,
                                 "head": change.head, "seq": change.seq})  # fmt: skip
        return log

    def _joined(self, log: Log, user: str, since: int | None = None) -> None:
        log.members.add(user)
        behind = self._follow(log, user, since)
        self._tell([log], {"type": "join", "room": log.name, "user": user})
        for sub in behind:  # told of the join first
            sub.catch_up()

    def leave(self, user: str, room: str) -> None:
        """``user`` leaves ``room``. With peers, as for :meth:`join`, the store decides: a user
        this node has in the room whom another node removed already leaves here (nothing is
        announced), one whose join this node has yet to hear of leaves for good."""
        name = check_room(room)
        if self.peers is None:
            log = self.member_log(user, name)
            self.store.remove_member(name, user)
            self._left(log, user)
            return
        known = self.logs.get(name)
        change = self.store.remove_member(name, user)
        if not change.changed and (known is None or user not in known.members):
            self.member_log(user, name)  # raises: a member neither here nor in the store
        log = known or self._log(name)  # a room created by a join this node has yet to hear of
        self._changed(log, user, change.seq)
        if user in log.members:
            self._left(log, user)
        if change.changed:
            self.peers.announce({"type": "leave", "room": name, "user": user,
                                 "seq": change.seq})  # fmt: skip

    def _left(self, log: Log, user: str) -> None:
        self._tell([log], {"type": "leave", "room": log.name, "user": user})
        log.members.discard(user)
        for sub in self.online.get(user, ()):
            self._unsubscribe(log, sub)
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
                "online": sum(1 for m in log.members if self.is_online(m)),
            }
            for log in sorted(self.logs.values(), key=lambda log: log.name)
            if log.name.startswith("#")
        ]

    def who(self, room: str) -> list[dict[str, Any]]:
        log = self.logs.get(check_room(room))
        if log is None:
            raise HubError("no-such-room", f"no room {room}")
        return [{"user": m, "online": self.is_online(m)} for m in sorted(log.members)]

    # -- messages -----------------------------------------------------------------------------
    def open_log(self, user: str, name: str) -> Log:
        """The log ``name`` for reading or writing: a room or conversation ``user`` is a member
        of, or a push topic (created on first use)."""
        if name.startswith(("#", "@")):
            return self.member_log(user, name)
        return self._log(name)

    def _log(self, name: str) -> Log:
        """The log ``name``, created (in the store too) if there is none."""
        log = self.logs.get(name)
        if log is None:
            log = self.load(self.store.create_log(name))
        return log

    def load(self, info: LogInfo) -> Log:
        """A log of the store this hub has not loaded, without its members (the caller adds
        them)."""
        log = self.logs[info.name] = Log(info.name, info.epoch, info.head)
        return log

    def publish(self, user: str, name: str, text: str, json: bool = False) -> int:
        """Append ``text`` to the log ``name`` and deliver it; returns its offset. ``json``
        marks ``text`` as the JSON encoding of a non-string value."""
        log = self.open_log(user, name)
        ts = time.time()
        offset = self.store.append(name, ts, user, text, json)
        self.published += 1
        if self.peers is None:  # else every node, this one too, receives it from the store
            log.head = offset
            self._deliver(log, StoredMessage(name, offset, ts, user, text, json))
        return offset

    def post(
        self,
        user: str,
        name: str,
        text: str,
        failed: Failed,
        *,
        json: bool = False,
        done: Stored | None = None,
    ) -> None:
        """Publish without waiting for the store: ``done`` is told the offset (now, or later)
        and ``failed`` why it could not be stored. With peers and batching, the append goes to
        the store with the others of this loop turn, in one round trip at the flush; otherwise
        this is :meth:`publish`. A user not allowed to write there raises at once."""
        if self.peers is None or self.wake is None:
            offset = self.publish(user, name, text, json)
            if done is not None:
                done(offset)
            return
        self.open_log(user, name)  # may the user write there?
        msg = StoredMessage(name, 0, time.time(), user, text, json)
        self.peers.append_later(msg, done, failed)
        self.published += 1
        self.wake()

    def receive(self, msg: StoredMessage) -> None:
        """With peers: a message of a followed log, as the store's channel carries it (in
        offset order, with no gap). One this hub already has is ignored."""
        log = self.logs.get(msg.log)
        if log is None or msg.offset <= log.head:
            return
        log.head = msg.offset
        self._deliver(log, msg)

    def lost(self, log: Log, epoch: str) -> None:
        """With peers: the store lost ``log``'s history (Redis came back empty), which goes on
        under a new epoch from offset 0. Its subscribers are told (``lost``) and follow on."""
        log.epoch, log.head = epoch, 0
        encoded = Encoded({"type": "lost", "room": log.name, "epoch": epoch})
        for sub in log.subscribers:
            sub.cursors[log.name] = 0
            sub.write(encoded.data(sub.mode))

    def _deliver(self, log: Log, msg: StoredMessage) -> None:
        offset = msg.offset
        encoded = Encoded(message_event(log, msg))
        if self.wake is None:
            for sub in log.subscribers:
                sub.deliver(log, offset, encoded)
            return
        if not log.queued:
            if not self._queued:
                self.wake()
            self._queued.append(log)
        log.queued.append((offset, encoded))

    def overtake(self, sub: Subscriber) -> None:
        """Deliver to ``sub`` alone, now, what is queued for it: a front calls this before it
        writes ``sub`` a reply, so that the reply does not overtake them. At the flush, ``sub``
        skips them (its cursor is past them)."""
        for log in self._queued:
            if sub in log.subscribers:
                for offset, encoded in log.queued:
                    sub.deliver(log, offset, encoded)

    def flush(self) -> None:
        """Deliver every queued publication now (the passes under way are completed)."""
        while self.flush_some(1 << 62):
            pass

    def flush_some(self, budget: int) -> bool:
        """Deliver queued publications to up to ``budget`` subscribers (batched delivery);
        returns whether some are still to be delivered.

        Each log with a queue goes through its subscribers in passes: a live subscriber whose
        cursor is within the queue gets the rest of it, joined, in one write; the others take
        it message by message (:meth:`Subscriber.deliver` skips, or lets them fall behind).
        A publication queued while a pass is under way goes to the subscribers this pass has
        yet to reach, and to the others in the next pass. So when a pass is cut into steps
        (the caller reads its sockets in between), a message waits at most about one pass,
        not for the pass under way to end and then for its own."""
        queued = self._queued
        while queued and budget > 0:
            log = queued[0]
            batch, name = log.queued, log.name
            if not log.pass_order:  # a new pass
                log.pass_order = list(log.subscribers)
                log.pass_at, log.pass_last = 0, batch[-1][0]
            order, start = log.pass_order, log.pass_at
            end = min(len(order), start + budget)
            first, last = batch[0][0], batch[-1][0]
            joined: dict[tuple[int, Wire], bytes] = {}
            delivered = 0
            for sub in order[start:end]:
                cursor = sub.cursors.get(name)
                if cursor is None or cursor >= last:
                    continue  # no longer follows the log (its cursor went), or has them all
                if sub.behind_since is None and not sub.congested and cursor >= first - 1:
                    key = (cursor, sub.mode)
                    data = joined.get(key)
                    if data is None:
                        data = joined[key] = b"".join(
                            [e.data(sub.mode) for offset, e in batch if offset > cursor]
                        )
                    sub.write(data)
                    sub.cursors[name] = last
                    delivered += last - cursor
                else:
                    for offset, encoded in batch:
                        sub.deliver(log, offset, encoded)
            self.deliveries += delivered
            budget -= end - start
            log.pass_at = end
            if end == len(order):  # the pass is over: everyone has what was queued before it
                log.pass_order = []
                log.queued = [entry for entry in batch if entry[0] > log.pass_last]
                queued.pop(0)
                if log.queued:
                    queued.append(log)  # its next pass comes after the other logs' turn
        return bool(queued)

    def private(self, user: str, to: str, text: str, json: bool = False) -> int:
        return self.publish(user, self.conversation(user, to), text, json)

    def conversation(self, user: str, to: str) -> str:
        """The name of the private log of ``user`` and ``to``, opened (and created, members
        told, the first time)."""
        to = to.lower()
        if self.store.password_hash(to) is None:
            raise HubError("no-such-user", f"no user {to}")
        name = private_log(user, to)
        log = self.logs.get(name)
        if log is None:
            log = self._log(name)
            changes = [self.store.add_member(name, member) for member in sorted({user, to})]
            if self.peers is None:
                self._conversation(log, {user, to})
            else:  # from the store's head as of the membership, like a join
                head = max(change.head for change in changes)
                self._conversation(log, {user, to}, head)
                if any(change.changed for change in changes):
                    self.peers.announce({"type": "members", "log": name,
                                         "users": [user, to], "head": head})  # fmt: skip
        return name

    def _conversation(self, log: Log, users: Iterable[str], since: int | None = None) -> None:
        for member in users:
            log.members.add(member)
            for sub in self._follow(log, member, since):
                sub.catch_up()

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
        return {"users": [{"user": m, "online": self.is_online(m)} for m in sorted(log.members)]}

    def subscribe(self, sub: Subscriber, name: str) -> Log:
        """``sub`` follows ``name``, a log it may read (:meth:`open_log`), from the log's head;
        :meth:`resume` then says from where it is replayed. With peers, a log this node does not
        follow gets its head from the store in the call that follows it: one round trip (none
        if it is followed), and this node appends nothing in between (what the others append
        comes through :meth:`Peers.follow`)."""
        known = name in self.logs
        log = self.open_log(sub.user, name)
        self._subscribe(log, sub, None if known else log.head)  # a new Log has the store's head
        return log

    def unsubscribe(self, sub: Subscriber, name: str) -> None:
        """``sub`` stops following ``name`` (membership is unchanged)."""
        self.flush()
        log = self.logs.get(name)
        if log is not None:
            self._unsubscribe(log, sub)
        sub.cursors.pop(name, None)

    def resume(self, sub: Subscriber, name: str, after: int, epoch: str | None) -> Log:
        """Replay ``name`` to ``sub`` after offset ``after``, then go on live. A changed epoch
        means the history the client knew is gone: it is told, and replay starts at 0."""
        log = self.subscribe(sub, name)
        if epoch is not None and epoch != log.epoch:
            sub.write(Encoded({"type": "lost", "room": name, "epoch": log.epoch}).data(sub.mode))
            after = 0
        sub.cursors[name] = max(0, min(after, log.head))
        sub.catch_up()
        return log

    # -- other nodes --------------------------------------------------------------------------
    def apply(self, event: dict[str, Any]) -> None:
        """What another node announced (:meth:`Peers.announce`), or the cluster's presence
        (``online``/``offline``, for every node): update this hub's view and tell the local
        subscribers concerned."""
        kind, user = event.get("type"), str(event.get("user", ""))
        if kind in ("online", "offline"):
            if kind == "online":
                self.present.add(user)
            else:
                self.present.discard(user)
            self._tell(self.logs_of(user), {"type": kind, "user": user}, skip_user=user)
        elif kind == "join":
            log = self._log(str(event["room"]))
            if not self._stale(log, user, event) and user not in log.members:
                self._joined(log, user, int(event["head"]))
        elif kind == "leave":
            left = self.logs.get(str(event["room"]))
            if left is not None and not self._stale(left, user, event) and user in left.members:
                self._left(left, user)
        elif kind == "members":
            log = self._log(str(event["log"]))
            self._conversation(log, map(str, event["users"]), int(event["head"]))
        elif kind == "kick":
            session = event.get("session")
            self._kick(user, str(event["reason"]), None if session is None else str(session))
        elif kind == "deleted":
            self._deleted(user)

    # -- internals ----------------------------------------------------------------------------
    def _subscribe(self, log: Log, sub: Subscriber, since: int | None = None) -> None:
        """``sub`` follows ``log``. With peers, the log's first local subscriber makes this
        node follow it, from offset ``since`` (where a membership began; default: the store's
        head now). Before that, this node did not know the log's head."""
        if not log.subscribers and self.peers is not None:
            log.head = self.head_of(log) if since is None else since
            self.peers.follow(log)
        log.subscribers.add(sub)

    def head_of(self, log: Log) -> int:
        """The log's head: the store's when this node does not follow it."""
        if log.subscribers or self.peers is None:
            return log.head
        return self.store.create_log(log.name).head

    def _unsubscribe(self, log: Log, sub: Subscriber) -> None:
        subscribers = log.subscribers
        if sub in subscribers:
            subscribers.discard(sub)
            if not subscribers and self.peers is not None:
                self.peers.unfollow(log)

    def _follow(self, log: Log, user: str, since: int | None = None) -> list[Subscriber]:
        """Every connection of ``user`` follows ``log`` from now on: with peers, after offset
        ``since`` (where the membership began: what this node is yet to receive up to there is
        skipped), else after the log's head. Returns those that are to catch up with what this
        node received of the log since then (:meth:`Subscriber.catch_up`)."""
        self.flush()  # what is queued goes out before they follow (they start after it)
        behind = []
        for sub in self.online.get(user, ()):
            self._subscribe(log, sub, since)
            if log.name not in sub.cursors:
                start = sub.cursors[log.name] = log.head if since is None else since
                if start < log.head:
                    behind.append(sub)
        return behind

    def _changed(self, log: Log, user: str, seq: int) -> None:
        """This node applied (or saw the store's result of) the change ``seq`` of ``user``'s
        membership of ``log``."""
        if seq > log.changes.get(user, 0):
            log.changes[user] = seq

    def _stale(self, log: Log, user: str, event: dict[str, Any]) -> bool:
        """Whether an announced join or leave is older than what this node has of that
        membership (another node's change announced after it, or the store's answer to a change
        made here); if not, it is recorded as the newest."""
        seq = event.get("seq")
        if seq is None:  # Cluster._reload's, from the store now
            return False
        if int(seq) <= log.changes.get(user, 0):
            return True
        self._changed(log, user, int(seq))
        return False

    def _tell(self, logs: Iterable[Log], event: dict[str, Any], skip_user: str = "") -> None:
        self.flush()  # the publications before this event go out before it
        encoded = Encoded(event)
        seen: set[Subscriber] = set()
        for log in logs:
            for sub in log.subscribers:
                if sub.user != skip_user and sub not in seen:
                    seen.add(sub)
                    sub.notify(encoded)
