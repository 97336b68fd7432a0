"""The model meets reality: the routing engine's catchments against what probes measure.

For the lab's topology, :func:`predicted` computes with the routing engine
(:class:`~anyedge.routing.Router` in ``Mode.AS``, the rule the lab's routers are set
up to follow) which site each client reaches, for the announcement as it is and with
one site withdrawn.  :func:`compare` measures the same in the running lab — probes from
every client, then each site withdrawn in turn through its real BGP speaker, probed,
and announced again — and lists client by client where model and lab agree.

The comparison is for the lab's service prefix (its first IPv4 anycast prefix).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..model.world import World
from ..routing import Announcement, Mode, Router
from .build import LabError
from .measure import Announcer, dominant, probe_all
from .plan import LabPlan, client_names, lab_world


@dataclass(frozen=True)
class Row:
    scenario: str  # "baseline" or "without XXX"
    client: str
    model: str | None  # the site the model predicts, None if unreachable
    lab: str | None  # the site that answered most flows, None if none
    answered: int  # flows answered
    flows: int

    @property
    def agree(self) -> bool:
        return self.model == self.lab

    def to_dict(self) -> dict[str, object]:
        return {
            "scenario": self.scenario,
            "client": self.client,
            "model": self.model,
            "lab": self.lab,
            "agree": self.agree,
            "answered": self.answered,
            "flows": self.flows,
        }


def predicted(world: World, withdrawn: tuple[str, ...] = ()) -> dict[str, str | None]:
    """client -> the site the routing engine says it reaches (None: no route)."""
    model = lab_world(world)
    codes = model.network.sites.code
    router = Router(model, Mode.AS)
    ann = Announcement.of_prefix(model.network, 0)
    if withdrawn:
        ann = ann.withdraw(*[codes.index(s) for s in withdrawn])
    c = router.catchment(ann)
    clients = client_names(world)
    metro_id = model.internet.metros.id
    out: dict[str, str | None] = {}
    for e, site in enumerate(c.eyeball_site.tolist()):
        client = clients[int(metro_id[model.internet.eyeballs.metro[e]]) - 1]
        out[client] = codes[site] if site >= 0 else None
    return out


def compare(
    world: World,
    plan: LabPlan,
    directory: Path,
    flows: int = 20,
    each_site: bool = True,
) -> list[Row]:
    """Model against lab, with everything announced and then with each site withdrawn."""
    ann = Announcer(plan, directory)
    rows = _scenario(world, plan, "baseline", (), flows)
    if each_site:
        for node in plan.sites:
            code = str(node.site)
            before = ann.routes(code)
            ann.withdraw(code)
            try:
                ann.settle()
                rows += _scenario(world, plan, f"without {code}", (code,), flows)
            finally:
                ann.set(code, before)
                ann.settle()
    return rows


def _scenario(
    world: World, plan: LabPlan, name: str, withdrawn: tuple[str, ...], flows: int
) -> list[Row]:
    want = predicted(world, withdrawn)
    got = probe_all(plan, list(want), flows=flows)
    rows = []
    for client, model_site in want.items():
        r = got.get(client)
        if r is None:
            raise LabError(f"no probe result from {client}")
        answered = sum(r.get("answers", {}).values())
        rows.append(Row(name, client, model_site, dominant(r), answered, flows))
    return rows
