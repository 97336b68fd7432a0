"""How the commands print: tables that do not wrap numbers when piped, and CSV.

On a terminal a table fits the terminal's width; piped or redirected it is as wide as it
needs to be (rich would otherwise wrap at 80 columns, splitting numbers across lines).
``--csv`` prints the command's main table as CSV instead, for scripts (``--json`` has
everything).
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console

PIPED_WIDTH = 10_000  # "as wide as it needs": rich sizes tables to their content

csv_option = click.option(
    "--csv", "as_csv", is_flag=True, help="Print the main table as CSV (for scripts)."
)


def console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr) that wraps only on a terminal."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else PIPED_WIDTH)


def one_format(as_json: bool, as_csv: bool) -> None:
    if as_json and as_csv:
        raise click.UsageError("give --json or --csv, not both")


def write_csv(rows: Iterable[Mapping[str, Any]], columns: list[str] | None = None) -> None:
    """``rows`` as CSV on stdout, with a header line (the first row's keys by default)."""
    rows = list(rows)
    cols = columns if columns is not None else (list(rows[0]) if rows else [])
    out = csv.DictWriter(sys.stdout, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    out.writeheader()
    for r in rows:
        out.writerow({k: _cell(v) for k, v in r.items()})
    sys.stdout.flush()


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, list | tuple):
        return " ".join(str(x) for x in v)
    return v
