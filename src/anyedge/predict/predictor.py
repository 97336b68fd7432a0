"""The Traffic Predictor: where a failed site's traffic goes, and who can take it.

For one world and one prefix the :class:`Predictor` computes the *base* catchment (every
announcing site up) once.  A scenario withdraws the prefix at its failed sites; the
routing engine updates the base incrementally (only the networks whose routes change,
only the users whose paths crossed them), and the predictor compares users' sites
before and after:

* **flows** — how much of the failed sites' demand lands where (the reference's
  "CHC → AKL 99.8 %"), and how much finds no site at all;
* **load** — CPU time per site after the move (requests/s × each plan's cost), against
  the site's capacity and its maximum threshold: a receiver pushed over it is the
  thundering herd the Traffic Manager must prevent.

Demand is each metro's evening peak, the worst case.  A ``section`` scenario moves no
route: the site keeps its users on fewer servers.

:meth:`Predictor.run` maps scenarios over worker processes (forked, so each inherits
the routing engine already built) or over a Ray cluster (:mod:`.backends`); each
scenario's outcome depends only on the world and the scenario, so every backend gives
the same atlas.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ..model.world import World
from ..routing import Announcement, Catchment, Mode, Router
from .scenarios import Scenario

FloatArray = npt.NDArray[np.floating[Any]]


@dataclass(frozen=True)
class Outcome:
    """What one scenario does, sparsely: only the sites it touches."""

    scenario: Scenario
    failed_rps: float  # base demand of the failed sites
    moved_to: dict[int, float]  # receiving site -> requests/s from the failed sites
    unreached_rps: float  # failed demand that no site receives any more
    collateral_rps: float  # demand of sites still up that changed site anyway
    cpu_delta: dict[int, float] = field(default_factory=dict)  # site -> CPU ms/s change
    capacity_delta: dict[int, float] = field(default_factory=dict)  # site -> ms/s lost

    def shares(self) -> dict[int, float]:
        """Share of the failed demand each receiver gets (with unreached, sums to 1)."""
        if self.failed_rps <= 0:
            return {}
        return {s: r / self.failed_rps for s, r in self.moved_to.items()}


class Predictor:
    """Predicts scenario outcomes for one world and one prefix."""

    def __init__(
        self,
        world: World,
        prefix: int = 0,
        mode: Mode = Mode.METRO,
        announcement: Announcement | None = None,
    ) -> None:
        """``announcement``: what the sites announce of the prefix now (default: what
        the topology says)."""
        self.world = world
        self.prefix = prefix
        self.router = Router(world, mode)
        self.announcement = announcement or Announcement.of_prefix(world.network, prefix)
        self.base: Catchment = self.router.catchment(self.announcement)
        self.eyeball_cpu = world.eyeball_cpu()
        self.capacity = world.network.site_capacity()
        self.maximum = world.network.sites.thresholds[:, 0].copy()
        self.base_cpu = self.cpu_by_site(self.base.eyeball_site)

    def cpu_by_site(self, site: npt.NDArray[np.int64]) -> FloatArray:
        ok = site >= 0
        return np.bincount(
            site[ok], weights=self.eyeball_cpu[ok], minlength=len(self.world.network.sites)
        ).astype(np.float64)

    def catchment(self, sc: Scenario) -> Catchment:
        if not sc.failed:
            return self.base
        return self.router.change(self.base, self.announcement.withdraw(*sc.failed))

    def outcome(self, sc: Scenario) -> Outcome:
        rps = self.world.internet.eyeballs.rps
        before = self.base.eyeball_site
        if sc.kind == "section":
            sec = self.world.network.sections
            site = int(sec.site[sc.section])
            return Outcome(sc, 0.0, {}, 0.0, 0.0, {}, {site: float(sec.capacity[sc.section])})
        after = self.catchment(sc).eyeball_site
        failed = np.isin(before, np.asarray(sc.failed, dtype=np.int64))
        moved = failed & (after >= 0)
        to = np.bincount(after[moved], weights=rps[moved], minlength=len(self.world.network.sites))
        changed = (after != before) & ~failed
        delta = self.cpu_by_site(after) - self.base_cpu
        return Outcome(
            scenario=sc,
            failed_rps=float(rps[failed].sum()),
            moved_to={int(s): float(to[s]) for s in np.flatnonzero(to > 0)},
            unreached_rps=float(rps[failed & (after < 0)].sum()),
            collateral_rps=float(rps[changed].sum()),
            cpu_delta={int(s): float(delta[s]) for s in np.flatnonzero(np.abs(delta) > 1e-9)},
        )

    # ------------------------------------------------------------------ load after a failure

    def load_after(self, o: Outcome) -> tuple[FloatArray, FloatArray]:
        """(CPU ms/s, capacity ms/s) of every site under the scenario."""
        cpu = self.base_cpu.copy()
        cap = self.capacity.copy()
        for s, d in o.cpu_delta.items():
            cpu[s] += d
        for s, d in o.capacity_delta.items():
            cap[s] -= d
        return cpu, cap

    def utilisation(self, cpu: FloatArray, cap: FloatArray) -> FloatArray:
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(cap > 0, cpu / np.where(cap > 0, cap, 1.0), np.where(cpu > 0, np.inf, 0.0))
        return np.asarray(u)

    def risk(self, o: Outcome) -> tuple[float, float, list[int]]:
        """(added CPU ms/s above maximum thresholds, worst utilisation, overloaded sites).

        Only the sites the scenario loads more or shrinks count, and only while up; the
        excess is what the scenario adds to any the site had before it (at the peak some
        sites are over their maximum already: BGP does not send users to the nearest site).
        """
        cpu, cap = self.load_after(o)
        touched = np.zeros(cpu.size, dtype=np.bool_)
        touched[[s for s, d in o.cpu_delta.items() if d > 0]] = True
        touched[list(o.capacity_delta)] = True
        touched[list(o.scenario.failed)] = False
        after = np.maximum(cpu - cap * self.maximum, 0.0)
        before = np.maximum(self.base_cpu - self.capacity * self.maximum, 0.0)
        added = np.where(touched, np.maximum(after - before, 0.0), 0.0)
        over = np.flatnonzero(added > 1e-9)
        u = self.utilisation(cpu, cap)[touched]
        return float(added.sum()), float(u.max(initial=0.0)), over.tolist()
