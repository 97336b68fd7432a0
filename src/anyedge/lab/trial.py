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

from ..adapters.bgp.base import Route
from ..model.world import World
from ..predict.predictor import Predictor
from ..predict.scenarios import Scenario
from ..routing import Mode
from .build import LabError
from .measure import Announcer, dominant, probe_all
from .plan import TEST_PREFIX, LabPlan, lab_world


@dataclass(frozen=True)
class Trial:
    site: str
    clients: tuple[str, ...]  # the clients the site answered before
    measured: dict[str, float]  # receiving site (or "none") -> share of those clients
    predicted: dict[str, float]  # the predictor's shares for the same failure

    @property
    def agree(self) -> bool:
        keys = set(self.measured) | set(self.predicted)
        return all(abs(self.measured.get(k, 0) - self.predicted.get(k, 0)) < 1e-9 for k in keys)

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "clients": list(self.clients),
            "measured": self.measured,
            "predicted": self.predicted,
            "agree": self.agree,
        }


def predicted_failover(world: World, sites: list[str]) -> dict[str, dict[str, float]]:
    """The predictor's shares, per failed site, for the lab's test prefix."""
    model = lab_world(world)
    codes = model.network.sites.code
    pred = Predictor(model, prefix=model.network.prefixes.cidr.index(TEST_PREFIX), mode=Mode.AS)
    out = {}
    for s in sites:
        o = pred.outcome(Scenario("single", (codes.index(s),)))
        shares = {codes[r]: v for r, v in o.shares().items()}
        if o.failed_rps > 0 and o.unreached_rps > 0:
            shares["none"] = o.unreached_rps / o.failed_rps
        out[s] = shares
    return out


def run(
    world: World, plan: LabPlan, directory: Path, sites: list[str] | None = None, flows: int = 10
) -> list[Trial]:
    codes = sites or [str(n.site) for n in plan.sites]
    predicted = predicted_failover(world, codes)
    ann = Announcer(plan, directory)
    out = []
    for code in codes:
        before = probe_all(plan, flows=flows, address=plan.test_address)
        mine = tuple(c for c, r in before.items() if dominant(r) == code)
        measured: dict[str, float] = {}
        if mine:
            keep = ann.routes(code)
            ann.set(code, [r for r in keep if r.prefix != TEST_PREFIX])
            try:
                ann.settle()
                after = probe_all(plan, list(mine), flows=flows, address=plan.test_address)
            finally:
                ann.set(code, keep or [Route(TEST_PREFIX)])
                ann.settle()
            landed = Counter(dominant(after[c]) or "none" for c in mine)
            measured = {k: v / len(mine) for k, v in sorted(landed.items())}
        elif predicted[code]:
            raise LabError(
                f"no client reaches {code} on the test prefix, yet the model says some do"
            )
        out.append(Trial(code, mine, measured, predicted[code]))
    return out
