"""Files in the HTTP API: uploads streamed to DATA/files, downloads with Range, sharing into
rooms; real server on loopback, aiohttp and curl as clients."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wirekit.certs import issue
from wirekit.hub.files import safe_name
from wirekit.io.tls import client_context
from wirekit.limits import KiB, MiB

from .conftest import HubFixture, Web, restart

pytestmark = pytest.mark.anyio

BOUNDARY = "wirekit-test-7MA4YWxkTrZu0gW"
FORM = f"multipart/form-data; boundary={BOUNDARY}"
FILE_ID = re.compile(r"[A-Za-z0-9_-]{22}")
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


def part(data: bytes, filename: str = "a.bin", kind: str | None = "application/octet-stream",
         disposition: str | None = None, extra: str = "") -> bytes:  # fmt: skip
    """One complete form: a ``file`` part (``disposition`` overrides its header)."""
    return part_head(filename, kind, disposition, extra) + data + part_tail()


def part_head(filename: str = "a.bin", kind: str | None = "application/octet-stream",
              disposition: str | None = None, extra: str = "") -> bytes:  # fmt: skip
    disposition = disposition or f'form-data; name="file"; filename="{filename}"'
    head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n{extra}"
    if kind is not None:
        head += f"Content-Type: {kind}\r\n"
    return (head + "\r\n").encode()


def part_tail() -> bytes:
    return f"\r\n--{BOUNDARY}--\r\n".encode()


class Api(Web):
    """:class:`Web` plus the file endpoints."""

    @property
    def files_dir(self) -> Path:
        return self.hub.data_dir / "files"

    async def post(
        self, token: str | None, body: Any, content_type: str = FORM
    ) -> tuple[int, dict[str, Any], aiohttp.ClientResponse]:
        headers = {"Content-Type": content_type}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with self.session.post(self.base + "/api/files", data=body, headers=headers) as r:
            return r.status, await r.json(content_type=None), r

    async def upload(self, token: str, data: bytes, filename: str = "a.bin",
                     kind: str = "application/octet-stream") -> dict[str, Any]:  # fmt: skip
        status, body, _ = await self.post(token, part(data, filename, kind))
        assert status == 201, body
        return body

    async def get(self, token: str | None, path: str, method: str = "GET",
                  **headers: str) -> tuple[int, bytes, aiohttp.ClientResponse]:  # fmt: skip
        """``headers``: ``If_Range="..."`` is sent as ``If-Range``."""
        sent = {name.replace("_", "-"): value for name, value in headers.items()}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        async with self.session.request(method, self.base + path, headers=sent) as resp:
            return resp.status, await resp.read(), resp

    async def call(self, method: str, path: str, token: str | None,
                   body: Any = None) -> tuple[int, Any]:  # fmt: skip
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(method, self.base + path, json=body,
                                        headers=headers) as resp:  # fmt: skip
            text = await resp.read()
            return resp.status, json.loads(text) if text else None


@pytest.fixture
async def api(hub: HubFixture) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(hub, session)


async def restart_with_limits(hub: HubFixture, **limits: Any) -> None:
    await hub.stop()
    await hub.start(**limits)


def all_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def on_disk(files_dir: Path) -> set[str]:
    return {p.name for p in files_dir.iterdir()}


async def curl(*args: str) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(
        "curl", "-sS", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out, err


async def test_round_trip_past_the_api_body_limit_and_the_read_chunk(
    api: Api, hub: HubFixture
) -> None:
    alice = await api.token("alice")
    data = os.urandom(300_000)  # > api_max_body (64 KiB), > one 64 KiB read
    meta = await api.upload(alice, data, "report.bin")
    assert FILE_ID.fullmatch(meta["id"])
    assert meta == {
        "id": meta["id"], "name": "report.bin", "type": "application/octet-stream",
        "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "owner": "alice",
        "created": meta["created"], "url": f"/api/files/{meta['id']}", "rooms": [],
    }  # fmt: skip
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["created"])
    status, body, resp = await api.get(alice, meta["url"])
    assert status == 200 and body == data
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-Disposition"] == (
        "attachment; filename=\"report.bin\"; filename*=UTF-8''report.bin"
    )
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert "sandbox" in resp.headers["Content-Security-Policy"]
    status, body, resp = await api.get(alice, meta["url"], "HEAD")
    assert status == 200 and body == b"" and resp.headers["Content-Length"] == str(len(data))
    status, _, _ = await api.get(alice, meta["url"], If_None_Match=resp.headers["ETag"])
    assert status == 304
    # on disk: the bytes under the id, the metadata beside them
    assert (api.files_dir / meta["id"]).read_bytes() == data
    sidecar = json.loads((api.files_dir / f"{meta['id']}.json").read_text())
    assert sidecar["owner"] == "alice" and sidecar["sha256"] == meta["sha256"]
    assert sidecar["rooms"] == [] and sidecar["size"] == len(data)
    # a second file, text: served as UTF-8; the list is newest first
    notes = await api.upload(alice, "héllo\n".encode(), "notes.txt", "text/plain")
    status, body, resp = await api.get(alice, notes["url"])
    assert body == "héllo\n".encode()
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    status, listing = await api.call("GET", "/api/files", alice)
    assert [f["id"] for f in listing["items"]] == [notes["id"], meta["id"]]
    status, listing = await api.call("GET", "/api/files?limit=1", alice)
    assert [f["id"] for f in listing["items"]] == [notes["id"]]
    for bad in ("0", "101", "²", "1" * 5000, "-1"):
        assert (await api.call("GET", f"/api/files?limit={bad}", alice))[0] == 400, bad
    # the exemption is for uploads only: the same bytes anywhere else are still refused
    async with api.session.post(api.base + "/api/login", data=data,
                                headers={"Content-Type": "application/json"}) as resp:  # fmt: skip
        assert resp.status == 413


async def test_uploads_are_streamed_to_disk_and_oversize_ones_leave_nothing(
    api: Api, hub: HubFixture, tmp_path: Path
) -> None:
    await restart_with_limits(hub, file_max_size=1 * MiB)
    alice = await api.token("alice")
    block = os.urandom(64 * KiB)
    seen_on_disk: list[int] = []

    async def slow_body() -> AsyncIterator[bytes]:
        yield part_head()
        for _ in range(8):
            yield block
        # half the file sent: it must already be on disk while the request is incomplete
        async with asyncio.timeout(5):
            while not seen_on_disk or seen_on_disk[-1] < 256 * KiB:
                await asyncio.sleep(0.01)
                seen_on_disk.extend(p.stat().st_size for p in api.files_dir.glob(".upload-*"))
        for _ in range(4):
            yield block
        yield part_tail()

    status, meta, _ = await api.post(alice, slow_body())
    assert status == 201 and meta["size"] == 12 * 64 * KiB, meta
    assert meta["sha256"] == hashlib.sha256(block * 12).hexdigest()
    assert on_disk(api.files_dir) == {meta["id"], f"{meta['id']}.json"}

    async def too_big() -> AsyncIterator[bytes]:  # chunked: no Content-Length to refuse early
        yield part_head()
        for _ in range(17):  # 1 MiB + 64 KiB
            yield block
        yield part_tail()

    status, body, resp = await api.post(alice, too_big())
    assert status == 413 and body["code"] == "too-large", body
    assert resp.content_type == "application/problem+json"
    assert on_disk(api.files_dir) == {meta["id"], f"{meta['id']}.json"}  # no temp file left

    async def abandoned() -> AsyncIterator[bytes]:
        yield part_head()
        yield block
        await asyncio.sleep(30)  # the client goes away before this ends
        yield part_tail()

    request = asyncio.create_task(api.post(alice, abandoned()))
    async with asyncio.timeout(5):
        while not list(api.files_dir.glob(".upload-*")):
            await asyncio.sleep(0.01)
        request.cancel()  # closes the connection mid-body
        while list(api.files_dir.glob(".upload-*")):
            await asyncio.sleep(0.01)
    with pytest.raises(asyncio.CancelledError):
        await request
    assert on_disk(api.files_dir) == {meta["id"], f"{meta['id']}.json"}
    # curl: a declared length over the limit is refused before the body is sent
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(2 * MiB))
    _, out, err = await curl(
        "-v", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Authorization: Bearer {alice}",
        "-F", f"file=@{big}", api.base + "/api/files",
    )  # fmt: skip
    assert out == b"413", err
    assert b"Expect: 100-continue" in err and b"HTTP/1.1 100" not in err
    assert on_disk(api.files_dir) == {meta["id"], f"{meta['id']}.json"}
    # and one within the limit goes through after 100 Continue
    ok = tmp_path / "ok.png"
    ok.write_bytes(PNG + os.urandom(MiB - len(PNG)))
    _, out, err = await curl(
        "-v", "-H", f"Authorization: Bearer {alice}", "-F", f"file=@{ok};type=image/png",
        api.base + "/api/files",
    )  # fmt: skip
    stored = json.loads(out)
    assert b"HTTP/1.1 100 Continue" in err
    assert stored["type"] == "image/png" and stored["name"] == "ok.png"
    assert stored["sha256"] == hashlib.sha256(ok.read_bytes()).hexdigest()


async def test_range_requests_with_curl_as_the_oracle(api: Api, tmp_path: Path) -> None:
    alice = await api.token("alice")
    data = os.urandom(200_000)
    url = (await api.upload(alice, data))["url"]
    status, body, resp = await api.get(alice, url, Range="bytes=1000-1999")
    assert status == 206 and body == data[1000:2000]
    assert resp.headers["Content-Range"] == "bytes 1000-1999/200000"
    status, body, _ = await api.get(alice, url, Range="bytes=-100")
    assert status == 206 and body == data[-100:]
    status, body, _ = await api.get(alice, url, Range="bytes=199990-")
    assert status == 206 and body == data[199990:]
    status, body, resp = await api.get(alice, url, Range="bytes=200000-")
    assert status == 416 and resp.headers["Content-Range"] == "bytes */200000"
    # several ranges, or another unit: the whole file (RFC 9110 14.2), not 416
    for ignored in ("bytes=0-1,5-6", "items=0-1"):
        status, body, resp = await api.get(alice, url, Range=ignored)
        assert status == 200 and body == data and "X-Request-Id" in resp.headers, ignored
    # If-Range: the date it was stored still matches (206); an older one does not (200, all)
    _, _, head = await api.get(alice, url, "HEAD")
    modified = parsedate_to_datetime(head.headers["Last-Modified"])
    status, body, _ = await api.get(
        alice, url, Range="bytes=0-9", If_Range=format_datetime(modified, usegmt=True)
    )
    assert status == 206 and body == data[:10]
    older = format_datetime(modified - timedelta(days=1), usegmt=True)
    status, body, _ = await api.get(alice, url, Range="bytes=0-9", If_Range=older)
    assert status == 200 and body == data
    auth = f"Authorization: Bearer {alice}"
    out = tmp_path / "part"
    code, status_line, err = await curl(
        "-r", "5000-70000", "-H", auth, "-o", str(out), "-w", "%{http_code}", api.base + url
    )
    assert code == 0 and status_line == b"206", err
    assert out.read_bytes() == data[5000:70001]
    code, status_line, _ = await curl(
        "-r", "300000-400000", "-H", auth, "-o", "/dev/null", "-w", "%{http_code}", api.base + url
    )
    assert status_line == b"416"
    # curl resumes a partial download (-C -): it asks for the rest with a Range
    out.write_bytes(data[:123_456])
    code, status_line, err = await curl(
        "-C", "-", "-H", auth, "-o", str(out), "-w", "%{http_code}", api.base + url
    )
    assert status_line == b"206" and out.read_bytes() == data, err


TRAVERSALS = [
    ('filename="../../etc/passwd"', "passwd"),
    ("filename*=UTF-8''..%5C..%5Cwindows%5Cwin.ini", "win.ini"),
    ('filename="/abs/path/.hidden"', "hidden"),
    ("filename*=UTF-8''a%00b%0Ac%1B%7F.txt", "abc.txt"),
    ("filename*=UTF-8''%E2%80%AEgnp.exe", "gnp.exe"),  # a right-to-left override
    ("filename*=UTF-8''..", "file"),
    ("filename*=UTF-8''%2E%2E%2F", "file"),
    ('filename=" .. .profile"', "profile"),
    ('filename="say %22hi%22%0D%0A.txt"', 'say "hi".txt'),  # a browser's escapes
    ('filename="say \\"hi\\".txt"', 'say "hi".txt'),  # curl's
    ("filename*=UTF-8''r%C3%A9sum%C3%A9%20final.pdf", "résumé final.pdf"),
    ("filename*=UTF-8''" + "%C3%A9" * 300 + ".txt", "é" * 125 + ".txt"),
]


async def test_file_names_are_sanitised_and_nothing_lands_outside_the_files_dir(
    api: Api, hub: HubFixture, tmp_path: Path
) -> None:
    alice = await api.token("alice")
    before = all_files(tmp_path)
    for params, expected in TRAVERSALS:
        disposition = f'form-data; name="file"; {params}'
        status, meta, _ = await api.post(alice, part(b"x", disposition=disposition))
        assert status == 201 and meta["name"] == expected, (params, meta)
        assert len(meta["name"].encode()) <= 255
        _, _, resp = await api.get(alice, meta["url"], "HEAD")
        given_name = resp.headers["Content-Disposition"].split("filename*=UTF-8''")[1]
        assert unquote(given_name) == expected
        assert resp.headers["Content-Disposition"].isascii()
    added = all_files(tmp_path) - before
    assert {p.parent for p in added} <= {api.files_dir, hub.data_dir}
    stored = {p.name for p in added if p.parent == api.files_dir}
    assert len(stored) == 2 * len(TRAVERSALS)
    assert all(FILE_ID.fullmatch(n.removesuffix(".json")) for n in stored)
    # ids in URLs are checked before anything touches the disk
    for bad in ("..%2F..%2Fhub.db", "%2E%2E", "x" * 22 + ".json", "secret.key"):
        assert (await api.get(alice, f"/api/files/{bad}"))[0] == 404


@given(st.text())
def test_safe_name_properties(raw: str) -> None:
    name = safe_name(raw)
    assert name and len(name.encode()) <= 255
    assert "/" not in name and "\\" not in name and not name.startswith((".", " "))
    assert all(c.isprintable() or c == " " for c in name)


async def test_types_are_checked_against_the_allow_list_and_the_content(api: Api) -> None:
    alice = await api.token("alice")
    refused: list[tuple[bytes | str, str]] = [
        (part(b"<script>alert(1)</script>", "x.html", "text/html"), "file-type"),
        (part(b"<svg onload=alert(1)/>", "x.svg", "image/svg+xml"), "file-type"),
        (part(b"hi", "x.exe", "application/x-msdownload"), "file-type"),
        (part(b"GIF89a" + bytes(100), "x.png", "image/png"), "file-type"),  # not a PNG
        (part(PNG[:5], "x.png", "image/png"), "file-type"),  # too short to be one
        (part(b"%PDF" + bytes(100), "x.pdf", "application/pdf"), "file-type"),
        (part(b"abc\xff\xfe", "x.txt", "text/plain"), "file-type"),  # not UTF-8
        (part(b'{"a": "\xc3"}', "x.json", "application/json"), "file-type"),  # cut short
        (part(b"aGk=", extra="Content-Transfer-Encoding: base64\r\n"), "file-encoding"),
    ]
    for body, code in refused:
        status, problem, _ = await api.post(alice, body)
        assert (status, problem["code"]) == (415, code), (body[:120], problem)
    status, problem, _ = await api.post(alice, b'{"file": 1}', "application/json")
    assert (status, problem["code"]) == (415, "content-type")
    status, problem, _ = await api.post(alice, part(b"x", disposition='form-data; name="note"'))
    assert (status, problem["code"]) == (422, "usage")
    status, problem, _ = await api.post(alice, b"--not-the-boundary\r\n\r\nx")
    assert status in (400, 422), problem
    status, problem, _ = await api.post(alice, b"x", "multipart/form-data")  # no boundary
    assert (status, problem["code"]) == (400, "bad-multipart")
    assert on_disk(api.files_dir) == set()
    # what is allowed: real signatures, UTF-8 split across reads, other fields before the file
    text = ("a" + "é" * 40_000).encode()  # the 64 KiB read boundary falls inside an "é"
    accepted = [
        part(PNG + bytes(100), "x.png", "image/png"),
        part(b"\xff\xd8\xff\xe0" + bytes(100), "x.jpg", "image/jpeg"),
        part(b"GIF87a" + bytes(10), "x.gif", "image/gif"),
        part(b"RIFF\x00\x00\x00\x00WEBPVP8 ", "x.webp", "image/webp"),
        part(b"%PDF-1.7\n", "x.pdf", "application/pdf"),
        part(b"PK\x05\x06" + bytes(18), "x.zip", "application/zip"),
        part(text, "x.txt", "text/plain; charset=utf-8"),
        part(b'{"a": 1}', "x.json", "application/json"),
        part(b"\x00\x01", "noname", None),  # no type: application/octet-stream
    ]
    for body in accepted:
        status, meta, _ = await api.post(alice, body)
        assert status == 201, (body[:120], meta)
    assert meta["name"] == "noname" and meta["type"] == "application/octet-stream"
    assert len(on_disk(api.files_dir)) == 2 * len(accepted)
    # the form has one part, the file: nothing before it, nothing after it
    note = part_head(disposition='form-data; name="note"') + b"hello\r\n"
    extra = part(b"z")[: -len(part_tail())] + b"\r\n" + note + f"--{BOUNDARY}--\r\n".encode()
    for body in (note + part(b"z"), extra):
        status, problem, _ = await api.post(alice, body)
        assert (status, problem["code"]) == (422, "usage"), (body, problem)
    assert len(on_disk(api.files_dir)) == 2 * len(accepted)


async def test_auth_is_required_and_other_users_see_nothing(api: Api) -> None:
    alice, bob = await api.token("alice"), await api.token("bob")
    url = (await api.upload(alice, b"secret"))["url"]
    status, problem, resp = await api.post(None, part(b"x"))
    assert status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
    assert on_disk(api.files_dir) == {url.rsplit("/", 1)[1], url.rsplit("/", 1)[1] + ".json"}
    assert (await api.get(None, url))[0] == 401
    assert (await api.call("GET", "/api/files", None))[0] == 401
    for method, path, body in (
        ("GET", url, None), ("HEAD", url, None), ("DELETE", url, None),
        ("POST", url + "/share", {"room": "#x"}), ("GET", "/api/files/" + "A" * 22, None),
    ):  # fmt: skip
        status, problem = await api.call(method, path, bob, body)
        assert status == 404, (method, path, problem)
    status, listing = await api.call("GET", "/api/files", bob)
    assert listing == {"items": []}
    status, problem, resp = await api.post("forged.token.here", part(b"x"))
    assert status == 401


async def test_sharing_into_a_room_lets_its_members_download(api: Api, hub: HubFixture) -> None:
    alice, bob, carol = [await hub.peer(u) for u in ("alice", "bob", "carol")]
    for peer in (alice, bob):
        await peer.send("/join #proj")
        await peer.expect(lambda e: e.get("cmd") == "joined")
    await carol.send("/join #other")
    await carol.expect(lambda e: e.get("cmd") == "joined")
    tokens = {u: await api.token(u, register=False) for u in ("alice", "bob", "carol")}
    # a WebSocket member too
    dave_token = await api.token("dave")
    ws = await api.session.ws_connect(f"{api.base.replace('http', 'ws')}/ws?token={dave_token}")
    assert json.loads((await ws.receive()).data)["op"] == "hello"
    await ws.send_str('{"op":"sub","topic":"#proj","id":1}')
    while json.loads((await ws.receive(5)).data).get("id") != 1:
        pass
    data = PNG + os.urandom(100_000)
    meta = await api.upload(tokens["alice"], data, "plan.png", "image/png")
    status, problem = await api.call("GET", meta["url"], tokens["bob"])
    assert status == 404  # not shared yet
    status, shared = await api.call("POST", meta["url"] + "/share", tokens["alice"],
                                    {"room": "#proj"})  # fmt: skip
    assert status == 201 and shared["room"] == "#proj" and shared["offset"] >= 1
    expected = {"file": {"id": meta["id"], "name": "plan.png", "type": "image/png",
                         "size": len(data), "url": meta["url"]}}  # fmt: skip
    event = await bob.expect(lambda e: e.get("type") == "msg")
    assert event["room"] == "#proj" and event["from"] == "alice" and event["json"] is True
    assert json.loads(event["text"]) == expected and event["offset"] == shared["offset"]
    while (msg := json.loads((await ws.receive(5)).data))["op"] != "msg":
        pass
    assert msg["data"] == expected and msg["topic"] == "#proj"
    await ws.close()
    # members can now download it; others still cannot, nor share it
    status, body, resp = await api.get(tokens["bob"], meta["url"])
    assert status == 200 and body == data and resp.headers["Content-Type"] == "image/png"
    assert (await api.get(dave_token, meta["url"], Range="bytes=0-7"))[1] == PNG[:8]
    assert (await api.get(tokens["carol"], meta["url"]))[0] == 404
    status, _ = await api.call("POST", meta["url"] + "/share", tokens["carol"], {"room": "#other"})
    assert status == 404
    # a reader is not the owner
    status, problem = await api.call("DELETE", meta["url"], tokens["bob"])
    assert (status, problem["code"]) == (403, "not-owner")
    # rooms the owner is not in, or that do not exist, or are not names
    for room, status_code in (("#other", (403, "not-a-member")), ("nope", (403, "no-such-room")),
                              ("Bad Room!", (422, "bad-room"))):  # fmt: skip
        status, problem = await api.call("POST", meta["url"] + "/share", tokens["alice"],
                                         {"room": room})  # fmt: skip
        assert (status, problem["code"]) == status_code, room
    status, problem = await api.call("POST", meta["url"] + "/share", tokens["alice"], {})
    assert status == 422
    sidecar = json.loads((api.files_dir / f"{meta['id']}.json").read_text())
    assert sidecar["rooms"] == ["#proj"]
    # leaving the room ends access
    await bob.send("/leave #proj")
    await bob.expect(lambda e: e.get("cmd") == "left")
    assert (await api.get(tokens["bob"], meta["url"]))[0] == 404


async def test_delete_and_what_a_restart_keeps(api: Api, hub: HubFixture) -> None:
    alice = await api.token("alice")
    keep = await api.upload(alice, b"keep me", "keep.txt", "text/plain")
    gone = await api.upload(alice, b"delete me", "gone.txt", "text/plain")
    assert (await api.call("DELETE", gone["url"], alice))[0] == 204
    assert (await api.get(alice, gone["url"]))[0] == 404
    assert (await api.call("DELETE", gone["url"], alice))[0] == 404
    assert on_disk(api.files_dir) == {keep["id"], f"{keep['id']}.json"}
    # a crash mid-upload leaves a temp file; one between the rename and the metadata an orphan
    (api.files_dir / ".upload-crashed").write_bytes(b"half")
    (api.files_dir / ("B" * 22)).write_bytes(b"orphan")
    await restart_with_limits(hub)
    _, listing = await api.call("GET", "/api/files", alice)
    assert [f["id"] for f in listing["items"]] == [keep["id"]]
    assert listing["items"][0]["name"] == "keep.txt"
    assert (await api.get(alice, keep["url"]))[1] == b"keep me"
    assert on_disk(api.files_dir) == {keep["id"], f"{keep['id']}.json"}


async def test_upload_and_ranges_over_tls(hub: HubFixture, tmp_path: Path) -> None:
    """Behind TLS aiohttp writes through the hub's own connection (no socket for sendfile)."""
    pki = issue(tmp_path / "ca", ["localhost", "127.0.0.1"])
    await restart(hub, cert=str(pki.cert), key=str(pki.key))
    assert hub.service is not None and hub.service.web is not None
    base = f"https://127.0.0.1:{hub.service.web.server.address[1]}"
    data = os.urandom(700_000)  # several fallback chunks and write-buffer pauses
    connector = aiohttp.TCPConnector(ssl=client_context(pki.ca))
    async with aiohttp.ClientSession(connector=connector) as session:
        user = {"user": "tess", "password": "password-tess"}
        async with session.post(base + "/api/users", json=user) as resp:
            token = (await resp.json())["token"]
        auth = {"Authorization": f"Bearer {token}"}
        async with session.post(base + "/api/files", data=part(data, "big.bin"),
                                headers={**auth, "Content-Type": FORM}) as resp:  # fmt: skip
            assert resp.status == 201, await resp.text()
            url = base + (await resp.json())["url"]
        for _ in range(2):  # the connection stays usable after a file response
            async with session.get(url, headers=auth) as resp:
                assert resp.status == 200 and await resp.read() == data
        async with session.get(url, headers={**auth, "Range": "bytes=600000-"}) as resp:
            assert resp.status == 206 and await resp.read() == data[600000:]
    out = tmp_path / "tail"
    _, status_line, err = await curl(
        "--cacert", str(pki.ca), "-r", "-5000", "-H", f"Authorization: Bearer {token}",
        "-o", str(out), "-w", "%{http_code}", url,
    )  # fmt: skip
    assert status_line == b"206" and out.read_bytes() == data[-5000:], err
