"""``anyedge world``: build (or load) a world and show what it looks like.

Without ``-t`` it builds the default world from real cities and airports (deterministic
for ``--seed``); with ``-t FILE`` it loads and checks a topology instead.  ``--out DIR``
saves the world as ``topology.yaml``, ``internet.as-rel``, ``metros.csv`` and
``eyeballs.csv`` and names each; ``--json`` prints the summary for scripts, ``--csv`` the
table by continent.  The world is calibrated against the measured Internet unless
``--uncalibrated`` asks for the older, kinder one; ``--calibration`` adds the
calibration report (:mod:`anyedge.sim.calibration`) and exits 1 if a figure is outside
its tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import InputError, Problem
from .main import cli
from .output import console, csv_option, one_format, write_csv
from .progress import steps

if TYPE_CHECKING:
    from ..model.world import World

HEADROOM = (1.3, 2.0)  # WorldOptions.headroom, without loading the world builder


@cli.command()
@click.option(
    "-t",
    "--topology",
    type=click.Path(path_type=Path),
    help="Load this topology YAML (or directory) instead of building one.",
)
@click.option(
    "--seed", type=click.IntRange(min=0), default=1, show_default=True, help="Random seed."
)
@click.option("--sites", type=int, default=300, show_default=True, help="Number of sites.")
@click.option(
    "--mcp",
    type=int,
    default=30,
    show_default=True,
    help="How many of them are multi-colo sites with several sections.",
)
@click.option(
    "--min-city-population",
    type=int,
    default=100_000,
    show_default=True,
    help="Cities at least this big become eyeball metros.",
)
@click.option(
    "--peak-rps",
    type=float,
    default=40e6,
    show_default=True,
    help="World demand, sum of each metro's evening peak, requests/s.",
)
@click.option("--tier1", type=int, default=12, show_default=True, help="Size of the tier-1 clique.")
@click.option(
    "--headroom",
    type=float,
    nargs=2,
    default=HEADROOM,
    show_default=True,
    metavar="MIN MAX",
    help="Capacity at each site's maximum threshold over the peak of its BGP catchment, "
    "drawn per site between MIN and MAX (1 = exactly the maximum at the peak).",
)
@click.option(
    "--calibrated/--uncalibrated",
    default=True,
    show_default=True,
    help="Build the world calibrated against the measured Internet (last mile, people "
    "online by country, exchange points, tromboning), or the older uncalibrated one "
    "(flat 2 ms last mile, sparse peering, people online by continent).",
)
@click.option(
    "--calibration",
    is_flag=True,
    help="Also set the world's figures beside the published ones (exit 1 if one is "
    "outside its tolerance).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Save topology.yaml, internet.as-rel, metros.csv and eyeballs.csv here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@csv_option
def world(
    topology: Path | None,
    seed: int,
    sites: int,
    mcp: int,
    min_city_population: int,
    peak_rps: float,
    tier1: int,
    headroom: tuple[float, float],
    calibrated: bool,
    calibration: bool,
    out: Path | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Build the default world (or load one) and summarise it."""
    from ..model.files import load_world, save_world
    from ..model.files.topology import SAVED_FILES
    from ..model.summary import summarize
    from ..model.worldgen import STEPS, WorldOptions, build_world

    one_format(as_json, as_csv)
    if topology is not None:
        w = load_world(topology)
    else:
        opts = WorldOptions(
            seed=seed,
            sites=sites,
            mcp=mcp,
            min_city_population=min_city_population,
            peak_rps=peak_rps,
            tier1=tier1,
            headroom=headroom,
            calibrated=calibrated,
        )
        bad = opts.check()
        if bad:
            raise InputError("command line", [Problem(o, m) for o, m in bad])
        with steps("building the world", list(STEPS), quiet=as_json or as_csv) as step:
            w = build_world(opts, step)
    if out is not None:
        if out.exists() and not out.is_dir():
            raise InputError.one(out, "--out", "exists and is not a directory")
        try:
            save_world(w, out)
        except OSError as e:
            where = e.filename or out
            raise InputError.one(where, "--out", f"cannot write: {e.strerror or e}") from None
    summary = summarize(w)
    if len(w.network.sites) and len(w.internet.eyeballs):
        from ..routing.reach import served_rtt

        summary["served"] = served_rtt(w)
    figures = None
    if calibration:
        from ..sim.calibration import calibrate

        figures = [f.to_dict() for f in calibrate(w)]
        summary["calibration"] = figures
    saved = [str(out / name) for name in SAVED_FILES] if out is not None else []
    if as_json:
        click.echo(json.dumps({**summary, "files": saved} if saved else summary, indent=2))
    elif as_csv:
        write_csv(
            summary["by_continent"],
            [
                "continent",
                "name",
                "sites",
                "mcp_sites",
                "servers",
                "capacity_ms_per_s",
                "peak_demand_ms_per_s",
                "peak_demand_rps",
            ],
        )
    else:
        show(w, summary)
    if saved and not as_json:
        click.echo(f"wrote {', '.join(saved)}", err=as_csv)
    if figures is not None and not all(f["ok"] for f in figures):
        raise SystemExit(1)


def show(w: World, s: dict[str, Any]) -> None:
    from rich.table import Table

    from ..model.summary import RTT_BANDS_MS

    con = console()
    head = Table(title="anyedge world", show_header=False)
    head.add_column(style="bold")
    head.add_column(justify="right")
    head.add_row("sites (multi-colo)", f"{s['sites']} ({s['mcp_sites']})")
    head.add_row("sections / servers", f"{s['sections']} / {s['servers']:,}")
    head.add_row("prefixes", str(s["prefixes"]))
    head.add_row(
        "ASes / p2c / p2p links",
        f"{s['ases']:,} / {s['provider_customer_links']:,} / {s['peer_links']:,}",
    )
    head.add_row("BGP sessions of the sites", f"{s['sessions']:,}")
    head.add_row("metros / population", f"{s['metros']:,} / {s['population'] / 1e6:,.0f} M")
    head.add_row("capacity (CPU ms/s)", f"{s['capacity_ms_per_s']:,.0f}")
    head.add_row("peak demand (CPU ms/s)", f"{s['peak_demand_ms_per_s']:,.0f}")
    head.add_row("peak demand (requests/s)", f"{s['peak_demand_rps']:,.0f}")
    ratio = s["capacity_over_peak"]
    head.add_row("capacity / peak", f"{ratio:.2f}" if ratio is not None else "-")
    con.print(head)

    cont = Table(title="by continent (MCP: multi-colo sites)")
    for col in (
        "continent",
        "sites",
        "MCP",
        "servers",
        "capacity\nM ms/s",
        "peak\nM ms/s",
        "capacity\n/ peak",
    ):
        cont.add_column(col, justify="left" if col == "continent" else "right")
    for r in s["by_continent"]:
        peak = r["peak_demand_ms_per_s"]
        cont.add_row(
            r["name"],
            str(r["sites"]),
            str(r["mcp_sites"]),
            f"{r['servers']:,}",
            f"{r['capacity_ms_per_s'] / 1e6:,.1f}",
            f"{peak / 1e6:,.1f}",
            f"{r['capacity_ms_per_s'] / peak:.2f}" if peak else "-",
        )
    con.print(cont)

    near = Table(title="metro population by round trip to the nearest site (geography only)")
    for b in RTT_BANDS_MS:
        near.add_column(f"≤ {b} ms", justify="right")
    near.add_column("mean", justify="right")
    near.add_row(
        *[f"{100 * s['population_within_ms'][str(b)]:.1f} %" for b in RTT_BANDS_MS],
        f"{s['mean_nearest_rtt_ms']:.1f} ms",
    )
    con.print(near)
    served = s.get("served")
    if served is not None:
        got = Table(title="demand by round trip to the site BGP sends it to (after routing)")
        for b in RTT_BANDS_MS:
            got.add_column(f"≤ {b} ms", justify="right")
        for col in ("median", "90th pct", "no route"):
            got.add_column(col, justify="right")
        got.add_row(
            *[f"{100 * served['demand_within_ms'][str(b)]:.2f} %" for b in RTT_BANDS_MS],
            f"{served['median_ms']:.1f} ms",
            f"{served['p90_ms']:.1f} ms",
            f"{100 * served['unreached']:.2f} %",
        )
        con.print(got)
    figures = s.get("calibration")
    if figures is not None:
        cal = Table(title="calibration: the world beside published figures")
        for col in ("figure", "world", "published", "tolerance", ""):
            cal.add_column(col, justify="left" if col in ("figure", "published") else "right")
        for f in figures:
            unit = f" {f['unit']}" if f["unit"] else ""
            cal.add_row(
                f["figure"],
                f"{f['world']:.2f}{unit}",
                f["published"],
                f"{f['low']:g}-{f['high']:g}{unit}",
                "ok" if f["ok"] else "OUT",
            )
        con.print(cal)
