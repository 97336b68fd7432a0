"""``anyedge lab fault|heal|status``: break a running lab on purpose, see what is down,
and bring it back to what it records.

``fault link-down A B`` / ``link-up A B``, ``fault kill NODE`` / ``restart NODE`` and
``fault partition SITE`` / ``rejoin SITE`` make and undo one fault each, recorded in
the lab's state (:mod:`anyedge.lab.faults`); ``heal`` undoes them all and restores
what the state records (:mod:`anyedge.lab.heal`); ``status`` shows nodes, daemons,
sessions, links, announcements and forwarding, naming what is down
(:mod:`anyedge.lab.status`).  A fault on a node, link or site the lab does not have is
bad input (exit status 2); what the lab could not do, exit status 3.  Registered on
``anyedge lab`` when :mod:`.lab` is imported.
"""

from __future__ import annotations

import functools
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import InputError
from .lab import LabFailed, _attach, _dir, _table, dir_option, json_option, lab, name_option

if TYPE_CHECKING:
    from ..lab.plan import LabPlan


def _handled(f: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(f)
    def run(*a: Any, **k: Any) -> Any:
        from ..adapters.bgp.base import SpeakerError
        from ..adapters.netns import NetnsError
        from ..lab.build import LabError
        from ..lab.faults import BadFault

        try:
            return f(*a, **k)
        except BadFault as e:
            raise InputError.one("command line", "fault", str(e)) from None
        except (LabError, SpeakerError, NetnsError, OSError, subprocess.SubprocessError) as e:
            raise LabFailed(str(e)) from None

    return run


def _say(as_json: bool, record: dict[str, Any], text: str) -> None:
    click.echo(json.dumps(record, indent=1) if as_json else text)


@lab.group()
def fault() -> None:
    """Make (and undo) one fault in the running lab, recorded in its state."""


def _fault_command(command: str) -> Callable[[Callable[..., Any]], click.Command]:
    """``lab fault COMMAND``: ``f(plan, lab directory, as_json, **arguments)`` on the
    running lab the options name."""

    def wrap(f: Callable[..., Any]) -> click.Command:
        @functools.wraps(f)
        def on_lab(directory: Path | None, name: str | None, as_json: bool, **args: Any) -> None:
            _world, plan, _state = _attach(directory, name)
            f(plan, _dir(directory, name), as_json, **args)

        return fault.command(command)(dir_option(name_option(json_option(_handled(on_lab)))))

    return wrap


@_fault_command("link-down")
@click.argument("a")
@click.argument("b")
def link_down(plan: LabPlan, d: Path, as_json: bool, a: str, b: str) -> None:
    """Take the link between nodes A and B down (both ends)."""
    from ..lab.faults import link_down as down

    _say(as_json, down(plan, d, a, b), f"link {a}-{b} is down")


@_fault_command("link-up")
@click.argument("a")
@click.argument("b")
def link_up(plan: LabPlan, d: Path, as_json: bool, a: str, b: str) -> None:
    """Bring the link between nodes A and B up again, with the routes it carried."""
    from ..lab.faults import link_up as up

    _say(as_json, up(plan, d, a, b), f"link {a}-{b} is up")


@_fault_command("kill")
@click.argument("node")
def kill(plan: LabPlan, d: Path, as_json: bool, node: str) -> None:
    """kill -9 NODE's BGP daemon (a router's bgpd, a site's speaker)."""
    from ..lab.faults import kill as kill_

    r = kill_(plan, d, node)
    was = "killed" if r["was_running"] else "was not running; recorded as killed"
    _say(as_json, r, f"{node}: {r['daemon']} (pid {r['pid']}) {was}")


@_fault_command("restart")
@click.argument("node")
def restart(plan: LabPlan, d: Path, as_json: bool, node: str) -> None:
    """Start NODE's daemons that are not running, with their configuration."""
    from ..lab.faults import restart as restart_

    r = restart_(plan, d, node)
    what = ", ".join(f"{d} (pid {p})" for d, p in r["started"].items()) or "nothing: all running"
    _say(as_json, r, f"{node}: started {what}")


@_fault_command("partition")
@click.argument("site")
def partition(plan: LabPlan, d: Path, as_json: bool, site: str) -> None:
    """Cut every BGP session of SITE (TCP port 179 dropped in its namespace)."""
    from ..lab.faults import partition as cut

    r = cut(plan, d, site)
    _say(as_json, r, f"{r['site']}: BGP dropped; its sessions end at their hold timers")


@_fault_command("rejoin")
@click.argument("site")
def rejoin(plan: LabPlan, d: Path, as_json: bool, site: str) -> None:
    """Undo ``partition SITE``."""
    from ..lab.faults import rejoin as join

    r = join(plan, d, site)
    _say(as_json, r, f"{r['site']}: BGP allowed again")


@lab.command()
@dir_option
@name_option
@json_option
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(1, 600))
@_handled
def heal(directory: Path | None, name: str | None, as_json: bool, timeout: float) -> None:
    """Bring the lab back to its recorded state: links, daemons, partitions, forwarding;
    clear the faults and wait for BGP to settle.  Idempotent."""
    from ..lab.heal import heal as heal_

    _world, plan, _state = _attach(directory, name)
    r = heal_(plan, _dir(directory, name), timeout)
    started = ", ".join(f"{n} ({', '.join(d)})" for n, d in r["started"].items()) or "none"
    _say(
        as_json,
        r,
        f"healed in {r['seconds']:.1f} s: {len(r['cleared'])} faults cleared, daemons "
        f"started: {started}; routes settled {r['settled']:.1f} s in",
    )


@lab.command()
@dir_option
@name_option
@json_option
@_handled
def status(directory: Path | None, name: str | None, as_json: bool) -> None:
    """Nodes, daemons, BGP sessions, links, what each site announces and forwards.

    Names what is down; exits with status 3 when something is down that no recorded
    fault explains (a daemon that died on its own, say)."""
    from ..lab.status import status as lab_status

    _world, plan, _state = _attach(directory, name)
    s = lab_status(plan, _dir(directory, name))
    if as_json:
        click.echo(json.dumps(s, indent=1))
    else:
        _show(s)
    if s["unexplained"]:
        raise LabFailed("; ".join(s["unexplained"]))


def _show(s: dict[str, Any]) -> None:
    _table(
        [
            {
                "node": r["node"],
                "kind": r["kind"],
                "site": r["site"],
                "speaker": r["speaker"],
                "processes": r["processes"],
                "daemons": " ".join(f"{d}:{h}" for d, h in r["daemons"].items()),
                "sessions": r["established"],
                "down": ", ".join(p for p, ok in r["sessions"].items() if not ok),
            }
            for r in s["nodes"]
        ],
        f"lab {s['name']}",
    )
    _table(
        [
            {
                "site": x["site"],
                "announces": ", ".join(f"{p}" + (f" +{k}" if k else "") for p, k in x["announces"])
                or "nothing",
                "heard by": ", ".join(
                    f"{r} {'-' if k is None else k}" for r, k in x["heard_by"].items()
                ),
                "forwarding recorded": _shares(x["forward_recorded"]),
                "installed": _shares(x["forward_installed"]),
            }
            for x in s["sites"]
        ],
        "sites",
    )
    for f in s["faults"]:
        click.echo(f"fault: {json.dumps(f)}")
    for what in s["down"]:
        click.echo(f"down: {what}")
    if not s["down"]:
        click.echo("everything is up")


def _shares(rows: list[list[Any]]) -> str:
    return ", ".join(f"{p}->{to} {100 * s:.0f} %" for p, to, s in rows if s > 0) or "none"
