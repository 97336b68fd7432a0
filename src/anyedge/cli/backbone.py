"""``anyedge backbone paths``: the best path from each site to one origin.

Loads the world (``-t`` or the default), runs :func:`anyedge.backbone.origin_paths` for
every site and the chosen origin, and prints, per site, the round trip over its own
transit, the best round trip, how much faster that is, and the backbone sites the best
path crosses (the last is the egress whose transit reaches the origin).  ``--site``
keeps only the named sites; ``--json`` prints a list of objects for scripts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..errors import InputError
from .common import topology_option, world_from
from .main import cli
from .output import console, csv_option, one_format, write_csv


@cli.group()
def backbone() -> None:
    """Paths to customers' origins over the backbone and transit."""


@backbone.command()
@topology_option
@click.option("--origin", required=True, help="The origin's name (see the topology's origins).")
@click.option("--site", "sites", multiple=True, help="Only this site (IATA code); repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")
@csv_option
def paths(
    topology: Path | None, origin: str, sites: tuple[str, ...], as_json: bool, as_csv: bool
) -> None:
    """Best path from each site to ORIGIN: direct transit, or the backbone then transit."""
    from ..backbone import origin_paths
    from ..model import Origins

    one_format(as_json, as_csv)
    world = world_from(topology)
    o = world.backbone.origins
    if origin not in o.name:
        known = ", ".join(o.name) if len(o) else "none: the topology has no origins"
        raise InputError.one("command line", "--origin", f"unknown origin {origin!r} ({known})")
    code = world.network.sites.code
    for s in sites:
        if s not in code:
            raise InputError.one("command line", "--site", f"unknown site {s!r}")
    k = o.index(origin)
    only = Origins((origin,), (o.city[k],), (o.country[k],), o.lat[k : k + 1], o.lon[k : k + 1])
    p = origin_paths(world, only)
    rows: list[dict[str, Any]] = [
        {
            "site": code[i],
            "direct_ms": round(float(p.direct_rtt[i, 0]), 2),
            "best_ms": round(float(p.best_rtt[i, 0]), 2),
            "gain": round(float(p.gain[i, 0]), 4),
            "via": [code[x] for x in p.path(i, 0)],
        }
        for i in (range(len(code)) if not sites else [code.index(s) for s in sites])
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    if as_csv:
        write_csv(rows)
        return
    from rich.table import Table

    table = Table(title=f"paths to {origin} ({o.city[k]}, {o.country[k]})")
    for col in ("site", "direct ms", "best ms", "faster", "via"):
        table.add_column(col, justify="left" if col in ("site", "via") else "right")
    for r in rows:
        table.add_row(
            r["site"],
            f"{r['direct_ms']:.1f}",
            f"{r['best_ms']:.1f}",
            f"{r['gain']:.1%}",
            " > ".join(r["via"]) + (" (transit)" if len(r["via"]) == 1 else ""),
        )
    console().print(table)
