"""``anyedge probes``: Atlas-style round trips before and after a second operator joins.

On a world (the default one, or ``-t TOPOLOGY``) it places probes as RIPE Atlas's are
placed — by continent like Atlas's, in fixed-line networks in proportion to their demand,
each on a wired first hop instead of its network's user line
(:func:`anyedge.sim.calibration.atlas_like_probes`, :func:`~anyedge.sim.calibration.wired`)
— and measures their round trips to the anycast address with only anyedge's sites
announcing, then with a second operator's sites too,
and prints the percentiles, how much each fell and the medians by country.  A topology
with ``operators:`` says which sites are the other operator's; otherwise the pair is
made from the world: anyedge keeps every ``--every``-th site, a CDN adds ``--theirs``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ..errors import InputError
from .common import topology_option, world_from
from .main import cli
from .output import console


@cli.command()
@topology_option
@click.option(
    "--every",
    type=click.IntRange(1, 1000),
    default=5,
    show_default=True,
    help="Without operators in the topology: anyedge keeps every N-th site.",
)
@click.option(
    "--theirs",
    type=click.IntRange(1, 100_000),
    default=50,
    show_default=True,
    help="Without operators in the topology: the CDN's sites (the largest others).",
)
@click.option(
    "--probes",
    "n",
    type=click.IntRange(1, 1_000_000),
    default=2000,
    show_default=True,
    help="How many probes.",
)
@click.option("--seed", type=click.IntRange(min=0), default=1, show_default=True)
@click.option(
    "--countries",
    type=click.IntRange(0, 1000),
    default=10,
    show_default=True,
    help="Show the countries with the most probes.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def probes(
    topology: Path | None,
    every: int,
    theirs: int,
    n: int,
    seed: int,
    countries: int,
    as_json: bool,
) -> None:
    """Round trips from Atlas-style probes before and after a second operator joins."""
    from ..routing import Announcement
    from ..sim import calibration as C
    from ..sim import probes as P

    world = world_from(topology)
    net = world.network
    if net.operators:
        pair = P.Pair(world, _ours_only(world), Announcement.everywhere(len(net.sites)))
    else:
        left = len(net.sites) - len(net.sites.code[::every])
        if theirs > left:
            raise InputError.one(
                "command line",
                "--theirs",
                f"{theirs} sites, but only {left} are not anyedge's with --every {every}",
            )
        pair = P.f_root_pair(world, every, theirs)
    try:
        atlas = C.atlas_like_probes(pair.world, n, seed)
        result = C.compare_wired(pair.world, atlas, pair.before, pair.after)
    except ValueError as e:
        raise InputError.one(topology or "default world", "internet", str(e)) from None
    out: dict[str, Any] = result.to_dict()
    out["sites"] = {
        "before": int(pair.before.announced.sum()),
        "after": int(pair.after.announced.sum()),
    }
    if as_json:
        click.echo(json.dumps(out, indent=1))
        return
    _show(result, out, countries)


def _ours_only(world: Any) -> Any:
    from ..routing import Announcement

    n = len(world.network.sites)
    theirs = [s for o in world.network.operators for s in o.sites]
    return Announcement.everywhere(n).withdraw(*theirs)


def _show(result: Any, out: dict[str, Any], countries: int) -> None:
    from rich.table import Table

    b, a = result.before, result.after
    t = Table(
        title=f"{b.answered} probes: {out['sites']['before']} sites, then "
        f"{out['sites']['after']} (a second operator's added)"
    )
    for col in ("percentile", "before ms", "after ms", "drop ms"):
        t.add_column(col, justify="right")
    drop = result.drop_ms()
    for p, v in b.quantiles_ms.items():
        t.add_row(str(p), f"{v:.2f}", f"{a.quantiles_ms[p]:.2f}", f"{drop[p]:.2f}")
    console().print(t)
    click.echo(
        f"median x{out['median_ratio']} ({b.median_ms:.2f} -> {a.median_ms:.2f} ms); "
        f"largest drop at the {result.largest_drop_at()}th percentile"
    )
    if countries:
        c = Table(title="median by country")
        for col in ("country", "probes", "before ms", "after ms"):
            c.add_column(col, justify="right")
        top = sorted(a.by_country.items(), key=lambda kv: (-kv[1][0], kv[0]))[:countries]
        for code, (k, med) in top:
            c.add_row(code, str(k), f"{b.by_country[code][1]:.2f}", f"{med:.2f}")
        console().print(c)
