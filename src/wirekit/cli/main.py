"""``wirekit``: the entry point. Errors are one line on stderr and a non-zero exit code."""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import WirekitError
from ..log import setup_logging
from . import addr, certs, chat, discover, echo, http, load, serve


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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


cli.add_command(serve.serve)
cli.add_command(chat.chat)
cli.add_command(load.load)
cli.add_command(echo.echo)
cli.add_command(discover.discover)
cli.add_command(addr.addr)
cli.add_command(certs.certs)
cli.add_command(http.http)


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
