"""Hot potato in the lab: several routers per AS, an IGP priced by distance, iBGP.

In a *metro lab* (routers that stand in ``metros``: :mod:`anyedge.model.files.labmetro`
checks the file) an AS may have a router in each of several cities.  The lab then
builds what a real network does:

* each router of an AS with several routers holds a loopback address
  (:data:`LOOPBACKS`, one /32 per router in the order of the file);
* FRR's ``ospfd`` runs on those routers, over the AS's internal links, with each
  link's cost the great-circle distance in km between its two metros
  (:func:`cost`; the links are a full mesh, so the IGP's cost from one router to
  another is their distance, as the routing engine's walk measures it);
* the routers of an AS hold iBGP sessions with each other, full mesh, between
  loopbacks, with ``next-hop-self``: a route learned over eBGP in Sydney reaches the
  London router with the Sydney router's loopback as next hop, which ``bgpd`` resolves
  over OSPF with its cost.  BGP's decision then reaches its "lowest IGP cost to the next
  hop" step between routes equal up to there (local preference, AS-path length, origin,
  MED), after "eBGP over iBGP": each router leaves by the exit nearest to it.

That is the routing engine's ``Mode.METRO`` (hot potato), which ``anyedge lab compare``
uses for a metro lab: :func:`metro_model` places the lab's model where the routers are.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from ..model.geo import great_circle_km
from ..model.lab import Lab, LabLink, NodeKind

LOOPBACKS = "100.127.240.0/20"  # the top of the links' 100.64.0.0/10, kept from them
MAX_ROUTERS = 4094


def is_metro_lab(lab: Lab) -> bool:
    return bool(lab.metros) or any(n.metro for n in lab.nodes)


def multi_router_ases(lab: Lab) -> set[int]:
    """The ASNs with more than one router in the lab."""
    seen: dict[int, int] = {}
    for n in lab.nodes:
        if n.kind is NodeKind.ROUTER and n.asn is not None:
            seen[n.asn] = seen.get(n.asn, 0) + 1
    return {a for a, k in seen.items() if k > 1}


def loopbacks(lab: Lab) -> dict[str, str]:
    """The loopback address of each router of an AS with several routers."""
    many = multi_router_ases(lab)
    names = [n.name for n in lab.nodes if n.kind is NodeKind.ROUTER and n.asn in many]
    if len(names) > MAX_ROUTERS:
        raise ValueError(f"at most {MAX_ROUTERS} routers in ASes with several routers")
    base = ipaddress.IPv4Network(LOOPBACKS).network_address
    return {name: str(base + 1 + i) for i, name in enumerate(names)}


def is_internal(lab: Lab, link: LabLink) -> bool:
    """A link between two routers of one AS (it carries the IGP and iBGP)."""
    a, b = lab.node(link.a[0]), lab.node(link.b[0])
    return (
        a.kind is NodeKind.ROUTER
        and b.kind is NodeKind.ROUTER
        and a.asn is not None
        and a.asn == b.asn
    )


def km(lab: Lab, a: str, b: str) -> float:
    """Distance between the metros of the routers ``a`` and ``b``."""
    ma, mb = lab.metro(str(lab.node(a).metro)), lab.metro(str(lab.node(b).metro))
    return float(great_circle_km(ma.lat, ma.lon, mb.lat, mb.lon))


def cost(lab: Lab, link: LabLink) -> int:
    """The OSPF cost of an internal link: its metros' distance in km (1 to 65535)."""
    return max(1, min(65535, round(km(lab, link.a[0], link.b[0]))))


def igp_costs(lab: Lab) -> dict[tuple[str, str], int]:
    """The IGP's cost from each router to each other router of its AS: the cheapest
    path over the AS's internal links (the direct link, or a detour no dearer once
    distances are rounded to the km), as OSPF will compute it."""
    out: dict[tuple[str, str], int] = {}
    many = multi_router_ases(lab)
    for asn in many:
        rs = [n.name for n in lab.nodes if n.kind is NodeKind.ROUTER and n.asn == asn]
        big = 1 << 40
        d = {(a, b): 0 if a == b else big for a in rs for b in rs}
        for link in lab.links:
            a, b = link.a[0], link.b[0]
            if a in rs and b in rs:
                d[a, b] = d[b, a] = min(d[a, b], cost(lab, link))
        for k in rs:  # Floyd-Warshall: a handful of routers
            for a in rs:
                for b in rs:
                    d[a, b] = min(d[a, b], d[a, k] + d[k, b])
        out.update({(a, b): c for (a, b), c in d.items() if a != b and c < big})
    return out


def metro_model(lab: Lab, clients: list[str], d: dict[str, Any]) -> None:
    """Place the lab's model (the world dict ``d`` that :func:`~.plan.lab_world` builds)
    where the routers stand: client *i* is metro *i + 1* at its router's metro, the
    lab's metros follow, each AS is present where its routers are, and each site stands
    in its routers' metro."""
    by_node = {n.name: n for n in lab.nodes}
    where = {m.name: m for m in lab.metros}
    home: dict[str, str] = {}
    site_at: dict[str, str] = {}
    for link in lab.links:
        for me, other in ((link.a[0], link.b[0]), (link.b[0], link.a[0])):
            mine, theirs = by_node[me], by_node[other]
            if theirs.kind is NodeKind.ROUTER and theirs.metro is not None:
                if mine.kind is NodeKind.CLIENT:
                    home[me] = theirs.metro
                elif mine.kind is NodeKind.SITE and mine.site is not None:
                    site_at.setdefault(mine.site, theirs.metro)
    first = len(clients) + 1
    ids = {m.name: first + i for i, m in enumerate(lab.metros)}
    metros = d["internet"]["metros"]
    for i, c in enumerate(clients):
        if c in home:
            metros[i] = dict(metros[i], lat=where[home[c]].lat, lon=where[home[c]].lon)
    metros += [
        {
            "id": ids[m.name],
            "name": m.name,
            "country": "NZ",
            "lat": m.lat,
            "lon": m.lon,
            "population": 1,
        }
        for m in lab.metros
    ]
    present: dict[int, set[int]] = {}
    for n in lab.nodes:
        if n.kind is NodeKind.ROUTER and n.asn is not None and n.metro is not None:
            present.setdefault(n.asn, set()).add(ids[n.metro])
    d["internet"]["ases"] = [
        dict(a, metros=sorted(present.get(a["asn"], ()))) for a in d["internet"]["ases"]
    ]
    for s in d["sites"]:
        if s["code"] in site_at:
            m = where[site_at[s["code"]]]
            s.update(lat=m.lat, lon=m.lon)
