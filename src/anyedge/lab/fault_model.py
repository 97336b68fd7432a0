"""The faults recorded in a lab's state, as the routing model sees them.

A lab's ``state.json`` may carry a ``faults`` list, one record per fault made in the
lab::

    {"kind": "link", "a": "isp1", "b": "isp3"}     # the link(s) between two nodes down
    {"kind": "daemon", "node": "isp2"}             # a node's BGP daemon dead
    {"kind": "partition", "site": "SYD"}           # a site's sessions all lost

(made by ``anyedge lab fault``, :mod:`.faults`, whose :func:`~.faults.excused` says
which BGP sessions they hold down).  Here:

* :func:`records_for` — the other way: faults named as the model names them (``A-B``
  with AS numbers or a site code, and site codes) as records of the lab's links, for a
  lab broken by hand whose state does not say so;
* :func:`model_faults` — the faults in the names of the lab's model
  (:func:`~.plan.lab_world`): a link between two routers is the link between their
  ASes, a link between a router and a site is the site's session with that AS, a dead
  router daemon takes every link of its AS down, and a dead site speaker or a partition
  cuts the site off.  A client whose access link is down reaches nothing; a link
  between two sites is the backbone, which BGP does not see;
* :func:`check_modelled` — in a metro lab (:mod:`.igp`), the faults the model cannot
  say: a link inside an AS, a link between two ASes that meet in several metros, a dead
  router of an AS with several routers (the model knows ASes, not routers).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..model.lab import NodeKind
from .build import LabError
from .plan import LabPlan, NodePlan

KINDS = ("link", "daemon", "partition")


@dataclass(frozen=True)
class ModelFaults:
    """Faults by name for the lab's model, and the clients cut off."""

    links: tuple[str, ...] = ()  # A-B: ASNs or a site code and an ASN
    sites: tuple[str, ...] = ()  # site codes whose sessions are all lost
    clients: frozenset[str] = frozenset()  # clients whose access link is down

    def __bool__(self) -> bool:
        return bool(self.links or self.sites or self.clients)

    def to_dict(self) -> dict[str, list[str]]:
        return {
            "links_down": list(self.links),
            "sites_down": list(self.sites),
            "clients_cut_off": sorted(self.clients),
        }


def _node(plan: LabPlan, name: Any, record: Mapping[str, Any]) -> NodePlan:
    try:
        return plan.node(str(name))
    except KeyError:
        raise LabError(f"the lab's state records a fault on no node of the lab: {record}") from None


def _site(plan: LabPlan, code: Any, record: Mapping[str, Any]) -> NodePlan:
    try:
        return plan.site_node(str(code).upper())
    except KeyError:
        raise LabError(f"the lab's state records a fault at no site of the lab: {record}") from None


def _down_links(
    plan: LabPlan, records: Iterable[Mapping[str, Any]]
) -> tuple[set[frozenset[str]], set[str], set[str]]:
    """(node pairs whose links are down, nodes whose daemon is dead, sites cut off)."""
    links: set[frozenset[str]] = set()
    dead: set[str] = set()
    cut: set[str] = set()
    for r in records:
        kind = r.get("kind")
        if kind == "link":
            a, b = _node(plan, r.get("a"), r), _node(plan, r.get("b"), r)
            links.add(frozenset((a.name, b.name)))
        elif kind == "daemon":
            n = _node(plan, r.get("node"), r)
            dead.add(n.name)
            if n.kind is NodeKind.SITE:
                cut.add(str(n.site))
        elif kind == "partition":
            cut.add(str(_site(plan, r.get("site"), r).site))
        else:
            raise LabError(f"the lab's state records a fault of unknown kind: {r}")
    return links, dead, cut


def records_for(
    plan: LabPlan, links: Iterable[str] = (), sites: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Fault records for ``links`` (``A-B``: AS numbers, ``AS`` optional, or a site
    code) and ``sites`` (codes), on the lab's nodes.  Names are checked against the
    model first (:func:`~anyedge.routing.resolve` on :func:`~.plan.lab_world`); one that
    matches no link of the lab adds nothing."""

    def key(name: str) -> str:
        n = name.strip().upper()
        return n[2:] if n.startswith("AS") and n[2:].isdigit() else n

    def names(n: NodePlan) -> set[str]:
        return {str(n.asn)} if n.kind is NodeKind.ROUTER else {str(n.site)}

    out: list[dict[str, Any]] = []
    for text in links:
        a, _, b = text.partition("-")
        for node, port, other, _q in plan.links():
            if port.relation == "none" or NodeKind.CLIENT in (node.kind, other.kind):
                continue
            if (key(a) in names(node) and key(b) in names(other)) or (
                key(b) in names(node) and key(a) in names(other)
            ):
                rec = {"kind": "link", "a": node.name, "b": other.name}
                if rec not in out:
                    out.append(rec)
    out += [{"kind": "partition", "site": s.strip().upper()} for s in sites]
    return out


def check_modelled(plan: LabPlan, records: Iterable[Mapping[str, Any]]) -> None:
    """:class:`LabError` naming each fault of ``records`` the model cannot say (see the
    module doc): in a lab of one router per AS, none."""
    meets: dict[frozenset[int | None], int] = {}
    for node, _p, other, _q in plan.links():
        if node.kind is NodeKind.ROUTER and other.kind is NodeKind.ROUTER:
            pair = frozenset((node.asn, other.asn))
            meets[pair] = meets.get(pair, 0) + 1
    bad = []
    for r in records:
        if r.get("kind") == "daemon":
            n = _node(plan, r.get("node"), r)
            if n.loopback is not None:
                bad.append(f"{n.name}'s daemon (AS{n.asn} has several routers)")
        elif r.get("kind") == "link":
            a, b = _node(plan, r.get("a"), r), _node(plan, r.get("b"), r)
            if a.kind is not NodeKind.ROUTER or b.kind is not NodeKind.ROUTER:
                continue
            if a.asn == b.asn:
                bad.append(f"link {a.name}-{b.name} (inside AS{a.asn})")
            elif meets[frozenset((a.asn, b.asn))] > 1:
                bad.append(
                    f"link {a.name}-{b.name} (AS{a.asn} and AS{b.asn} meet in several metros)"
                )
    if bad:
        raise LabError(
            "the routing model knows ASes, not routers, and cannot take down: "
            + "; ".join(bad)
            + " (anyedge lab heal first)"
        )


def model_faults(plan: LabPlan, records: Iterable[Mapping[str, Any]]) -> ModelFaults:
    """The recorded faults for the model."""
    down, dead, cut = _down_links(plan, records)
    names: list[str] = []
    clients: set[str] = set()
    for node, _port, other, _other_port in plan.links():
        kinds = {node.kind, other.kind}
        pair = frozenset((node.name, other.name))
        if pair not in down and not ({node.name, other.name} & dead):
            continue
        if NodeKind.CLIENT in kinds:
            clients.update(n.name for n in (node, other) if n.kind is NodeKind.CLIENT)
        elif kinds == {NodeKind.ROUTER}:
            names.append(f"{node.asn}-{other.asn}")
        elif kinds == {NodeKind.ROUTER, NodeKind.SITE}:
            site, router = (node, other) if node.kind is NodeKind.SITE else (other, node)
            if str(site.site) not in cut:
                names.append(f"{site.site}-{router.asn}")
        # two sites: the backbone, which BGP routing does not see
    return ModelFaults(
        links=tuple(dict.fromkeys(names)),
        sites=tuple(sorted(cut)),
        clients=frozenset(clients),
    )
