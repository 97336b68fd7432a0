"""The checks of a *metro lab*: routers that stand in metros, several per AS.

A lab whose routers name a ``metro`` (a key of ``lab.metros``, a city with coordinates)
may give an AS several routers.  The lab then runs hot-potato routing for real (an IGP
whose costs are the distances between metros, iBGP among the routers of each AS: see
:mod:`anyedge.lab.igp`) and the routing engine's metro mode predicts it.  For the two to
describe one network, the file must say no more than the model can hold:

* every router stands in a metro, and an AS has at most one router per metro;
* the routers of one AS are joined to each other by internal links (relation ``none``),
  every pair of them (their IGP cost is then the distance between their metros);
* two ASes meet where both stand: a link between routers of two ASes joins routers of
  one metro, and ASes that meet somewhere meet in every metro where both have a router,
  with the same relation each time (the model hands traffic over in every metro two
  networks share);
* a site's routers stand in one metro (the model places the site there);
* a router's distances to the other routers of its AS differ by at least
  :data:`MIN_GAP_KM` (two exits equally far away are a tie that FRR breaks by router id
  and the model by neighbour ASN).

Each check yields ``(place, problem)`` pairs like the topology's other checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import combinations, pairwise

from ..geo import great_circle_km
from .schema import TopologyIn
from .yamlpos import Loc

MIN_GAP_KM = 10.0  # between the distances of a router to two others of its AS


def is_metro_lab(t: TopologyIn) -> bool:
    return bool(t.lab.metros) or any(n.metro for n in t.lab.nodes.values())


def km(t: TopologyIn, a: str, b: str) -> float:
    """Great-circle distance between the metros ``a`` and ``b`` of the lab."""
    ma, mb = t.lab.metros[a], t.lab.metros[b]
    return float(great_circle_km(ma.lat, ma.lon, mb.lat, mb.lon))


def check(t: TopologyIn) -> Iterator[tuple[Loc, str]]:
    if not is_metro_lab(t):
        return
    nodes, metros = t.lab.nodes, t.lab.metros
    placed = True
    for name, n in nodes.items():
        loc: Loc = ("lab", "nodes", name, "metro")
        if n.kind != "router":
            if n.metro is not None:
                yield loc, f"only routers stand in a metro, this is a {n.kind}"
        elif n.metro is None:
            placed = False
            yield (
                ("lab", "nodes", name),
                "in a lab whose routers stand in metros, every router needs a metro",
            )
        elif n.metro not in metros:
            placed = False
            known = ", ".join(sorted(metros)) or "none: add lab.metros"
            yield loc, f"unknown metro {n.metro!r} (lab.metros: {known})"
    if not placed:
        return
    yield from _check_ases(t)
    yield from _check_links(t)


def _routers_by_as(t: TopologyIn) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for name, n in t.lab.nodes.items():
        if n.kind == "router" and n.asn is not None:
            out.setdefault(n.asn, []).append(name)
    return out


def _check_ases(t: TopologyIn) -> Iterator[tuple[Loc, str]]:
    nodes = t.lab.nodes
    linked = set()
    for link in t.lab.links:
        a, b = (e.split(":")[0] for e in link.endpoints)
        linked.add(frozenset((a, b)))
    for asn, routers in _routers_by_as(t).items():
        seen: dict[str, str] = {}
        for r in routers:
            m = str(nodes[r].metro)
            if m in seen:
                yield (
                    ("lab", "nodes", r, "metro"),
                    f"AS{asn} already has {seen[m]} in {m}: one router per AS and metro",
                )
            seen.setdefault(m, r)
        if len(seen) < len(routers):
            continue
        for a, b in combinations(routers, 2):
            if frozenset((a, b)) not in linked:
                yield (
                    ("lab", "nodes", a),
                    f"the routers of AS{asn} are joined pairwise by internal links "
                    f"(relation none): {a} and {b} are not",
                )
        for r in routers:
            far = sorted(
                (km(t, str(nodes[r].metro), str(nodes[o].metro)), o) for o in routers if o != r
            )
            for (d1, o1), (d2, o2) in pairwise(far):
                if d2 - d1 < MIN_GAP_KM:
                    yield (
                        ("lab", "nodes", r, "metro"),
                        f"{o1} and {o2} stand {d1:.0f} and {d2:.0f} km from {r}: a tie the "
                        f"lab and the model would break differently (at least "
                        f"{MIN_GAP_KM:g} km apart)",
                    )
            if far and far[0][0] < MIN_GAP_KM:
                yield (
                    ("lab", "nodes", r, "metro"),
                    f"{far[0][1]} of the same AS stands {far[0][0]:.0f} km away: "
                    f"at least {MIN_GAP_KM:g} km apart",
                )


def _check_links(t: TopologyIn) -> Iterator[tuple[Loc, str]]:
    nodes = t.lab.nodes
    meet: dict[frozenset[int], dict[str, tuple[int, str]]] = {}
    site_metro: dict[str, tuple[str, str]] = {}
    for i, link in enumerate(t.lab.links):
        a, b = (e.split(":")[0] for e in link.endpoints)
        if a not in nodes or b not in nodes:
            continue
        na, nb = nodes[a], nodes[b]
        loc: Loc = ("lab", "links", i)
        if na.kind == "router" and nb.kind == "router":
            if na.asn == nb.asn:
                if link.relation != "none":
                    yield (
                        (*loc, "relation"),
                        f"{a} and {b} are routers of one AS: an internal link, relation none",
                    )
                continue
            if na.metro != nb.metro:
                yield (
                    loc,
                    (
                        f"{a} ({na.metro}) and {b} ({nb.metro}) stand in different metros: "
                        "networks meet in a metro where both stand"
                    ),
                )
                continue
            pair = frozenset((int(na.asn or 0), int(nb.asn or 0)))
            how = f"{link.relation} {na.asn}>{nb.asn}"
            if link.relation == "peer":
                how = "peer"
            meet.setdefault(pair, {})[str(na.metro)] = (i, how)
        elif {na.kind, nb.kind} == {"router", "site"} and link.relation != "none":
            router, site = (a, b) if na.kind == "router" else (b, a)
            m = str(nodes[router].metro)
            if site in site_metro and site_metro[site][0] != m:
                yield (
                    loc,
                    (
                        f"site {site} has routers in {site_metro[site][0]} "
                        f"({site_metro[site][1]}) and in {m} ({router}): a site's routers "
                        "stand in one metro"
                    ),
                )
            site_metro.setdefault(site, (m, router))
    yield from _check_meetings(t, meet)


def _check_meetings(
    t: TopologyIn, meet: dict[frozenset[int], dict[str, tuple[int, str]]]
) -> Iterator[tuple[Loc, str]]:
    by_as = _routers_by_as(t)
    nodes = t.lab.nodes
    for pair, where in meet.items():
        x, y = sorted(pair)
        hows = {how for _, how in where.values()}
        first = min(i for i, _ in where.values())
        if len(hows) > 1:
            yield (
                ("lab", "links", first),
                (
                    f"AS{x} and AS{y} meet with different relations ({', '.join(sorted(hows))}): "
                    "the model holds one relation per pair of networks"
                ),
            )
        both = {str(nodes[r].metro) for r in by_as[x]} & {str(nodes[r].metro) for r in by_as[y]}
        for m in sorted(both - set(where)):
            yield (
                ("lab", "links", first),
                (
                    f"AS{x} and AS{y} meet in {', '.join(sorted(where))} but not in {m}, where "
                    "both have a router: networks meet in every metro they share"
                ),
            )
