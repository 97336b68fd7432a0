"""``anyedge lab``: the anycast lab in network namespaces, with real BGP and real packets.

``up`` builds the lab of a topology (``-t``), ``down`` removes everything it made,
``status`` shows what is up and down, ``fault`` breaks one thing and ``heal`` mends
everything (:mod:`.lab_faults`), ``exec`` runs a command on a node,
``probe`` asks every client which site answers, ``compare`` sets the routing model
against the lab, ``withdraw``/``announce`` drive a site's real BGP speaker,
``forward`` hands a share of a site's flows to another site, ``load`` sends a steady
load from a client, ``failover`` measures how
long clients take to move when a site withdraws, ``control`` runs the Traffic Manager
against the lab, ``edge servers|stats|rules`` reads and changes the load balancer and
L4Drop at a site with servers, and ``generate`` writes a random lab topology.

Every command but ``up`` and ``generate`` finds the lab through its directory
(``--dir``, default ``/run/anyedge/<name>``); the directory records what the lab made,
so ``down`` works even after a crash.  The lab needs root.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ..errors import InputError
from .main import cli

DEFAULT_ROOT = Path(os.environ.get("ANYEDGE_LAB_ROOT", "/run/anyedge"))


def _dir(directory: Path | None, name: str | None) -> Path:
    """The lab's directory, absolute: daemons started later (a restart) may not run
    where the command did."""
    return (directory if directory is not None else DEFAULT_ROOT / (name or "lab")).absolute()


dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    help="The lab directory (default /run/anyedge/NAME).",
)
name_option = click.option("--name", help="The lab's name (up to 8 characters; default lab).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


class Finite(click.FloatRange):
    """A float range that also refuses nan (which no comparison excludes) and inf."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return rv


class LabFailed(click.ClickException):
    """The lab could not do it (a daemon, a namespace, a probe): exit status 3."""

    exit_code = 3


def _fail(e: Exception) -> click.ClickException:
    return LabFailed(str(e))


def lab_command(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], click.Command]:
    """``@lab.command``, with the lab's operational failures (a speaker that does not
    answer, an ``ip`` command that fails, a probe that dies) turned into a message and
    exit status 3 instead of a traceback.  What the command returns is passed on."""

    def wrap(f: Callable[..., Any]) -> click.Command:
        @functools.wraps(f)
        def handled(*a: Any, **k: Any) -> Any:
            from ..adapters.bgp.base import SpeakerError
            from ..adapters.netns import NetnsError
            from ..lab.build import LabError

            try:
                return f(*a, **k)
            except (LabError, SpeakerError, NetnsError, OSError, subprocess.SubprocessError) as e:
                raise _fail(e) from None

        command: click.Command = lab.command(*args, **kwargs)(handled)
        return command

    return wrap


def _attach(directory: Path | None, name: str | None) -> Any:
    from ..lab.build import LabError, attach

    try:
        return attach(_dir(directory, name))
    except LabError as e:
        raise _fail(e) from None


def _table(rows: list[dict[str, Any]], title: str | None = None) -> None:
    if not rows:
        return
    t = Table(title=title)
    for k in rows[0]:
        t.add_column(k)
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r.values()])
    Console().print(t)


@cli.group()
def lab() -> None:
    """The anycast lab: namespaces, real BGP daemons, real packets (needs root)."""


@lab_command()
@click.option(
    "-t", "--topology", type=click.Path(path_type=Path), required=True, help="Topology YAML."
)
@dir_option
@name_option
@json_option
def up(topology: Path, directory: Path | None, name: str | None, as_json: bool) -> None:
    """Build the lab of TOPOLOGY: namespaces, links, FRR routers, site speakers, services."""
    import time

    from ..lab.build import LabError
    from ..lab.build import up as lab_up
    from ..lab.plan import check_name, lab_world, make_plan
    from ..model.files import load_world

    name = name or "lab"
    try:
        check_name(name)
    except ValueError as e:
        raise InputError.one("command line", "--name", str(e)) from None
    world = load_world(topology)
    if not world.lab.nodes:
        raise InputError.one(topology, "lab", "the topology has no lab (lab: nodes: ...)")
    try:
        plan = make_plan(world, name)
        lab_world(world)  # the model of the lab must hold too, before anything is made
    except (ValueError, InputError) as e:
        msg = e.render() if isinstance(e, InputError) else str(e)
        raise InputError.one(topology, "lab", msg) from None
    d = _dir(directory, name)
    t0 = time.monotonic()
    try:
        lab_up(world, plan, d, progress=lambda m: click.echo(f"lab {name}: {m}", err=True))
    except LabError as e:
        raise _fail(e) from None
    took = time.monotonic() - t0
    summary = {
        "name": name,
        "dir": str(d),
        "nodes": len(plan.nodes),
        "sites": [n.site for n in plan.sites],
        "address": plan.service_address,
        "ports": dict(zip(plan.plans, plan.ports, strict=True)),
        "seconds": round(took, 2),
    }
    if as_json:
        click.echo(json.dumps(summary, indent=1))
    else:
        click.echo(
            f"lab {name} is up in {took:.1f} s: {len(plan.nodes)} nodes, sites "
            f"{', '.join(str(n.site) for n in plan.sites)}; anycast {plan.service_address} "
            f"ports {', '.join(f'{p}={n}' for n, p in zip(plan.plans, plan.ports, strict=True))}"
        )


@lab_command()
@dir_option
@name_option
@json_option
def down(directory: Path | None, name: str | None, as_json: bool) -> None:
    """Remove every namespace and process the lab made (even after a crash)."""
    from ..lab.build import LabError
    from ..lab.build import down as lab_down

    try:
        out = lab_down(_dir(directory, name), name)
    except LabError as e:
        raise _fail(e) from None
    if as_json:
        click.echo(json.dumps(out, indent=1))
    else:
        click.echo(
            f"lab {out['name']} is down: {len(out['namespaces'])} namespaces removed, "
            f"{out['processes']} processes ended"
        )


@lab_command(name="exec", context_settings={"ignore_unknown_options": True})
@dir_option
@name_option
@click.argument("node")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(directory: Path | None, name: str | None, node: str, command: tuple[str, ...]) -> None:
    """Run COMMAND on NODE (inside its namespace): anyedge lab exec c1 -- ip route.

    Exits with COMMAND's own status (128+N if signal N ended it)."""
    _world, plan, _state = _attach(directory, name)
    try:
        ns = plan.node(node).namespace
    except KeyError:
        names = ", ".join(n.name for n in plan.nodes)
        raise InputError.one("command line", "NODE", f"no node {node!r}; nodes: {names}") from None
    code = subprocess.call(["ip", "netns", "exec", ns, *command])
    # a command that a signal ended: -N from subprocess, 128+N as a shell reports it
    raise click.exceptions.Exit(128 - code if code < 0 else code)


def _port(plan: Any, plan_name: str | None) -> int:
    if plan_name is None:
        return int(plan.ports[0])
    if plan_name not in plan.plans:
        raise InputError.one(
            "command line", "--plan", f"no plan {plan_name!r}; plans: {', '.join(plan.plans)}"
        )
    return int(plan.ports[plan.plans.index(plan_name)])


@lab_command()
@dir_option
@name_option
@click.option("--flows", default=20, show_default=True, type=click.IntRange(1, 5000))
@click.option("--plan", "plan_name", help="Probe the port of this plan (default: the first).")
@click.option("--tcp", is_flag=True, help="Probe over TCP instead of UDP.")
@click.option(
    "--client",
    "clients",
    multiple=True,
    help="Probe from this client only (a name or a glob such as 'c*'); repeatable.",
)
@click.option(
    "-6", "--ipv6", is_flag=True, help="Probe the IPv6 anycast address (a dual-stack lab)."
)
@json_option
def probe(
    directory: Path | None,
    name: str | None,
    flows: int,
    plan_name: str | None,
    tcp: bool,
    clients: tuple[str, ...],
    ipv6: bool,
    as_json: bool,
) -> None:
    """Every client (or those given with --client) probes the anycast address (its IPv6
    one with -6): which site answered how many flows."""
    from ..lab.build import LabError
    from ..lab.measure import choose_clients, probe_all

    _world, plan, _state = _attach(directory, name)
    address = plan.service_address
    if ipv6:
        if plan.service_address6 is None:
            raise InputError.one(
                "command line", "--ipv6", "the lab's sites announce no IPv6 prefix"
            )
        address = plan.service_address6
    chosen = None
    if clients:
        chosen, bad = choose_clients(plan, clients)
        if bad:
            known = ", ".join(n.name for n in plan.nodes if n.kind == "client")
            raise InputError.one("command line", "--client", f"{'; '.join(bad)}; clients: {known}")
    try:
        got = probe_all(
            plan, clients=chosen, flows=flows, port=_port(plan, plan_name), tcp=tcp, address=address
        )
    except LabError as e:
        raise _fail(e) from None
    if as_json:
        click.echo(json.dumps(got, indent=1))
        return
    rows = []
    for client, r in got.items():
        answers = r.get("answers", {})
        rows.append(
            {
                "client": client,
                "answered by": ", ".join(f"{s} {n}" for s, n in sorted(answers.items())),
                "lost": r.get("lost", 0),
            }
        )
    where = f"[{address}]" if ipv6 else address
    _table(rows, f"{where}:{_port(plan, plan_name)} from every client")


@lab_command()
@dir_option
@name_option
@click.option("--flows", default=20, show_default=True, type=click.IntRange(1, 5000))
@click.option("--no-withdraw", is_flag=True, help="Only the baseline, no site withdrawn.")
@click.option(
    "--withdraw",
    "only",
    multiple=True,
    metavar="SITE",
    help="Withdraw only this site in turn (repeatable; default: each site).",
)
@click.option(
    "--link-down",
    multiple=True,
    help="A-B (ASNs, or a site and an ASN): a link down besides the recorded faults.",
)
@click.option("--site-down", multiple=True, help="A site whose sessions are lost; repeatable.")
@json_option
def compare(
    directory: Path | None,
    name: str | None,
    flows: int,
    no_withdraw: bool,
    only: tuple[str, ...],
    link_down: tuple[str, ...],
    site_down: tuple[str, ...],
    as_json: bool,
) -> None:
    """The routing model's catchments against probes, then with each site withdrawn
    (or each site given with --withdraw).

    Under the faults the lab's state records (links down, dead daemons, partitioned
    sites), and those given with --link-down and --site-down, the model takes the same
    faults.  Exits with status 1 if model and lab disagree for any client."""
    from ..errors import Problem
    from ..lab.build import LabError
    from ..lab.compare import compare as run_compare
    from ..lab.compare import extra_faults, faults_of
    from ..routing import FaultError

    world, plan, _state = _attach(directory, name)
    d = _dir(directory, name)
    chosen = [_site(plan, s) for s in only] if only else None
    try:
        extra = extra_faults(world, plan, link_down, site_down)
    except FaultError as e:
        raise InputError("command line", [Problem(o, m) for o, m in e.problems]) from None
    try:
        faults = faults_of(plan, d, extra)
        rows = run_compare(world, plan, d, flows, not no_withdraw, extra, chosen)
    except LabError as e:
        raise _fail(e) from None
    agree = sum(r.agree for r in rows)
    if as_json:
        out = {"agree": agree, "faults": faults.to_dict(), "rows": [r.to_dict() for r in rows]}
        click.echo(json.dumps(out, indent=1))
    else:
        _table(
            [
                {
                    "scenario": r.scenario,
                    **({"prefix": r.prefix} if plan.ipv6 else {}),
                    "client": r.client,
                    "model": r.model or "-",
                    "lab": r.lab or "-",
                    "answered": f"{r.answered}/{r.flows}",
                    "agree": "yes" if r.agree else "NO",
                }
                for r in rows
            ],
            "model against lab",
        )
        if faults:
            said = [f"{', '.join(faults.links)} down"] if faults.links else []
            said += [f"{', '.join(faults.sites)} cut off"] if faults.sites else []
            said += [f"{', '.join(sorted(faults.clients))} unreachable"] if faults.clients else []
            click.echo(f"under faults: {'; '.join(said)}")
        click.echo(f"{agree} of {len(rows)} client-scenarios agree")
    if agree != len(rows):
        raise click.exceptions.Exit(1)


def _site(plan: Any, site: str) -> str:
    code = site.upper()
    if code not in [n.site for n in plan.sites]:
        raise InputError.one(
            "command line",
            "SITE",
            f"no site {site!r} in the lab; sites: {', '.join(str(n.site) for n in plan.sites)}",
        )
    return code


def _settle(ann: Any, done: str) -> float:
    """Wait until BGP has converged (the routes stop changing); the seconds it took.  If
    it does not, the failure says that the change (``done``) is applied all the same."""
    from ..lab.build import LabError

    try:
        return float(ann.settle())
    except LabError as e:
        raise LabFailed(
            f"{done} (its speaker took it and the lab's state records it), but {e}"
        ) from None


prefix_option = click.option(
    "--prefix",
    "prefixes",
    multiple=True,
    help="Only this prefix of the site's (repeatable): an IPv6 one alone, say.",
)


def _prefixes(plan: Any, code: str, prefixes: tuple[str, ...]) -> list[str]:
    """The --prefix values, each one of the site's prefixes (else bad input, exit 2)."""
    import ipaddress

    mine = plan.site_node(code).prefixes
    out = []
    for p in prefixes:
        try:
            net = str(ipaddress.ip_network(p))
        except ValueError:
            net = p
        if net not in mine:
            raise InputError.one(
                "command line", "--prefix", f"{p} is not {code}'s; it has {', '.join(mine)}"
            )
        out.append(net)
    return out


@lab_command()
@dir_option
@name_option
@click.argument("site")
@prefix_option
def withdraw(directory: Path | None, name: str | None, site: str, prefixes: tuple[str]) -> None:
    """Withdraw the anycast prefixes at SITE (or those given with --prefix) through its
    BGP speaker."""
    from ..lab.measure import Announcer

    _world, plan, _state = _attach(directory, name)
    code = _site(plan, site)
    chosen = _prefixes(plan, code, prefixes)
    ann = Announcer(plan, _dir(directory, name))
    ann.withdraw(code, chosen)
    what = f"{', '.join(chosen)} withdrawn" if chosen else "withdrawn"
    click.echo(f"{code}: {what}; routes settled in {_settle(ann, f'{code}: {what}'):.1f} s")


@lab_command()
@dir_option
@name_option
@click.argument("site")
@click.option("--prepend", default=0, show_default=True, type=click.IntRange(0, 32))
@prefix_option
def announce(
    directory: Path | None, name: str | None, site: str, prepend: int, prefixes: tuple[str]
) -> None:
    """Announce the anycast prefixes at SITE, or those given with --prefix (with its ASN
    prepended N more times)."""
    from ..lab.measure import Announcer

    _world, plan, _state = _attach(directory, name)
    code = _site(plan, site)
    chosen = _prefixes(plan, code, prefixes)
    ann = Announcer(plan, _dir(directory, name))
    ann.announce(code, prepend, chosen)
    how = f" {', '.join(chosen)}" if chosen else ""
    how += f", prepended {prepend}x" if prepend else ""
    took = _settle(ann, f"{code}: announced{how}")
    click.echo(f"{code}: announced{how}; routes settled in {took:.1f} s")


@lab_command()
@dir_option
@name_option
@click.argument("client")
@click.option(
    "--rate",
    required=True,
    type=Finite(0, 20000, min_open=True),
    help="Datagrams per second (at most 20000).",
)
@click.option(
    "--duration",
    required=True,
    type=Finite(0, 600, min_open=True),
    help="Seconds (at most 600).",
)
@click.option(
    "--flows",
    default=64,
    show_default=True,
    type=click.IntRange(1, 1024),
    help="Flows (source ports) the datagrams are spread over.",
)
@click.option("--plan", "plan_name", help="Load the port of this plan (default: the first).")
@json_option
def load(
    directory: Path | None,
    name: str | None,
    client: str,
    rate: float,
    duration: float,
    flows: int,
    plan_name: str | None,
    as_json: bool,
) -> None:
    """A steady load from CLIENT on the anycast address: RATE datagrams per second for
    DURATION seconds over FLOWS flows; prints which sites answered how many."""
    from ..lab.build import LabError
    from ..lab.measure import probe_argv

    _world, plan, _state = _attach(directory, name)
    clients = [n.name for n in plan.nodes if str(n.kind) == "client"]
    if client not in clients:
        raise InputError.one(
            "command line", "CLIENT", f"no client {client!r}; clients: {', '.join(clients)}"
        )
    port = _port(plan, plan_name)
    argv = probe_argv(plan, client, "load", port=port)
    argv += ["--rate", f"{rate:g}", "--duration", f"{duration:g}", "--flows", str(flows)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    if r.returncode != 0:
        raise LabError(f"load from {client} failed: {r.stderr.strip()[-300:]}")
    try:
        got = json.loads(r.stdout)
    except json.JSONDecodeError:
        raise LabError(f"load from {client}: not JSON: {r.stdout[:200]!r}") from None
    if as_json:
        click.echo(json.dumps(got, indent=1))
        return
    answers = ", ".join(f"{s} {n}" for s, n in sorted(got["answers"].items())) or "none"
    click.echo(
        f"{client} sent {got['sent']} datagrams to {plan.service_address}:{port} in "
        f"{got['elapsed']:.1f} s over {got['flows']} flows: answered by {answers}; "
        f"lost {got['lost']}"
    )


@lab_command()
@click.option("--seed", default=1, show_default=True, type=click.IntRange(min=0))
@click.option("--routers", default=12, show_default=True, type=click.IntRange(3, 250))
@click.option("--sites", default=4, show_default=True, type=click.IntRange(1, 8))
@click.option("--clients", default=6, show_default=True, type=click.IntRange(1, 200))
@click.option(
    "--operators",
    default=1,
    show_default=True,
    type=click.IntRange(1, 2),
    help="2: every second site is a second operator's (AS64400), on the same prefix.",
)
@click.option(
    "--delays",
    is_flag=True,
    help="Every link takes a delay_ms from the latency model (routers placed near the "
    "sites' cities); see docs/dns.md.",
)
@click.option(
    "--ipv6",
    is_flag=True,
    help="Dual-stack: 2001:db8:100::/48 at every site but every third, beside IPv4.",
)
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Write here (default: stdout)."
)
def generate(
    seed: int,
    routers: int,
    sites: int,
    clients: int,
    operators: int,
    delays: bool,
    ipv6: bool,
    output: Path | None,
) -> None:
    """Write a random lab topology (a tiered Internet, sites with mixed speakers)."""
    from ..lab.generate import generate as gen
    from ..model.files.atomic import write_all
    from ..model.files.topology import dump_yaml

    topo = gen(
        seed,
        routers=routers,
        sites=sites,
        clients=clients,
        operators=operators,
        delays=delays,
        ipv6=ipv6,
    )
    text = dump_yaml(topo)
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            write_all({output: text})
        except OSError as e:  # a bad --output is bad input (2), as world --out: not the lab's
            raise InputError.one(output, "--output", f"cannot write: {e.strerror or e}") from None
        click.echo(f"wrote {output}", err=True)


@lab_command()
@dir_option
@name_option
@click.argument("site")
@click.option("--to", "to_site", required=True, help="The site that takes the flows.")
@click.option(
    "--share",
    required=True,
    type=Finite(0.0, 1.0),
    help="Share of the plan's flows to hand over (0 stops forwarding).",
)
@click.option("--plan", "plan_name", help="The plan (default: every plan).")
def forward(
    directory: Path | None,
    name: str | None,
    site: str,
    to_site: str,
    share: float,
    plan_name: str | None,
) -> None:
    """Plurimog: forward SHARE of SITE's flows to another site over the backbone.

    Replaces what SITE forwarded before."""
    from ..adapters.nft import Share
    from ..lab.build import LabError
    from ..lab.forward import Forwarder

    _world, plan, _state = _attach(directory, name)
    code, to = _site(plan, site), _site(plan, to_site)
    fwd = Forwarder(plan, _dir(directory, name))
    if to not in fwd.neighbours(code):
        raise InputError.one(
            "command line",
            "--to",
            f"{code} has no backbone link to {to}; it can forward to: "
            f"{', '.join(fwd.neighbours(code)) or 'none'}",
        )
    ports = [_port(plan, plan_name)] if plan_name else list(plan.ports)
    try:
        fwd.set(code, [Share(p, to, share) for p in ports])
    except LabError as e:
        raise _fail(e) from None
    which = plan_name or "every plan"
    click.echo(f"{code}: forwarding {100 * share:.0f} % of {which} to {to}")


@lab_command()
@dir_option
@name_option
@click.argument("sites", nargs=-1)
@click.option("--interval", default=0.01, show_default=True, type=Finite(0.002, 1.0))
@json_option
def failover(
    directory: Path | None, name: str | None, sites: tuple[str, ...], interval: float, as_json: bool
) -> None:
    """Withdraw each SITE (default: every site) and time how fast its clients move."""
    from ..lab.build import LabError
    from ..lab.failover import measure

    _world, plan, _state = _attach(directory, name)
    codes = [_site(plan, s) for s in sites] or [str(n.site) for n in plan.sites]
    rows = []
    failed = []
    for code in codes:
        click.echo(f"withdrawing {code} ...", err=True)
        try:
            rows += [r.to_dict() for r in measure(plan, _dir(directory, name), code, interval)]
        except LabError as e:
            click.echo(f"{code}: {e}", err=True)
            failed.append(code)
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        _show_failover(rows)
    if failed:
        raise LabFailed(f"no measurement for {', '.join(failed)}")


def _show_failover(rows: list[dict[str, Any]]) -> None:
    _table(
        [
            {
                "site": r["site"],
                "speaker": r["speaker"],
                "client": r["client"],
                "moved to": r["moved_to"] or "-",
                "convergence": f"{r['seconds']:.2f} s" if r["seconds"] is not None else "-",
                "lost": f"{r['lost']}/{r['sent']}",
            }
            for r in rows
        ],
        "convergence after a withdrawal",
    )


@lab_command()
@dir_option
@name_option
@click.option("--duration", default=60.0, show_default=True, type=Finite(1, 86400))
@click.option("--interval", default=1.0, show_default=True, type=Finite(0.2, 60))
@json_option
def control(
    directory: Path | None, name: str | None, duration: float, interval: float, as_json: bool
) -> None:
    """Run the Traffic Manager against the lab: telemetry from the sites' services,
    Plurimog forwarding through nftables, decisions journaled in the lab directory."""
    from ..lab.build import LabError
    from ..lab.control import Step, run

    world, plan, _state = _attach(directory, name)

    def show(s: Step) -> None:
        if as_json:
            click.echo(json.dumps(s.__dict__))
            return
        u = " ".join(f"{c} {100 * v:5.1f}%" for c, v in s.utilisation.items())
        f = " ".join(f"{c}->{100 * v:.0f}%" for c, v in s.forwarding.items() if v > 0)
        click.echo(f"{u}  forwarding: {f or 'none'}")
        for a in s.actions:
            click.echo(f"  {a}")

    try:
        run(world, plan, _dir(directory, name), duration, interval, on_step=show)
    except LabError as e:
        raise _fail(e) from None


@lab_command(name="predict")
@dir_option
@name_option
@click.argument("sites", nargs=-1)
@click.option("--flows", default=10, show_default=True, type=click.IntRange(1, 1000))
@json_option
def predict_(
    directory: Path | None, name: str | None, sites: tuple[str, ...], flows: int, as_json: bool
) -> None:
    """The Traffic Predictor's test: withdraw the test prefix at each SITE (default: all),
    record where its clients land, and compare with the prediction.

    Exits with status 1 if a measurement and its prediction differ."""
    from ..lab.build import LabError
    from ..lab.trial import run as run_trial

    world, plan, _state = _attach(directory, name)
    codes = [_site(plan, s) for s in sites] or None
    try:
        trials = run_trial(world, plan, _dir(directory, name), codes, flows)
    except LabError as e:
        raise _fail(e) from None

    def pct(d: dict[str, float]) -> str:
        return ", ".join(f"{k} {100 * v:.0f} %" for k, v in sorted(d.items())) or "-"

    if as_json:
        click.echo(json.dumps([t.to_dict() for t in trials], indent=1))
    else:
        _table(
            [
                {
                    "withdrawn": t.site,
                    "its clients": ", ".join(t.clients) or "-",
                    "measured": pct(t.measured),
                    "predicted": pct(t.predicted),
                    "agree": "yes" if t.agree else "NO",
                }
                for t in trials
            ],
            f"where the test prefix {plan.test_address} goes",
        )
    if not all(t.agree for t in trials):
        raise click.exceptions.Exit(1)


@lab_command(name="turn")
@dir_option
@name_option
@click.option(
    "--user",
    "users",
    multiple=True,
    required=True,
    help="USER:PASSWORD allowed to allocate (repeatable).",
)
@json_option
def turn_(directory: Path | None, name: str | None, users: tuple[str, ...], as_json: bool) -> None:
    """Run the TURN relay at every site on the anycast address (docs/turn.md)."""
    from ..lab import turn as lab_turn

    accounts = {}
    for u in users:
        user, sep, password = u.partition(":")
        if not sep or not user or not password:
            raise InputError.one("command line", "--user", f"expected USER:PASSWORD, got {u!r}")
        accounts[user] = password
    _world, plan, _state = _attach(directory, name)
    pids = lab_turn.start(plan, _dir(directory, name), accounts)
    slices = lab_turn.relay_slices(plan)
    rows = [
        {
            "site": code,
            "listen": f"udp://{plan.service_address}:{lab_turn.TURN_PORT}",
            "relay ports": f"{lo}-{hi}",
            "pid": pids[code],
        }
        for code, (lo, hi) in slices.items()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        _table(rows, "TURN on anycast")


@lab.group()
def edge() -> None:
    """The edge at a site with servers: its XDP load balancer's table and counters."""


def _edge_call(f: Callable[[], Any]) -> Any:
    from ..lab.edge import BadRequest

    try:
        return f()
    except BadRequest as e:
        raise InputError.one("command line", "SITE", str(e)) from None


@edge.command("servers")
@dir_option
@name_option
@click.argument("site")
@click.option(
    "--add", "add", metavar="NAME", help="Add a server NAME (made, then put in the table)."
)
@click.option("--drain", metavar="NAME", help="Drain server NAME: it takes no new flows.")
@click.option("--remove", metavar="NAME", help="Remove server NAME from the table and the site.")
@json_option
def edge_servers(
    directory: Path | None,
    name: str | None,
    site: str,
    add: str | None,
    drain: str | None,
    remove: str | None,
    as_json: bool,
) -> None:
    """SITE's servers: weight, state and buckets in the balancer's table; with --add,
    --drain or --remove, change the table on every server of the site first."""
    from ..adapters.bgp.base import SpeakerError
    from ..adapters.netns import NetnsError
    from ..lab import edge as lab_edge
    from ..lab.build import LabError

    changes = [(op, v) for op, v in (("add", add), ("drain", drain), ("remove", remove)) if v]
    if len(changes) > 1:
        raise InputError.one("command line", "--add/--drain/--remove", "one change at a time")
    d = _dir(directory, name)
    _world, plan, _state = _attach(directory, name)
    code = _site(plan, site)
    try:
        if changes:
            op, server = changes[0]
            out = _edge_call(lambda: lab_edge.change(d, plan, code, op, server))
        else:
            out = _edge_call(lambda: lab_edge.servers(d, plan, code))
    except (LabError, SpeakerError, NetnsError, OSError, subprocess.SubprocessError) as e:
        raise _fail(e) from None
    if as_json:
        click.echo(json.dumps(out, indent=1))
        return
    rows = [
        {k: r[k] for k in ("name", "mac", "weight", "state", "buckets", "second_hop_buckets")}
        for r in out["servers"]
    ]
    moved = f"; {out['moved']} of {out['buckets']} buckets moved" if "moved" in out else ""
    hop = "on" if out["second_hop"] else "off"
    _table(rows, title=f"{code}: {out['buckets']} buckets, second hop {hop}{moved}")


@edge.command("stats")
@dir_option
@name_option
@click.argument("site")
@json_option
def edge_stats(directory: Path | None, name: str | None, site: str, as_json: bool) -> None:
    """SITE's balancer counters, per server: packets sent on as first hop, as second
    hop, passed up locally, passed up for want of a MAC."""
    from ..adapters.netns import NetnsError
    from ..lab import edge as lab_edge
    from ..lab.build import LabError

    d = _dir(directory, name)
    _world, plan, _state = _attach(directory, name)
    code = _site(plan, site)
    try:
        out = _edge_call(lambda: lab_edge.stats(d, plan, code))
    except (LabError, NetnsError, OSError) as e:
        raise _fail(e) from None
    if as_json:
        click.echo(json.dumps(out, indent=1))
        return
    rows = [
        {
            "server": s,
            "kind": c["kind"],
            "to": c["to"],
            "packets": c["packets"],
            "bytes": c["bytes"],
        }
        for s, cs in out["servers"].items()
        for c in cs
    ]
    if not rows:
        click.echo(f"{code}: no packets counted yet")
    _table(rows, title=f"{code}: balancer counters")
    _table(out["rules"], title=f"{code}: L4Drop rules at the site router")


@edge.command("rules")
@dir_option
@name_option
@click.argument("site")
@click.option(
    "-f",
    "--file",
    "rules_file",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="The L4Drop rules file (docs/edge.md).",
)
def edge_rules(directory: Path | None, name: str | None, site: str, rules_file: Path) -> None:
    """Put the L4Drop rules of FILE in force at SITE (on every server, in front of its
    load balancer; an empty list removes them)."""
    from ..adapters.netns import NetnsError
    from ..lab import edge as lab_edge
    from ..lab.build import LabError

    d = _dir(directory, name)
    _world, plan, _state = _attach(directory, name)
    code = _site(plan, site)
    try:
        out = _edge_call(lambda: lab_edge.rules(d, plan, code, rules_file))
    except (LabError, NetnsError, OSError) as e:
        raise _fail(e) from None
    click.echo(f"{code}: {out['rules']} rules in force on {', '.join(out['interfaces'])}")


@lab_command(name="prometheus-config")
@dir_option
@name_option
@click.option("--scrape-interval", default=1.0, show_default=True, type=click.FloatRange(0.1, 600))
@click.option("-o", "--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
def prometheus_config_(
    directory: Path | None, name: str | None, scrape_interval: float, out: Path
) -> None:
    """Write the prometheus.yml that scrapes every service of the lab directly."""
    from ..lab.rehearsal import prometheus_config
    from ..model.files.atomic import write_all

    _attach(directory, name)  # a lab must be running there
    d = _dir(directory, name)
    write_all({out: prometheus_config(d.resolve(), scrape_interval)})
    click.echo(f"wrote {out} (file_sd: {d.resolve()}/prometheus/*.json)")


@lab_command(name="controller-config")
@dir_option
@name_option
@click.option("--prometheus", required=True, help="Prometheus's URL (it scrapes the lab).")
@click.option("--http-port", default=9180, show_default=True, type=click.IntRange(0, 65535))
@click.option("-o", "--out", type=click.Path(path_type=Path, dir_okay=False), required=True)
@click.option(
    "--withdraw",
    is_flag=True,
    help="Also withdraw prefixes through the sites' own speakers (actuator network), with "
    "the lab model's failover atlas written beside the configuration (atlas.json).",
)
def controller_config_(
    directory: Path | None,
    name: str | None,
    prometheus: str,
    http_port: int,
    out: Path,
    withdraw: bool,
) -> None:
    """Write the controller.yaml that runs `anyedge control run` against the lab."""
    import yaml

    from ..lab.rehearsal import controller_config, lab_atlas
    from ..model.files.atomic import write_all

    world, plan, _state = _attach(directory, name)
    d = _dir(directory, name)
    atlas = out.parent / "atlas.json" if withdraw else None
    doc = controller_config(
        world, plan, prometheus, http_port=http_port,
        directory=d if withdraw else None, atlas=atlas.name if atlas else None,
    )  # fmt: skip
    files = {out: yaml.safe_dump(doc, sort_keys=False)}
    if atlas is not None:
        files[atlas] = lab_atlas(world)
    write_all(files)
    what = f"actuator {doc['actuator']['kind']}" + (f", {atlas}" if atlas else "")
    click.echo(f"wrote {out} ({len(doc['sites'])} sites, {what})")


# the anycast DNS commands (dns, dig, health, ...), fault, heal and status, and the
# SRv6 backbone lab (backbone up|paths|cut|run|down), round trips (rtt), Magic Transit
# at a site (transit)
from . import lab_backbone, lab_dns, lab_faults, lab_rtt, lab_transit  # noqa: E402, F401  they register themselves on ``lab``
