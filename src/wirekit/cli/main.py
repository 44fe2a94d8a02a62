"""``wirekit``: the entry point. Errors are one line on stderr and a non-zero exit code."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import Any

import click

from .. import __version__
from ..errors import WirekitError
from ..log import setup_logging


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that command is resolved.

    Importing every command up front cost each run about half a second (aiohttp,
    prometheus_client, the hub), even for commands that need none of it. Commands are given as
    ``name -> "module:attribute"``; only listing them all (``wirekit --help``) imports them all.
    """

    def __init__(self, *args: Any, lazy_subcommands: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = dict(lazy_subcommands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_subcommands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy_subcommands:
            return super().get_command(ctx, cmd_name)
        module_name, attribute = self.lazy_subcommands[cmd_name].split(":")
        command = getattr(importlib.import_module(module_name), attribute)
        assert isinstance(command, click.Command), self.lazy_subcommands[cmd_name]
        return command


@click.group(
    cls=LazyGroup,
    lazy_subcommands={
        name: f"{__package__}.{name}:{name}"
        for name in ("serve", "chat", "load", "echo", "discover", "addr", "certs", "http")
    },
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="wirekit")
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Least severe log level shown on stderr.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines as key=value text or one JSON object each.",
)
def cli(log_level: str, log_format: str) -> None:
    """wirekit: a network toolkit. Servers, clients and tools built on sans-I/O protocol cores.

    Run `wirekit COMMAND --help` for a command's options and an example.
    """
    setup_logging(log_level, log_format)


def main(argv: list[str] | None = None) -> None:
    try:
        code = cli.main(args=argv, prog_name="wirekit", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:  # `wirekit` alone: show the help
        click.echo(exc.ctx.get_help() if exc.ctx else "")
        code = 0
    except click.ClickException as exc:
        click.echo(f"wirekit: error: {exc.format_message()}", err=True)
        code = exc.exit_code
    except click.exceptions.Abort:
        click.echo("wirekit: aborted", err=True)
        code = 130
    except KeyboardInterrupt:
        code = 130
    except WirekitError as exc:
        click.echo(f"wirekit: error: {exc}", err=True)
        code = 1
    sys.exit(code if isinstance(code, int) else 0)
