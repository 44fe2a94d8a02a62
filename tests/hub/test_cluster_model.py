"""A hypothesis state machine over the multi-node engine: two hubs, each with its real
:class:`~wirekit.hub.cluster.Cluster`, share one store through a fake Redis.

The fake keeps what the nodes rely on Redis for: logs, members and accounts (one
:class:`SqliteStore`; an append publishes the message on its log's channel in the same call, as
RedisStore's APPEND script does), presence counts (what cluster.py's PRESENT and ABSENT scripts
do) and pub/sub. What a node writes on its subscription connection (SUBSCRIBE, UNSUBSCRIBE) is
read by Redis at a step hypothesis chooses. What Redis sends a node waits in a queue per channel
(:class:`ClusterModel`: channels interleave arbitrarily, each stays in order) or, as Redis
really does it, in one queue per node, since one connection carries all of a node's channels
(:class:`ConnectionOrderModel`); hypothesis chooses which queue's next item is delivered at each
step. :class:`ReconnectModel` also breaks a node's subscription connection (what was on its way
is lost) and reconnects it, which reloads the node's view from the store.

Users connect (like a chat connection, or a WebSocket one that subscribes per log) and
disconnect on either node, join and leave rooms, publish (at once, or at the next flush in one
pipeline), send private messages and subscribe to rooms and a push topic. Every subscriber sees
each log in order with contiguous offsets, and never twice (unless it asked for a replay or
rejoined); when every queue is drained, the nodes agree with the store on members and presence,
every connection follows what its user belongs to and is caught up, each node is subscribed to
the channels of the logs it follows and no others, and the last join, leave, online or offline
a connection was told about agrees with the final state.

The bugs this model found are the regression tests at the end (each failed before its fix).
The model lets a subscriber see a log's messages again after its user rejoined (a join comes
with the log's head as the store had it then, which a node that hears of the join late has
received since). With channels out of order (which one connection never does) a join
overtaken by its log's next messages makes a subscriber fall behind, or see messages again:
there it only has to catch up from the store.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections import Counter, deque
from functools import partial
from typing import Any

import hiredis
import orjson
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from wirekit.hub.cluster import ABSENT, PRESENT, Cluster, command
from wirekit.hub.engine import Hub, HubError, Subscriber
from wirekit.hub.store import Failed, SqliteStore, Stored, StoredMessage
from wirekit.limits import Limits

USERS = ("ann", "bob", "cy")
ROOMS = ("#a", "#b")
TOPIC = "feed"
NODES = st.integers(0, 1)
USER = st.sampled_from(USERS)
ROOM = st.sampled_from(ROOMS)
LOG = st.sampled_from([*ROOMS, TOPIC])
EVENTS = "wk:0:events"
MESSAGES = "wk:0:msg:"

Item = tuple[bytes, str, bytes]  # what Redis sends a node: kind, channel, data
Step = tuple[str, int, str]  # ("read", node, "") or ("send", node, queue)


class FakeRedis:
    """The Redis the nodes share (see the module's notes)."""

    def __init__(self, directory: str, per_channel: bool) -> None:
        self.sqlite = SqliteStore(directory)
        self.per_channel = per_channel
        self.clusters: list[Cluster] = []
        self.connections: list[FakeConnection] = []  # each node's subscription connection
        self.subscribed: dict[str, set[int]] = {}  # channel -> nodes, as Redis has it
        self.commands: list[deque[list[bytes]]] = []  # per node: written, not read yet
        self.queues: dict[tuple[int, str], deque[Item]] = {}  # (node, channel or "") -> items
        self.entries: set[str] = set()  # wk:presence
        self.online: Counter[str] = Counter()  # wk:online

    def start(self, cluster: Cluster) -> None:
        """A node subscribed to the events channel, as ``Cluster.start`` leaves it."""
        node = len(self.clusters)
        self.clusters.append(cluster)
        self.connections.append(FakeConnection(self, node))
        self.commands.append(deque())
        self.subscribed.setdefault(EVENTS, set()).add(node)
        cluster._connected_now(self.connections[node])
        cluster._task = True  # a connection after this one is a reconnection: it reloads

    def lose(self, node: int) -> None:
        """The node's subscription connection breaks: what was on its way is lost."""
        self.connections[node].closed = True
        for nodes in self.subscribed.values():
            nodes.discard(node)
        self.commands[node].clear()
        for (to, _), queue in self.queues.items():
            if to == node:
                queue.clear()
        self.clusters[node]._disconnected()

    def reconnect(self, node: int) -> None:
        """A new connection, on which the node subscribes as ``Cluster._connect`` does; it has
        the connection once the events channel's confirmation comes back."""
        self.connections[node] = FakeConnection(self, node)
        followed = sorted(self.clusters[node]._followed)
        channels = [EVENTS] + [MESSAGES + name for name in followed]
        self.connections[node].write(command("SUBSCRIBE", *channels))
        self.clusters[node]._requested = set(followed)

    def written(self, node: int, data: bytes) -> None:
        reader = hiredis.Reader()  # commands in RESP parse as replies do
        reader.feed(data)
        while (request := reader.gets()) is not False:
            self.commands[node].append(request)

    def publish(self, channel: str, data: bytes) -> None:
        for node in sorted(self.subscribed.get(channel, ())):
            self._send(node, b"message", channel, data)

    def _send(self, node: int, kind: bytes, channel: str, data: bytes) -> None:
        key = (node, channel if self.per_channel else "")
        self.queues.setdefault(key, deque()).append((kind, channel, data))

    # -- steps --------------------------------------------------------------------------------
    def pending(self) -> list[Step]:
        """What can happen next: Redis reads a node's next command, or a node gets the next
        item of one of its queues."""
        reads = [("read", node, "") for node, queue in enumerate(self.commands) if queue]
        sends = [("send", node, key) for (node, key), queue in self.queues.items() if queue]
        return sorted(reads + sends)

    def step(self, what: Step) -> None:
        kind, node, key = what
        if kind == "read":
            verb, *channels = (part.decode() for part in self.commands[node].popleft())
            for name in channels:
                if verb == "SUBSCRIBE":
                    self.subscribed.setdefault(name, set()).add(node)
                    self._send(node, b"subscribe", name, b"")
                else:
                    assert verb == "UNSUBSCRIBE", verb
                    self.subscribed.get(name, set()).discard(node)
            return
        item, channel, data = self.queues[node, key].popleft()
        cluster = self.clusters[node]
        if item == b"message":  # as cluster._Subscription._handle hands them on
            cluster._on_message(channel, data)
        elif channel == EVENTS:
            cluster._connected_now(self.connections[node])
        else:
            cluster._on_subscribed(channel)

    # -- cluster.py's presence scripts (nothing expires here: REAP is left out) ---------------
    def present(self, keys: list[str], args: list[Any]) -> int:
        for member, user in zip(args[2::2], args[3::2], strict=True):
            if member not in self.entries:
                self.entries.add(member)
                self.online[user] += 1
                if self.online[user] == 1:
                    self.publish(args[0], orjson.dumps({"type": "online", "user": user}))
        return 1

    def absent(self, keys: list[str], args: list[Any]) -> int:
        channel, member, user = args
        if member in self.entries:
            self.entries.discard(member)
            self.online[user] -= 1
            if not self.online[user]:
                del self.online[user]
                self.publish(channel, orjson.dumps({"type": "offline", "user": user}))
        return 1


class FakeConnection:
    """A node's subscription connection (its transport): what the node writes goes to Redis."""

    def __init__(self, redis: FakeRedis, node: int) -> None:
        self.redis = redis
        self.node = node
        self.closed = False

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.redis.written(self.node, data)


class NodeStore:
    """One node's RedisStore over :class:`FakeRedis`: what Hub and Cluster call."""

    def __init__(self, redis: FakeRedis, node: int) -> None:
        self.redis = redis
        self.node = f"node{node}"
        self.events = EVENTS
        self.messages = MESSAGES
        self.generation = 0
        self._pending: list[tuple[StoredMessage, Stored | None, Failed]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.redis.sqlite, name)  # accounts, logs, members, reads

    def append(self, log: str, ts: float, sender: str, text: str, json: bool = False) -> int:
        sqlite = self.redis.sqlite
        offset = sqlite.append(log, ts, sender, text, json)
        head = b"%d %s\n" % (offset, sqlite.create_log(log).epoch.encode())
        self.redis.publish(MESSAGES + log, head + orjson.dumps([ts, sender, text, json]))
        return offset

    def append_later(self, msg: StoredMessage, done: Stored | None, failed: Failed) -> None:
        self._pending.append((msg, done, failed))

    def commit(self) -> None:
        pending, self._pending = self._pending, []
        for msg, done, _ in pending:
            offset = self.append(msg.log, msg.ts, msg.sender, msg.text, msg.json)
            if done is not None:
                done(offset)

    def announce(self, event: dict[str, Any]) -> None:
        self.redis.publish(EVENTS, orjson.dumps({**event, "node": self.node}))

    def script(self, source: str) -> Any:
        scripts = {PRESENT: self.redis.present, ABSENT: self.redis.absent}
        return scripts.get(source, lambda keys, args: 0)

    def check(self) -> bool:
        return True

    def call(self, *args: str) -> Any:
        assert args == ("HKEYS", "wk:online"), args  # Cluster._reload's one call
        return list(self.redis.online)


class FakeSubscriber(Subscriber):
    __slots__ = ("fell_behind", "follows", "model", "node", "received")

    def __init__(self, model: ClusterModel, node: int, user: str, follows: bool) -> None:
        super().__init__(model.hubs[node], user, "json")
        self.model = model
        self.node = node
        self.follows = follows  # logged in like a chat connection: follows all its logs
        self.received: list[dict[str, Any]] = []
        self.fell_behind = False  # only channels out of order do that here

    def _fall_behind(self) -> None:
        self.fell_behind = True
        super()._fall_behind()

    def write(self, data: bytes) -> None:
        events = [json.loads(line) for line in data.splitlines()]  # a batch: several lines
        first = events[0]
        if first["type"] == "msg":  # each write continues the log right after the cursor
            room = first["room"]
            assert first["offset"] == self.cursors[room] + 1, (self.user, first, self.cursors)
            seen = 0  # the last offset of room seen since a replay or a rejoin
            for event in self.received:
                if event.get("room") == room:
                    kind = event["type"]
                    if kind == "replay" or (kind == "join" and event["user"] == self.user):
                        seen = 0
                    seen = event.get("offset", seen)
            # With channels out of order, a join overtaken by its log's next messages resets
            # the log's head to the join's, and those messages come again (one connection, as
            # Redis gives a node, never does that: the other models check this).
            assert first["offset"] > seen or self.model.per_channel, ("again", self.user, first)
            for i, event in enumerate(events):
                assert event["room"] == room and event["offset"] == first["offset"] + i, events
                sender, text = self.model.published[room][event["offset"] - 1]
                assert (event["from"], event["text"]) == (sender, text), event
        else:
            assert len(events) == 1 and first["type"] != "lost", events
        self.received.extend(events)

    @property
    def congested(self) -> bool:
        return False

    def disconnect(self, reason: str) -> None:
        raise AssertionError(f"{self.user} disconnected: {reason}")


class ClusterModel(RuleBasedStateMachine):
    subs = Bundle("subs")
    per_channel = True  # else one queue per node
    reconnects = False  # subscription connections break and come back

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.redis = FakeRedis(self.dir, self.per_channel)
        sqlite = self.redis.sqlite
        self.published: dict[str, list[tuple[str, str]]] = {}
        self.members: dict[str, set[str]] = {}  # what the joins and leaves asked for
        for user in USERS:
            sqlite.create_user(user, "x")
        self.hubs: list[Hub] = []
        self.awake = [False, False]  # a flush was asked for and has not run yet
        for node in range(2):
            store = NodeStore(self.redis, node)
            cluster = Cluster(store)  # type: ignore[arg-type]
            hub = Hub(store, Limits(), wake=partial(self.woken, node), peers=cluster)
            cluster.bind(hub)
            self.redis.start(cluster)
            self.hubs.append(hub)
        self.live: list[FakeSubscriber] = []
        self.counter = 0

    def woken(self, node: int) -> None:
        self.awake[node] = True

    def teardown(self) -> None:
        try:
            if sys.exception() is None:  # a step that failed says why already
                self.settle()
        finally:
            self.redis.sqlite.close()
            shutil.rmtree(self.dir)

    def text(self, name: str) -> tuple[str, int]:
        """A new text for ``name``, and how many messages it has."""
        self.counter += 1
        return f"t{self.counter}", len(self.published.setdefault(name, []))

    # -- rules --------------------------------------------------------------------------------
    @initialize(target=subs)
    def ann_and_bob_in_a(self) -> FakeSubscriber:
        for user in ("ann", "bob"):
            self.join(0, user, "#a")
        return self.connect(1, "bob", True)

    @rule(target=subs, node=NODES, user=USER, follows=st.booleans())
    def connect(self, node: int, user: str, follows: bool) -> FakeSubscriber:
        """A chat connection (``follows``) or a WebSocket one (subscribes per log)."""
        sub = FakeSubscriber(self, node, user, follows)
        sub.hub.attach(sub, follow=follows)
        self.live.append(sub)
        return sub

    @rule(sub=subs)
    def disconnect(self, sub: FakeSubscriber) -> None:
        if sub in self.live:
            sub.hub.detach(sub)
            self.live.remove(sub)

    @rule(node=NODES, user=USER, room=ROOM)
    def join(self, node: int, user: str, room: str) -> None:
        self.hubs[node].join(user, room)
        self.members.setdefault(room, set()).add(user)

    @rule(node=NODES, user=USER, room=ROOM)
    def leave(self, node: int, user: str, room: str) -> None:
        try:
            self.hubs[node].leave(user, room)
        except HubError:
            assert user not in self.members.get(room, ())
        self.members.get(room, set()).discard(user)

    @rule(node=NODES, user=USER, room=ROOM)
    def rejoin(self, node: int, user: str, room: str) -> None:
        """A leave and a join at once: the join's head may lag what other nodes received."""
        self.leave(node, user, room)
        self.join(node, user, room)

    @rule(node=NODES, user=USER, name=LOG)
    def publish(self, node: int, user: str, name: str) -> None:
        text, before = self.text(name)
        try:
            offset = self.hubs[node].publish(user, name, text)
        except HubError:
            return  # not a member, as this node sees it
        self.published[name].append((user, text))
        assert offset == before + 1

    @rule(node=NODES, user=USER, name=LOG)
    def post(self, node: int, user: str, name: str) -> None:
        """Appended at the node's next flush, with the others of that flush."""
        text, _ = self.text(name)

        def done(offset: int) -> None:
            self.published[name].append((user, text))
            assert offset == len(self.published[name])

        def failed(exc: HubError) -> None:
            raise AssertionError(exc)

        try:
            self.hubs[node].post(user, name, text, failed, done=done)
        except HubError:
            pass  # not a member, as this node sees it

    @rule(node=NODES, user=USER, other=USER)
    def private(self, node: int, user: str, other: str) -> None:
        hub = self.hubs[node]
        name = hub.conversation(user, other)
        self.members[name] = {user, other}
        text, before = self.text(name)
        assert hub.publish(user, name, text) == before + 1
        self.published[name].append((user, text))

    @rule(sub=subs, name=LOG, replay=st.booleans())
    def subscribe(self, sub: FakeSubscriber, name: str, replay: bool) -> None:
        """A WebSocket ``sub`` (ws.py's _op_sub), from the head or (``replay``) from 0."""
        if sub not in self.live:
            return
        hub = sub.hub
        room = hub.logs.get(name)
        if name.startswith("#") and (room is None or sub.user not in room.members):
            hub.join(sub.user, name)
            self.members.setdefault(name, set()).add(sub.user)
        followed = name in hub.logs and bool(hub.logs[name].subscribers)
        log = hub.subscribe(sub, name)
        if not followed:  # the store's head, not one this node saw before
            assert log.head == len(self.published.get(name, ())), (name, log.head)
        if replay:
            sub.received.append({"type": "replay", "room": name})  # may repeat what it saw
        hub.resume(sub, name, 0 if replay else log.head, None)

    @rule(sub=subs, name=LOG)
    def unsubscribe(self, sub: FakeSubscriber, name: str) -> None:
        """A WebSocket ``unsub`` (a chat connection follows all its logs)."""
        if sub in self.live and not sub.follows and name in sub.cursors:
            sub.hub.unsubscribe(sub, name)
            sub.received.append({"type": "unsubscribed", "room": name})  # for check_told

    @rule(pick=st.integers(0, 63))
    def deliver(self, pick: int) -> None:
        """Redis reads one command of a node, or a node gets one item of one of its queues."""
        pending = self.redis.pending()
        if pending:
            self.redis.step(pending[pick % len(pending)])

    @rule(node=NODES)
    def receive_all(self, node: int) -> None:
        """The node gets everything on its way to it (another node may lag meanwhile)."""
        while pending := [what for what in self.redis.pending() if what[:2] == ("send", node)]:
            self.redis.step(pending[0])

    @rule(node=NODES)
    def flush(self, node: int) -> None:
        """The node's flusher: the hub's batches, then the store's pipeline of appends."""
        self.hubs[node].flush()
        self.hubs[node].store.commit()
        self.awake[node] = False

    @precondition(lambda self: self.reconnects)
    @rule(node=NODES)
    def lose_connection(self, node: int) -> None:
        """The node's subscription connection breaks (Redis itself stays up)."""
        if not self.redis.connections[node].closed:
            self.redis.lose(node)

    @precondition(lambda self: self.reconnects)
    @rule(node=NODES)
    def reconnect(self, node: int) -> None:
        if self.redis.connections[node].closed:
            self.redis.reconnect(node)

    @rule()
    def settle(self) -> None:
        """Every node connected, every queue drained, every node flushed: the nodes agree."""
        for node in (0, 1):
            self.reconnect(node)
        while True:
            if pending := self.redis.pending():
                for what in pending:
                    self.redis.step(what)
            elif any(self.awake):
                for node in (0, 1):
                    self.flush(node)
            else:
                break
        self.check_settled()

    # -- what holds at every step -------------------------------------------------------------
    @invariant()
    def logs_are_contiguous_and_in_one_order(self) -> None:
        for name, expected in self.published.items():
            stored = self.redis.sqlite.read(name, 0, 10_000)
            assert [m.offset for m in stored] == list(range(1, len(expected) + 1))
            assert [(m.sender, m.text) for m in stored] == expected

    @invariant()
    def members_are_what_was_asked_for(self) -> None:
        for name, users in self.members.items():
            assert set(self.redis.sqlite.members(name)) == users, (name, users)

    @invariant()
    def nobody_falls_behind(self) -> None:
        """Nobody is congested here: a subscriber behind was handed a gap. (Channels out of
        order make one fall behind: a join overtaken by its log's next messages resets the
        log's head to the join's; it catches up, see check_settled.)"""
        if not self.per_channel:
            for hub in self.hubs:
                assert not hub.behind and hub.fell_behind == 0

    @invariant()
    def a_batch_waits_for_a_flush_it_asked_for(self) -> None:
        for node, hub in enumerate(self.hubs):
            assert self.awake[node] or not any(log.queued for log in hub.logs.values())

    # -- what holds once everything is delivered ----------------------------------------------
    def check_settled(self) -> None:
        self.members_are_what_was_asked_for()
        sqlite = self.redis.sqlite
        heads = {info.name: info.head for info in sqlite.logs()}
        members = {name: set(sqlite.members(name)) for name in heads}
        online = {sub.user for sub in self.live}
        assert set(self.redis.online) == online
        for sub in self.live:
            if sub.behind_since is not None:  # no gap it cannot catch up
                sub.catch_up()
                assert sub.behind_since is None
        for node, hub in enumerate(self.hubs):
            assert hub.present == online, (node, hub.present, online)
            cluster = self.redis.clusters[node]
            for name, log in hub.logs.items():
                assert log.members == members[name], (node, name, log.members, members[name])
                subs = {s for s in self.live if s.node == node and name in s.cursors}
                assert log.subscribers == subs, (node, name)
                followed = bool(subs)
                assert (name in cluster._followed) == followed, (node, name)
                assert (node in self.redis.subscribed.get(MESSAGES + name, ())) == followed
                if followed:
                    assert log.head == heads[name], (node, name, log.head, heads[name])
        for sub in self.live:
            mine = {name for name, users in members.items() if sub.user in users}
            logs = {name for name in sub.cursors if name.startswith(("#", "@"))}
            assert logs <= mine, (sub.user, logs, mine)
            if sub.follows:
                assert logs == mine, (sub.user, sub.node, logs, mine)
            for name, last in sub.cursors.items():
                assert last == heads[name], (sub.user, sub.node, name, last, heads[name])
            self.check_told(sub, members, online)

    @staticmethod
    def check_told(sub: FakeSubscriber, members: dict[str, set[str]], online: set[str]) -> None:
        """The last join or leave of a user in a room ``sub`` follows, and the last online or
        offline of a user, that ``sub`` was told agree with the final state, unless ``sub``
        stopped hearing of them since (its user left, or it unsubscribed). A subscriber that
        fell behind catches up on messages only: the events meanwhile are not in the log."""
        last: dict[tuple[str, str], int] = {}
        for i, event in enumerate(sub.received):
            if event["type"] in ("join", "leave", "online", "offline"):
                last[event.get("room", ""), event["user"]] = i
        for (room, user), i in last.items():
            event, after = sub.received[i], sub.received[i + 1 :]
            deaf = any(
                e["type"] == "unsubscribed"
                or (e["type"] == "leave" and e["user"] in (user, sub.user))
                for e in after
            )
            if room:
                if room in sub.cursors and not deaf and not sub.fell_behind:
                    assert (event["type"] == "join") == (user in members[room]), (sub.user, event)
            else:
                assert deaf or (event["type"] == "online") == (user in online), (sub.user, event)


SETTINGS = settings(max_examples=100, stateful_step_count=50, deadline=None, derandomize=True)
TestClusterModel = ClusterModel.TestCase
TestClusterModel.settings = SETTINGS


class ConnectionOrderModel(ClusterModel):
    per_channel = False


TestConnectionOrderModel = ConnectionOrderModel.TestCase
TestConnectionOrderModel.settings = SETTINGS


class ReconnectModel(ConnectionOrderModel):
    reconnects = True


TestReconnectModel = ReconnectModel.TestCase
TestReconnectModel.settings = SETTINGS


# -- what the model found -------------------------------------------------------------------------
def settled(model: ClusterModel) -> None:
    try:
        model.settle()
    finally:
        model.teardown()


def test_a_stale_join_from_another_node_does_not_undo_a_later_leave() -> None:
    """ann joins #a on node 0; node 1, yet to hear of it, lets her join again; she leaves on
    node 0. Node 1's join used to be announced, and node 0 put her back in #a on hearing it,
    for good (the store and node 1 had her out). Now the store says that join changed nothing
    (it is not announced) and node 1 ignores node 0's join, older than what the store told it;
    it applies the leave."""
    model = ConnectionOrderModel()
    model.join(0, "ann", "#a")
    model.join(1, "ann", "#a")
    model.leave(0, "ann", "#a")
    settled(model)


def test_a_join_on_a_node_yet_to_hear_of_a_leave_holds() -> None:
    """ann leaves #a on node 1 and joins it again on node 0 before node 0 hears of the leave.
    Node 0 still had her in #a and did nothing, then applied the leave: she was out. Now the
    store says the join changed the membership: it is announced, and node 0 ignores the leave,
    older than that change."""
    model = ConnectionOrderModel()
    model.join(0, "ann", "#a")
    model.settle()
    model.leave(1, "ann", "#a")
    model.join(0, "ann", "#a")
    settled(model)


def test_a_log_followed_while_the_subscription_reconnects_is_received() -> None:
    """Between ``Cluster._connect`` writing its SUBSCRIBE and the events confirmation, the
    cluster has no transport: a ``follow`` then (a first subscriber to a topic) is sent with
    the confirmation. (It used to be dropped, and the node never got that topic's messages.)"""
    model = ReconnectModel()
    sub = model.connect(0, "ann", False)
    model.settle()
    model.lose_connection(0)
    model.reconnect(0)
    model.subscribe(sub, TOPIC, False)
    model.publish(1, "bob", TOPIC)
    settled(model)


def test_a_node_cut_off_loads_a_room_created_meanwhile() -> None:
    """bob is connected to node 1 only; while node 1 is cut off, he joins #b (a room node 1
    never loaded) on node 0. The reload used to skip #b, so his connection never followed it
    (and a later use of #b on node 1 created it without its members); now it loads it."""
    model = ReconnectModel()
    model.connect(1, "bob", True)
    model.settle()
    model.lose_connection(1)
    model.join(0, "bob", "#b")
    settled(model)


def test_a_rejoin_on_a_lagging_node_repeats_no_message() -> None:
    """Node 0 follows #a but has not yet received message 1 when bob leaves #a and joins it
    again there: the join used to carry node 0's head (0), and bob's connection on node 1, which
    had message 1, got it again. Now it carries the store's head as of the join (1)."""
    model = ConnectionOrderModel()
    model.join(0, "ann", "#a")
    model.join(0, "bob", "#a")
    model.connect(0, "ann", True)
    bob = model.connect(1, "bob", True)
    model.settle()
    model.publish(0, "ann", "#a")
    while model.redis.queues[1, ""]:  # node 1 gets it; node 0 does not yet
        model.redis.step(("send", 1, ""))
    model.flush(1)
    model.leave(0, "bob", "#a")
    model.join(0, "bob", "#a")
    settled(model)
    assert [e["offset"] for e in bob.received if e["type"] == "msg"] == [1]


def test_a_resume_after_a_replay_repeats_nothing() -> None:
    """bob's connection on node 1 replays #a from 0 while node 1 is yet to receive message 2:
    the replay stops at node 1's head (it used to write message 2 from the store), so the
    ``sub`` from the head that follows does not move its cursor back and message 2 comes
    once, from the channel."""
    model = ConnectionOrderModel()
    bob = model.ann_and_bob_in_a()
    model.publish(0, "ann", "#a")
    model.settle()
    model.publish(0, "ann", "#a")
    model.subscribe(bob, "#a", True)
    model.subscribe(bob, "#a", False)
    settled(model)
