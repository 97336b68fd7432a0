"""``anyedge``: the command line, shaped like the tools network engineers know.

Each subcommand lives in its own module and registers on :data:`cli`.  The group knows
every subcommand's name and one-line help without importing its module (see
:data:`COMMANDS`), so ``anyedge --help`` and ``--version`` start in a fraction of a
second, and a command loads only what it uses.

Every error has one form on stderr: ``anyedge: error: what``.  Bad input
(:class:`~anyedge.errors.InputError`) reads ``anyedge: error: FILE:LINE: PLACE: what`` and
exits with status 2, with no traceback; click's own usage errors also exit 2, after the
usage line.  Any other status a command gives — an ``int`` it returns, or ``ctx.exit(n)``,
:class:`click.exceptions.Exit`, :class:`click.ClickException` (shown in the same form)
or :exc:`SystemExit` it raises — is the process's exit status.
"""

from __future__ import annotations

import importlib
import sys

import click
from click.utils import make_default_short_help

from .. import __version__
from ..errors import InputError

EXIT_BAD_INPUT = 2

# name -> (module that registers it on ``cli``, one-line help as ``anyedge --help`` shows
# it); tests/test_cli_startup.py checks these against the commands themselves
COMMANDS: dict[str, tuple[str, str]] = {
    "backbone": (
        "anyedge.cli.backbone",
        "Paths to customers' origins over the backbone and transit.",
    ),
    "catchment": (
        "anyedge.cli.catchment",
        "Compute anycast catchments from BGP and print each site's share.",
    ),
    "control": ("anyedge.cli.control_run", "The Traffic Manager."),
    "ipsec": ("anyedge.cli.ipsec", "Anycast IPsec: IKEv2 responder and user-space ESP."),
    "lab": (
        "anyedge.cli.lab",
        "The anycast lab: namespaces, real BGP daemons, real packets (needs root).",
    ),
    "mtu": (
        "anyedge.cli.pmtud",
        "Choose the IPv6 MTU from the MSS clients advertise, and set it on a route.",
    ),
    "pmtud": (
        "anyedge.cli.pmtud",
        "Deliver each ICMP Packet Too Big to the server that holds its flow.",
    ),
    "predict": (
        "anyedge.cli.predict",
        "Predict where traffic goes when sites fail (Traffic Predictor).",
    ),
    "probes": (
        "anyedge.cli.probes",
        "Round trips from Atlas-style probes before and after a second operator joins.",
    ),
    "simulate": (
        "anyedge.cli.simulate",
        "Run a scenario through the digital twin under three controllers.",
    ),
    "store": (
        "anyedge.cli.store",
        "The replicated configuration store: serve, replica, put, get, watch.",
    ),
    "transit": (
        "anyedge.cli.transit",
        "Magic Transit: customers' prefixes, firewalls and GRE tunnels on anycast.",
    ),
    "turn": ("anyedge.cli.turn", "The TURN/STUN relay on the anycast address."),
    "world": ("anyedge.cli.world", "Build the default world (or load one) and summarise it."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported when they are used, not when it is."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(COMMANDS[cmd_name][0])  # it registers itself on cli
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            limit = formatter.width - 6 - len(name)
            if name in self.commands:
                cmd = self.commands[name]
                if not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(limit)))
            else:
                rows.append((name, make_default_short_help(COMMANDS[name][1], limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="anyedge")
def cli() -> None:
    """Run a global anycast edge network: model it, predict it, steer it."""


def error(message: str) -> None:
    """``anyedge: error: MESSAGE`` on stderr, one prefix per line."""
    for line in message.splitlines() or [""]:
        click.echo(f"anyedge: error: {line}", err=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (and exits with it when run as a script)."""
    try:
        # without standalone mode click hands back what it would otherwise exit with:
        # the command's return value, or the code of an Exit (ctx.exit) it raised
        rv = cli.main(args=argv, prog_name="anyedge", standalone_mode=False)
    except InputError as e:
        error(e.render())
        return EXIT_BAD_INPUT
    except click.exceptions.Abort:
        click.echo("anyedge: aborted", err=True)
        return 130
    except click.UsageError as e:
        if e.ctx is not None:
            click.echo(e.ctx.get_usage(), err=True)
            if e.ctx.command.get_help_option(e.ctx) is not None:
                click.echo(
                    f"Try '{e.ctx.command_path} {e.ctx.help_option_names[0]}' for help.", err=True
                )
        error(e.format_message())
        return e.exit_code
    except click.ClickException as e:
        error(e.format_message())
        return e.exit_code
    except click.exceptions.Exit as e:
        return _status(e.exit_code)
    except SystemExit as e:  # sys.exit() in a command, or click's own on a broken pipe
        if e.code is not None and not isinstance(e.code, int):
            error(str(e.code))
            return 1
        return _status(e.code)
    return _status(rv if isinstance(rv, int) and not isinstance(rv, bool) else None)


def _status(code: int | None) -> int:
    """The exit status for ``code``: None is success; a status the system cannot carry
    (below 0 or above 255, which it would take modulo 256, 256 becoming 0) is 1."""
    if code is None:
        return 0
    return code if 0 <= code <= 255 else 1


def run() -> None:
    sys.exit(main())
