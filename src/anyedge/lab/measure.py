"""Probing a running lab from its clients, and steering its sites' announcements.

Probes run inside each client's namespace as ``python -m anyedge.lab.probe`` (all
clients at once, one process each) and say which site answered each flow.  A
:class:`Announcer` changes what a site's BGP speaker announces through the speaker's
driver and records it in the lab's state, so that every later command knows what is
announced where.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..adapters.bgp.base import Route
from ..model.lab import NodeKind
from .build import LabError, LabState, speaker_of, wait_converged
from .plan import LabPlan


def probe_all(
    plan: LabPlan,
    clients: Iterable[str] | None = None,
    flows: int = 20,
    port: int | None = None,
    timeout: float = 1.0,
    tcp: bool = False,
    address: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Probe the service address from every client at once: client -> probe result
    (``answers``: site code -> flows, ``lost``)."""
    names = (
        list(clients) if clients is not None else [n.name for n in plan.of_kind(NodeKind.CLIENT)]
    )
    port = port or plan.ports[0]
    procs = {}
    for c in names:
        argv = ["ip", "netns", "exec", plan.node(c).namespace, sys.executable, "-m"]
        argv += ["anyedge.lab.probe", "flows", "--address", address or plan.service_address]
        argv += ["--port", str(port), "--flows", str(flows), "--timeout", str(timeout)]
        if tcp:
            argv.append("--tcp")
        procs[c] = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: dict[str, dict[str, Any]] = {}
    for c, p in procs.items():
        stdout, stderr = p.communicate(timeout=timeout * 4 + 30)
        if p.returncode != 0:
            raise LabError(f"probe from {c} failed: {stderr.strip()[-300:]}")
        out[c] = json.loads(stdout)
    return out


def dominant(result: dict[str, Any]) -> str | None:
    """The site that answered most flows (None if none answered)."""
    answers: dict[str, int] = result.get("answers", {})
    if not answers:
        return None
    return max(sorted(answers), key=lambda s: answers[s])


class Announcer:
    """Announce, withdraw or prepend the anycast prefixes at a site, for real."""

    def __init__(self, plan: LabPlan, directory: Path) -> None:
        self.plan = plan
        self.directory = directory
        self.state = LabState.load(directory)
        if not self.state.ready:
            raise LabError(f"{directory}: the lab is not up (or its up did not finish)")

    def routes(self, site: str) -> list[Route]:
        node = self.plan.site_node(site)
        return [Route(p, int(n)) for p, n in self.state.routes.get(node.name, [])]

    def set(self, site: str, routes: Iterable[Route]) -> None:
        node = self.plan.site_node(site)
        want = list(routes)
        drv = speaker_of(self.plan, node, self.directory)
        drv.assume(self.routes(site))
        drv.apply(want)
        self.state.routes[node.name] = [[r.prefix, r.prepend] for r in want]
        self.state.save(self.directory)

    def withdraw(self, site: str) -> None:
        self.set(site, [])

    def announce(self, site: str, prepend: int = 0) -> None:
        node = self.plan.site_node(site)
        self.set(site, [Route(p, prepend) for p in node.prefixes])

    def settle(self, timeout: float = 30.0) -> float:
        """Wait for BGP to converge after a change; returns the seconds it took."""
        return wait_converged(self.plan, self.directory, timeout, quiet=1.0)


def wait_for(pred: Any, timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())
