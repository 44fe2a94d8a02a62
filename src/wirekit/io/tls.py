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


def client_context(ca: str | Path | None = None) -> ssl.SSLContext:
    """A client context that verifies the server against ``ca`` (PEM), or the system store."""
    ctx = ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca is not None:
        try:
            ctx.load_verify_locations(cafile=str(ca))
        except FileNotFoundError:
            raise UsageError(f"cannot read CA file: {ca}") from None
        except (ssl.SSLError, OSError) as exc:
            raise UsageError(f"cannot load CA file {ca}: {exc}") from None
    return ctx
