"""``wirekit serve``: the main job, the messaging hub."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from ..errors import UsageError
from ..hub.accounts import REFRESH_TTL, TOKEN_TTL
from ..hub.engine import TOPIC
from ..hub.service import HubConfig
from ..hub.service import serve as serve_hub
from ..hub.store import MAX_LENGTH, PRESENCE_TTL
from ..limits import DEFAULTS
from .common import HOSTPORT, build_limits, limit_options, resolve_tls, tls_server_options

# Login attempts per client address per minute, as a multiple of those per account (the
# defaults: 20 and 5).
LOGIN_ADDRESS_FACTOR = DEFAULTS.login_per_address // DEFAULTS.login_per_user


@click.command(short_help="The messaging hub: TCP chat, WebSocket, SSE, browser page, metrics.")
@click.option(
    "--chat",
    type=HOSTPORT,
    default="127.0.0.1:7000",
    show_default=True,
    help="TCP chat address (docs/chat-protocol.md).",
)
@click.option(
    "--http",
    type=HOSTPORT,
    default="127.0.0.1:8080",
    show_default=True,
    help="HTTP address: the page at /, WebSocket /ws, SSE /sse, /api (docs/ws-protocol.md).",
)
@click.option(
    "--http-redirect",
    type=HOSTPORT,
    default=None,
    help="With --tls: also listen here for plain HTTP and redirect (308) to https.",
)
@click.option(
    "--public-topics",
    default="",
    metavar="T1,T2",
    help="Push topics anyone may subscribe to without logging in (WebSocket and SSE).",
)
@click.option(
    "--api-key",
    envvar="WIREKIT_API_KEY",
    help="Key for POST /api/publish and /api/kick [default: DATA/api.key, created on first start]",
)
@click.option(
    "--allowed-origins",
    default="",
    metavar="O1,O2",
    help="Origins allowed to open a WebSocket (e.g. https://app.example); '*' for any. "
    "[default: the server's own origin]",
)
@click.option(
    "--ws-ping-interval",
    type=float,
    default=DEFAULTS.ws_ping_interval,
    show_default=True,
    help="Seconds between the server's WebSocket pings.",
)
@click.option(
    "--ws-timeout",
    type=float,
    default=DEFAULTS.ws_timeout,
    show_default=True,
    help="Close a WebSocket from which nothing arrived for this many seconds.",
)
@click.option(
    "--ws-max-message",
    type=int,
    default=DEFAULTS.ws_max_message,
    show_default=True,
    help="Largest WebSocket message a client may send (bytes); larger closes with 1009.",
)
@click.option(
    "--file-max-size",
    type=int,
    default=DEFAULTS.file_max_size,
    show_default=True,
    help="Largest file POST /api/files stores (bytes); larger gets 413.",
)
@click.option(
    "--metrics",
    type=HOSTPORT,
    default="127.0.0.1:9107",
    show_default=True,
    help="Prometheus /metrics, /connections and /healthz.",
)
@click.option(
    "--data",
    "data_dir",
    default="wirekit-data",
    show_default=True,
    help="Data directory: hub.db (SQLite, WAL), secret.key, certs/.",
)
@click.option(
    "--message-rate",
    type=float,
    default=DEFAULTS.message_rate,
    show_default=True,
    help="Messages per second one connection may send (burst: twice that).",
)
@click.option(
    "--api-rate",
    type=float,
    default=DEFAULTS.api_rate,
    show_default=True,
    help="HTTP /api requests per second per client address and per user (burst: twice that).",
)
@click.option(
    "--login-rate",
    type=int,
    default=DEFAULTS.login_per_user,
    show_default=True,
    help="Login and register attempts per minute per account (per address: 4 times that).",
)
@click.option(
    "--send-queue",
    type=int,
    default=DEFAULTS.write_buffer_high,
    show_default=True,
    help="Bytes queued for a slow reader before it is marked behind.",
)
@click.option(
    "--behind-timeout",
    type=float,
    default=DEFAULTS.behind_timeout,
    show_default=True,
    help="Seconds a reader may stay behind before it is disconnected.",
)
@click.option(
    "--admin",
    "admins",
    multiple=True,
    metavar="USER",
    help="An administrator: may change or delete any account over the API (repeatable).",
)
@click.option(
    "--token-ttl",
    type=float,
    default=TOKEN_TTL,
    show_default=True,
    help="Seconds an access token is valid (POST /api/refresh renews it).",
)
@click.option(
    "--refresh-ttl",
    type=float,
    default=REFRESH_TTL,
    show_default=True,
    help="Seconds a refresh token is valid.",
)
@click.option(
    "--engine",
    default=None,
    metavar="redis://HOST:PORT/DB",
    envvar="WIREKIT_ENGINE",
    help="Share accounts, rooms, history and presence with other nodes through this Redis "
    "(docs/cluster.md). [default: embedded: SQLite in DATA, delivery in this process]",
)
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    help="Processes sharing the ports (SO_REUSEPORT), each a node; needs --engine. Worker i "
    "serves /metrics on the --metrics port + i.",
)
@click.option(
    "--presence-ttl",
    type=float,
    default=PRESENCE_TTL,
    show_default=True,
    help="With --engine: seconds after which the users of a node that stopped answering go "
    "offline.",
)
@click.option(
    "--retention-length",
    type=int,
    default=MAX_LENGTH,
    show_default=True,
    help="With --engine: messages kept per room or topic (about; older ones are trimmed).",
)
@click.option(
    "--retention-age",
    type=float,
    default=0,
    show_default=True,
    help="With --engine: seconds messages are kept (0: no age limit).",
)
@tls_server_options
@limit_options
def serve(
    chat: tuple[str, int],
    http: tuple[str, int],
    http_redirect: tuple[str, int] | None,
    public_topics: str,
    api_key: str | None,
    allowed_origins: str,
    ws_ping_interval: float,
    ws_timeout: float,
    ws_max_message: int,
    file_max_size: int,
    metrics: tuple[str, int],
    data_dir: str,
    message_rate: float,
    api_rate: float,
    login_rate: int,
    send_queue: int,
    behind_timeout: float,
    admins: tuple[str, ...],
    token_ttl: float,
    refresh_ttl: float,
    engine: str | None,
    workers: int,
    presence_ttl: float,
    retention_length: int,
    retention_age: float,
    tls: bool,
    cert: str | None,
    key: str | None,
    **limits: Any,
) -> None:
    """Run the hub until SIGINT/SIGTERM: accounts, rooms, private messages, push topics,
    presence and history, stored in DATA (SQLite), served over the TCP chat protocol, and over
    HTTP: a browser page, WebSocket, Server-Sent Events and an API for services.

    \b
    Example:
      wirekit serve                     # then open http://127.0.0.1:8080/
      nc 127.0.0.1 7000                 # /register alice secret123, /join #general, hello
      wirekit serve --public-topics news,sports
      curl -N 'http://127.0.0.1:8080/sse?topic=news'
      wirekit serve --chat 0.0.0.0:7000 --tls --data /var/lib/wirekit
      wirekit serve --engine redis://127.0.0.1:6379/0 --workers 2
    """
    if message_rate <= 0 or send_queue < 1024 or behind_timeout <= 0:
        raise UsageError("--message-rate and --behind-timeout must be > 0, --send-queue >= 1024")
    if api_rate <= 0 or login_rate < 1:
        raise UsageError("--api-rate must be > 0 and --login-rate at least 1")
    if ws_ping_interval <= 0 or ws_timeout <= 0 or ws_max_message < 125:
        raise UsageError("--ws-ping-interval and --ws-timeout must be > 0, --ws-max-message >= 125")
    if file_max_size < 1:
        raise UsageError("--file-max-size must be at least 1 byte")
    topics = frozenset(t.strip().lower() for t in public_topics.split(",") if t.strip())
    for topic in topics:
        if topic.startswith(("#", "@")) or not TOPIC.fullmatch(topic):
            raise UsageError(
                f"--public-topics: {topic!r} is not a push topic name (a-z 0-9 _ . : -)"
            )
    if engine is not None and not engine.startswith("redis://"):
        raise UsageError(f"--engine: expected redis://HOST:PORT/DB, got {engine!r}")
    if presence_ttl < 1 or retention_length < 1 or retention_age < 0:
        raise UsageError(
            "--presence-ttl must be >= 1 s, --retention-length >= 1, --retention-age >= 0"
        )
    if token_ttl <= 0 or refresh_ttl < token_ttl:
        raise UsageError("--token-ttl must be > 0 and --refresh-ttl at least as long")
    cert, key = resolve_tls(tls, cert, key, data_dir)
    if http_redirect is not None and cert is None:
        raise UsageError("--http-redirect needs --tls (or --cert and --key)")
    base = build_limits(
        limits["max_connections"], limits["max_line"], limits["max_frame"],
        limits["idle_timeout"], limits["grace"],
    )  # fmt: skip
    config = HubConfig(
        data_dir=Path(data_dir),
        chat=chat,
        http=http,
        http_redirect=http_redirect,
        public_topics=topics,
        api_key=api_key,
        allowed_origins=tuple(o.strip() for o in allowed_origins.split(",") if o.strip()),
        metrics=metrics,
        admins=frozenset(a.lower() for a in admins),
        token_ttl=token_ttl,
        refresh_ttl=refresh_ttl,
        limits=replace(
            base,
            message_rate=message_rate,
            message_burst=max(1, int(message_rate * 2)),
            api_rate=api_rate,
            api_burst=max(1, int(api_rate * 2)),
            login_per_user=login_rate,
            login_per_address=login_rate * LOGIN_ADDRESS_FACTOR,
            write_buffer_high=send_queue,
            write_buffer_low=send_queue // 4,
            behind_timeout=behind_timeout,
            ws_ping_interval=ws_ping_interval,
            ws_timeout=ws_timeout,
            ws_max_message=ws_max_message,
            file_max_size=file_max_size,
        ),
        cert=cert,
        key=key,
        engine=engine,
        presence_ttl=presence_ttl,
        retention_length=retention_length,
        retention_age=retention_age,
    )
    raise SystemExit(serve_hub(config, workers))
