"""The Traffic Predictor's real-world test, in the lab.

As the reference describes it: every site announces a special anycast range beside the
production prefixes (:data:`~.plan.TEST_PREFIX`).  To learn where a site's users would
go if the site failed, the predictor

1. probes the test address from every client and keeps those that a site answers;
2. withdraws the test prefix at that site only — production traffic does not move —
   waits for routing to settle, and probes those clients again;
3. records, per receiving site, the share of the site's clients that landed there;
4. announces the test prefix again.

:func:`run` does this for each site and sets the measured failover beside the one the
predictor computes (:class:`~anyedge.predict.predictor.Predictor` on the lab's model, for
the test prefix, single-site scenarios).  Every client counts the same, as every client
is one eyeball of equal demand in the model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..adapters.bgp.base import Route
from ..model.world import World
from ..predict.predictor import Predictor
from ..predict.scenarios import Scenario
from ..routing import Mode
from .build import LabState
from .compare import announcement, check_not_forwarding, current_routes
from .measure import Announcer, dominant, probe_all
from .plan import TEST_PREFIX, LabPlan, client_names, lab_world


@dataclass(frozen=True)
class Trial:
    site: str
    clients: tuple[str, ...]  # the clients the site answered before
    measured: dict[str, float]  # receiving site (or "none") -> share of those clients
    model_clients: tuple[str, ...]  # the clients the model says the site serves
    predicted: dict[str, float]  # the predictor's shares for the same failure

    @property
    def agree(self) -> bool:
        if set(self.clients) != set(self.model_clients):
            return False
        keys = set(self.measured) | set(self.predicted)
        return all(abs(self.measured.get(k, 0) - self.predicted.get(k, 0)) < 1e-9 for k in keys)

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "clients": list(self.clients),
            "measured": self.measured,
            "model_clients": list(self.model_clients),
            "predicted": self.predicted,
            "agree": self.agree,
        }


def predicted_failover(
    world: World, sites: list[str], routes: dict[str, list[Route]]
) -> dict[str, tuple[tuple[str, ...], dict[str, float]]]:
    """Per failed site: the clients the model says it serves, and the predictor's
    shares of them per receiving site, for the test prefix as the sites announce it."""
    model = lab_world(world)
    codes = model.network.sites.code
    q = model.network.prefixes.cidr.index(TEST_PREFIX)
    pred = Predictor(model, q, Mode.AS, announcement(model, TEST_PREFIX, routes))
    clients = client_names(world)
    metro_id = model.internet.metros.id
    owner = [
        clients[int(metro_id[model.internet.eyeballs.metro[e]]) - 1]
        for e in range(len(model.internet.eyeballs.rps))
    ]
    out = {}
    for s in sites:
        i = codes.index(s)
        served = tuple(sorted(owner[e] for e in np.flatnonzero(pred.base.eyeball_site == i)))
        o = pred.outcome(Scenario("single", (i,)))
        shares = {codes[r]: v for r, v in o.shares().items()}
        if o.failed_rps > 0 and o.unreached_rps > 0:
            shares["none"] = o.unreached_rps / o.failed_rps
        out[s] = (served, shares)
    return out


def run(
    world: World, plan: LabPlan, directory: Path, sites: list[str] | None = None, flows: int = 10
) -> list[Trial]:
    state = LabState.load(directory)
    check_not_forwarding(state)
    routes = current_routes(plan, state)
    codes = sites or [str(n.site) for n in plan.sites]
    predicted = predicted_failover(world, codes, routes)
    ann = Announcer(plan, directory)
    out = []
    for code in codes:
        before = probe_all(plan, flows=flows, address=plan.test_address)
        mine = tuple(sorted(c for c, r in before.items() if dominant(r) == code))
        measured: dict[str, float] = {}
        keep = routes[code]
        if mine and any(r.prefix == TEST_PREFIX for r in keep):
            with ann.changed(code, [r for r in keep if r.prefix != TEST_PREFIX]):
                ann.settle()
                after = probe_all(plan, list(mine), flows=flows, address=plan.test_address)
            landed = Counter(dominant(after[c]) or "none" for c in mine)
            measured = {k: v / len(mine) for k, v in sorted(landed.items())}
        served, shares = predicted[code]
        out.append(Trial(code, mine, measured, served, shares))
    return out
