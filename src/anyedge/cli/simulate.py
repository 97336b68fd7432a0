"""``anyedge simulate``: a day of the network under three controllers, and its report.

With no argument it runs the embedded default scenario on the default world: 24
simulated hours at 10 s ticks, with a section, servers, a whole site, a BGP session and
a cable failing and a demand surge, under (a) no traffic management, (b) prefix
withdrawal only and (c) the full Traffic Manager.  It prints the comparison, writes a
self-contained HTML report (``--report``, default ``anyedge-report.html``) and, with
``--json``, prints the metrics instead of the table (``--csv``: one row per controller);
``--metrics FILE`` also writes them for Prometheus (:mod:`anyedge.sim.metrics`).
Progress goes to stderr: a bar on a terminal, plain lines otherwise.  With events, each
controller also runs the same day without them, and the output says what each event cost beyond that
reference (failed requests and SLO site-minutes in its window and at its sites).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import InputError
from .common import topology_option, world_from
from .main import cli
from .output import console, csv_option, one_format, write_csv
from .progress import Lines, plain

if TYPE_CHECKING:
    from rich.console import Console

    from ..sim import Comparison


@cli.command()
@click.argument("scenario", required=False, type=click.Path(path_type=Path))
@topology_option
@click.option(
    "--report",
    "report",
    type=click.Path(path_type=Path),
    default=Path("anyedge-report.html"),
    show_default=True,
    help="Where to write the HTML report.",
)
@click.option("--no-report", is_flag=True, help="Write no report.")
@click.option(
    "--metrics",
    "metrics",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the results as Prometheus metrics (text format) into this file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@csv_option
def simulate(
    scenario: Path | None,
    topology: Path | None,
    report: Path,
    no_report: bool,
    metrics: Path | None,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Run a scenario through the digital twin under three controllers."""
    from ..sim import MODE_TITLES, MODES, Twin, default_scenario, load_scenario

    one_format(as_json, as_csv)
    if not no_report and (report.is_dir() or not report.parent.is_dir()):
        raise InputError.one(
            report,
            "--report",
            "is a directory" if report.is_dir() else "its directory does not exist",
        )
    if metrics is not None and (metrics.is_dir() or not metrics.parent.is_dir()):
        raise InputError.one(
            metrics,
            "--metrics",
            "is a directory" if metrics.is_dir() else "its directory does not exist",
        )
    world = world_from(topology)
    sc = load_scenario(scenario, world) if scenario is not None else default_scenario(world)
    quiet = as_json or as_csv
    if quiet or plain():
        lines = Lines()
        say = (lambda _t: None) if quiet else lines.say
        update = (lambda _m, _x: None) if quiet else lines.update
        say("predicting failovers")
        twin = Twin(world, sc)
        comparison = twin.compare(lambda m, x: update(MODE_TITLES.get(m) or _ref(m), x))
    else:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f} %"),
            TimeElapsedColumn(),
            console=console(stderr=True),
            transient=True,
        ) as bar:
            prep = bar.add_task("predicting failovers", total=None)
            twin = Twin(world, sc)
            bar.remove_task(prep)
            tasks = {m: bar.add_task(MODE_TITLES[m], total=1.0) for m in MODES}
            if sc.events:  # the same day without events, the reference for each event's cost
                for m in MODES:
                    tasks[f"{m} reference"] = bar.add_task(
                        f"{MODE_TITLES[m]}, no events", total=1.0
                    )
            comparison = twin.compare(lambda m, x: bar.update(tasks[m], completed=x))
    if not no_report:
        from ..report.html import write

        write(comparison, report)
    if metrics is not None:
        from ..sim.metrics import write as write_metrics

        write_metrics(comparison, metrics)
    if as_json:
        click.echo(json.dumps(comparison.summary(), indent=2))
        return
    if as_csv:
        rows = [
            {"mode": m, **{k: v for k, v in r.totals.as_dict().items() if not isinstance(v, dict)}}
            for m, r in comparison.runs.items()
        ]
        write_csv(rows)
        if not no_report:
            click.echo(f"report: {report}", err=True)
        return
    show(comparison)
    if not no_report:
        click.echo(f"report: {report}")


def _share(d: dict[str, Any], key: str) -> str:
    f = d.get("origin_fetch") or {}
    return f"{100 * f[key]:.1f} %" if key in f else "–"


def _rtt(d: dict[str, Any], path: str) -> str:
    q = (d.get("origin_fetch") or {}).get("rtt_ms", {}).get(path) or {}
    if q.get("median") is None:
        return "–"
    return f"{q['median']:.1f} / {q['p90']:.1f}"


def _fetch_failures(d: dict[str, Any]) -> str:
    f = d.get("origin_fetch") or {}
    if "failed" not in f:
        return "–"
    return f"{f['failed']:,.0f} ({f['failed_without_orpheus']:,.0f})"


def _ref(task: str) -> str:
    """``"tm reference"`` -> ``"Traffic Manager, no events"``."""
    from ..sim import MODE_TITLES

    mode = task.removesuffix(" reference")
    return f"{MODE_TITLES.get(mode, mode)}, no events"


def show(c: Comparison) -> None:
    from rich.table import Table

    from ..sim import MODE_TITLES

    con = console()
    hours = c.duration_s / 3600
    con.print(
        f"[bold]{c.scenario}[/]: {hours:g} simulated hours at {c.tick_s:g} s ticks, "
        f"{len(c.sites)} sites, in {c.wall_seconds:.0f} s "
        f"({c.duration_s * len(c.runs) / max(c.wall_seconds, 1e-9):,.0f} simulated s/s)"
    )
    for e in c.events:
        start = f"{int(e['at_s'] // 3600):02d}:{int(e['at_s'] % 3600 // 60):02d}"
        end = f"{int(e['until_s'] // 3600):02d}:{int(e['until_s'] % 3600 // 60):02d}"
        con.print(f"  {start}–{end}  {e['what']}")
    t = Table(title="side by side")
    t.add_column("metric")
    for m in c.runs:
        t.add_column(MODE_TITLES[m], justify="right")
    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("failed requests", lambda d: f"{d['failed']:,.0f} ({100 * d['failed_share']:.3f} %)"),
        ("SLO breach (site-minutes)", lambda d: f"{d['slo_breach_minutes']:,.0f}"),
        (
            "added latency, mean / p95",
            lambda d: f"{d['added_latency_mean_ms']:.2f} / {d['added_latency_p95_ms']:.2f} ms",
        ),
        ("requests moved", lambda d: f"{d['moved']:,.0f}"),
        ("  of which forwarded", lambda d: f"{d['forwarded']:,.0f}"),
        ("stranded capacity", lambda d: f"{d['stranded_cpu_hours']:,.1f} core-h"),
        ("routing changes", lambda d: f"{d['routing_changes']}"),
        ("actions", lambda d: f"{d['actions']}"),
        ("origin fetches over the backbone", lambda d: _share(d, "backbone_share")),
        ("origin fetch ms, backbone median / p90", lambda d: _rtt(d, "backbone")),
        ("origin fetch ms, transit median / p90", lambda d: _rtt(d, "transit")),
        ("origin fetches failed (without Orpheus)", _fetch_failures),
    ]
    data = {m: r.totals.as_dict() for m, r in c.runs.items()}
    for name, fmt in rows:
        t.add_row(name, *[fmt(data[m]) for m in c.runs])
    con.print(t)
    if c.attribution:
        show_attribution(con, c)
    if any(r.servers for r in c.runs.values()):
        show_servers(con, c)


def show_servers(con: Console, c: Comparison) -> None:
    """Every change of a section's table under each controller: what moved, what broke."""
    from rich.table import Table

    from ..sim import MODE_TITLES

    t = Table(title="servers inside sites: changes of the balancer's tables")
    for col in ("controller", "time", "section", "change", "moved", "broken", "no 2nd hop"):
        t.add_column(col, justify="left" if col in ("controller", "section", "change") else "right")
    for m, r in c.runs.items():
        for ch in r.servers.get("changes", []):
            at = ch["time_s"]
            t.add_row(
                MODE_TITLES[m],
                f"{int(at // 3600):02d}:{int(at % 3600 // 60):02d}",
                ch["section"],
                f"{ch['what']} {ch['servers']}",
                f"{100 * ch['moved']:.1f} %",
                f"{100 * ch['broken']:.1f} %",
                f"{100 * ch['broken_without_second_hop']:.1f} %",
            )
    con.print(t)


def show_attribution(con: Console, c: Comparison) -> None:
    from rich.table import Table

    from ..sim import MODE_TITLES

    modes = [m for m in c.runs if m in c.attribution]
    t = Table(title="what each event cost beyond the same day without events")
    t.add_column("event")
    for m in modes:
        t.add_column(f"{MODE_TITLES[m]}\nfailed / SLO min", justify="right")

    def cell(failed: float, slo: float, share: float | None) -> str:
        pct = f" ({100 * share:.0f} %)" if share is not None else ""
        return f"{failed:,.0f}{pct} / {slo:,.0f}"

    for i, e in enumerate(c.events):
        cells = []
        for m in modes:
            r = c.attribution[m]["events"][i]
            cells.append(cell(r["failed"], r["slo_minutes"], r["failed_share"]))
        t.add_row(f"{i + 1}. {e['what']}", *cells)
    for label, key in (("elsewhere", "elsewhere"), ("reference day (no events)", "reference")):
        a = c.attribution
        t.add_row(
            label, *[cell(a[m][f"{key}_failed"], a[m][f"{key}_slo_minutes"], None) for m in modes]
        )
    con.print(t)
