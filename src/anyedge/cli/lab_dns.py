"""``anyedge lab dns|dig|health|drain|undrain|verfploeter``: anycast DNS in the lab.

``dns`` runs Knot at every site on the anycast address (docs/dns.md), with ``--store``
taking the zone from the configuration store (:mod:`anyedge.lab.zonesync`); ``dig`` queries it
from the clients and says which site answered (its NSID); ``health`` starts a checker and
an announcing agent at every site (``anyedge.health`` wired to the site's real BGP
speaker); ``drain``/``undrain`` tell a site's agent of a planned stop; ``health-log``
prints what the agents decided; ``verfploeter`` maps the catchment from the anycast
address.  Registered on ``anyedge lab`` when :mod:`.lab` is imported.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from ..errors import InputError
from .lab import _attach, _dir, _site, _table, dir_option, json_option, lab_command, name_option
from .store import Address


@lab_command(name="dns")
@dir_option
@name_option
@click.option(
    "--store",
    type=Address(),
    default=None,
    help="Distribute the zone through the embedded configuration store at HOST:PORT "
    "(anyedge store serve): a follower per site loads every version put there.",
)
@json_option
def dns_(
    directory: Path | None, name: str | None, store: tuple[str, int] | None, as_json: bool
) -> None:
    """Run Knot DNS at every site on the anycast address, answering as the site."""
    from ..lab import dns as lab_dns
    from ..lab import zonesync

    _world, plan, _state = _attach(directory, name)
    d = _dir(directory, name)
    pids = lab_dns.start(plan, d)
    followers = zonesync.start_followers(plan, d, store) if store else {}
    rows = [
        {
            "site": code,
            "listen": f"{plan.service_address}@53",
            "zone": lab_dns.ZONE,
            "pid": pid,
            **({"store": f"{store[0]}:{store[1]}", "follower": followers[code]} if store else {}),
        }
        for code, pid in pids.items()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        _table(rows, "authoritative DNS on anycast (NSID and id.server = the site)")


@lab_command()
@dir_option
@name_option
@click.argument("clients", nargs=-1)
@click.option("--qname", default=None, help="The name to ask for (default: the lab's zone).")
@json_option
def dig(
    directory: Path | None,
    name: str | None,
    clients: tuple[str, ...],
    qname: str | None,
    as_json: bool,
) -> None:
    """Query the anycast address from CLIENTS (default: all) and show the answering site."""
    import dns.exception

    from ..lab import dns as lab_dns
    from ..model.lab import NodeKind

    _world, plan, _state = _attach(directory, name)
    known = [n.name for n in plan.of_kind(NodeKind.CLIENT)]
    for c in clients:
        if c not in known:
            raise InputError.one(
                "command line",
                "CLIENTS",
                f"no client {c!r} in the lab; clients: {', '.join(known)}",
            )
    rows = []
    for c in clients or known:
        try:
            a = lab_dns.query(plan.node(c).namespace, plan.service_address, qname or lab_dns.ZONE)
            rows.append(
                {"client": c, "site": a.site, "rcode": a.rcode, "answer": list(a.addresses)}
            )
        except (OSError, dns.exception.DNSException) as e:
            rows.append({"client": c, "site": None, "rcode": None, "answer": [], "error": str(e)})
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        _table([{k: v for k, v in r.items() if k != "error"} for r in rows])


@lab_command()
@dir_option
@name_option
@click.option("--rise", type=click.IntRange(1, 100), default=2, show_default=True)
@click.option("--fall", type=click.IntRange(1, 100), default=3, show_default=True)
@click.option("--deadman", type=click.FloatRange(0.1, 3600), default=30.0, show_default=True)
@click.option("--interval", type=click.FloatRange(0.05, 600), default=1.0, show_default=True)
@click.option("--timeout", type=click.FloatRange(0.01, 60), default=0.5, show_default=True)
@click.option("--override", is_flag=True, help="Allow withdrawing the last site.")
@json_option
def health(
    directory: Path | None,
    name: str | None,
    rise: int,
    fall: int,
    deadman: float,
    interval: float,
    timeout: float,
    override: bool,
    as_json: bool,
) -> None:
    """Health-check DNS at every site and announce/withdraw through its BGP speaker."""
    from ..health import Settings
    from ..lab import healthd

    if deadman <= interval:
        raise InputError.one(
            "command line", "--deadman", f"{deadman:g} s must be longer than --interval"
        )
    _world, plan, _state = _attach(directory, name)
    s = healthd.CheckSettings(Settings(rise, fall, deadman), interval, timeout, override)
    pids = healthd.start(plan, _dir(directory, name), s, timeout=30 + rise * interval)
    rows = [{"site": c, "agent": p.agent, "checker": p.checker} for c, p in pids.items()]
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        _table(rows, f"health checks: rise {rise}, fall {fall}, dead-man {deadman:g} s")


def _message(directory: Path | None, name: str | None, site: str, message: str) -> None:
    """Tell SITE's agent; wait until it has acted and the routes have settled."""
    from ..lab import healthd
    from ..lab.build import LabError, wait_converged

    _world, plan, _state = _attach(directory, name)
    d = _dir(directory, name)
    code = _site(plan, site)
    node = plan.site_node(code)
    if not healthd.socket_path(d, node).exists():
        raise InputError.one("command line", "SITE", f"{code} has no health agent: run lab health")
    seen = len(healthd.events(d, node))
    healthd.send(d, node, message)
    want = message == "undrain"
    end = time.monotonic() + 30.0
    while True:
        done = [e for e in healthd.events(d, node)[seen:] if e["announce"] == want or e["held"]]
        if done:
            break
        if time.monotonic() > end:
            raise LabError(f"{code}: its health agent did not act on {message} in 30 s")
        time.sleep(0.05)
    settled = wait_converged(plan, d, timeout=30.0, quiet=1.0)
    click.echo(f"{code}: {done[0]['text']}; routes settled in {settled:.1f} s")


@lab_command()
@dir_option
@name_option
@click.argument("site")
def drain(directory: Path | None, name: str | None, site: str) -> None:
    """A planned stop at SITE: its agent withdraws the prefix now."""
    _message(directory, name, site, "drain")


@lab_command()
@dir_option
@name_option
@click.argument("site")
def undrain(directory: Path | None, name: str | None, site: str) -> None:
    """Back to the checks at SITE: announced again once they pass."""
    _message(directory, name, site, "undrain")


@lab_command(name="health-log")
@dir_option
@name_option
@json_option
def health_log(directory: Path | None, name: str | None, as_json: bool) -> None:
    """What every site's health agent decided, and why."""
    from ..lab import healthd

    _world, plan, _state = _attach(directory, name)
    rows = [e for n in plan.sites for e in healthd.events(_dir(directory, name), n)]
    rows.sort(key=lambda e: e["t"])
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        _table(
            [
                {
                    "time (UTC)": time.strftime("%H:%M:%S", time.gmtime(e["t"]))
                    + f".{int(e['t'] * 1000) % 1000:03d}",
                    "site": e["site"],
                    "announce": e["announce"],
                    "held": e["held"],
                    "why": e["text"],
                }
                for e in rows
            ]
        )


@lab_command(name="verfploeter")
@dir_option
@name_option
@click.option("--from", "sender", default=None, help="The site that sends the pings.")
@json_option
def verfploeter_(
    directory: Path | None, name: str | None, sender: str | None, as_json: bool
) -> None:
    """Map the catchment from the anycast address: ping every client, see where replies land."""
    from ..lab import verfploeter

    _world, plan, _state = _attach(directory, name)
    code = _site(plan, sender) if sender else None
    found = verfploeter.catchment_map(plan, code)
    if as_json:
        click.echo(json.dumps(found, indent=1))
    else:
        _table([{"client": c, "site": s} for c, s in found.items()], "Verfploeter catchment")
