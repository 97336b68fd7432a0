"""``anyedge predict``: where a failed site's traffic would go, and the whole atlas.

``--site CHC`` (repeat for sites failing together) or ``--section IAD02`` predicts one
scenario; ``--all`` builds the failover atlas of every site, every pair with its k
nearest and every region, with a progress bar, on local cores or on Ray.  ``--atlas``
reads predictions from an atlas file instead of computing them.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import InputError, Problem
from .common import canonical_prefix, prefix_row, topology_option, world_from
from .main import cli
from .output import console, csv_option, one_format, write_csv
from .progress import counted

if TYPE_CHECKING:
    from ..model.world import World
    from ..predict import Atlas
    from ..predict.atlas import ScenarioIn
    from ..predict.scenarios import Scenario

MODES = ("metro", "as")  # the values of anyedge.routing.Mode, without loading it


@cli.command()
@topology_option
@click.option("--prefix", help="Prefix whose withdrawal is predicted (default: the first).")
@click.option(
    "--site", "sites", multiple=True, help="Failed site; repeat for sites failing together."
)
@click.option("--section", help="Failed section of a multi-colo site (e.g. IAD02).")
@click.option("--all", "build_all", is_flag=True, help="Build the whole atlas.")
@click.option("--k", type=int, default=5, show_default=True, help="Nearest sites per site (--all).")
@click.option("--out", type=click.Path(path_type=Path), help="Write the atlas here (--all).")
@click.option(
    "--atlas",
    "atlas_file",
    type=click.Path(path_type=Path),
    help="Read predictions from this atlas instead of computing them.",
)
@click.option("--jobs", type=int, default=None, help="Worker processes (default: all cores).")
@click.option(
    "--ray",
    "ray_address",
    default=None,
    help="Run on a Ray cluster at this address, or 'local' for Ray on this machine.",
)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default="metro",
    show_default=True,
    help="Routing tie-break mode.",
)
@click.option(
    "--top", type=click.IntRange(min=1), default=15, show_default=True, help="Rows in tables."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@csv_option
def predict(
    topology: Path | None,
    prefix: str | None,
    sites: tuple[str, ...],
    section: str | None,
    build_all: bool,
    k: int,
    out: Path | None,
    atlas_file: Path | None,
    jobs: int | None,
    ray_address: str | None,
    mode: str,
    top: int,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Predict where traffic goes when sites fail (Traffic Predictor)."""
    from ..predict import Atlas, Predictor, atlas_scenarios, build_atlas
    from ..routing import Mode

    one_format(as_json, as_csv)
    if build_all == bool(sites or section):
        raise InputError.one(
            "command line", "--all", "give either --all, or --site/--section for one scenario"
        )
    if k < 0:
        raise InputError.one("command line", "--k", "must be 0 or more")
    if ray_address is not None and importlib.util.find_spec("ray") is None:
        raise InputError.one(
            "command line",
            "--ray",
            "Ray is not installed here: pip install 'anyedge[ray]' (or run without --ray)",
        )
    if jobs is not None and jobs < 1:
        raise InputError.one("command line", "--jobs", "must be at least 1")
    if out is not None and (not build_all or out.is_dir() or not out.parent.is_dir()):
        why = (
            "--out goes with --all"
            if not build_all
            else "is a directory"
            if out.is_dir()
            else "its directory does not exist"
        )
        raise InputError.one(out, "--out", why)
    if atlas_file is not None:
        if build_all:
            raise InputError.one(
                "command line", "--atlas", "--atlas reads an atlas; --all builds one"
            )
        if topology is not None or ray_address is not None or jobs is not None:
            raise InputError.one(
                "command line",
                "--atlas",
                "an atlas answers by itself: -t, --jobs and --ray do not go with --atlas",
            )
        atlas = Atlas.load(atlas_file)
        if prefix is not None and canonical_prefix(prefix) != atlas.data.prefix:
            raise InputError.one(
                atlas_file, "prefix", f"this atlas is for {atlas.data.prefix}, not {prefix}"
            )
        name = section.upper() if section else "+".join(sorted(s.upper() for s in sites))
        try:
            sc = atlas.scenario(name) if section else _find(atlas, [s.upper() for s in sites])
        except KeyError:
            raise InputError.one(
                atlas_file, "scenarios", f"the atlas has no scenario {name}"
            ) from None
        _emit_scenario(sc, as_json, as_csv, top)
        return
    world = world_from(topology)
    row = prefix_row(world, prefix)
    p = Predictor(world, row, Mode(mode))
    if build_all:
        scenarios = atlas_scenarios(world, k)
        with counted(
            "failover atlas", len(scenarios), "scenarios", quiet=as_json or as_csv
        ) as advance:
            atlas = build_atlas(
                world,
                row,
                k,
                jobs=jobs,
                ray_address=None if ray_address in (None, "local") else ray_address,
                use_ray=ray_address is not None,
                mode=Mode(mode),
                progress=advance,
                predictor=p,
            )
        if out is not None:
            try:
                atlas.save(out)
            except OSError as e:
                raise InputError.one(
                    e.filename or out, "--out", f"cannot write: {e.strerror or e}"
                ) from None
        if as_json:
            click.echo(json.dumps(atlas.summary(), indent=2))
        elif as_csv:
            write_csv(_riskiest(atlas))
        else:
            _show_atlas(atlas, top)
            if out is not None:
                click.echo(f"atlas written to {out}")
        return
    one = _scenario(world, sites, section)
    atlas = Atlas.build(p, [p.outcome(one)], k)
    _emit_scenario(atlas.scenarios[0], as_json, as_csv, top)


def _find(atlas: Atlas, codes: list[str]) -> ScenarioIn:
    want = set(codes)
    for sc in atlas.scenarios:
        if sc.kind != "section" and set(sc.failed) == want:
            return sc
    raise KeyError("+".join(codes))


def _riskiest(atlas: Atlas) -> list[dict[str, Any]]:
    rows = []
    for name in atlas.data.riskiest:
        sc = atlas.scenario(name)
        rows.append(
            {
                "scenario": name,
                "excess_cpu_ms_per_s": sc.excess_cpu,
                "worst_utilisation": sc.worst_utilisation,
                "overloaded": [x.site for x in sc.receivers if x.overloaded],
            }
        )
    return rows


def _scenario(world: World, sites: tuple[str, ...], section: str | None) -> Scenario:
    from ..predict.scenarios import Scenario

    if section is not None:
        if sites:
            raise InputError.one("command line", "--section", "give --site or --section, not both")
        names = world.network.sections.name
        if section.upper() not in names:
            raise InputError.one("command line", "--section", f"unknown section {section!r}")
        row = names.index(section.upper())
        site = int(world.network.sections.site[row])
        if len(world.network.site_sections(site)) < 2:
            code = world.network.sites.code[site]
            raise InputError.one(
                "command line",
                "--section",
                f"{section} is the only section of {code}: that is the site failing, --site {code}",
            )
        return Scenario("section", (), row)
    rows, problems = [], []
    for s in sites:
        try:
            rows.append(world.network.sites.index(s.upper()))
        except KeyError:
            problems.append(Problem("--site", f"unknown site {s!r}"))
    if problems:
        raise InputError("command line", problems)
    failed = tuple(sorted(set(rows)))
    return Scenario({1: "single", 2: "pair"}.get(len(failed), "region"), failed)


def _emit_scenario(sc: ScenarioIn, as_json: bool, as_csv: bool, top: int) -> None:
    from rich.table import Table

    if as_json:
        click.echo(json.dumps(sc.model_dump(mode="json"), indent=2))
        return
    if as_csv:  # where the failed sites' users go
        rows = [{"to": f.site, "share": f.share, "rps": f.rps} for f in sc.to]
        if sc.unreached_rps > 0:
            rows.append(
                {"to": "", "share": sc.unreached_rps / sc.failed_rps, "rps": sc.unreached_rps}
            )
        write_csv(rows, ["to", "share", "rps"])
        return
    con = console()
    if sc.kind == "section":
        con.print(
            f"section {sc.section} fails: no route changes; the site keeps its users "
            "on fewer servers"
        )
    else:
        t = Table(title=f"{sc.name} withdraws: where its {sc.failed_rps:,.0f} requests/s go")
        for col in ("to", "share", "requests/s"):
            t.add_column(col, justify="left" if col == "to" else "right")
        for f in sc.to[:top]:
            t.add_row(f.site, f"{100 * f.share:.1f} %", f"{f.rps:,.0f}")
        if sc.unreached_rps > 0:
            t.add_row(
                "[red]no site[/]",
                f"{100 * sc.unreached_rps / sc.failed_rps:.1f} %",
                f"{sc.unreached_rps:,.0f}",
            )
        con.print(t)
    r = Table(title="receivers' CPU load at peak")
    for col in ("site", "before", "after", "maximum", "verdict"):
        r.add_column(col, justify="left" if col in ("site", "verdict") else "right")
    for x in sorted(sc.receivers, key=lambda x: -(x.utilisation_after or 0))[:top]:
        before = x.cpu_before / x.capacity_before if x.capacity_before else float("inf")
        after = x.utilisation_after
        r.add_row(
            x.site,
            f"{100 * before:.0f} %",
            f"{100 * after:.0f} %" if after is not None else "∞",
            f"{100 * x.maximum:.0f} %",
            "[red]overloaded[/]" if x.overloaded else "ok",
        )
    con.print(r)
    if sc.excess_cpu > 0:
        con.print(
            f"[bold red]{sc.excess_cpu:,.0f} ms/s of CPU time would land above maximum "
            "thresholds: the Traffic Manager must make room first[/]"
        )


def _show_atlas(atlas: Atlas, top: int) -> None:
    from rich.table import Table

    s: dict[str, Any] = atlas.summary()
    con = console()
    kinds = ", ".join(f"{n} {k}" for k, n in s["by_kind"].items())
    con.print(
        f"failover atlas of {s['prefix']}: {s['scenarios']} scenarios ({kinds}); "
        f"{s['overloading']} would push a site over its maximum threshold"
    )
    t = Table(title="riskiest failures")
    for col in ("scenario", "CPU ms/s over maximum", "worst utilisation", "overloaded"):
        t.add_column(col, justify="left" if col in ("scenario", "overloaded") else "right")
    for name in atlas.data.riskiest[:top]:
        sc = atlas.scenario(name)
        over = [x.site for x in sc.receivers if x.overloaded]
        worst = sc.worst_utilisation
        t.add_row(
            name,
            f"{sc.excess_cpu:,.0f}",
            f"{100 * worst:.0f} %" if worst else "∞",
            ", ".join(over[:6]) + (" …" if len(over) > 6 else ""),
        )
    con.print(t)
