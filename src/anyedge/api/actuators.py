"""The actuators ``anyedge control run`` can drive, chosen by ``actuator.kind``.

Each makes the network *match* a state (absolute, idempotent — the contract of
:class:`~anyedge.control.interfaces.Actuator`), so a restarted controller can enforce
its last journaled state again without repeating anything:

* ``dry-run`` — plans and journals, touches nothing; with ``log`` each enforcement is
  one JSON line (the decision's sequence number, the forwards and withdrawals it would
  carry out), and ``delay`` makes each enforcement take that long, to rehearse a slow
  change (and a controller killed in the middle of one);
* ``nft`` — Plurimog through nftables (:mod:`anyedge.adapters.nft`): per site, in its
  namespace (or this machine's), the share of each plan's flows to forward over each
  backbone link, one ``nft -f`` transaction per site;
* ``speakers`` — withdrawals through the sites' BGP speakers (FRR, BIRD, GoBGP, ExaBGP,
  :mod:`anyedge.adapters.bgp`): each site announces exactly its prefixes that the state
  does not withdraw.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..adapters import nft
from ..adapters.bgp.base import Route, SiteSpeaker
from ..control.codec import state_to
from ..control.core import Plan, State
from ..control.interfaces import Actuator
from ..control.reasons import Names
from .config import ControllerIn, beside
from .config import speaker as make_speaker


@dataclass
class DryRun:
    """Carries out nothing; says what it would have done."""

    names: Names
    log: Path | None = None
    delay: float = 0.0
    seq: Callable[[], int] = lambda: 0  # the decision being enforced
    enforced: int = 0

    def enforce(self, state: State, plan: Plan, now: float) -> None:
        line = {"seq": self.seq(), "time": now, "state": state_to(state, self.names)}
        if self.log is not None:
            with self.log.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"event": "begin", **line}) + "\n")
        if self.delay > 0:
            time.sleep(self.delay)
        if self.log is not None:
            with self.log.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"event": "done", "seq": line["seq"]}) + "\n")
        self.enforced += 1


@dataclass
class NftForwarder:
    """Plurimog by nftables, per site."""

    names: Names
    ports: dict[str, int]
    sites: dict[str, tuple[str | None, tuple[str, ...], tuple[str, ...], tuple[nft.Backbone, ...]]]
    apply: Callable[[str | None, str], None] = field(default=lambda ns, script: _nft(ns, script))

    def enforce(self, state: State, plan: Plan, now: float) -> None:
        f = state.forward
        for site, (namespace, anycast, ingress, links) in self.sites.items():
            i = self.names.sites.index(site)
            shares = [
                nft.Share(self.ports[self.names.plans[int(p)]], self.names.sites[int(d)], float(s))
                for p, d, s in zip(
                    f.plan[f.src == i], f.dst[f.src == i], f.share[f.src == i], strict=True
                )
                if s > 1e-9
            ]
            self.apply(namespace, nft.render(anycast, ingress, links, shares))


def _nft(namespace: str | None, script: str) -> None:
    import subprocess

    argv = ["nft", "-f", "-"]
    if namespace is not None:
        argv = ["ip", "netns", "exec", namespace, *argv]
    p = subprocess.run(argv, input=script, text=True, capture_output=True, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"nft in {namespace or 'this namespace'}: {p.stderr.strip()}")


@dataclass
class Speakers:
    """Withdrawals by BGP: each site announces its prefixes the state does not withdraw."""

    names: Names
    speakers: dict[str, SiteSpeaker]
    prefixes: dict[str, tuple[str, ...]]
    _assumed: bool = False

    def enforce(self, state: State, plan: Plan, now: float) -> None:
        withdrawn = {
            (self.names.prefixes[int(q)], self.names.sites[int(s)])
            for q, s in zip(*np.nonzero(state.withdrawn), strict=True)
        }
        for site, speaker in self.speakers.items():
            mine = self.prefixes.get(site, ())
            if not self._assumed:  # a driver made afresh: its daemon announces them all
                speaker.assume([Route(p) for p in mine])
            speaker.apply([Route(p) for p in mine if (p, site) not in withdrawn])
        self._assumed = True


@dataclass
class Network:
    """A site's whole network: forwards by nftables, then withdrawals by the speakers
    (each part enforces the whole state, so a step that failed half-way is redone)."""

    forwarder: NftForwarder
    speakers: Speakers

    def enforce(self, state: State, plan: Plan, now: float) -> None:
        self.forwarder.enforce(state, plan, now)
        self.speakers.enforce(state, plan, now)


def build(doc: ControllerIn, path: str | Path, names: Names, seq: Callable[[], int]) -> Actuator:
    """The actuator the configuration names."""
    act = doc.actuator
    if act.kind == "network":
        return Network(_forwarder(doc, names), _speakers(doc, path, names))
    if act.kind == "nft":
        return _forwarder(doc, names)
    if act.kind == "speakers":
        return _speakers(doc, path, names)
    log = beside(path, act.log) if act.log else None
    return DryRun(names, log, act.delay, seq)


def _forwarder(doc: ControllerIn, names: Names) -> NftForwarder:
    act = doc.actuator
    sites = {
        s: (
            c.namespace,
            c.anycast,
            c.ingress,
            tuple(nft.Backbone(x.index, x.to, x.ifname, x.via, x.shared) for x in c.links),
        )
        for s, c in act.nft.items()
    }
    return NftForwarder(names, dict(act.ports), sites)


def _speakers(doc: ControllerIn, path: str | Path, names: Names) -> Speakers:
    speakers = {s: make_speaker(s, c, path) for s, c in doc.actuator.speakers.items()}
    return Speakers(names, speakers, {s.name: s.prefixes for s in doc.sites})
