"""``anyedge``: the command line, shaped like the tools network engineers know.

Each subcommand lives in its own module and registers on :data:`cli`.  Bad input
(:class:`~anyedge.errors.InputError`) becomes ``anyedge: error: FILE:LINE: PLACE: what``
on stderr and exit status 2, with no traceback; click's own usage errors also exit 2.
Any other status a command gives — an ``int`` it returns, or ``ctx.exit(n)``,
:class:`click.exceptions.Exit`, :class:`click.ClickException` or :exc:`SystemExit` it
raises — is the process's exit status.
"""

from __future__ import annotations

import sys

import click

from .. import __version__
from ..errors import InputError

EXIT_BAD_INPUT = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="anyedge")
def cli() -> None:
    """Run a global anycast edge network: model it, predict it, steer it."""


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (and exits with it when run as a script)."""
    from . import catchment as _catchment  # noqa: F401  (each registers its subcommand)
    from . import control as _control  # noqa: F401
    from . import control_plan as _control_plan  # noqa: F401
    from . import lab as _lab  # noqa: F401
    from . import predict as _predict  # noqa: F401
    from . import simulate as _simulate  # noqa: F401
    from . import turn as _turn  # noqa: F401
    from . import world as _world  # noqa: F401

    try:
        # without standalone mode click hands back what it would otherwise exit with:
        # the command's return value, or the code of an Exit (ctx.exit) it raised
        rv = cli.main(args=argv, prog_name="anyedge", standalone_mode=False)
    except InputError as e:
        for line in e.render().splitlines():
            click.echo(f"anyedge: error: {line}", err=True)
        return EXIT_BAD_INPUT
    except click.exceptions.Abort:
        click.echo("anyedge: aborted", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.exceptions.Exit as e:
        return _status(e.exit_code)
    except SystemExit as e:  # sys.exit() in a command, or click's own on a broken pipe
        if e.code is not None and not isinstance(e.code, int):
            click.echo(f"anyedge: {e.code}", err=True)
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
