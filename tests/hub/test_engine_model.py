"""A hypothesis state machine over the hub engine: any mix of joins, leaves, publications,
connects, disconnects and congested subscribers keeps every log in one total order with
contiguous offsets, and every subscriber sees each room in order, without gaps it cannot catch
up and without duplicates. The same machine runs with batched delivery (publications queued
until a flush, which may come at any step, whole or a few subscribers at a time)."""

from __future__ import annotations

import json
import shutil
import tempfile

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from wirekit.hub.engine import Hub, HubError, Subscriber
from wirekit.hub.store import SqliteStore
from wirekit.limits import Limits

USERS = st.sampled_from(["ann", "bob", "cy"])
ROOMS = st.sampled_from(["#a", "#b"])


class FakeSubscriber(Subscriber):
    __slots__ = ("congested_now", "received", "writes")

    def __init__(self, hub: Hub, user: str) -> None:
        super().__init__(hub, user, "json")
        self.congested_now = False
        self.received: list[dict[str, object]] = []
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        events = [json.loads(line) for line in data.splitlines()]  # a batch: several lines
        first = events[0]
        if first["type"] == "msg":  # each write continues the room right after the cursor
            assert first["offset"] == self.cursors[first["room"]] + 1, (first, self.cursors)
            offsets = [e["offset"] for e in events]
            assert offsets == list(range(first["offset"], first["offset"] + len(events)))
            assert {e["room"] for e in events} == {first["room"]}
        else:
            assert len(events) == 1
        self.received.extend(events)

    @property
    def congested(self) -> bool:
        return self.congested_now

    def disconnect(self, reason: str) -> None:
        self.hub.detach(self)


class HubModel(RuleBasedStateMachine):
    subs = Bundle("subs")
    batched = False

    def woken(self) -> None:
        self.awake = True

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.store = SqliteStore(self.dir)
        for user in ("ann", "bob", "cy"):
            self.store.create_user(user, "x")
        self.hub = Hub(self.store, Limits(), wake=self.woken if self.batched else None)
        self.awake = False  # a flush was asked for and has not run yet
        self.published: dict[str, list[tuple[str, str]]] = {}
        self.live: list[FakeSubscriber] = []
        self.counter = 0

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir)

    @initialize(target=subs)
    def ann_and_bob_in_a(self) -> FakeSubscriber:
        for user in ("ann", "bob"):
            self.hub.join(user, "#a")
        return self.connect("bob")

    @rule(target=subs, user=USERS)
    def connect(self, user: str) -> FakeSubscriber:
        sub = FakeSubscriber(self.hub, user)
        self.hub.attach(sub)
        self.live.append(sub)
        return sub

    @rule(sub=subs)
    def disconnect(self, sub: FakeSubscriber) -> None:
        if sub in self.live:
            self.hub.detach(sub)
            self.live.remove(sub)

    @rule(user=USERS, room=ROOMS)
    def join(self, user: str, room: str) -> None:
        self.hub.join(user, room)

    @rule(user=USERS, room=ROOMS)
    def leave(self, user: str, room: str) -> None:
        try:
            self.hub.leave(user, room)
        except HubError:
            pass

    @rule(user=USERS, room=ROOMS)
    def publish(self, user: str, room: str) -> None:
        self.counter += 1
        text = f"t{self.counter}"
        try:
            offset = self.hub.publish(user, room, text)
        except HubError:
            return
        log = self.published.setdefault(room, [])
        log.append((user, text))
        assert offset == len(log)

    @rule(user=USERS, other=USERS)
    def private(self, user: str, other: str) -> None:
        self.counter += 1
        self.hub.private(user, other, f"p{self.counter}")
        room = "@" + ",".join(sorted((user, other)))
        self.published.setdefault(room, []).append((user, f"p{self.counter}"))

    @rule(sub=subs)
    def congest(self, sub: FakeSubscriber) -> None:
        sub.congested_now = True

    @rule(sub=subs)
    def drain(self, sub: FakeSubscriber) -> None:
        sub.congested_now = False
        if sub.behind_since is not None:
            sub.catch_up()

    @rule(sub=subs)
    def reply(self, sub: FakeSubscriber) -> None:
        """A front about to write ``sub`` a reply: what was published before reaches it first."""
        if sub in self.live:
            self.hub.overtake(sub)
            if sub.behind_since is None:
                for room, last in sub.cursors.items():
                    assert last == self.hub.logs[room].head, (room, last)

    @rule()
    def flush(self) -> None:
        self.hub.flush()
        self.awake = False

    @rule(budget=st.integers(1, 3))
    def flush_some(self, budget: int) -> None:
        """One step of a delivery pass (the service's flush): a few subscribers at a time,
        with publications arriving between steps; it asks again while some are left."""
        self.awake = self.hub.flush_some(budget)

    @invariant()
    def a_batch_waits_for_a_flush_it_asked_for(self) -> None:
        queued = [log for log in self.hub.logs.values() if log.queued]
        assert not queued or (self.batched and self.awake)

    @invariant()
    def logs_are_contiguous_and_in_one_order(self) -> None:
        for room, expected in self.published.items():
            stored = self.store.read(room, 0, 10_000)
            assert [m.offset for m in stored] == list(range(1, len(expected) + 1))
            assert [(m.sender, m.text) for m in stored] == expected
            assert self.hub.logs[room].head == len(expected)

    @invariant()
    def subscribers_see_each_room_in_order_once(self) -> None:
        for sub in self.live:
            per_room: dict[str, list[int]] = {}
            for event in sub.received:
                if event["type"] == "msg":
                    offsets = per_room.setdefault(str(event["room"]), [])
                    offset = int(str(event["offset"]))
                    assert not offsets or offset > offsets[-1], (event, offsets)
                    offsets.append(offset)
                    sender, text = self.published[str(event["room"])][offset - 1]
                    assert (event["from"], event["text"]) == (sender, text)
            if sub.behind_since is None:
                for room, last in sub.cursors.items():  # live means caught up, or queued
                    log = self.hub.logs[room]
                    assert last == log.head or (log.queued and last >= log.queued[0][0] - 1)


TestHubModel = HubModel.TestCase
TestHubModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


class BatchedHubModel(HubModel):
    batched = True


TestBatchedHubModel = BatchedHubModel.TestCase
TestBatchedHubModel.settings = TestHubModel.settings


def test_a_publication_queued_during_a_pass_reaches_everyone_once_and_in_order() -> None:
    """A delivery pass cut into steps (Hub.flush_some): what is published between two steps
    goes, in the same write as the rest of the queue, to the subscribers the pass has yet to
    reach, and to those it already passed in the next pass; nobody gets anything twice."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(tmp)
        woken: list[bool] = []
        hub = Hub(store, Limits(), wake=lambda: woken.append(True))
        users = ("ann", "bob", "cy")
        for user in users:
            store.create_user(user, "x")
            hub.join(user, "#a")
        subs = [FakeSubscriber(hub, user) for user in users]
        for sub in subs:
            hub.attach(sub)
        order = list(hub.logs["#a"].subscribers)  # the order a pass takes (a set's)

        def texts(sub: FakeSubscriber) -> list[object]:
            return [e["text"] for e in sub.received if e["type"] == "msg"]

        writes = {sub: sub.writes for sub in subs}  # join and online events so far
        hub.publish("ann", "#a", "one")
        assert woken == [True]
        assert hub.flush_some(1)  # the pass has two subscribers to go
        assert [texts(s) for s in order] == [["one"], [], []]
        hub.publish("bob", "#a", "two")  # between two steps
        assert woken == [True]  # the queue was not empty: the caller is to go on anyway
        assert hub.flush_some(2)  # the pass is over; "two" is left for the first subscriber
        assert [texts(s) for s in order] == [["one"], ["one", "two"], ["one", "two"]]
        assert [s.writes - writes[s] for s in order] == [1, 1, 1]  # the queue in one write
        assert hub.flush_some(1)  # the next pass: only the first subscriber lacks "two"
        assert [texts(s) for s in order] == [["one", "two"]] * 3
        hub.publish("cy", "#a", "three")  # the others have "two": they get "three" alone
        assert hub.flush_some(2)
        assert [texts(s) for s in order] == [["one", "two"]] + [["one", "two", "three"]] * 2
        assert not hub.flush_some(5)
        assert [texts(s) for s in order] == [["one", "two", "three"]] * 3
        assert [s.writes - writes[s] for s in order] == [3, 2, 2]
        assert not hub.logs["#a"].queued and hub.deliveries == 9
        store.close()
