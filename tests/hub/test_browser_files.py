"""Files on the browser page (docs/files.md): Attach uploads a file and shares it into the
open room; a file message is a link that downloads it with the page's token. Headless Chromium
against `wirekit serve`, with a TCP chat member of the room as a second witness."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.hub.conftest import CHROMIUM
from tests.hub.test_browser import (
    ChatUser,
    HubServer,
    join,
    open_page,
    register,
)

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubServer]:
    server = HubServer(tmp_path)
    server.start()
    yield server
    server.kill()


def attach(page: Page, name: str, mime: str, data: bytes) -> None:
    page.get_by_test_id("attach-input").set_input_files(
        files=[{"name": name, "mimeType": mime, "buffer": data}]
    )


@pytest.mark.timeout(120)
def test_attach_shares_into_the_room_and_members_download(
    browser: Browser, hub: HubServer, tmp_path: Path
) -> None:
    carol = ChatUser(hub.chat, "carol")
    try:
        carol.send("/join #files")
        carol.wait(lambda e: e.get("cmd") == "joined")
        alice, alice_errors = open_page(browser, hub)
        register(alice, "alice")
        join(alice, "#files")
        expect(alice.get_by_test_id("attach")).to_be_visible()

        data = "notes from alice, ünïcode included\n".encode()
        attach(alice, "café notes.txt", "text/plain", data)
        link = alice.get_by_test_id("file-link").filter(has_text="café notes.txt")
        expect(link).to_have_count(1)
        # the TCP chat member gets the same message: JSON, with the file's id
        event = carol.wait(lambda e: e["type"] == "msg" and e["room"] == "#files")
        shared = json.loads(event["text"])["file"]
        assert event["from"] == "alice" and event["json"] is True
        assert shared["name"] == "café notes.txt" and shared["size"] == len(data)
        assert link.get_attribute("data-file") == shared["id"]

        # another member, arriving later, sees it in the history and downloads it
        bob, bob_errors = open_page(browser, hub)
        register(bob, "bob")
        join(bob, "#files")
        bob_link = bob.get_by_test_id("file-link").filter(has_text="café notes.txt")
        with bob.expect_download() as download:
            bob_link.click()
        assert download.value.suggested_filename == "café notes.txt"
        saved = tmp_path / "saved.txt"
        download.value.save_as(saved)
        assert saved.read_bytes() == data

        # a refused type: a toast, no message
        attach(alice, "page.html", "text/html", b"<script>alert(1)</script>")
        expect(alice.locator(".toast.error")).to_contain_text("page.html")
        expect(alice.get_by_test_id("file-link")).to_have_count(1)

        # the Attach button is for rooms only
        alice.get_by_test_id("dm-input").fill("bob")
        alice.get_by_test_id("dm-submit").click()
        expect(alice.get_by_test_id("attach")).to_be_hidden()
        # the only error the page logged is the browser's own line about the refused upload
        assert len(alice_errors) == 1 and "415" in alice_errors[0], alice_errors
        assert bob_errors == []
    finally:
        carol.close()
