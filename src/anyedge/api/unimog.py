"""Unimog in the service: every step, each site's server weights from its servers' CPU,
put in force by the site's balancer.

The Traffic Manager's finest granularity.  Plurimog and Duomog move traffic between
sites and sections (the decisions the journal keeps); inside a site the load balancer
(:mod:`anyedge.edge.balancer`, loaded and held by the site's edge agent,
:mod:`anyedge.lab.edge`) spreads flows over the servers by a bucket table, and a server
that runs hotter than the others should get fewer buckets.  Each step, per site:

1. Prometheus says each server's CPU time and capacity (ms/s; PromQL labelled by site
   and server, ``actuator.balancer.cpu`` and ``capacity``);
2. the agent says its table in force: servers by name, weights and states;
3. :func:`new_weights` — :func:`anyedge.balance.weights_from_cpu` over the active
   servers that Prometheus knows (a server without numbers keeps its weight, and is
   named in the problems; damping and floor from the configuration); if no weight
   changes by more than ``min_change`` of itself, the table is left as it is;
4. the agent gets the new weights (``{"op": "weights"}``), makes the table that moves
   the fewest buckets (:meth:`anyedge.balance.Table.change`), and puts it in force in
   every server's XDP program (one map swap each).

The weights are not journaled: they are what the last measurement says, computed again
every step from the table in force, which the agent keeps across a restart of the
controller.  A site whose agent or telemetry fails keeps its table (fail static); the
failure is counted (``anyedge_controller_enforce_failures_total{actuator="balancer"}``)
and the next step tries again.  Frozen, the service does not step the balancer either.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..adapters.prometheus import query
from ..balance import weights_from_cpu
from ..balance.table import ServerState
from .config import BalancerIn, beside

Ask = Callable[[Path, str, dict[str, Any]], Any]


@dataclass(frozen=True)
class Reweighed:
    """One site's new weights (by server name) and the buckets that moved."""

    site: str
    weights: dict[str, float]
    moved: int


def new_weights(
    names: Sequence[str],
    weights: Sequence[float],
    states: Sequence[int],
    cpu: Mapping[str, float],
    capacity: Mapping[str, float],
    *,
    damping: float = 0.5,
    floor: float = 0.02,
    min_change: float = 0.02,
) -> tuple[dict[str, float] | None, list[str]]:
    """The weights a site's servers should have (``None``: leave the table as it is),
    and why a server was left out."""
    problems = []
    live = []
    for i, n in enumerate(names):
        if states[i] != ServerState.ACTIVE or not weights[i] > 0:
            continue
        t, c = cpu.get(n, math.nan), capacity.get(n, math.nan)
        if not (math.isfinite(t) and t >= 0):
            problems.append(f"{n}: no CPU time ({t})")
        elif not (math.isfinite(c) and c > 0):
            problems.append(f"{n}: no capacity ({c})")
        else:
            live.append(i)
    if len(live) < 2:  # one server's weight is all of it: nothing to even out
        return None, problems
    w = np.array([weights[i] for i in live])
    new = weights_from_cpu(
        w,
        [cpu[names[i]] for i in live],
        [capacity[names[i]] for i in live],
        damping=damping,
        floor=floor,
    )
    if float(np.max(np.abs(new - w) / w)) <= min_change:
        return None, problems
    return {names[i]: float(x) for i, x in zip(live, new.tolist(), strict=True)}, problems


def _ask(path: Path, site: str, req: dict[str, Any]) -> Any:
    from ..lab.edge import ask

    return ask(path, site, req, 10.0)


@dataclass
class ServerWeights:
    """The balancer part of the actuator: Unimog for the configured sites."""

    url: str
    cfg: BalancerIn
    agents: dict[str, Path]
    timeout: float = 5.0
    send: Ask = _ask
    weights: dict[tuple[str, str], float] = field(default_factory=dict)  # last known
    problems: dict[str, list[str]] = field(default_factory=dict)
    moved: int = 0  # buckets moved, in all

    @classmethod
    def of(cls, url: str, cfg: BalancerIn, path: str | Path, timeout: float) -> ServerWeights:
        agents = {s: beside(path, c.agent) for s, c in cfg.sites.items()}
        return cls(url, cfg, agents, timeout)

    def _per_server(self, expr: str) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for x in query(self.url, expr, timeout=self.timeout):
            site, server = x.labels.get("site"), x.labels.get(self.cfg.server_label)
            if site is not None and server is not None:
                out.setdefault(site, {})[server] = x.value
        return out

    def step(self) -> tuple[list[Reweighed], list[tuple[str, Exception]]]:
        """One round over the sites: what changed, and what failed (by site)."""
        done: list[Reweighed] = []
        failed: list[tuple[str, Exception]] = []
        try:
            cpu = self._per_server(self.cfg.cpu)
            capacity = self._per_server(self.cfg.capacity)
        except Exception as e:  # Prometheus down: every table stays as it is
            return done, [(s, e) for s in self.agents]
        for site, agent in self.agents.items():
            try:
                t = self.send(agent, site, {"op": "table"})
                names = list(t["names"])
                for n, w in zip(names, t["weight"], strict=True):
                    self.weights[site, n] = float(w)
                want, self.problems[site] = new_weights(
                    names, t["weight"], t["state"], cpu.get(site, {}), capacity.get(site, {}),
                    damping=self.cfg.damping, floor=self.cfg.floor,
                    min_change=self.cfg.min_change,
                )  # fmt: skip
                if want is None:
                    continue
                out = self.send(agent, site, {"op": "weights", "weights": want})
                for n, w in want.items():
                    self.weights[site, n] = w
                self.moved += int(out.get("moved", 0))
                done.append(Reweighed(site, want, int(out.get("moved", 0))))
            except Exception as e:  # this site keeps its table; the others go on
                failed.append((site, e))
        return done, failed
