"""``anyedge pmtud`` (deliver each Packet Too Big to the server that needs it) and
``anyedge mtu`` (choose the IPv6 MTU from clients' MSS).  See docs/pmtud.md.

``pmtud run`` runs the daemon of :mod:`anyedge.edge.pmtud_daemon` on one interface
until SIGTERM; ``pmtud rules`` prints the nft table it installs.  ``mtu choose`` reads
MSS samples (CSV or pcap) and prints the coverage of chosen MTUs and the recommended
one; ``mtu set`` puts an MTU on a route.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import InputError
from .main import cli


@cli.group()
def pmtud() -> None:
    """Deliver each ICMP Packet Too Big to the server that holds its flow."""


@pmtud.command()
@click.option("--iface", required=True, help="The interface facing the site router.")
@click.option("--group", type=click.IntRange(0, 65535), default=33, show_default=True)
@click.option("--mode", type=click.Choice(["broadcast", "flow"]), default="broadcast")
@click.option(
    "--site",
    "site_path",
    type=click.Path(path_type=Path),
    help="JSON {seed, servers: [{mac, weight}]} in the balancer's table order (flow mode).",
)
@click.option(
    "--table",
    "table_from",
    type=click.Choice(["site", "balancer"]),
    default="site",
    show_default=True,
    help="Flow mode: decide by the site file (read again on SIGHUP and when it changes) "
    "or by the table the XDP balancer on --iface has in force.",
)
@click.option("--src-rate", type=float, default=1.1, show_default=True, help="Per ICMP source, /s.")
@click.option("--iface-rate", type=float, default=10.0, show_default=True, help="Sends /s.")
@click.option("--metrics", "metrics_port", type=int, help="Serve Prometheus metrics on this port.")
def run(
    iface: str,
    group: int,
    mode: str,
    site_path: Path | None,
    table_from: str,
    src_rate: float,
    iface_rate: float,
    metrics_port: int | None,
) -> None:
    """Run until SIGTERM or SIGINT; print the counts as JSON on exit.

    Exits with status 0 when stopped so; 1 when it cannot run (the NFLOG group taken by
    another process, no permission, nft missing, no balancer on --iface with --table
    balancer); 2 for bad options or a bad site file."""
    from ..edge.libbpf import BpfError
    from ..edge.pmtud import Site
    from ..edge.pmtud_daemon import run as serve
    from ..edge.pmtud_site import BalancerSource, FileSource, Source, interface_mac

    if src_rate <= 0 or iface_rate <= 0:
        raise InputError.one("command line", "--src-rate/--iface-rate", "rates must be > 0")
    try:
        own = interface_mac(iface)
    except OSError:
        raise InputError.one("command line", "--iface", f"no interface {iface!r}") from None
    source: Source | None = None
    if table_from == "balancer":  # the balancer's own table, MACs and seed
        if site_path is not None:
            raise InputError.one("command line", "--site", "not with --table balancer")
        try:
            source = BalancerSource(iface, own)
        except (BpfError, OSError) as e:
            raise click.ClickException(f"--table balancer: {e}") from None
        site = source.site
        if own not in site.macs:
            source.close()
            raise click.ClickException(f"--table balancer: {iface}'s MAC is not the balancer's")
    elif site_path is not None:  # broadcast mode uses it only to know copies by their MAC
        source = FileSource(site_path, own)
        site = source.site
        if own not in site.macs:
            raise InputError.one(site_path, "servers", f"{iface}'s MAC is not one of them")
    elif mode == "flow":
        raise InputError.one("command line", "--site", "flow mode needs the site file")
    else:
        site = Site(own)
    try:
        counts = serve(
            iface,
            group,
            mode,
            site,
            src_rate=src_rate,
            iface_rate=iface_rate,
            source=source,
            metrics_port=metrics_port,
            on_ready=lambda: click.echo("ready", nl=True),
        )
    except (OSError, RuntimeError) as e:  # group taken, no permission, nft refused
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(counts))


@pmtud.command()
@click.option("--iface", required=True)
@click.option("--group", type=click.IntRange(0, 65535), default=33, show_default=True)
def rules(iface: str, group: int) -> None:
    """Print the nft table ``pmtud run`` installs."""
    from ..edge.pmtud_daemon import ruleset

    click.echo(ruleset(iface, group), nl=False)


@cli.group()
def mtu() -> None:
    """Choose the IPv6 MTU from the MSS clients advertise, and set it on a route."""


@mtu.command()
@click.argument("samples", type=click.Path(path_type=Path))
@click.option("--pcap", is_flag=True, help="SAMPLES is a pcap: read the SYNs' MSS.")
@click.option("--family", type=click.Choice(["4", "6"]), default="6", show_default=True)
@click.option("--target", type=click.FloatRange(0, 1), default=0.93, show_default=True)
@click.option("--at", "at", type=int, multiple=True, help="Also show the coverage of this MTU.")
@click.option("--json", "as_json", is_flag=True)
def choose(
    samples: Path, pcap: bool, family: str, target: float, at: tuple[int, ...], as_json: bool
) -> None:
    """Coverage of MTUs (share of clients advertising at least MSS + 60 over IPv6, + 40
    over IPv4) and the largest MTU whose coverage meets --target."""
    from ..edge.mtu import OVERHEAD, read_csv, read_pcap, recommend

    fam = int(family)
    s = read_pcap(samples, fam) if pcap else read_csv(samples)
    overhead = OVERHEAD[fam]
    best = recommend(s, target, fam)
    shown = sorted({*at, best})
    doc = {
        "samples": s.total,
        "family": fam,
        "target": target,
        "recommended_mtu": best,
        "coverage": {str(m): round(s.coverage(m, overhead), 6) for m in shown},
        "curve": [[m, round(c, 6)] for m, c in s.curve(overhead)],
    }
    if as_json:
        click.echo(json.dumps(doc))
        return
    click.echo(f"{s.total:g} samples, IPv{fam}: MTU = MSS + {overhead}")
    for m in shown:
        click.echo(f"  MTU {m:>5}: {100 * s.coverage(m, overhead):6.2f} % of clients covered")
    click.echo(f"recommended MTU for {100 * target:g} % coverage: {best}")


@mtu.command(name="set")
@click.option("--mtu", "value", type=click.IntRange(68, 65535), required=True)
@click.option(
    "--dest", default="default", show_default=True, help="The route: default or a prefix."
)
@click.option("--family", type=click.Choice(["4", "6"]), default="6", show_default=True)
@click.option("--netns", help="In this network namespace.")
def set_(value: int, dest: str, family: str, netns: str | None) -> None:
    """Put the MTU on a route (pyroute2; gateway, device and metric kept)."""
    from ..edge.mtu import set_route_mtu

    try:
        click.echo(set_route_mtu(dest, value, int(family), netns))
    except LookupError as e:
        raise InputError.one("command line", "--dest", str(e)) from None
