"""The hub's browser page (wirekit/hub/static) in headless Chromium against `wirekit serve`.

Users on the page and users of the TCP chat (docs/chat-protocol.md) share rooms and private
messages; the page reconnects and resumes by offset (docs/ws-protocol.md); it runs under its
Content-Security-Policy with every request to another origin aborted.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tests.cli.test_chat_cli import LinePeer
from tests.conftest import free_port, wirekit_cmd
from tests.hub.conftest import CHROMIUM

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")


class HubServer:
    """`wirekit serve` with the chat, HTTP and metrics fronts on free loopback ports. Ports and
    data directory stay the same across :meth:`kill` and :meth:`start`."""

    def __init__(self, tmp: Path, *extra: str) -> None:
        self.data = tmp / "data"
        self.logfile = tmp / "serve.log"
        self.chat, self.http, self.metrics = free_port(), free_port(), free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.out: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def start(self) -> None:
        self.out = self.logfile.open("ab")
        self.proc = subprocess.Popen(
            wirekit_cmd("serve", "--data", str(self.data), "--chat", f"127.0.0.1:{self.chat}",
                        "--http", f"127.0.0.1:{self.http}",
                        "--metrics", f"127.0.0.1:{self.metrics}", *self.extra),
            stdout=self.out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.logfile.read_text()
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as res:
                    if res.status == 200:
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not answer /healthz"
            time.sleep(0.1)

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc = None
        if self.out is not None:
            self.out.close()
            self.out = None

    def publish(self, topic: str, data: Any) -> dict[str, Any]:
        key = (self.data / "api.key").read_text().strip()
        req = urllib.request.Request(
            f"{self.url}/api/publish", data=json.dumps({"topic": topic, "data": data}).encode(),
            headers={"X-Api-Key": key, "Content-Type": "application/json"}, method="POST",
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=10) as res:
            answer: dict[str, Any] = json.loads(res.read())
            return answer


class ChatUser(LinePeer):
    """A TCP chat user in JSON mode that keeps every event it read, so waits can be in any
    order."""

    def __init__(self, port: int, user: str, *, register: bool = True) -> None:
        super().__init__(port)
        self.events: list[dict[str, Any]] = []
        cmd = "register" if register else "login"
        self.send(f"/{cmd} {user} {user}-password")
        reply = self.wait(lambda e: e["type"] in ("ok", "error"))
        assert reply.get("cmd") == cmd, reply

    def wait(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        for event in self.events:
            if match(event):
                self.events.remove(event)
                return event
        while True:
            event = self.until(lambda _: True)
            if match(event):
                return event
            self.events.append(event)

    def wait_msg(self, room: str, sender: str, text: str) -> dict[str, Any]:
        return self.wait(lambda e: e["type"] == "msg" and e["room"] == room
                         and e["from"] == sender and e["text"] == text)  # fmt: skip


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubServer]:
    server = HubServer(tmp_path, "--public-topics", "news")
    server.start()
    yield server
    server.kill()


def open_page(browser: Browser, hub: HubServer) -> tuple[Page, list[str]]:
    """A page in a context of its own (its own localStorage), and the errors it logs."""
    page = browser.new_context().new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(hub.url)
    return page, errors


def status(page: Page) -> Any:
    return expect(page.get_by_test_id("status"))


def register(page: Page, user: str) -> None:
    page.get_by_test_id("login-user").fill(user)
    page.get_by_test_id("login-password").fill(f"{user}-password")
    page.get_by_test_id("register-submit").click()
    expect(page.get_by_test_id("current-user")).to_have_text(user)
    status(page).to_have_attribute("data-state", "connected")


def join(page: Page, room: str) -> None:
    page.get_by_test_id("room-input").fill(room)
    page.get_by_test_id("join-submit").click()
    item = page.locator(f'[data-testid="room-item"][data-topic="{room}"]')
    expect(item).to_have_attribute("aria-current", "page")


def say(page: Page, text: str) -> None:
    box = page.get_by_test_id("message-input")
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("")


def message(page: Page, topic: str, sender: str, text: str) -> Any:
    return page.locator(f'[data-testid="message"][data-topic="{topic}"][data-from="{sender}"]',
                        has_text=text)  # fmt: skip


def shown(page: Page, topic: str) -> list[tuple[int, str]]:
    """(offset, sender) of every message shown for ``topic``, in page order."""
    rows = page.locator(f'[data-testid="message"][data-topic="{topic}"]')
    return [(int(r.get_attribute("data-offset") or 0), r.get_attribute("data-from") or "")
            for r in rows.all()]  # fmt: skip


def presence(page: Page, user: str) -> Any:
    return page.get_by_test_id("presence-list").locator(f'[data-user="{user}"]')


def dm_item(page: Page, user: str) -> Any:
    return page.locator(f'[data-testid="dm-item"][data-user="{user}"]')


def start_dm(page: Page, user: str) -> None:
    page.get_by_test_id("dm-input").fill(user)
    page.get_by_test_id("dm-submit").click()
    expect(dm_item(page, user)).to_have_attribute("aria-current", "page")


def sent_ops(frames: list[str], op: str) -> list[dict[str, Any]]:
    out = []
    for frame in frames:
        request = json.loads(frame)
        if request.get("op") == op:
            out.append(request)
    return out


@pytest.mark.timeout(120)
def test_two_browsers_and_a_chat_user_share_a_room_and_private_messages(
    browser: Browser, hub: HubServer
) -> None:
    carol = ChatUser(hub.chat, "carol")
    try:
        carol.send("/join #lobby")
        carol.wait(lambda e: e.get("cmd") == "joined")
        alice, alice_errors = open_page(browser, hub)
        bob, bob_errors = open_page(browser, hub)
        register(alice, "alice")
        register(bob, "bob")
        join(alice, "#lobby")
        join(bob, "#lobby")
        carol.wait(lambda e: e["type"] == "join" and e["user"] == "bob")
        for page in (alice, bob):
            for user in ("alice", "bob", "carol"):
                expect(presence(page, user)).to_have_attribute("data-online", "true")

        # Room messages from all three fronts reach everyone, once each.
        say(alice, "hello from alice")
        expect(message(bob, "#lobby", "alice", "hello from alice")).to_have_count(1)
        say(bob, "hello from bob")
        carol.send("hello from carol")
        lines = [("alice", "hello from alice"), ("bob", "hello from bob"),
                 ("carol", "hello from carol")]  # fmt: skip
        for page in (alice, bob):
            for sender, text in lines:
                expect(message(page, "#lobby", sender, text)).to_have_count(1)
            assert [offset for offset, _ in shown(page, "#lobby")] == [1, 2, 3]
        for sender, text in lines:
            carol.wait_msg("#lobby", sender, text)
        expect(alice.locator(".message.mine")).to_have_count(1)  # her own, styled apart

        # Private messages: browser to browser, chat to browser, browser to chat.
        start_dm(alice, "bob")
        say(alice, "psst bob")
        expect(message(alice, "@alice,bob", "alice", "psst bob")).to_have_count(1)
        badge = dm_item(bob, "alice").get_by_test_id("unread")
        expect(badge).to_have_text("1")  # bob is looking at #lobby
        dm_item(bob, "alice").click()
        expect(message(bob, "@alice,bob", "alice", "psst bob")).to_have_count(1)
        expect(badge).to_be_hidden()
        say(bob, "psst alice")
        expect(message(alice, "@alice,bob", "bob", "psst alice")).to_have_count(1)

        carol.send("/msg alice hey alice, carol here")
        expect(dm_item(alice, "carol").get_by_test_id("unread")).to_have_text("1")
        dm_item(alice, "carol").click()
        expect(message(alice, "@alice,carol", "carol", "hey alice, carol here")).to_have_count(1)
        say(alice, "hi carol, from the page")
        event = carol.wait_msg("@alice,carol", "alice", "hi carol, from the page")
        assert event["to"] == "carol"
        start_dm(bob, "carol")
        say(bob, "bob to carol")
        carol.wait_msg("@bob,carol", "bob", "bob to carol")
        carol.send("/msg bob carol to bob")
        expect(message(bob, "@bob,carol", "carol", "carol to bob")).to_have_count(1)

        # Alice is in a conversation: a room message raises #lobby's badge until she looks.
        carol.send("anyone around?")
        lobby = alice.locator('[data-testid="room-item"][data-topic="#lobby"]')
        expect(lobby.get_by_test_id("unread")).to_have_text("1")
        lobby.click()
        expect(message(alice, "#lobby", "carol", "anyone around?")).to_have_count(1)
        expect(lobby.get_by_test_id("unread")).to_be_hidden()

        # Bob leaves the room: the others see it; then carol quits and shows as offline.
        bob.locator('[data-testid="room-item"][data-topic="#lobby"]').click()
        bob.get_by_test_id("leave-room").click()
        expect(bob.locator('[data-testid="room-item"][data-topic="#lobby"]')).to_have_count(0)
        expect(presence(alice, "bob")).to_have_count(0)
        carol.wait(lambda e: e["type"] == "leave" and e["user"] == "bob")
        carol.send("/quit")
        carol.wait(lambda e: e.get("cmd") == "bye")
        expect(presence(alice, "carol")).to_have_attribute("data-online", "false")
        expect(presence(alice, "alice")).to_have_attribute("data-online", "true")
        assert alice_errors == [] and bob_errors == []
    finally:
        carol.close()


@pytest.mark.timeout(120)
def test_page_reconnects_after_a_restart_and_resumes_without_gap_or_duplicate(
    browser: Browser, hub: HubServer
) -> None:
    page, _ = open_page(browser, hub)
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda p: frames.append(str(p))))
    register(page, "alice")
    join(page, "#ops")
    carol = ChatUser(hub.chat, "carol")
    carol.send("/join #ops", "before the restart")
    epoch = carol.wait(lambda e: e.get("cmd") == "joined")["epoch"]
    expect(message(page, "#ops", "carol", "before the restart")).to_have_count(1)
    carol.close()
    page.evaluate("""() => {
        const el = document.querySelector('[data-testid="status"]');
        window.__states = [];
        new MutationObserver(() => window.__states.push(el.dataset.state))
            .observe(el, {attributes: true, attributeFilter: ['data-state']});
    }""")

    hub.kill()
    status(page).to_have_attribute("data-state", "reconnecting")
    expect(page.get_by_test_id("status")).to_contain_text("reconnecting")
    # Keep the page away from the new server until it has missed some messages.
    page.context.set_offline(True)
    status(page).to_have_attribute("data-state", "offline")
    hub.start()
    carol = ChatUser(hub.chat, "carol", register=False)
    try:
        for i in (1, 2, 3):
            carol.send(f"while down {i}")
        carol.wait_msg("#ops", "carol", "while down 3")
        frames.clear()
        page.context.set_offline(False)
        status(page).to_have_attribute("data-state", "connected")
        for text in ("before the restart", "while down 1", "while down 2", "while down 3"):
            expect(message(page, "#ops", "carol", text)).to_have_count(1)
        assert shown(page, "#ops") == [(1, "carol"), (2, "carol"), (3, "carol"), (4, "carol")]
        states = page.evaluate("window.__states")
        assert "reconnecting" in states and states[-1] == "connected", states
        # The resume: auth, then sub with the last offset seen and the log's epoch.
        assert sent_ops(frames, "auth")
        subs = [s for s in sent_ops(frames, "sub") if s["topic"] == "#ops"]
        assert len(subs) == 1 and subs[0]["since"] == 1, subs
        assert subs[0]["epoch"] == epoch

        carol.send("after the restart")
        expect(message(page, "#ops", "carol", "after the restart")).to_have_count(1)
        # A reload resumes from storage: the same five messages, each once.
        frames.clear()
        page.reload()
        status(page).to_have_attribute("data-state", "connected")
        expect(page.get_by_test_id("current-user")).to_have_text("alice")
        page.locator('[data-testid="room-item"][data-topic="#ops"]').click()
        expect(message(page, "#ops", "carol", "after the restart")).to_have_count(1)
        assert [offset for offset, _ in shown(page, "#ops")] == [1, 2, 3, 4, 5]
        subs = [s for s in sent_ops(frames, "sub") if s["topic"] == "#ops"]
        assert [s["since"] for s in subs] == [5], subs
    finally:
        carol.close()


CSP = ("default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
       "style-src 'self'; script-src 'self'; frame-ancestors 'none'")  # fmt: skip


@pytest.mark.timeout(90)
def test_page_works_offline_under_its_csp_with_no_errors(browser: Browser, hub: HubServer) -> None:
    context = browser.new_context()
    page = context.new_page()
    foreign: list[str] = []

    def only_the_server(route: Route) -> None:
        url = route.request.url
        if url == hub.url or url.startswith(hub.url + "/"):
            route.continue_()
        else:
            foreign.append(url)
            route.abort()

    page.route("**/*", only_the_server)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.add_init_script("""
        window.__csp = [];
        document.addEventListener('securitypolicyviolation',
            (e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));
    """)
    response = page.goto(hub.url)
    assert response is not None and response.ok
    assert response.headers.get("content-security-policy") == CSP

    # Anonymous: a public topic, live, with JSON data pretty-printed and strings as they are.
    status(page).to_have_attribute("data-state", "connected")
    expect(page.get_by_test_id("current-user")).to_be_hidden()
    page.get_by_test_id("topic-input").fill("news")
    page.get_by_test_id("topic-submit").click()
    expect(page.locator('[data-testid="topic-item"][data-topic="news"]')).to_be_visible()
    expect(page.get_by_role("heading", name="news", exact=True)).to_be_visible()
    assert hub.publish("news", {"headline": "it works", "n": 1})["offset"] == 1
    hub.publish("news", "plain <b>text</b>")
    item = message(page, "news", "api", "it works")
    expect(item.locator("pre")).to_have_text('{\n  "headline": "it works",\n  "n": 1\n}')
    expect(message(page, "news", "api", "plain <b>text</b>")).to_have_count(1)
    assert page.locator(".message b").count() == 0  # text, never markup

    # Signed in: a room, a message, a conversation, then out again.
    page.get_by_role("button", name="Sign in", exact=True).click()
    register(page, "dora")
    join(page, "#csp")
    say(page, "hello under a strict policy")
    expect(message(page, "#csp", "dora", "hello under a strict policy")).to_have_count(1)
    start_dm(page, "dora")
    say(page, "a note to self")
    expect(message(page, "@dora,dora", "dora", "a note to self")).to_have_count(1)
    page.get_by_test_id("logout").click()
    expect(page.get_by_test_id("login-user")).to_be_visible()
    status(page).to_have_attribute("data-state", "connected")
    expect(page.get_by_test_id("current-user")).to_be_hidden()

    assert page.evaluate("window.__csp") == []
    assert errors == []
    assert foreign == []


@pytest.mark.timeout(90)
def test_history_loads_fifty_then_older_pages_on_scrolling_up(
    browser: Browser, hub: HubServer
) -> None:
    carol = ChatUser(hub.chat, "carol")
    try:
        carol.send("/join #long")
        for i in range(1, 121):
            carol.send(f"line {i}")
            if i % 30 == 0:  # stay under the chat's message rate
                carol.wait_msg("#long", "carol", f"line {i}")
                time.sleep(1.6)
    finally:
        carol.close()
    page, errors = open_page(browser, hub)
    frames: list[str] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda p: frames.append(str(p))))
    register(page, "erin")
    join(page, "#long")
    rows = page.locator('[data-testid="message"][data-topic="#long"]')
    expect(rows).to_have_count(50)
    assert [offset for offset, _ in shown(page, "#long")] == list(range(71, 121))
    for _ in range(10):
        if rows.count() == 120:
            break
        page.get_by_test_id("message-list").hover()
        page.mouse.wheel(0, -100_000)
        page.wait_for_timeout(300)
    expect(rows).to_have_count(120)
    assert [offset for offset, _ in shown(page, "#long")] == list(range(1, 121))
    history = [h for h in sent_ops(frames, "history") if h["topic"] == "#long"]
    assert history[0]["limit"] == 50 and "before" not in history[0]
    assert [h.get("before") for h in history[1:]] == [71, 21]
    assert errors == []


@pytest.mark.timeout(60)
def test_an_expired_access_token_is_renewed_with_the_refresh_token(
    browser: Browser, tmp_path: Path
) -> None:
    hub = HubServer(tmp_path, "--token-ttl", "2")
    hub.start()
    try:
        page, errors = open_page(browser, hub)
        refreshes: list[int] = []
        page.on("response", lambda r: refreshes.append(r.status) if "/api/refresh" in r.url
                else None)  # fmt: skip
        register(page, "alice")
        join(page, "#ops")
        stored = page.evaluate("() => JSON.stringify(localStorage)")
        time.sleep(2.5)  # the access token expires
        page.reload()
        expect(page.get_by_test_id("current-user")).to_have_text("alice")
        status(page).to_have_attribute("data-state", "connected")
        say(page, "after the renewal")
        expect(message(page, "#ops", "alice", "after the renewal")).to_have_count(1)
        assert refreshes == [200]
        assert page.evaluate("() => JSON.stringify(localStorage)") != stored
        assert [e for e in errors if "401" not in e] == []
    finally:
        hub.kill()
