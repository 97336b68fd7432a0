"""``anyedge catchment``: which site every network and every user reaches.

On a world (the default one, or ``-t TOPOLOGY``) it announces one prefix from its sites,
applies the operator's knobs (``--withdraw``, ``--prepend``, ``--peers-only``,
``--transit-only``) and the faults (``--link-down A-B``: a link between two ASes, or a
site's session with an AS; ``--site-down SITE``: every session of the site lost), and
prints each site's share of demand, with where traffic went from the catchment without
the knobs and faults.  On a bare CAIDA graph
(``--as-rel FILE --origin ASN ...``) it runs AS-level propagation with those origins,
as BGPy would, and prints how many ASes each origin catches.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import InputError, Problem
from .common import prefix_row, topology_option, world_from
from .main import cli
from .output import console, csv_option, one_format, write_csv

if TYPE_CHECKING:  # the rest loads per code path: --as-rel needs no world builder
    import numpy as np

    from ..model.world import World

MAX_PREPEND = 32  # as Announcement.with_prepend: longer paths add nothing but risk
MODES = ("metro", "as")  # the values of anyedge.routing.Mode, without loading it


def _parse_prepend(values: tuple[str, ...]) -> list[tuple[str, int]]:
    out = []
    for v in values:
        name, sep, n = v.partition("=")
        if not sep or not n.strip().isdigit():
            raise InputError.one("command line", "--prepend", f"expected NAME=N, got {v!r}")
        if int(n) > MAX_PREPEND:
            raise InputError.one(
                "command line",
                "--prepend",
                f"at most {MAX_PREPEND} prepends, got {int(n)} in {v!r}",
            )
        out.append((name.strip(), int(n)))
    return out


@cli.command()
@topology_option
@click.option("--prefix", help="Prefix to announce (default: the topology's first).")
@click.option("--address", help="Destination address: longest-prefix match over all prefixes.")
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default=None,
    help="Tie-break: metro (hot potato, default on worlds) or as (lowest neighbour ASN).",
)
@click.option("--withdraw", multiple=True, help="Site (or origin ASN) that withdraws; repeatable.")
@click.option("--prepend", multiple=True, help="SITE=N: prepend N times at SITE; repeatable.")
@click.option("--peers-only", multiple=True, help="Site that announces to its peers only.")
@click.option("--transit-only", multiple=True, help="Site that announces to transit only.")
@click.option(
    "--link-down",
    multiple=True,
    help="A-B: the link between two ASes, or a site and an AS, is down; repeatable.",
)
@click.option("--site-down", multiple=True, help="Site whose BGP sessions are lost; repeatable.")
@click.option(
    "--as-rel",
    "as_rel",
    type=click.Path(path_type=Path),
    help="A CAIDA as-rel file instead of a world (AS-level mode).",
)
@click.option("--origin", multiple=True, type=int, help="Origin ASN for --as-rel; repeatable.")
@click.option(
    "--top", type=click.IntRange(min=1), default=25, show_default=True, help="Rows in the table."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@csv_option
@click.option("--full", is_flag=True, help="With --json: every AS and every eyeball, with paths.")
def catchment(
    topology: Path | None,
    prefix: str | None,
    address: str | None,
    mode: str | None,
    withdraw: tuple[str, ...],
    prepend: tuple[str, ...],
    peers_only: tuple[str, ...],
    transit_only: tuple[str, ...],
    link_down: tuple[str, ...],
    site_down: tuple[str, ...],
    as_rel: Path | None,
    origin: tuple[int, ...],
    top: int,
    as_json: bool,
    as_csv: bool,
    full: bool,
) -> None:
    """Compute anycast catchments from BGP and print each site's share."""
    from ..routing import Announcement, FaultError, Mode, Router, resolve

    one_format(as_json, as_csv)

    if as_rel is not None:
        if topology is not None or prefix or address or peers_only or transit_only:
            raise InputError.one(
                "command line",
                "--as-rel",
                "use --as-rel with --origin, --withdraw, --prepend and --link-down only",
            )
        if site_down:
            raise InputError.one(
                "command line", "--site-down", "a bare --as-rel graph has no sites"
            )
        if mode == Mode.METRO:
            raise InputError.one(
                "command line", "--mode", "a bare as-rel graph has no metros: only --mode as"
            )
        _as_rel(as_rel, origin, withdraw, prepend, link_down, top, as_json, as_csv, full)
        return
    if origin:
        raise InputError.one("command line", "--origin", "--origin goes with --as-rel")
    world = world_from(topology)
    router = Router(world, Mode(mode) if mode else Mode.METRO)
    ann_for = _knobs(world, withdraw, prepend, peers_only, transit_only)
    try:
        faults = resolve(world, link_down, site_down)
    except FaultError as e:
        raise InputError("command line", [Problem(o, m) for o, m in e.problems]) from None
    rows = _prefix_rows(world, prefix, address)
    data = _catch(world, router.with_faults(faults), rows, ann_for, full)
    knobs = {
        k: v
        for k, v in {
            "withdraw": [s.upper() for s in withdraw],
            "prepend": {n.upper(): k for n, k in _parse_prepend(prepend)},
            "peers_only": [s.upper() for s in peers_only],
            "transit_only": [s.upper() for s in transit_only],
        }.items()
        if v
    }
    if faults:
        data["faults"] = faults.to_dict(world)
    if knobs or faults:  # say what they did: where the traffic was, and where it went
        before = _catch(world, router, rows, lambda r: Announcement.of_prefix(world.network, r))
        if knobs:
            data["knobs"] = knobs
        data["change"] = _change(before, data)
    data["prefix"] = world.network.prefixes.cidr[rows[0]]
    if address:
        data["address"] = address
        data["prefixes"] = [world.network.prefixes.cidr[r] for r in rows]
    if as_json:
        click.echo(json.dumps(data, indent=2))
    elif as_csv:
        _csv_sites(data)
    else:
        _show_sites(world, data, top)


def _catch(world: World, router: Any, rows: list[int], ann_for: Any, full: bool = False) -> Any:
    """The catchment of the prefixes in ``rows`` (longest match over them), as a dict."""
    from ..routing import longest_match

    results = [router.catchment(ann_for(r)) for r in rows]
    if len(results) > 1:
        return _lpm_dict(world, results, longest_match(results))
    return results[0].to_dict(full=full)


def _change(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """Per site whose demand changed: its share and requests/s before and after, biggest
    change first; ``(unreached)`` for demand that no site reaches."""
    b = {r["site"]: r for r in before["sites"]}
    a = {r["site"]: r for r in after["sites"]}
    out = []
    for code in dict.fromkeys([*b, *a]):
        rb, ra = b.get(code, {}), a.get(code, {})
        rps_b, rps_a = rb.get("rps", 0.0), ra.get("rps", 0.0)
        if abs(rps_a - rps_b) > 1e-6 * max(rps_a, rps_b, 1.0):
            out.append(
                {
                    "site": code,
                    "share_before": rb.get("share", 0.0),
                    "share_after": ra.get("share", 0.0),
                    "rps_before": rps_b,
                    "rps_after": rps_a,
                    "change_rps": rps_a - rps_b,
                }
            )
    ub, ua = before["unreached_rps"], after["unreached_rps"]
    if ua != ub:
        out.append(
            {
                "site": "(unreached)",
                "share_before": None,
                "share_after": None,
                "rps_before": ub,
                "rps_after": ua,
                "change_rps": ua - ub,
            }
        )
    return sorted(out, key=lambda r: -abs(r["change_rps"]))


def _knob_text(knobs: dict[str, Any]) -> str:
    parts = []
    if knobs.get("withdraw"):
        parts.append(f"{', '.join(knobs['withdraw'])} withdrawn")
    if knobs.get("prepend"):
        parts.append(", ".join(f"{s} prepended {n}x" for s, n in knobs["prepend"].items()))
    if knobs.get("peers_only"):
        parts.append(f"{', '.join(knobs['peers_only'])} to peers only")
    if knobs.get("transit_only"):
        parts.append(f"{', '.join(knobs['transit_only'])} to transit only")
    return "; ".join(parts)


def _fault_text(faults: dict[str, Any]) -> str:
    parts = []
    if faults.get("links_down"):
        parts.append(f"{', '.join(faults['links_down'])} down")
    if faults.get("sites_down"):
        parts.append(f"{', '.join(faults['sites_down'])} cut off")
    return "; ".join(parts)


def _csv_sites(data: dict[str, Any]) -> None:
    change = {r["site"]: r for r in data.get("change", [])}
    rows = [
        {
            "site": r["site"],
            "share": r["share"],
            "rps": r["rps"],
            "mean_rtt_ms": r.get("mean_rtt_ms"),
            **(
                {
                    "rps_before": change[r["site"]]["rps_before"]
                    if r["site"] in change
                    else r["rps"],
                    "change_rps": change[r["site"]]["change_rps"] if r["site"] in change else 0.0,
                }
                if "change" in data
                else {}
            ),
        }
        for r in sorted(data["sites"], key=lambda r: -r["share"])
    ]
    cols = ["site", "share", "rps", "mean_rtt_ms"]
    write_csv(rows, cols + (["rps_before", "change_rps"] if "change" in data else []))


def _knobs(
    world: World,
    withdraw: tuple[str, ...],
    prepend: tuple[str, ...],
    peers_only: tuple[str, ...],
    transit_only: tuple[str, ...],
) -> Any:
    from ..routing import Announcement, Scope

    sites = world.network.sites
    problems: list[Problem] = []

    def site(opt: str, code: str) -> int:
        try:
            return sites.index(code.upper())
        except KeyError:
            problems.append(Problem(opt, f"unknown site {code!r}"))
            return -1

    w = [site("--withdraw", s) for s in withdraw]
    p = [(site("--prepend", s), n) for s, n in _parse_prepend(prepend)]
    po = [site("--peers-only", s) for s in peers_only]
    to = [site("--transit-only", s) for s in transit_only]
    if problems:
        raise InputError("command line", problems)

    def make(row: int) -> Announcement:
        a = Announcement.of_prefix(world.network, row)
        for s in w:
            a = a.withdraw(s)
        for s, n in p:
            a = a.with_prepend(s, n)
        for s in po:
            a = a.with_scope(s, Scope.PEERS)
        for s in to:
            a = a.with_scope(s, Scope.TRANSIT)
        return a

    return make


def _prefix_rows(world: World, prefix: str | None, address: str | None) -> list[int]:
    from ..routing import prefix_for

    if prefix and address:
        raise InputError.one("command line", "--prefix", "give --prefix or --address, not both")
    if address:
        try:
            rows = prefix_for(world, address)
        except ValueError:
            raise InputError.one(
                "command line", "--address", f"not an IP address: {address!r}"
            ) from None
        if not rows:
            raise InputError.one("command line", "--address", f"no prefix covers {address}")
        return rows
    return [prefix_row(world, prefix)]


def _lpm_dict(world: World, results: list[Any], site: np.ndarray) -> dict[str, Any]:
    import numpy as np

    e = world.internet.eyeballs
    total = float(e.rps.sum())
    ok = site >= 0
    demand = np.bincount(site[ok], weights=e.rps[ok], minlength=len(world.network.sites))
    codes = world.network.sites.code
    return {
        "mode": str(results[0].router.mode),
        "sites": [
            {"site": codes[i], "share": float(demand[i] / total), "rps": float(demand[i])}
            for i in np.flatnonzero(demand > 0)
        ],
        "unreached_rps": float(e.rps[~ok].sum()),
    }


def _show_sites(world: World, data: dict[str, Any], top: int) -> None:
    from rich.table import Table

    sites = sorted(data["sites"], key=lambda r: -r["share"])
    where = data.get("address") or data["prefix"]
    said = [_knob_text(data["knobs"])] if data.get("knobs") else []
    said += [_fault_text(data["faults"])] if data.get("faults") else []
    knobs = f" with {'; '.join(said)}" if said else ""
    title = f"catchment of {where}{knobs} ({data['mode']}-level tie-break)"
    t = Table(title=title, min_width=len(title))
    for col in ("site", "city", "share", "requests/s", "mean RTT"):
        t.add_column(col, justify="left" if col in ("site", "city") else "right", no_wrap=True)
    for r in sites[:top]:
        i = world.network.sites.index(r["site"])
        rtt = r.get("mean_rtt_ms")
        t.add_row(
            r["site"],
            world.network.sites.city[i],
            f"{100 * r['share']:.2f} %",
            f"{r['rps']:,.0f}",
            f"{rtt:.1f} ms" if rtt is not None else "-",
        )
    con = console()
    if data.get("change"):
        what = f"where the traffic went{knobs}: requests/s by site"
        c = Table(title=what, min_width=len(what))
        for col in ("site", "before", "after", "change"):
            c.add_column(col, justify="left" if col == "site" else "right", no_wrap=True)
        for r in data["change"][:top]:
            c.add_row(
                r["site"],
                f"{r['rps_before']:,.0f}",
                f"{r['rps_after']:,.0f}",
                f"{r['change_rps']:+,.0f}",
            )
        con.print(c)
    con.print(t)
    rest = len(sites) - top
    if rest > 0:
        con.print(f"... and {rest} more sites (--top N, or --json)")
    if data.get("mean_rtt_ms") is not None:
        con.print(f"mean round trip, demand-weighted: {data['mean_rtt_ms']:.1f} ms")
    if data["unreached_rps"] > 0:
        con.print(f"[bold red]unreached demand: {data['unreached_rps']:,.0f} requests/s[/]")


def _as_rel(
    path: Path,
    origins: tuple[int, ...],
    withdraw: tuple[str, ...],
    prepend: tuple[str, ...],
    link_down: tuple[str, ...],
    top: int,
    as_json: bool,
    as_csv: bool,
    full: bool,
) -> None:
    import numpy as np

    from ..model.files.asrel import bare_internet, read_as_rel
    from ..routing import FaultError, Rank, RoutingGraph, Seeds, propagate
    from ..routing.catchment import RANK_NAMES
    from ..routing.faults import as_links
    from ..routing.propagate import as_path

    if not origins:
        raise InputError.one("command line", "--origin", "give at least one origin ASN")
    rel = read_as_rel(path)
    inet = bare_internet(rel, path)
    problems = [
        Problem("--origin", f"AS{o} is not in {path}")
        for o in origins
        if o not in set(inet.asn.tolist())
    ]
    gone: set[int] = set()
    for w in withdraw:
        if not w.isdigit() or int(w) not in origins:
            problems.append(Problem("--withdraw", f"{w!r} is not one of the origins"))
        else:
            gone.add(int(w))
    pre = dict.fromkeys(origins, 0)
    for name, n in _parse_prepend(prepend):
        if not name.isdigit() or int(name) not in pre:
            problems.append(Problem("--prepend", f"{name!r} is not one of the origins"))
        else:
            pre[int(name)] = n
    try:
        faults = as_links(inet, link_down)
    except FaultError as e:
        problems += [Problem(o, m) for o, m in e.problems]
    if problems:
        raise InputError("command line", problems)
    live = [o for o in dict.fromkeys(origins) if o not in gone]
    g = RoutingGraph.from_internet(inet)
    if faults.links:
        g = g.masked(g.link_mask(faults.links))
    rows = inet.indices(np.array(live, dtype=np.int64))
    seeds = Seeds.origins(rows, [pre[o] for o in live])
    state = propagate(g, seeds)
    reached = np.bincount(state.origin[state.origin >= 0], minlength=len(live))
    data: dict[str, Any] = {
        "mode": "as",
        "ases": len(inet),
        "origins": [
            {"asn": o, "ases": int(reached[k]), "share": float(reached[k] / len(inet))}
            for k, o in enumerate(live)
        ],
        "unreached_ases": int((state.origin < 0).sum()),
    }
    if link_down:
        data["faults"] = {"links_down": list(link_down), "sites_down": []}
    if full:
        rank = state.rank
        data["routes"] = [
            {
                "asn": int(inet.asn[a]),
                "origin": live[int(state.origin[a])] if state.origin[a] >= 0 else None,
                "relation": RANK_NAMES[Rank(int(rank[a]))],
                "path": as_path(state, g.asn, a, {}),
            }
            for a in range(len(inet))
        ]
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if as_csv:
        write_csv(sorted(data["origins"], key=lambda r: -r["ases"]), ["asn", "ases", "share"])
        return
    from rich.table import Table

    t = Table(title=f"catchment on {path} ({len(inet):,} ASes, AS-level tie-break)")
    for col in ("origin", "ASes", "share"):
        t.add_column(col, justify="right")
    for r in sorted(data["origins"], key=lambda r: -r["ases"])[:top]:
        t.add_row(f"AS{r['asn']}", f"{r['ases']:,}", f"{100 * r['share']:.2f} %")
    console().print(t)
    if data["unreached_ases"]:
        console().print(f"ASes without a route: {data['unreached_ases']:,}")
