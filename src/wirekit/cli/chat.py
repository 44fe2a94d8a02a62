"""``wirekit chat``: the terminal client of the hub."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import sys
import threading
from pathlib import Path
from typing import Any

import click
import orjson

from ..errors import UsageError
from ..hub.client import ChatClient, ChatOptions, render
from ..io.loop import run
from ..io.tls import client_context
from .common import HOSTPORT, json_option


@click.command(short_help="Terminal chat client (reconnects and resumes).")
@click.option(
    "--server", type=HOSTPORT, default="127.0.0.1:7000", show_default=True, help="Hub chat address."
)
@click.option("--user", required=True, help="Your user name.")
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the password from this file (first line); otherwise you are asked.",
)
@click.option("--register", is_flag=True, help="Create the account first.")
@click.option("--tls", is_flag=True, help="Connect with TLS.")
@click.option("--ca", type=click.Path(dir_okay=False), help="Trust this CA (PEM); implies --tls.")
@click.option(
    "--retries", type=int, default=100, show_default=True, help="Reconnects before giving up."
)
@json_option
def chat(
    server: tuple[str, int], user: str, password_file: Path | None, register: bool, tls: bool,
    ca: str | None, retries: int, as_json: bool,
) -> None:  # fmt: skip
    """Chat on a wirekit hub. Messages and notices appear while you type; type /help for the
    commands. The client reconnects by itself and resumes every room from where it was, so no
    message is missed or shown twice. With stdin not a terminal it reads commands line by line
    and quits at end of input.

    \b
    Example:
      wirekit chat --user alice --register
      printf '/join #ops\\ndeploy done\\n' | wirekit chat --user ci --password-file pw --json
    """
    interactive = sys.stdin.isatty()
    if password_file is not None:
        try:
            password = password_file.read_text().splitlines()[0]
        except (OSError, IndexError) as exc:
            raise UsageError(f"cannot read a password from {password_file}: {exc}") from None
    elif interactive:
        password = getpass.getpass(f"password for {user}: ")
    else:
        raise UsageError("stdin is not a terminal: give --password-file")
    options = ChatOptions(
        host=server[0],
        port=server[1],
        user=user,
        password=password,
        register=register,
        ssl=client_context(ca) if tls or ca else None,
        retries=retries,
    )

    def show(event: dict[str, Any]) -> None:
        line = orjson.dumps(event).decode() if as_json else render(event)
        print(line, flush=True)

    client = ChatClient(options, show)
    run(_interactive(client) if interactive else _scripted(client))


async def _scripted(client: ChatClient) -> None:
    # A daemon thread reads stdin: it works for pipes, files and /dev/null alike, and never
    # holds up the exit.
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(client.send, line.rstrip("\r\n"))
        loop.call_soon_threadsafe(client.send, "/quit")
        loop.call_soon_threadsafe(done.set)

    threading.Thread(target=read, name="stdin", daemon=True).start()
    await _together(client, done.wait())


async def _interactive(client: ChatClient) -> None:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.patch_stdout import patch_stdout

    session: PromptSession[str] = PromptSession()

    async def feed() -> None:
        while not client.quitting:
            try:
                line = await session.prompt_async(lambda: f"{client.room or ''}> ")
            except (EOFError, KeyboardInterrupt):
                line = "/quit"
            client.send(line)

    with patch_stdout():
        await _together(client, feed())


async def _together(client: ChatClient, feed: Any) -> None:
    """Run the client and the input feed; the client ending (quit, fatal error) ends both."""
    feeder = asyncio.ensure_future(feed)
    try:
        await client.run()
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
