"""``anyedge lab backbone up|paths|cut|run|down``: the backbone lab with SRv6 paths.

``up`` builds :class:`anyedge.lab.backbone.BackboneLab` (three sites, two transit
providers, an origin; docs/backbone.md) and records it in its directory (``--dir``,
default ``/run/anyedge/backbone``); ``paths`` measures each candidate path's round trip
against what its delay lines ask and shows the one installed; ``cut`` gives a link a new
delay or loss while the lab runs; ``run`` runs Argo and Orpheus (or Argo alone) with
requests for some seconds and prints the path changes and the failed requests; ``down``
removes everything.  Registered on ``anyedge lab`` when :mod:`.lab` is imported.
"""

from __future__ import annotations

import functools
import json
import socket
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import InputError
from .lab import DEFAULT_ROOT, Finite, _fail, _table, json_option, lab

dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_ROOT / "backbone",
    show_default=True,
    help="The backbone lab's directory.",
)


def _attach(directory: Path) -> Any:
    from ..lab.backbone import BackboneLab

    try:
        return BackboneLab.attach(directory)
    except OSError as e:
        raise _fail(e) from None


def handled(f: Callable[..., Any]) -> Callable[..., Any]:
    """The lab's operational failures (an ``ip`` or ``nft`` command that fails, a
    process that does not start) as a message and exit status 3, not a traceback."""

    @functools.wraps(f)
    def run(*a: Any, **k: Any) -> Any:
        from ..adapters.netns import NetnsError

        try:
            return f(*a, **k)
        except (NetnsError, OSError, RuntimeError, subprocess.SubprocessError) as e:
            raise _fail(e) from None

    return run


@lab.group()
def backbone() -> None:
    """The backbone lab: SRv6 paths to an origin, Argo and Orpheus on real packets."""


@backbone.command("up")
@dir_option
@click.option(
    "--prefix",
    default="aebb",
    show_default=True,
    help="Namespace name prefix (up to 8 characters).",
)
@handled
def up(directory: Path, prefix: str) -> None:
    """Build the lab: namespaces, delay lines, SRv6 head ends, routes."""
    from ..lab.backbone import STATE, BackboneLab

    if not (0 < len(prefix) <= 8 and prefix.replace("-", "").isalnum()):
        raise InputError.one("command line", "--prefix", "1 to 8 letters, digits or '-'")
    if (directory / STATE).exists():
        raise InputError.one(directory / STATE, "lab", "a backbone lab is already up here")
    lab_ = BackboneLab(prefix, directory)
    lab_.up()
    click.echo(f"backbone lab up in {directory} (namespaces {prefix}a ... {prefix}o)")


@backbone.command("down")
@dir_option
@handled
def down(directory: Path) -> None:
    """Remove the lab: its processes and namespaces."""
    _attach(directory).down()
    click.echo("backbone lab down")


@backbone.command("paths")
@dir_option
@click.option("--count", type=click.IntRange(1, 1000), default=20, show_default=True)
@json_option
@handled
def paths(directory: Path, count: int, as_json: bool) -> None:
    """Each path's round trip from site a to the origin, against its delay lines."""
    from ..adapters import netns
    from ..lab.backbone import ECHO_PORT, ORIGIN, PATHS, path_rtt

    lab_ = _attach(directory)
    rows = []
    for p in PATHS:
        with netns.entered(lab_.ns("a")):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((p.source, 0))
        s.settimeout(0.5)
        rtts = []
        for i in range(count):
            t0 = time.perf_counter()
            s.sendto(i.to_bytes(4, "big"), (ORIGIN, ECHO_PORT))
            try:
                while s.recv(64) != i.to_bytes(4, "big"):
                    pass
                rtts.append((time.perf_counter() - t0) * 1e3)
            except TimeoutError:
                pass
        s.close()
        rows.append(
            {
                "path": p.name,
                "segments": ",".join(p.segments),
                "asked_ms": round(path_rtt(p, lab_.delays), 1),
                "median_ms": round(statistics.median(rtts), 2) if rtts else None,
                "lost": count - len(rtts),
                "installed": lab_.installed is not None and lab_.installed.name == p.name,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        _table(rows, "SRv6 paths from a to the origin")


@backbone.command("cut")
@dir_option
@click.argument("link")
@click.option("--delay-ms", type=Finite(0, 10_000), help="One-way delay (default: as it was).")
@click.option("--jitter-ms", type=Finite(0, 10_000), default=0.0, show_default=True)
@click.option("--loss", type=Finite(0, 1), default=0.0, show_default=True)
@handled
def cut(directory: Path, link: str, delay_ms: float | None, jitter_ms: float, loss: float) -> None:
    """Give LINK (a-b, a-c, b-c, t1-o or t2-o) a new shape now; --loss 1 cuts it."""
    from ..lab.backbone import DELAYED
    from ..lab.delayline import Shape

    names = {f"{x}-{y}": (x, y) for x, y in DELAYED} | {f"{y}-{x}": (x, y) for x, y in DELAYED}
    if link not in names:
        raise InputError.one(
            "command line",
            "LINK",
            f"{link!r} is not a delay line: one of a-b, a-c, b-c, t1-o, t2-o",
        )
    lab_ = _attach(directory)
    key = names[link]
    delay = lab_.delays[key] if delay_ms is None else delay_ms
    lab_.shape(key, Shape(delay_ms=delay, jitter_ms=jitter_ms, loss=loss))
    click.echo(f"{key[0]}-{key[1]}: {delay:g} ms one way, jitter {jitter_ms:g} ms, loss {loss:g}")


@backbone.command("run")
@dir_option
@click.option("--seconds", type=Finite(0.5, 3600), default=3.0, show_default=True)
@click.option(
    "--orpheus/--no-orpheus", default=True, show_default=True, help="Argo alone with --no-orpheus."
)
@json_option
@handled
def run(directory: Path, seconds: float, orpheus: bool, as_json: bool) -> None:
    """Run the controller with requests from site a for SECONDS; print what it did."""
    from ..lab.srcontrol import Client, Controller

    lab_ = _attach(directory)
    ctl = Controller(lab_, orpheus_on=orpheus)
    ctl.start()
    cli = Client(lab_, ctl)
    start = ctl.clock()
    results = []
    try:
        while ctl.clock() - start < seconds:
            results.append(cli.request())
    finally:
        cli.close()
        ctl.stop()
    failed = sum(not r.ok for r in results)
    ok = [r.rtt_ms for r in results if r.ok and r.rtt_ms is not None]
    changes = [
        {"at_s": round(t - start, 3), "round": r, "path": p, "why": w} for r, t, p, w in ctl.events
    ]
    out = {
        "changes": changes,
        "installed": ctl.installed,
        "requests": len(results),
        "failed": failed,
        "retried": sum(r.retried for r in results),
        "median_ms": round(statistics.median(ok), 2) if ok else None,
    }
    if as_json:
        click.echo(json.dumps(out, indent=1))
        return
    for c in changes:
        click.echo(f"{c['at_s']:7.3f} s  round {c['round']:3d}  -> {c['path']} ({c['why']})")
    click.echo(
        f"installed {out['installed']}; {len(results)} requests, {failed} failed,"
        f" {out['retried']} retried, median {out['median_ms']} ms"
    )
