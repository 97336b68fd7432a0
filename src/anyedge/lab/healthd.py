"""Health-checked announcements in the lab: a checker and an agent at every site.

:mod:`anyedge.health` decides, sans-IO, when a site should announce a service's prefix;
this module gives it I/O at each lab site, in two processes, so that each can die
without taking the other's judgement with it:

* the **checker** (``python -m anyedge.lab.healthd check``, in the site's namespace)
  asks the site's own DNS server for the zone's A record on the anycast address every
  ``interval`` seconds, and sends ``pass`` or ``fail`` (the server answered, as this
  site, or it did not) to the agent's Unix datagram socket (``health.sock`` in the
  node's directory);
* the **agent** (``python -m anyedge.lab.healthd agent``) owns the site's
  :class:`~anyedge.health.Health`: each result goes in with the agent's own clock; when
  no result comes, it wakes at :meth:`~anyedge.health.Health.deadline` (the dead-man
  timer — a dead checker withdraws the prefix).  After each event it *reconciles*: under
  the lab's lock it reads which sites announce the service prefix now (the lab's state,
  shared by every site's agent and by ``anyedge lab`` commands), runs
  :func:`~anyedge.health.decide` with its own wish and every other site kept as it is —
  so the last announcing site is never withdrawn without ``--override`` — and carries
  the change out through the site's real BGP speaker (FRR, BIRD, GoBGP or ExaBGP),
  recording it in the state.  The agent also takes ``drain`` / ``undrain`` on the same
  socket (:func:`send`).

Every change and every held withdrawal is a JSON line in ``health.jsonl`` in the node's
directory (time, announce, held, reason code and text).  :func:`start` runs both
processes at every site and waits until each site has announced after its first
``rise`` passes; their ids go into the lab's state, so ``anyedge lab down`` ends them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..adapters import netns
from ..adapters.bgp.base import Route
from ..health import Health, Reason, Settings, Wish, decide
from .build import LabError, attach, locked, node_dir, speaker_of
from .plan import LabPlan, NodePlan

SOCKET = "health.sock"
LOG = "health.jsonl"


@dataclass(frozen=True)
class CheckSettings:
    """How often the checker asks and how long it waits, beside rise/fall/dead-man."""

    health: Settings = field(default_factory=Settings)
    interval: float = 1.0
    timeout: float = 0.5
    override: bool = False  # the operator's override of the last-site guard


def socket_path(directory: Path, node: NodePlan) -> Path:
    return node_dir(directory, node.name) / SOCKET


def log_path(directory: Path, node: NodePlan) -> Path:
    return node_dir(directory, node.name) / LOG


def events(directory: Path, node: NodePlan) -> list[dict[str, Any]]:
    """What the site's agent has logged so far."""
    path = log_path(directory, node)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def send(directory: Path, node: NodePlan, message: str) -> None:
    """Send ``drain``, ``undrain``, ``pass`` or ``fail`` to the site's agent."""
    if message not in ("pass", "fail", "drain", "undrain"):
        raise ValueError(f"unknown message {message!r}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(message.encode(), str(socket_path(directory, node)))


# -------------------------------------------------------------------------- agent


class Agent:
    """One site's announcer: check results in, announcements through its speaker out."""

    def __init__(self, plan: LabPlan, directory: Path, site: str, settings: CheckSettings):
        self.plan, self.directory, self.settings = plan, directory, settings
        self.node = plan.site_node(site)
        self.index = [n.name for n in plan.sites].index(self.node.name)
        self.prefix = plan.prefixes[0]  # the service prefix
        self.health = Health(settings.health, started=time.monotonic())
        self._last: tuple[bool, str, bool] | None = None
        self._log = log_path(directory, self.node).open("a")

    def handle(self, message: str, now: float) -> None:
        if message in ("pass", "fail"):
            self.health.check(message == "pass", now)
        elif message == "drain":
            self.health.drain()
        elif message == "undrain":
            self.health.undrain()
        self.reconcile(now)

    def reconcile(self, now: float) -> None:
        wish = self.health.wish(now)
        with locked(self.directory) as state:
            routes = {
                n.name: [Route(p, int(k)) for p, k in state.routes.get(n.name, [])]
                for n in self.plan.sites
            }
            announcing = [
                any(r.prefix == self.prefix for r in routes[n.name]) for n in self.plan.sites
            ]
            wishes = [
                wish if i == self.index else Wish(on, Reason("healthy" if on else "starting"))
                for i, on in enumerate(announcing)
            ]
            mine = [
                c
                for c in decide(wishes, announcing, self.settings.override)
                if c.site == self.index
            ]
            for c in mine:
                if c.held and self._last == (c.announce, c.reason.code, True):
                    continue
                if not c.held:
                    now_routes = routes[self.node.name]
                    want = [r for r in now_routes if r.prefix != self.prefix]
                    if c.announce:
                        want.insert(0, Route(self.prefix))
                    drv = speaker_of(self.plan, self.node, self.directory)
                    drv.assume(now_routes)
                    drv.apply(want)
                    state.routes[self.node.name] = [[r.prefix, r.prepend] for r in want]
                    state.save(self.directory)
                self.record(c.announce, c.reason, c.held, change=not c.held)
        if not mine:
            self.record(announcing[self.index], wish.reason, False, change=False)

    def record(self, announce: bool, reason: Reason, held: bool, change: bool = True) -> None:
        key = (announce, reason.code, held)
        if key == self._last and not change:
            return  # the same as last logged: a held withdrawal is logged once
        self._last = key
        line = {
            "t": time.time(),
            "site": self.node.site,
            "announce": announce,
            "held": held,
            "change": change,
            "reason": reason.code,
            "text": reason.text(),
        }
        self._log.write(json.dumps(line) + "\n")
        self._log.flush()

    def run(self) -> None:
        path = socket_path(self.directory, self.node)
        path.unlink(missing_ok=True)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.bind(str(path))
            print("ready", flush=True)
            while True:
                now = time.monotonic()
                deadline = self.health.deadline()
                s.settimeout(max(0.01, min(deadline - now, 1.0)))
                try:
                    data = s.recv(64)
                except TimeoutError:
                    self.reconcile(time.monotonic())  # the dead-man timer, or another site
                    continue
                self.handle(data.decode(errors="replace").strip(), time.monotonic())


# ------------------------------------------------------------------------ checker


def check_loop(directory: Path, node: NodePlan, settings: CheckSettings) -> None:
    """Ask the local server every ``interval``; tell the agent (runs in the site)."""
    from .dns import query

    target = str(socket_path(directory, node))
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        print("ready", flush=True)
        while True:
            t0 = time.monotonic()
            try:
                ok = query(None, node.anycast[0], timeout=settings.timeout).site == node.site
            except Exception:  # no answer, a refused port, a bad answer: the check failed
                ok = False
            # if the agent is not there (yet), it will notice the silence
            with contextlib.suppress(OSError):
                s.sendto(b"pass" if ok else b"fail", target)
            time.sleep(max(0.0, settings.interval - (time.monotonic() - t0)))


# -------------------------------------------------------------------------- start


@dataclass(frozen=True)
class Pids:
    agent: int
    checker: int


def _argv(mode: str, directory: Path, site: str, settings: CheckSettings) -> list[str]:
    h = settings.health
    argv = [sys.executable, "-m", "anyedge.lab.healthd", mode, "--dir", str(directory)]
    argv += ["--site", site, "--rise", str(h.rise), "--fall", str(h.fall)]
    argv += ["--deadman", str(h.deadman_s), "--interval", str(settings.interval)]
    argv += ["--timeout", str(settings.timeout)]
    return argv + (["--override"] if settings.override else [])


def _spawn(plan: LabPlan, directory: Path, node: NodePlan, mode: str, s: CheckSettings) -> int:
    log = node_dir(directory, node.name) / f"health-{mode}.out"
    pid = netns.spawn(node.namespace, _argv(mode, directory, str(node.site), s), log)
    with locked(directory) as state:
        state.pids.setdefault(node.name, []).append(pid)
        state.save(directory)
    end = time.monotonic() + 10.0
    while "ready" not in (log.read_text(errors="replace").splitlines() if log.exists() else []):
        if not netns.alive(pid) or time.monotonic() > end:
            tail = log.read_text(errors="replace")[-400:] if log.exists() else ""
            raise LabError(f"{node.site}: the health {mode} did not start: {tail}")
        time.sleep(0.05)
    return pid


def start_checker(plan: LabPlan, directory: Path, site: str, settings: CheckSettings) -> int:
    return _spawn(plan, directory, plan.site_node(site), "check", settings)


def start(
    plan: LabPlan,
    directory: Path,
    settings: CheckSettings = CheckSettings(),
    sites: Iterable[str] | None = None,
    timeout: float = 30.0,
) -> dict[str, Pids]:
    """An agent and a checker at every site (or at ``sites``); waits until each
    announces the service prefix on its checks' word."""
    nodes = [plan.site_node(s) for s in sites] if sites else list(plan.sites)
    out: dict[str, Pids] = {}
    for n in nodes:
        log_path(directory, n).unlink(missing_ok=True)
        agent = _spawn(plan, directory, n, "agent", settings)
        out[str(n.site)] = Pids(agent, _spawn(plan, directory, n, "check", settings))
    end = time.monotonic() + timeout
    for n in nodes:
        while not any(e["announce"] and e["reason"] == "healthy" for e in events(directory, n)):
            if time.monotonic() > end:
                raise LabError(f"{n.site}: not announced on its checks in {timeout:g} s")
            time.sleep(0.1)
    return out


# ---------------------------------------------------------------------------- main


def main(argv: Iterable[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m anyedge.lab.healthd")
    p.add_argument("mode", choices=["agent", "check"])
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--site", required=True)
    p.add_argument("--rise", type=int, default=2)
    p.add_argument("--fall", type=int, default=3)
    p.add_argument("--deadman", type=float, default=30.0)
    p.add_argument("--interval", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=0.5)
    p.add_argument("--override", action="store_true")
    a = p.parse_args(None if argv is None else list(argv))
    settings = CheckSettings(Settings(a.rise, a.fall, a.deadman), a.interval, a.timeout, a.override)
    _, plan, _ = attach(a.dir)
    if a.mode == "agent":
        Agent(plan, a.dir, a.site, settings).run()
    else:
        check_loop(a.dir, plan.site_node(a.site), settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
