"""Probing a running lab from its clients, and steering its sites' announcements.

A probe of flows runs for each client in a thread of this process that has entered the
client's network namespace (all clients at once): its sockets are the client's, and
:func:`anyedge.lab.probe.probe_flows` says which site answered each flow.  (A process
per client, ``ip netns exec … python -m anyedge.lab.probe``, cost ~0.1 CPU-s and up to
a second each to start; the steady ``load`` and ``watch`` probes, which run beside other
steps and are ended by a signal, still run so, from :func:`probe_argv`.)  A
:class:`Announcer` changes what a site's BGP speaker announces through the speaker's
driver and records it in the lab's state, so that every later command knows what is
announced where.
"""

from __future__ import annotations

import fnmatch
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..adapters import netns
from ..adapters.bgp.base import Route, SpeakerError
from ..model.lab import NodeKind
from .build import LabError, LabState, check_daemons, locked, speaker_of, wait_converged
from .plan import LabPlan
from .probe import ProbeError, probe_flows


def choose_clients(plan: LabPlan, patterns: Iterable[str]) -> tuple[list[str], list[str]]:
    """The lab's clients that ``patterns`` (names or shell globs: ``c1``, ``c*``) name, in
    the topology's order, and the patterns that name no client (with why)."""
    clients = [n.name for n in plan.of_kind(NodeKind.CLIENT)]
    kinds = {n.name: n.kind for n in plan.nodes}
    chosen: set[str] = set()
    bad: list[str] = []
    for p in patterns:
        hit = fnmatch.filter(clients, p)
        if hit:
            chosen.update(hit)
        elif p in kinds:
            bad.append(f"{p} is a {kinds[p]}, not a client")
        else:
            bad.append(f"no client {p!r}")
    return [c for c in clients if c in chosen], bad


def probe_all(
    plan: LabPlan,
    clients: Iterable[str] | None = None,
    flows: int = 20,
    port: int | None = None,
    timeout: float = 1.0,
    tcp: bool = False,
    address: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Probe an anycast address (the service address by default) from every client at
    once: client -> probe result (``answers``: site code -> flows, ``lost``)."""
    names = [n.name for n in plan.of_kind(NodeKind.CLIENT)] if clients is None else list(clients)
    to = address or plan.service_address
    dport = port or plan.ports[0]

    def one(client: str) -> dict[str, Any]:
        with netns.entered(plan.node(client).namespace):
            return probe_flows(to, dport, flows, timeout=timeout, tcp=tcp, share=len(names))

    out: dict[str, dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        running = {c: pool.submit(one, c) for c in names}
        for c, f in running.items():
            try:
                out[c] = f.result()
            except (OSError, ProbeError, ValueError) as e:
                raise LabError(f"probe from {c} failed: {e}") from None
    return out


def probe_argv(
    plan: LabPlan, client: str, mode: str, address: str | None = None, port: int | None = None
) -> list[str]:
    """The command that runs ``python -m anyedge.lab.probe MODE`` on ``client``."""
    argv = ["ip", "netns", "exec", plan.node(client).namespace, sys.executable, "-m"]
    argv += ["anyedge.lab.probe", mode, "--address", address or plan.service_address]
    return [*argv, "--port", str(port or plan.ports[0])]


def dominant(result: dict[str, Any]) -> str | None:
    """The site that answered most flows (None if none answered)."""
    answers: dict[str, int] = result.get("answers", {})
    if not answers:
        return None
    return max(sorted(answers), key=lambda s: answers[s])


class Announcer:
    """Announce, withdraw or prepend the anycast prefixes at a site, for real.

    Each change goes through the site's own speaker under the lab's lock, and is
    recorded in the lab's state; :meth:`settle` then waits until the site's routers
    have heard it and the routes have stopped changing.  Made on a lab whose BGP daemon
    died without a recorded fault, it refuses before anything changes; :meth:`changed`
    makes a change for a block and always puts it back, or says it could not.
    """

    def __init__(
        self, plan: LabPlan, directory: Path, faults: Iterable[Mapping[str, Any]] = ()
    ) -> None:
        """``faults``: fault records beyond those the lab's state holds (see .faults),
        whose sessions settling does not wait for."""
        self.plan = plan
        self.directory = directory
        self.faults = list(faults)
        if not LabState.load(directory).ready:
            raise LabError(f"{directory}: the lab is not up (or its up did not finish)")
        check_daemons(plan, directory)
        self._expect: dict[str, dict[str, int]] = {}

    @contextmanager
    def changed(self, site: str, routes: Iterable[Route]) -> Iterator[None]:
        """``site`` announces ``routes`` during the block, then what it announced
        before (settled) — also when the block fails, whose error then says whether
        the site was put back."""
        before = self.routes(site)
        self.set(site, routes)
        try:
            yield
        except LabError as e:
            raise LabError(f"{e}; {self._put_back(site, before) or f'{site} was put back'}") from e
        except BaseException:
            self._put_back(site, before)
            raise
        failed = self._put_back(site, before)
        if failed:
            raise LabError(failed)

    def _put_back(self, site: str, routes: list[Route]) -> str | None:
        """Announce ``routes`` at ``site`` again and settle; what went wrong, if it did."""
        try:
            self.set(site, routes)
        except LabError as e:
            now = (
                ", ".join(
                    f"{p} +{k}"
                    for p, k in LabState.load(self.directory).routes.get(
                        self.plan.site_node(site).name, []
                    )
                )
                or "nothing"
            )
            return (
                f"{site} could not be put back as it was ({e}): it announces {now} "
                f"(anyedge lab announce {site}, or anyedge lab heal)"
            )
        try:
            self.settle()
        except LabError as e:
            return f"{site} was put back as it was, but BGP did not settle: {e}"
        return None

    def routes(self, site: str) -> list[Route]:
        node = self.plan.site_node(site)
        state = LabState.load(self.directory)
        return [Route(p, int(n)) for p, n in state.routes.get(node.name, [])]

    def set(self, site: str, routes: Iterable[Route]) -> None:
        node = self.plan.site_node(site)
        want = list(routes)
        drv = speaker_of(self.plan, node, self.directory)
        with locked(self.directory) as state:
            if any(f.get("kind") == "daemon" and f.get("node") == node.name for f in state.faults):
                raise LabError(
                    f"{site}: its {node.speaker} speaker was killed (anyedge lab fault kill "
                    f"{node.name}), so nothing was changed: anyedge lab fault restart "
                    f"{node.name}, or anyedge lab heal, first"
                )
            drv.assume(Route(p, int(n)) for p, n in state.routes.get(node.name, []))
            try:
                drv.apply(want)
            except (SpeakerError, OSError, subprocess.SubprocessError) as e:
                raise LabError(f"{site}: its {node.speaker} speaker did not take it: {e}") from e
            state.routes[node.name] = [[r.prefix, r.prepend] for r in want]
            state.save(self.directory)
        for p in node.bgp_ports:
            # the router at the other end must now have exactly these prefixes from us
            self._expect.setdefault(p.peer, {})[p.ip] = len(want)

    def withdraw(self, site: str, prefixes: Iterable[str] = ()) -> None:
        """Withdraw every prefix at ``site``, or only ``prefixes`` (the rest stay)."""
        drop = set(prefixes)
        self.set(site, [r for r in self.routes(site) if drop and r.prefix not in drop])

    def announce(self, site: str, prepend: int = 0, prefixes: Iterable[str] = ()) -> None:
        """Announce every prefix of ``site``, or only ``prefixes`` (what else it announces
        stays as it is), with its ASN ``prepend`` more times."""
        node = self.plan.site_node(site)
        chosen = set(prefixes) or set(node.prefixes)
        kept = [r for r in self.routes(site) if r.prefix not in chosen]
        new = [Route(p, prepend) for p in node.prefixes if p in chosen]
        order = {p: i for i, p in enumerate(node.prefixes)}
        self.set(site, sorted([*kept, *new], key=lambda r: order.get(r.prefix, len(order))))

    def settle(self, timeout: float = 30.0) -> float:
        """Wait until the changes made here have reached the routers and BGP has
        converged; returns when the routes last changed."""
        expect, self._expect = self._expect, {}
        return wait_converged(
            self.plan, self.directory, timeout, quiet=1.0, expect=expect, faults=self.faults
        )
