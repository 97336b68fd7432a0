"""``anyedge control``: the Traffic Manager.

``anyedge control learn --history FILE`` learns each site's maximum threshold from its
history of CPU utilisation against p95 latency (:mod:`anyedge.control.learn`): the
utilisation where a fit of the clean samples meets the SLO, kept within ``--min`` and
``--max``, or the ``--static`` threshold when the data cannot say.  ``--site`` picks sites
(with one, the fitted curve is printed too); ``--json`` prints a list of results.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.table import Table

from ..control.learn import LearnedThreshold, check_options, fit_curve, learn_maximum, read_history
from ..errors import InputError, Problem
from .main import cli

OPTION = {"slo_ms": "--slo", "bounds": "--min/--max", "static": "--static"}
CURVE_GRID = np.round(np.arange(0.30, 1.0 + 1e-9, 0.05), 2)


@cli.group()
def control() -> None:
    """The Traffic Manager."""


@control.command()
@click.option(
    "--history",
    type=click.Path(path_type=Path),
    required=True,
    help="CSV with the columns site,utilisation,p95_ms (others are ignored).",
)
@click.option("--site", "sites", multiple=True, help="Learn this site only; repeat for several.")
@click.option("--slo", type=float, default=20.0, show_default=True, help="SLO on p95, ms.")
@click.option(
    "--static",
    type=float,
    default=0.90,
    show_default=True,
    help="Maximum threshold to keep when the history cannot tell.",
)
@click.option(
    "--min", "lower", type=float, default=0.50, show_default=True, help="Lowest maximum allowed."
)
@click.option(
    "--max", "upper", type=float, default=0.95, show_default=True, help="Highest maximum allowed."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def learn(
    history: Path,
    sites: tuple[str, ...],
    slo: float,
    static: float,
    lower: float,
    upper: float,
    as_json: bool,
) -> None:
    """Learn each site's maximum threshold from its latency history."""
    bad = check_options(slo_ms=slo, bounds=(lower, upper), static=static)
    if bad:
        raise InputError("command line", [Problem(OPTION.get(k, k), m) for k, m in bad])
    data = read_history(history)
    codes = list(dict.fromkeys(s.strip().upper() for s in sites)) or list(data)
    unknown = [c for c in codes if c not in data]
    if unknown:
        known = ", ".join(sorted(data))
        raise InputError(
            history,
            [Problem("--site", f"no samples of site {c} (the file has {known})") for c in unknown],
        )
    results = [
        (
            code,
            learn_maximum(*data[code], slo_ms=slo, bounds=(lower, upper), static=static),
        )
        for code in codes
    ]
    if as_json:
        click.echo(json.dumps([{"site": c, **asdict(r)} for c, r in results], indent=2))
        return
    show(results, slo)
    if len(sites) == 1:
        show_curve(*results[0])


def show(results: list[tuple[str, LearnedThreshold]], slo: float) -> None:
    table = Table(title=f"learned maximum thresholds (SLO: p95 {slo:g} ms)")
    table.add_column("site", no_wrap=True)
    table.add_column("points\nused / dropped", justify="right", no_wrap=True)
    table.add_column("method", no_wrap=True)
    table.add_column("maximum", justify="right", no_wrap=True)
    table.add_column("R²\nquad / lin", justify="right", no_wrap=True)
    table.add_column("reason", ratio=1)
    for code, r in results:
        table.add_row(
            code,
            f"{r.n_used} / {r.n_dropped}",
            r.method,
            f"{r.value:.3f}",
            f"{_r2(r.r2_quadratic)} / {_r2(r.r2_linear)}",
            r.reason,
        )
    Console().print(table)


def show_curve(code: str, r: LearnedThreshold) -> None:
    if r.method == "static":
        click.echo(f"{code}: no fitted curve, the maximum is the static {r.value:.2f}")
        return
    p95 = fit_curve(r, CURVE_GRID)
    click.echo(f"{code}: p95 of the {r.method} fit (SLO {r.slo_ms:g} ms)")
    click.echo("  utilisation    p95 ms")
    marked = False
    for u, p in zip(CURVE_GRID, p95, strict=True):
        mark = ""
        if r.crossing is not None and not marked and u >= r.crossing:
            mark = f"  <- crosses the SLO at {r.crossing:.3f}"
            marked = True
        click.echo(f"  {u:11.2f}  {p:8.2f}{mark}")
    click.echo(f"  learned maximum {r.value:.3f}" + (" (a bound)" if r.clamped else ""))


def _r2(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"
