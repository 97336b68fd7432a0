"""The model meets reality: the routing engine's catchments against what probes measure.

For the lab's topology, :func:`predicted` computes with the routing engine
(:class:`~anyedge.routing.Router` in ``Mode.AS``, the rule the lab's routers are set up
to follow; in a metro lab, whose ASes may have several routers, ``Mode.METRO``, the hot
potato their IGP and iBGP make: :mod:`.igp`) which site each client reaches, for what
the sites announce now (the lab's state: withdrawals and prepends made with ``anyedge
lab`` count) and with one site withdrawn. Forwarding (Plurimog) is not routing: a lab
that forwards is refused. :func:`compare` measures the same in the running lab — probes
from every client, then each site withdrawn in turn through its real BGP speaker,
probed, and announced again — and lists client by client where model and lab agree.

Under faults — the ``faults`` the lab's state records (:mod:`.faults`: links down,
dead daemons, sites partitioned), and any more given by name as the model's
(``--link-down A-B``, ``--site-down SITE``) — the model computes with the same faults:
:func:`~.fault_model.model_faults` turns the lab's nodes into the model's ASes and sites, and
the routing engine takes those links and sessions down.  Sites cut off are not
withdrawn in turn (they announce nothing to anyone already).

The comparison is for the lab's service prefix (its first IPv4 anycast prefix) and, in
a dual-stack lab, its first IPv6 prefix too (:attr:`~.plan.LabPlan.service_prefixes`):
each is probed on its own first address, and each row says which prefix it is about.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..adapters.bgp.base import Route
from ..model.world import World
from ..routing import Announcement, Mode, Router, resolve
from .build import LabError, LabState
from .fault_model import ModelFaults, check_modelled, model_faults, records_for
from .igp import is_metro_lab
from .measure import Announcer, dominant, probe_all
from .plan import LabPlan, client_names, first_host, lab_world


@dataclass(frozen=True)
class Row:
    scenario: str  # "baseline" or "without XXX"
    client: str
    model: str | None  # the site the model predicts, None if unreachable
    lab: str | None  # the site that answered most flows, None if none
    answered: int  # flows answered
    flows: int
    sites: int = 1  # how many sites answered
    prefix: str = ""  # the anycast prefix probed (its first address)

    @property
    def agree(self) -> bool:
        """The same site, and every flow answered by it (or none at all, if the model
        says the client has no route)."""
        if self.model is None:
            return self.answered == 0
        return self.lab == self.model and self.answered == self.flows and self.sites == 1

    def to_dict(self) -> dict[str, object]:
        return {
            "scenario": self.scenario,
            "client": self.client,
            "model": self.model,
            "lab": self.lab,
            "agree": self.agree,
            "answered": self.answered,
            "flows": self.flows,
            "sites": self.sites,
            "prefix": self.prefix,
        }


def announcement(
    model: World, prefix: str, routes: Mapping[str, Iterable[Route]] | None
) -> Announcement:
    """What the sites announce of ``prefix``: as the lab's state records it (``routes``
    by site code), or as the topology says."""
    net = model.network
    q = net.prefixes.cidr.index(prefix)
    ann = Announcement.of_prefix(net, q)
    if routes is None:
        return ann
    by_site = {code: {r.prefix: r for r in rs} for code, rs in routes.items()}
    announced = np.zeros(len(net.sites), dtype=np.bool_)
    prepend = np.zeros(len(net.sites), dtype=np.int64)
    for i, code in enumerate(net.sites.code):
        r = by_site.get(code, {}).get(prefix)
        if r is not None:
            announced[i], prepend[i] = True, r.prepend
    return replace(ann, announced=announced, prepend=prepend)


def predicted(
    world: World,
    withdrawn: tuple[str, ...] = (),
    prefix: str | None = None,
    routes: Mapping[str, Iterable[Route]] | None = None,
    faults: ModelFaults | None = None,
    mode: Mode | None = None,
) -> dict[str, str | None]:
    """client -> the site the routing engine says it reaches (None: no route), for
    ``prefix`` (default: the lab's service prefix) announced as ``routes`` say (default:
    as the topology says) less the ``withdrawn`` sites, under ``faults`` (raises
    :class:`~anyedge.routing.FaultError` for names the model does not have), in the
    routing engine's ``mode`` (default: the one the lab follows, :func:`mode_of`)."""
    model = lab_world(world)
    codes = model.network.sites.code
    if prefix is None:
        prefix = next(
            c for c in model.network.prefixes.cidr if ipaddress.ip_network(c).version == 4
        )
    ann = announcement(model, prefix, routes)
    if withdrawn:
        ann = ann.withdraw(*[codes.index(s) for s in withdrawn])
    faults = faults or ModelFaults()
    broken = resolve(model, faults.links, faults.sites)
    mode = mode or mode_of(world)
    c = Router(model, mode, faults=broken).catchment(ann)
    clients = client_names(world)
    metro_id = model.internet.metros.id
    out: dict[str, str | None] = {}
    for e, site in enumerate(c.eyeball_site.tolist()):
        client = clients[int(metro_id[model.internet.eyeballs.metro[e]]) - 1]
        out[client] = codes[site] if site >= 0 and client not in faults.clients else None
    return out


def mode_of(world: World) -> Mode:
    """The routing engine's mode the lab's routers follow: hot potato (``Mode.METRO``)
    where routers stand in metros, else one route per AS (``Mode.AS``)."""
    return Mode.METRO if is_metro_lab(world.lab) else Mode.AS


def current_routes(plan: LabPlan, state: LabState) -> dict[str, list[Route]]:
    """What each site announces now, by site code, from the lab's state."""
    return {
        str(n.site): [Route(p, int(k)) for p, k in state.routes.get(n.name, [])] for n in plan.sites
    }


def check_not_forwarding(state: LabState) -> None:
    busy = sorted(node for node, shares in state.forward.items() if shares)
    if busy:
        raise LabError(
            f"{', '.join(busy)} forward flows to other sites, which the routing model does "
            "not know of: stop that first (anyedge lab forward SITE --to OTHER --share 0)"
        )


def extra_faults(
    world: World, plan: LabPlan, links: Iterable[str] = (), sites: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Fault records for ``links`` and ``sites`` named as the model names them; raises
    :class:`~anyedge.routing.FaultError` for names the lab's model does not have."""
    links, sites = list(links), list(sites)
    resolve(lab_world(world), links, sites)
    return records_for(plan, links, sites)


def faults_of(
    plan: LabPlan, directory: Path, extra: Iterable[Mapping[str, Any]] = ()
) -> ModelFaults:
    """The faults the lab's state records, and the ``extra`` records, for the model
    (:class:`LabError` for those it cannot say: :func:`~.fault_model.check_modelled`)."""
    records = [*LabState.load(directory).faults, *extra]
    check_modelled(plan, records)
    return model_faults(plan, records)


def compare(
    world: World,
    plan: LabPlan,
    directory: Path,
    flows: int = 20,
    each_site: bool = True,
    extra: Iterable[Mapping[str, Any]] = (),
    only: Iterable[str] | None = None,
) -> list[Row]:
    """Model against lab, as the sites announce now and then with each site withdrawn
    (or each of the sites ``only`` names), under the faults the lab's state records and
    the ``extra`` fault records (a lab broken by hand: see :func:`extra_faults`).  BGP
    is let settle first, so ``lab fault …`` and then ``lab compare`` at once compare
    the network after the fault, not during its convergence; :class:`LabError` names
    the sessions that do not settle."""
    state = LabState.load(directory)
    check_not_forwarding(state)
    extra = list(extra)
    faults = faults_of(plan, directory, extra)
    routes = current_routes(plan, state)
    ann = Announcer(plan, directory, extra)
    # a fault made a moment ago may still be converging: compare the network at rest
    # (sessions a fault takes down are waited for until they are down, the rest up)
    ann.settle()
    rows = _scenario(world, plan, "baseline", (), routes, flows, faults)
    chosen = None if only is None else set(only)
    if each_site:
        for node in plan.sites:
            code = str(node.site)
            before = routes[code]
            if not before or code in faults.sites or (chosen is not None and code not in chosen):
                continue  # withdrawn or cut off already (nothing to take away), or not asked
            with ann.changed(code, []):
                ann.settle()
                rows += _scenario(world, plan, f"without {code}", (code,), routes, flows, faults)
    return rows


def _scenario(
    world: World,
    plan: LabPlan,
    name: str,
    withdrawn: tuple[str, ...],
    routes: dict[str, list[Route]],
    flows: int,
    faults: ModelFaults,
) -> list[Row]:
    rows = []
    for prefix in plan.service_prefixes:
        want = predicted(world, withdrawn, prefix, routes, faults)
        got = probe_all(plan, list(want), flows=flows, address=first_host(prefix))
        for client, model_site in want.items():
            r = got.get(client)
            if r is None:
                raise LabError(f"no probe result from {client}")
            answers = r.get("answers", {})
            answered = sum(answers.values())
            rows.append(
                Row(name, client, model_site, dominant(r), answered, flows, len(answers), prefix)
            )
    return rows
