"""Files in the HTTP API: uploads streamed to disk, downloads with ``Range``, sharing into rooms.

Routes (docs/files.md): ``POST /api/files`` (one ``multipart/form-data`` part named ``file``),
``GET /api/files`` (the caller's own), ``GET``/``HEAD``/``DELETE /api/files/{id}`` and
``POST /api/files/{id}/share``.

On disk, in ``DATA/files/``:

- ``<id>``: the bytes, named by a random id (``secrets.token_urlsafe(16)``); the client's file
  name is metadata only, so no name can reach the file system;
- ``<id>.json``: the metadata (owner, name, type, size, sha256, created, rooms), replaced
  atomically (temporary file, then ``os.replace``);
- ``.upload-<id>``, ``.<id>.json.tmp``: work in progress, removed on failure and at start.

An upload is written chunk by chunk as it arrives (never whole in memory) and checked on the
way: its size against ``Limits.file_max_size`` (413), its declared type against
``Limits.file_types`` (415) and, for types with a signature, its first bytes (415); text and
JSON must be UTF-8. A file is readable by its owner and by members of the rooms it was shared
into; anyone else gets a 404, as if it did not exist.
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import logging
import os
import re
import secrets
import time
import unicodedata
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote

import orjson
from aiohttp import BodyPartReader, MultipartReader, hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import (
    BadContentDispositionHeader,
    BadContentDispositionParam,
    parse_content_disposition,
)

from ..http.direct import Request
from ..http.problem import Problem, json_body, json_response, problem
from ..io.server import ConnectionTransport
from ..limits import KiB
from .accounts import Session
from .engine import message_text, room_named
from .openapi import LIMIT, ROOM, body, obj, ok, op, path_param, ref
from .rest import PAGE_DEFAULT, PAGE_MAX, hub_problem, iso, query_int
from .store import HubError

if TYPE_CHECKING:
    from .service import HubService

log = logging.getLogger("wirekit.hub.files")

FILE_ID = re.compile(r"[A-Za-z0-9_-]{22}")  # secrets.token_urlsafe(16)
CHUNK = 64 * KiB  # bytes read from the request (and written to disk) at a time
MULTIPART_SLACK = 64 * KiB  # a declared body may pass file_max_size by this much (framing)
NAME_BYTES = 255
NEVER = frozenset({  # active content a browser could run from this origin: never stored
    "text/html", "application/xhtml+xml", "image/svg+xml", "text/xml", "application/xml",
    "text/javascript", "application/javascript", "application/ecmascript", "text/css",
})  # fmt: skip
SNIFF = 12  # bytes the signatures look at
SIGNATURES: dict[str, Callable[[bytes], bool]] = {
    "image/png": lambda b: b.startswith(b"\x89PNG\r\n\x1a\n"),
    "image/jpeg": lambda b: b.startswith(b"\xff\xd8\xff"),
    "image/gif": lambda b: b.startswith((b"GIF87a", b"GIF89a")),
    "image/webp": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WEBP",
    "application/pdf": lambda b: b.startswith(b"%PDF-"),
    "application/zip": lambda b: b.startswith((b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")),
}
UTF8_TYPES = frozenset({"text/plain", "application/json"})
SERVED_AS = {"text/plain": "text/plain; charset=utf-8"}
DROPPED = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})  # controls, format, unassigned
DOWNLOAD_CSP = "default-src 'none'; sandbox"


def safe_name(raw: str | None) -> str:
    """The client's file name as metadata: its last path component (``/`` or ``\\``), without
    control or format characters (other spaces become plain ones), leading dots and spaces, at
    most 255 UTF-8 bytes (the extension kept when short), ``file`` if nothing is left."""
    name = re.split(r"[/\\]", unicodedata.normalize("NFC", raw or ""))[-1]
    name = "".join(
        " " if category == "Zs" else c
        for c in name
        if (category := unicodedata.category(c)) not in DROPPED
    )
    name = name.lstrip(". ").rstrip()
    if len(name.encode()) > NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        if not dot or not stem or len(ext.encode()) > 16:
            stem, ext = name, ""
        room = NAME_BYTES - (len(ext.encode()) + 1 if ext else 0)
        stem = stem.encode()[:room].decode(errors="ignore").rstrip()
        name = f"{stem}.{ext}" if ext else stem
    return name or "file"


def content_disposition(name: str) -> str:
    """RFC 6266 ``attachment`` with an ASCII ``filename`` and the exact ``filename*``
    (RFC 8187: UTF-8, percent-encoded)."""
    ascii_name = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\%' else "_" for c in name
    )
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def media_type(value: str | None) -> str:
    """``type/subtype`` of a Content-Type value, lowercased, parameters dropped."""
    return (value or "").split(";", 1)[0].strip().lower()


@dataclass(slots=True)
class StoredFile:
    """A file's metadata, as its sidecar ``<id>.json`` keeps it."""

    id: str
    owner: str
    name: str
    type: str
    size: int
    sha256: str
    created: float  # Unix time
    rooms: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"/api/files/{self.id}"

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "type": self.type, "size": self.size,
                "sha256": self.sha256, "created": iso(self.created), "owner": self.owner,
                "url": self.url, "rooms": list(self.rooms)}  # fmt: skip

    def message(self) -> dict[str, Any]:
        """What sharing publishes into a room."""
        return {"file": {"id": self.id, "name": self.name, "type": self.type,
                         "size": self.size, "url": self.url}}  # fmt: skip


class BlobResponse(web.FileResponse):
    """A :class:`~aiohttp.web.FileResponse` with two fixes:

    - it copies in chunks where ``loop.sendfile`` cannot work: behind TLS aiohttp writes to a
      :class:`ConnectionTransport`, which encrypts, and asyncio's ``sendfile`` refuses it with
      a ``RuntimeError`` that aiohttp does not catch;
    - a ``Range`` in another unit than bytes, or with several ranges, gets the whole file
      (RFC 9110 14.2), where aiohttp would answer 416.
    """

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        unit, _, ranges = request.headers.get(hdrs.RANGE, "bytes=").partition("=")
        if unit.strip().lower() != "bytes" or "," in ranges:
            headers = request.headers.copy()
            del headers[hdrs.RANGE]
            request = request.clone(headers=headers)
        return await super().prepare(request)

    async def _sendfile(
        self, request: web.BaseRequest, fobj: IO[Any], offset: int, count: int
    ) -> AbstractStreamWriter:
        if not isinstance(request.transport, ConnectionTransport):
            return await super()._sendfile(request, fobj, offset, count)
        writer = await web.StreamResponse.prepare(self, request)
        assert writer is not None
        return await self._sendfile_fallback(writer, fobj, offset, count)


def sync_file(out: IO[bytes]) -> None:
    out.flush()
    os.fsync(out.fileno())


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as out:
        out.write(data)
        sync_file(out)
    os.replace(tmp, path)


class FileApi:
    """The ``/api/files`` routes; ``session(request)`` is the caller's session or a 401."""

    def __init__(self, service: HubService, session: Callable[[web.Request], Session]) -> None:
        self.service = service
        self.hub = service.hub
        self.limits = service.hub.limits
        self.session = session
        self.dir = service.config.data_dir / "files"
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.files: dict[str, StoredFile] = {}
        self._lock = asyncio.Lock()  # sidecar writes and deletions, in order
        self._load()

    @staticmethod
    def openapi() -> tuple[dict[str, Any], dict[str, Any]]:
        """The routes' OpenAPI paths and schemas, for :func:`wirekit.hub.openapi.spec`."""
        file_id = path_param("id", f"^{FILE_ID.pattern}$", "the file's id")
        text, binary = {"type": "string"}, {"type": "string", "format": "binary"}
        upload = {"required": True, "content": {"multipart/form-data": {
            "schema": {**obj(["file"], file=binary), "additionalProperties": False},
            "encoding": {"file": {"contentType": "application/octet-stream"}},
        }}}  # fmt: skip
        blob = {
            "content": {"*/*": {"schema": binary}},
            "headers": {
                h: {"schema": text} for h in ("Content-Disposition", "ETag", "Last-Modified")
            },
        }
        paths = {
            "/api/files": {
                "post": op("uploadFile", "Upload a file (streamed; one part named file)",
                           {201: ok("Stored", ref("File"), Location="the file's URL")}, (400,),
                           request=upload),
                "get": op("listFiles", "The caller's files, newest first",
                          {200: ok("Files", ref("FileList"))}, (400,), params=[LIMIT]),
            },
            "/api/files/{id}": {
                "parameters": [file_id],
                "get": op("downloadFile", "The bytes (owner, members of a room it was shared "
                          "into); Range, If-None-Match, If-Range",
                          {200: {"description": "The file", **blob},
                           206: {"description": "The requested range", **blob},
                           304: {"description": "Not modified (If-None-Match matched)"},
                           416: {"description": "Range not satisfiable"}}, (404,)),
                "delete": op("deleteFile", "Delete a file (owner)", {204: ok("Deleted")},
                             (403, 404)),
            },
            "/api/files/{id}/share": {
                "parameters": [file_id],
                "post": op("shareFile", "Publish the file into a room the caller is in",
                           {201: ok("Shared", ref("Posted"))}, (403, 404),
                           request=body(ref("FileShare"))),
            },
        }  # fmt: skip
        schemas = {
            "File": obj(["id", "name", "type", "size", "sha256", "created", "owner", "url",
                         "rooms"], id=text, name=text, type=text, size={"type": "integer"},
                        sha256=text, created={**text, "format": "date-time"}, owner=text,
                        url=text, rooms={"type": "array", "items": text}),
            "FileList": obj(["items"], items={"type": "array", "items": ref("File")}),
            "FileShare": obj(["room"], room={"type": "string", "pattern": ROOM}),
        }  # fmt: skip
        return paths, schemas

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/api/files", self._upload, expect_handler=self._expect)
        router.add_get("/api/files", self._list)
        router.add_get("/api/files/{id}", self._download)
        router.add_delete("/api/files/{id}", self._delete)
        router.add_post("/api/files/{id}/share", self._share)

    def streams_body(self, request: Request) -> bool:
        """Requests whose body this API limits itself (``file_max_size``), exempt from the
        middleware's ``api_max_body``."""
        return request.method == "POST" and request.path == "/api/files"

    # -- the index ----------------------------------------------------------------------------
    def _load(self) -> None:
        """Index the sidecars; remove uploads a crash left half done."""
        for path in self.dir.iterdir():
            if path.name.startswith("."):
                path.unlink(missing_ok=True)
        for path in self.dir.glob("*.json"):
            blob = path.with_suffix("")
            if not FILE_ID.fullmatch(blob.name):
                continue
            if not blob.exists():  # the metadata of bytes that are gone
                path.unlink()
                continue
            try:
                meta = StoredFile(**orjson.loads(path.read_bytes()))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("unreadable file metadata %s: %s", path, exc)
                continue
            self.files[meta.id] = meta
        for path in self.dir.iterdir():  # bytes whose metadata was never written
            if FILE_ID.fullmatch(path.name) and path.name not in self.files:
                path.unlink(missing_ok=True)

    async def _save(self, file_id: str) -> None:
        async with self._lock:
            meta = self.files.get(file_id)
            if meta is not None:  # not deleted meanwhile
                data = orjson.dumps(asdict(meta))
                await asyncio.to_thread(write_atomically, self.dir / f"{file_id}.json", data)

    def _readable(self, request: web.Request, user: str) -> StoredFile:
        """The file of ``{id}`` if ``user`` may read it, else 404 (existing or not)."""
        file_id = request.match_info["id"]
        meta = self.files.get(file_id) if FILE_ID.fullmatch(file_id) else None
        if meta is None or not self._may_read(meta, user):
            raise Problem(404, "no-such-file", f"no file {file_id}")
        return meta

    def _may_read(self, meta: StoredFile, user: str) -> bool:
        if user == meta.owner:
            return True
        logs = self.hub.logs
        return any(room in logs and user in logs[room].members for room in meta.rooms)

    # -- upload -------------------------------------------------------------------------------
    def _check_request(self, request: web.Request) -> None:
        """What can be refused before reading the body: the type and a declared length."""
        if request.content_type != "multipart/form-data":
            raise Problem(415, "content-type", "send multipart/form-data with a part named file")
        length = request.content_length
        most = self.limits.file_max_size
        if length is not None and length > most + MULTIPART_SLACK:
            raise Problem(413, "too-large", f"files are at most {most} bytes")

    async def _expect(self, request: web.Request) -> web.StreamResponse | None:
        """``Expect: 100-continue``: refuse what is sure to fail before the client sends it."""
        try:
            self._check_request(request)
            if hdrs.AUTHORIZATION not in request.headers:
                raise Problem(401, "login-required", "send Authorization: Bearer TOKEN",
                              {"WWW-Authenticate": "Bearer"})  # fmt: skip
        except Problem as exc:
            return problem(exc.status, exc.code, str(exc), exc.headers)
        if request.headers[hdrs.EXPECT].lower() != "100-continue":
            return problem(417, "expectation", "only Expect: 100-continue is supported")
        if request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
        return None

    async def _upload(self, request: web.Request) -> web.Response:
        session = self.session(request)
        self._check_request(request)
        try:
            reader = await request.multipart()
            part = await self._file_part(reader)
            name, kind = self._describe(part)
            file_id = secrets.token_urlsafe(16)
            tmp = self.dir / f".upload-{file_id}"
            try:
                size, sha256 = await self._receive(part, tmp, kind)
                if await reader.next() is not None:
                    raise Problem(422, "usage", "the form has one part, named file")
                os.replace(tmp, self.dir / file_id)
            finally:
                tmp.unlink(missing_ok=True)
        except (ValueError, RuntimeError, HttpProcessingError) as exc:
            raise Problem(400, "bad-multipart", f"malformed multipart body: {exc}") from None
        meta = self.files[file_id] = StoredFile(
            file_id, session.user, name, kind, size, sha256, time.time()
        )
        try:  # the file has arrived: store it even if the client leaves now
            await asyncio.shield(self._save(file_id))
        except Exception:
            del self.files[file_id]
            (self.dir / file_id).unlink(missing_ok=True)
            raise
        log.info("file stored", extra={"event": "file_stored", "user": session.user,
                                       "id": file_id, "size": size})  # fmt: skip
        response = json_response(meta.json(), status=201)
        response.headers[hdrs.LOCATION] = meta.url
        return response

    async def _file_part(self, reader: MultipartReader) -> BodyPartReader:
        """The form's part, which must be named ``file``."""
        part = await reader.next()
        if not isinstance(part, BodyPartReader) or self._disposition(part).get("name") != "file":
            raise Problem(422, "usage", "the form has one part, named file")
        return part

    @staticmethod
    def _disposition(part: BodyPartReader) -> dict[str, str]:
        with warnings.catch_warnings():  # a malformed header only means: no name
            warnings.simplefilter("ignore", BadContentDispositionHeader)
            warnings.simplefilter("ignore", BadContentDispositionParam)
            return parse_content_disposition(part.headers.get(hdrs.CONTENT_DISPOSITION))[1]

    def _describe(self, part: BodyPartReader) -> tuple[str, str]:
        """The part's safe name and its declared type, refused (415) unless allowed."""
        params = self._disposition(part)
        if "filename*" in params:
            name = safe_name(params["filename*"])
        else:  # browsers send " CR LF as %22 %0D %0A (WHATWG multipart/form-data)
            raw = params.get("filename", "")
            name = safe_name(raw.replace("%22", '"').replace("%0D", "").replace("%0A", ""))
        kind = media_type(part.headers.get(hdrs.CONTENT_TYPE)) or "application/octet-stream"
        if kind in NEVER or kind not in self.limits.file_types:
            raise Problem(415, "file-type", f"{kind} files are not accepted; "
                                            f"allowed: {', '.join(self.allowed)}")  # fmt: skip
        for header in (hdrs.CONTENT_TRANSFER_ENCODING, hdrs.CONTENT_ENCODING):
            if media_type(part.headers.get(header)) not in ("", "binary", "8bit", "7bit"):
                raise Problem(415, "file-encoding", f"send the file as it is, without {header}")
        return name, kind

    @property
    def allowed(self) -> list[str]:
        return [t for t in self.limits.file_types if t not in NEVER]

    async def _receive(self, part: BodyPartReader, path: Path, kind: str) -> tuple[int, str]:
        """Copy the part to ``path`` as it arrives, checking it; ``(size, sha256)``."""
        most = self.limits.file_max_size
        digest = hashlib.sha256()
        text = codecs.getincrementaldecoder("utf-8")() if kind in UTF8_TYPES else None
        head = b"" if kind in SIGNATURES else None  # first bytes, until checked
        size = 0
        out = await asyncio.to_thread(open, path, "xb")  # disk writes stay off the loop
        try:
            while chunk := await part.read_chunk(CHUNK):
                size += len(chunk)
                if size > most:
                    raise Problem(413, "too-large", f"files are at most {most} bytes")
                if head is not None:
                    head += chunk[: SNIFF - len(head)]
                    if len(head) == SNIFF:
                        self._check_signature(kind, head)
                        head = None
                if text is not None:
                    self._check_text(kind, text, chunk, final=False)
                digest.update(chunk)
                await asyncio.to_thread(out.write, chunk)
            if head is not None:  # shorter than SNIFF
                self._check_signature(kind, head)
            if text is not None:
                self._check_text(kind, text, b"", final=True)
            await asyncio.to_thread(sync_file, out)
        finally:
            out.close()
        return size, digest.hexdigest()

    @staticmethod
    def _check_signature(kind: str, head: bytes) -> None:
        if not SIGNATURES[kind](head):
            raise Problem(415, "file-type", f"the content is not {kind}")

    @staticmethod
    def _check_text(
        kind: str, decoder: codecs.IncrementalDecoder, data: bytes, final: bool
    ) -> None:
        try:
            decoder.decode(data, final)
        except UnicodeDecodeError:
            raise Problem(415, "file-type", f"{kind} files must be UTF-8") from None

    # -- the other routes ---------------------------------------------------------------------
    async def _list(self, request: web.Request) -> web.Response:
        user = self.session(request).user
        limit = query_int(request, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
        mine = [f for f in self.files.values() if f.owner == user]
        mine.sort(key=lambda f: (f.created, f.id), reverse=True)
        return json_response({"items": [f.json() for f in mine[:limit]]})

    async def _download(self, request: web.Request) -> web.StreamResponse:
        meta = self._readable(request, self.session(request).user)
        return BlobResponse(self.dir / meta.id, headers={
            hdrs.CONTENT_TYPE: SERVED_AS.get(meta.type, meta.type),
            hdrs.CONTENT_DISPOSITION: content_disposition(meta.name),
            hdrs.CACHE_CONTROL: "private, no-cache",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": DOWNLOAD_CSP,
        })  # fmt: skip

    async def _delete(self, request: web.Request) -> web.Response:
        user = self.session(request).user
        meta = self._readable(request, user)
        if meta.owner != user:
            raise Problem(403, "not-owner", f"only {meta.owner} may delete this file")
        async with self._lock:
            self.files.pop(meta.id, None)
            for path in (self.dir / f"{meta.id}.json", self.dir / meta.id):
                path.unlink(missing_ok=True)
        return web.Response(status=204)

    async def _share(self, request: web.Request) -> web.Response:
        user = self.session(request).user
        meta = self._readable(request, user)
        given = (await json_body(request, "room"))["room"]
        try:
            room = room_named(given)
            text, is_json = message_text(meta.message(), self.limits.max_line)
            offset = self.hub.publish(user, room, text, is_json)
        except HubError as exc:
            if exc.code == "no-such-room":  # as for a non-member: the 404 is for the file
                raise Problem(403, exc.code, str(exc)) from None
            raise hub_problem(exc) from None
        if room not in meta.rooms:
            meta.rooms.append(room)
            await self._save(meta.id)
        return json_response({"room": room, "offset": offset}, status=201)
