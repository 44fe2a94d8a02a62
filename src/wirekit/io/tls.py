"""TLS contexts: TLS 1.2 or newer only, certificates checked by default."""

from __future__ import annotations

import ssl
from pathlib import Path

from ..errors import UsageError


def server_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """A server context for ``cert`` (PEM chain) and ``key`` (PEM). TLS 1.2+ only."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except FileNotFoundError as exc:
        raise UsageError(f"cannot read certificate or key: {exc.filename}") from None
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(f"cannot load certificate {cert} with key {key}: {exc}") from None
    return ctx


def client_context(ca: str | Path | None = None, *, insecure: bool = False) -> ssl.SSLContext:
    """A client context that verifies the server against ``ca`` (PEM), or the system store;
    with ``insecure``, one that checks nothing (``--insecure``)."""
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if ca is not None:
        try:
            ctx.load_verify_locations(cafile=str(ca))
        except FileNotFoundError:
            raise UsageError(f"cannot read CA file: {ca}") from None
        except (ssl.SSLError, OSError) as exc:
            raise UsageError(f"cannot load CA file {ca}: {exc}") from None
    return ctx


class TlsSession:
    """Server-side TLS over memory BIOs: ciphertext in, plaintext out, and the reverse.

    The connection drives it from its own ``data_received``, so a failed handshake is seen (and
    counted) by the connection itself; asyncio's ``create_server(ssl=...)`` drops such
    connections before the protocol hears of them.
    """

    __slots__ = ("_incoming", "_object", "_outgoing", "handshaken", "peer_closed", "started")

    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._object = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self.handshaken = False
        self.peer_closed = False
        self.started = False  # any byte received: a port probe sends none

    def receive(self, data: bytes) -> bytes:
        """Feed ciphertext; return the plaintext it completes. Raises :class:`ssl.SSLError`
        when the handshake or a record fails."""
        self._incoming.write(data)
        self.started = True
        if not self.handshaken:
            try:
                self._object.do_handshake()
            except ssl.SSLWantReadError:
                return b""
            self.handshaken = True
        chunks = []
        while True:
            try:
                chunk = self._object.read(65536)
            except ssl.SSLWantReadError:
                break
            if not chunk:  # the peer's close_notify
                self.peer_closed = True
                break
            chunks.append(chunk)
        return b"".join(chunks)

    @property
    def ssl_object(self) -> ssl.SSLObject:
        return self._object

    def encrypt(self, plaintext: bytes) -> bytes:
        self._object.write(plaintext)
        return self._outgoing.read()

    def data_to_send(self) -> bytes:
        """Handshake records, alerts and tickets waiting to go out."""
        return self._outgoing.read()

    def close_notify(self) -> bytes:
        try:
            self._object.unwrap()
        except ssl.SSLError:
            pass
        return self._outgoing.read()
